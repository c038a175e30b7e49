"""The one measuring engine: the wanted metrics of one layer, from the pieces they read.

Whatever recorded the states (the numpy study's network, a torch model's
hooks, another framework's adapter), a layer's metrics are measured here:

    view = Pieces({"state": S, "rtol": ..., "activation": ...}, wanted=read_by(names))
    reading = evaluate(names, view, col=collapsed, is_input=layer == 0)

For each metric the engine picks how to compute it (`form`): a backend's own
form (torch's blocked row statistics for rms) when the backend has its
pieces natively, else the registry entry's function, else another form;
the view builds the pieces on first use (`core.pieces`). A metric whose
pieces are missing (token metrics of a state without sequences,
pre-activations a recorder cannot see) reads NaN. Values computed from a
subset carry its size; spectra with jackknife replicates give their
metrics a standard error. Pure; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from initscope.core.activations import activation as activation_entry
from initscope.core.metrics import METRICS, Form, Metric
from initscope.core.pieces import PIECES, Pieces, Sampled, depends_on, stages

__all__ = ["Reading", "evaluate", "layer_values", "form", "reads", "read_by", "stages_of", "reading_metrics"]


@dataclass
class Reading:
    """One layer's values (T,) per metric; sizes: rows (or sequences) behind a value where fewer than all;
    errors: (T,) standard errors where estimated."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, np.ndarray] = field(default_factory=dict)


_FORMS: dict[tuple[int, str], tuple[Metric, tuple[Form, ...]]] = {}


def _forms(entry: Metric, backend: str) -> tuple[Form, ...]:
    """The ways to compute `entry` on `backend`, in the order tried. Remembered per entry object (entries are
    frozen: a new form makes a new entry), without hashing the entry's fields."""
    key = (id(entry), backend)
    got = _FORMS.get(key)
    if got is None or got[0] is not entry:
        own = [f for f in entry.forms if f.backend == backend]
        got = _FORMS[key] = (entry, (*own, Form(entry.needs, entry.fn), *[f for f in entry.forms
                                                                          if f.backend is None]))
    return got[1]


def _view_for(needs: Iterable[str], view: Mapping) -> Mapping:
    """The view a form reads: the per-sample one when it compares samples and the backend has one."""
    samples = getattr(view, "samples", None)
    if samples is not None and any(PIECES[n].per_sample for n in needs if n in PIECES):
        return samples
    return view


def form(entry: Metric, view: Mapping) -> Form | None:
    """How `entry` is computed on `view`: the first form whose pieces are all native there, else the first whose
    pieces are all there at all, else None (the metric reads NaN)."""
    backend = getattr(view, "backend", "numpy")
    forms = _forms(entry, backend)
    if entry.fn is None:  # grad_norm: filled by the backward pass
        forms = tuple(f for f in forms if f.fn is not None)
    for f in forms:
        v = _view_for(f.needs, view)
        native = getattr(v, "native", None)
        if all((native(n) if native is not None else n in v) for n in f.needs):
            return f
    for f in forms:
        v = _view_for(f.needs, view)
        if all(n in v for n in f.needs):
            return f
    return None


def reads(piece: str, names: Iterable[str], backend: str = "numpy") -> list[str]:
    """The names among `names` whose metric reads `piece`, directly or through what it is built from, in one of
    its forms for `backend` (e.g. "tangents": the Jacobian pass is wanted)."""
    return [n for n in names if any(piece in depends_on(f.needs) for f in _forms(METRICS[n], backend))]


def read_by(names: Iterable[str], backend: str = "numpy") -> set[str]:
    """Every piece some form of the named metrics reads, and what those are built from: a `Pieces` view's
    `wanted`."""
    return depends_on(n for name in names for f in _forms(METRICS[name], backend) for n in f.needs)


def stages_of(names: Iterable[str]) -> set[str]:
    """The passes the named metrics need ("jacobian", "backward"), from the pieces their own functions read."""
    return stages(n for name in names for n in METRICS[name].needs)


def reading_metrics(names: Iterable[str], stage: str) -> list[str]:
    """The names among `names` measured in `stage` ("": the forward pass; "jacobian"; "backward")."""
    out = []
    for name in names:
        got = stages(METRICS[name].needs)
        if (stage in got) if stage else not got:
            out.append(name)
    return out


def evaluate(names: Iterable[str], view: Mapping, *, col: np.ndarray, is_input: bool) -> Reading:
    """Each named metric of one layer, (T,) each, from the pieces in `view` (a `Pieces` or a plain mapping).

    Metrics that read the gradient are left out (the backward pass fills
    them). col (T,) bool: collapsed states (rank-like metrics read 0 there).
    is_input: layer 0, which no activation produced (ReLU-only metrics: NaN).
    """
    out = Reading()
    T = col.shape[0]
    relu = None
    for name in names:
        entry = METRICS[name]
        if "gradient" in entry.needs:
            continue
        how = form(entry, view)
        if how is None:  # e.g. token metrics of a state without sequences
            out.values[name] = np.full(T, np.nan)
            continue
        if entry.relu_only:
            if relu is None:
                relu = not is_input and activation_entry(view["activation"]).relu_like
            if not relu:
                out.values[name] = np.full(T, np.nan)
                continue
        v = _view_for(how.needs, view)
        value = _call(name, how, [v[need] for need in how.needs], T)
        if isinstance(value, Sampled):
            if value.size is not None:
                out.sizes[name] = value.size
            if value.error is not None:
                out.errors[name] = np.full(T, value.error)
            value = _checked(name, value.value, T)
        out.values[name] = np.where(col, 0.0, value) if entry.rank_like else value
        sizes = [v.sizes[n] for n in how.needs if n in getattr(v, "sizes", {})]
        if sizes and name not in out.sizes:
            out.sizes[name] = min(sizes)
        error = _jackknife(name, how, v, col)
        if error is not None and name not in out.errors:
            out.errors[name] = error
    return out


def layer_values(names: Iterable[str], view: Mapping, *, col: np.ndarray, is_input: bool) -> dict[str, np.ndarray]:
    """`evaluate`'s values alone."""
    return evaluate(names, view, col=col, is_input=is_input).values


def _call(name: str, how: Form, args: list, T: int):
    value = how.fn(*args)
    return value if isinstance(value, Sampled) else _checked(name, value, T)


def _checked(name: str, value, T: int) -> np.ndarray:
    if not (isinstance(value, np.ndarray) and value.shape == (T,)):
        value = np.asarray(value, dtype=np.float64)
        if value.shape == () and T == 1:
            value = value.reshape(1)
        if value.shape != (T,):
            raise ValueError(f"The metric {name!r} must return one value per trial, shape ({T},). "
                             f"Got shape {value.shape} instead.")
    return value


def _jackknife(name: str, how: Form, view, col: np.ndarray) -> np.ndarray | None:
    """Delete-a-group jackknife standard error (T,) of a metric whose array pieces all have replicates, NaN-free
    only where the state is not collapsed (there the value is exact: 0); None without replicates."""
    reps = getattr(view, "replicates", {})
    arrays = [n for n in how.needs if not PIECES[n].scalar]
    if not arrays or not all(n in reps for n in arrays):
        return None
    args = [reps[n] if n in arrays else view[n] for n in how.needs]
    if col.all():
        return None
    g = len(reps[arrays[0]])
    v = np.asarray(how.fn(*args), dtype=np.float64)
    if v.shape != (g,):
        return None
    error = math.sqrt((g - 1) / g * ((v - v.mean()) ** 2).sum())
    return np.where(col, np.nan, error)
