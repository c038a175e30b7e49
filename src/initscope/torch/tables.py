"""The tidy tables of an inspection, with the core's columns so that the report and CSV writers take them.

An inspection's `initscope.Result` (the type of a study run's result too):

metrics: init, trial, layer, metric, value, sample_size (the rows,
samples or sequences behind the value when a subset was used, else
empty), std_error (its standard error where estimated), then module (the
state's name: the module's qualified name and, for a tensor inside a
structured output, its path, e.g. "attn.3[0]"; "input" for layer 0),
module_type, param_kind (the parameters its grad_norm reads: weight,
embedding, norm_affine, scale, bias or none; the vanishing-gradient flag
compares layers of one kind), call (0 for a module's first call, 1 for its second, ...),
shape (per sample, e.g. "16x8x8"), layout (units, channels-first or
tokens), state (how the state matrix was formed) and the context columns
samples, input_dim, dtype, mode, seed, model. spectra, projections,
weight_norms: as the core's. flags: the core's, plus "constant input"
where a state is constant because every input of its module is (instead
of "collapsed"). layers: one row per layer with the init and layer
columns, the layer columns above, layout_reason (what decided the
layout), units (columns of the state matrix), state_samples (its rows),
jacobian_samples and reference (True on the state the scale and rank
flags compare with). config: the `initscope.InspectContext` (the report's
config section). notes: plain-language remarks. jacobian_spectra: with
jacobian_log_spread, the core's counts of log10 normalised Jacobian
singular values (init, trial, layer, log10_sv, count > 0), else empty.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from initscope.core.propagation import JACOBIAN_LOG10_EDGES
from initscope.result import Result
from initscope.study.records import JACOBIAN_COLUMNS
from initscope.study.records import NumericalWarning
from initscope.torch.gradients import param_kind
from initscope.torch.initializers import INITIALIZABLE, weight_fans
from initscope.torch.recording import Layer

__all__ = ["combine", "build_result", "incoming_norms", "LAYER_COLUMNS"]

LAYER_COLUMNS = ("module", "module_type", "param_kind", "call", "shape", "layout", "state")
CONTEXT_COLUMNS = ("samples", "input_dim", "dtype", "mode", "seed", "model")


def incoming_norms(module: nn.Module) -> np.ndarray | None:
    """Each output unit's incoming weight-vector 2-norm (units,), for Linear and (transposed) Conv; else None."""
    if not isinstance(module, INITIALIZABLE):
        return None
    fans = weight_fans(module)
    w = module.weight.detach().to("cpu", torch.float64)
    if fans.transposed:  # (in, out/g, *k): unit j of group g_i reads weight[g_i-block, j]
        g = fans.groups
        w = w.reshape(g, w.shape[0] // g, w.shape[1], -1).transpose(1, 2).reshape(fans.units, fans.fan_in)
    else:
        w = w.reshape(fans.units, fans.fan_in)
    return torch.linalg.vector_norm(w, dim=1).numpy()


def _layer_info(layers: list[Layer], reference: int) -> pd.DataFrame:
    return pd.DataFrame({
        "layer": [layer.index for layer in layers],
        "module": [layer.label for layer in layers],
        "module_type": [layer.module_type for layer in layers],
        "param_kind": [param_kind(layer.module) for layer in layers],
        "call": [layer.call for layer in layers],
        "shape": ["x".join(str(s) for s in layer.layout.shape) for layer in layers],
        "layout": [layer.layout.kind for layer in layers],
        "state": [layer.layout.state for layer in layers],
        "layout_reason": [layer.layout.reason for layer in layers],
        "units": [layer.layout.units for layer in layers],
        "state_samples": [layer.state_samples for layer in layers],
        "jacobian_samples": [layer.jacobian_samples for layer in layers],
        "reference": [layer.index == reference for layer in layers],
        "normalised_by": [layer.normalised_by for layer in layers],
    })


def build_result(layers: list[Layer], values: dict[int, dict[str, float]], metric_names: tuple[str, ...], *,
                 label: str, config: dict[str, Any], target: np.ndarray, notes: list[str],
                 reference: int = 0, histograms: dict[int, np.ndarray] | None = None) -> Result:
    """Assemble the tables. values: every metric of each layer, by layer index; reference: its layer index;
    histograms: Jacobian singular-value counts (bins,) by layer index (`torch.jacobian`)."""
    info = _layer_info(layers, reference)
    frames = []
    for metric in metric_names:
        part = info[["layer", *LAYER_COLUMNS]].copy()
        part.insert(0, "metric", metric)
        part.insert(1, "value", np.array([values[layer.index].get(metric, math.nan) for layer in layers],
                                         dtype=np.float64))
        part.insert(2, "sample_size", pd.array([layer.measured.sizes.get(metric) for layer in layers],
                                                dtype="Int64"))
        part.insert(3, "std_error", np.array([layer.measured.errors.get(metric, math.nan) for layer in layers],
                                             dtype=np.float64))
        frames.append(part)
    long = pd.concat(frames, ignore_index=True)
    metrics = pd.DataFrame({"init": label, "trial": 0, "layer": long["layer"], "metric": long["metric"],
                            "value": long["value"], "sample_size": long["sample_size"],
                            "std_error": long["std_error"]})
    for column in LAYER_COLUMNS:
        metrics[column] = long[column]
    for key in CONTEXT_COLUMNS:
        metrics[key] = config[key]

    spectra = pd.concat([pd.DataFrame({
        "init": label, "trial": 0, "layer": layer.index, "k": np.arange(1, layer.measured.spectrum.shape[0] + 1),
        "singular_value": layer.measured.spectrum}) for layer in layers], ignore_index=True)
    n = target.shape[0]
    projections = pd.concat([pd.DataFrame({
        "init": label, "trial": 0, "layer": layer.index, "sample": np.arange(n),
        "pc1": layer.measured.projection[:, 0], "pc2": layer.measured.projection[:, 1],
        "pc3": layer.measured.projection[:, 2], "target": target}) for layer in layers], ignore_index=True)
    info.insert(0, "init", label)
    return Result(metrics, spectra, projections, _weight_norms(layers, label), _flags(layers, label), config,
                  layers=info, notes=notes, jacobian_spectra=_jacobian_table(histograms or {}, label))


def _jacobian_table(histograms: dict[int, np.ndarray], label: str) -> pd.DataFrame:
    """Rows (init, trial, layer, log10_sv bin centre, count > 0), as `initscope.run` writes jacobian_spectra."""
    centres = np.round(0.5 * (JACOBIAN_LOG10_EDGES[1:] + JACOBIAN_LOG10_EDGES[:-1]), 6)
    rows = [pd.DataFrame({"init": label, "trial": 0, "layer": index, "log10_sv": centres[np.nonzero(counts)[0]],
                          "count": counts[np.nonzero(counts)[0]]}) for index, counts in sorted(histograms.items())]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(JACOBIAN_COLUMNS))


def _weight_norms(layers: list[Layer], label: str) -> pd.DataFrame:
    rows, seen, kind = [], set(), "input"
    for layer in layers:
        if layer.module is None or id(layer.module) in seen:
            continue
        norms = incoming_norms(layer.module)
        if norms is None:
            continue
        seen.add(id(layer.module))
        rows.append(pd.DataFrame({"init": label, "trial": 0, "layer": layer.index, "kind": kind, "norm": norms}))
        kind = "internal"
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["init", "trial", "layer", "kind", "norm"])


def _flags(layers: list[Layer], label: str) -> pd.DataFrame:
    """overflow at the first non-finite layer (with one warning), collapsed at every collapsed one."""
    rows = []
    bad = [layer for layer in layers if not layer.measured.finite]
    if bad:
        first = bad[0]
        rows.append((label, 0, first.index, "overflow"))
        warnings.warn(f"{label!r}: the state of layer {first.index} ({first.label}, {first.module_type}) "
                      f"is not finite; metrics are NaN there ({len(bad)} such layer(s))", NumericalWarning, stacklevel=4)
    rows += [(label, 0, layer.index, "constant input" if layer.constant_input else "collapsed")
             for layer in layers if layer.measured.collapsed]
    return pd.DataFrame(rows, columns=["init", "trial", "layer", "flag"])


def combine(*results: Result) -> Result:
    """One result from several (e.g. the same model under different inits), for one report.

    The results' `init` labels must be distinct; the config is the first
    one's with `init` listing every label.
    """
    if not results or not all(isinstance(r, Result) and r.layers is not None for r in results):
        raise TypeError("combine() takes one or more results of initscope.torch.inspect.")
    labels = [lab for r in results for lab in r.config["init"]]
    if len(set(labels)) != len(labels):
        raise ValueError(f"The results' labels must be distinct to combine them. Got {labels} instead; "
                         "pass label=... to inspect().")

    def cat(name: str) -> pd.DataFrame:
        frames = [getattr(r, name) for r in results if len(getattr(r, name))]
        return pd.concat(frames, ignore_index=True) if frames else getattr(results[0], name)

    layers = pd.concat([r.layers for r in results], ignore_index=True)
    config = dataclasses.replace(results[0].config, init=tuple(labels))
    notes = list(dict.fromkeys(note for r in results for note in r.notes))
    return Result(cat("metrics"), cat("spectra"), cat("projections"), cat("weight_norms"), cat("flags"), config,
                  layers=layers, notes=notes, jacobian_spectra=cat("jacobian_spectra"))
