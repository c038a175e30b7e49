"""The verdict in words: what happened to each initializer's data, in plain sentences with numbers.

Pure: tidy tables in (metrics, spectra, flags, optionally a certificate),
sentences out. The report page puts them first, `initscope run` prints them
last and a notebook shows them as a Result's rich repr. The thresholds
are `initscope.study.flags`' (the scale band), so the words agree with the
flags table.

For each initializer (medians over trials unless a flag counts trials):
- scale: where rms leaves the band [0.1, 10]× the input's, and how the
  samples' spread (std, centred) changes per layer;
- overflow and collapse, from the flags table;
- lost directions (`initscope.study.directions`): the first layer from which
  fewer spectrum components stand above the noise floor than the input had;
- the certificate, when one was computed;
- what linear_r2 and distance_corr say at the last layer, and why they can
  disagree.
A run-wide note says why hidden-layer gradients are not measured under the
seed's zero readout.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from initscope.core.initializers import default_gain
from initscope.study.directions import LOST_DIRECTIONS, config_fields, kept_base, with_lost_directions
from initscope.study.flags import SCALE_BAND
from initscope.study.train_summary import summary, training_sentence

__all__ = ["Verdict", "RunVerdict", "run_verdict", "READOUT_NOTE"]

READOUT_NOTE = "hidden-layer gradients: not measured: the readout is zero, as in the post; use --readout init"


@dataclass(frozen=True)
class Verdict:
    """One initializer's verdict: a title ("orthogonal (gain 1)") and its sentences."""

    init: str
    title: str
    sentences: tuple[str, ...]

    def text(self) -> str:
        return f"{self.title}: " + " ".join(self.sentences)


@dataclass(frozen=True)
class RunVerdict:
    """Every initializer's verdict, then the run-wide notes."""

    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...]

    def lines(self) -> list[str]:
        """One line per initializer, then one per note (for a terminal)."""
        return [v.text() for v in self.verdicts] + [f"note: {n}" for n in self.notes]

    def to_html(self) -> str:
        """A <ul> of verdicts (initializer in bold) and the notes as paragraphs; every string escaped."""
        items = "".join(f"<li><strong>{html.escape(v.title)}</strong>: {html.escape(' '.join(v.sentences))}</li>"
                        for v in self.verdicts)
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in self.notes)
        return f'<ul class="verdict">{items}</ul>{notes}'


# ---- sentences ------------------------------------------------------------------


def _medians(metrics: pd.DataFrame, init: str) -> pd.DataFrame:
    """Median over trials: one row per layer, one column per metric."""
    rows = metrics[metrics["init"].astype(str) == init]
    return rows.groupby(["layer", "metric"], sort=True)["value"].median().unstack("metric")


def _x(ratio: float) -> str:
    """A ratio with three significant digits: 1.23×, 0.0312×, 2.1e-09×."""
    return f"{ratio:.3g}×"


def per_layer_words(factor: float) -> str:
    """How a quantity changes per layer: "halves", "shrinks 0.8×", "grows 4.5×", "holds steady"."""
    if not math.isfinite(factor):
        return ""
    if 0.45 <= factor <= 0.55:
        return "halves at every layer"
    if 1.9 <= factor <= 2.1:
        return "doubles at every layer"
    if factor < 0.95:
        return f"shrinks {_x(factor)} per layer"
    if factor > 1.05:
        return f"grows {_x(factor)} per layer"
    return "holds steady"


def _scale_sentence(med: pd.DataFrame, depth: int) -> list[str]:
    out = []
    if "rms" in med and math.isfinite(med["rms"].get(0, math.nan)) and med["rms"][0] > 0:
        ratio = med["rms"] / med["rms"][0]
        lo, hi = SCALE_BAND
        outside = ratio[(ratio.index >= 1) & ratio.notna() & ~ratio.between(lo, hi)]
        last = ratio.get(depth, math.nan)
        at_end = f"{_x(last)} the input's at layer {depth}" if math.isfinite(last) else f"not finite at layer {depth}"
        if len(outside):
            first = int(outside.index[0])
            out.append(f"the scale (rms) leaves [{lo:g}, {hi:g}]× the input's at layer {first} "
                       f"({_x(float(outside.iloc[0]))}) and is {at_end}.")
        else:
            out.append(f"the scale (rms) stays within [{lo:g}, {hi:g}]× the input's at every layer ({at_end}).")
    if "std" in med and math.isfinite(med["std"].get(0, math.nan)) and med["std"][0] > 0:
        finite = med["std"][(med.index >= 1) & np.isfinite(med["std"]) & (med["std"] > 0)]
        if len(finite):
            layer = int(finite.index[-1])
            ratio = float(finite.iloc[-1] / med["std"][0])
            words = per_layer_words(ratio ** (1.0 / layer))
            if words != "holds steady":
                out.append(f"The samples' spread (std) {words} ({_x(ratio)} the input's at layer {layer}).")
    return out


def _flag_sentence(flags: pd.DataFrame | None, init: str, flag: str, trials: int, words: str) -> str:
    if flags is None or not len(flags):
        return ""
    rows = flags[(flags["init"].astype(str) == init) & (flags["flag"].astype(str) == flag)]
    if not len(rows):
        return ""
    first = rows.groupby("trial")["layer"].min()
    return (f"From layer {int(first.min())} ({len(first)} of {trials} trial{'s' if trials != 1 else ''}"
            f"{f', median layer {int(first.median())}' if len(first) > 1 and first.nunique() > 1 else ''}) {words}")


def _gradient_overflow_sentence(flags: pd.DataFrame | None, init: str, trials: int) -> str:
    """The backward pass overflows from the top down, so it is named by its deepest layer."""
    if flags is None or not len(flags):
        return ""
    rows = flags[(flags["init"].astype(str) == init) & (flags["flag"].astype(str) == "gradient_overflow")]
    if not len(rows):
        return ""
    return (f"The gradients overflow (non-finite) in the backward pass from layer {int(rows['layer'].max())} down "
            f"({rows['trial'].nunique()} of {trials} trial{'s' if trials != 1 else ''}) while the states stay finite.")


def _directions_sentence(flags, init: str, trials: int, base: float, lost_known: bool) -> str:
    lost = _flag_sentence(flags, init, LOST_DIRECTIONS, trials,
                          f"fewer spectrum components than the input's {base:.3g} stand above the noise floor "
                          "(√eps of the states' size): those directions are effectively lost, since noise of that "
                          "size (float32 rounding is 1e-7) erases them for good.")
    if lost:
        return lost
    if lost_known and math.isfinite(base):
        return f"Every layer keeps the input's {base:.3g} directions above the noise floor."
    return ""


def _information_sentence(med: pd.DataFrame, depth: int, lost: bool) -> str:
    r2 = med["linear_r2"].get(depth, math.nan) if "linear_r2" in med else math.nan
    dc = med["distance_corr"].get(depth, math.nan) if "distance_corr" in med else math.nan
    parts = []
    if math.isfinite(r2):
        parts.append(f"linear_r2 {r2:.2f} (a linear read-out recovers {max(r2, 0.0):.0%} of the input's variance, "
                     "out of sample)")
    if math.isfinite(dc):
        parts.append(f"distance_corr {dc:.2f} (how well pairwise distances still follow the input's)")
    if not parts:
        return ""
    text = f"At layer {depth}: " + "; ".join(parts) + "."
    if math.isfinite(r2) and math.isfinite(dc):
        if r2 >= 0.9 and dc < 0.7:
            text += (" They disagree: the input can still be read back linearly, but the geometry of the samples is "
                     "bent (linear_r2 ignores how distances are stretched; distance_corr counts it).")
        elif r2 >= 0.9 and lost:
            text += (" linear_r2 still reads the lost directions: it works on the centred states in full precision, "
                     "below the floor they are judged against.")
        elif r2 < 0.5 and dc >= 0.8:
            text += (" They disagree: distances are kept, but not in a form a linear read-out recovers "
                     "(distance_corr sees the shape of the cloud, linear_r2 only linear access to the input).")
    return text


def _certificate_sentence(certificate: pd.DataFrame | None) -> str:
    if certificate is None or not len(certificate):
        return ""
    by_trial = certificate.groupby("trial")["certified"].all()
    failing = certificate[~certificate["certified"].astype(bool)]
    if by_trial.all():
        return f"The certificate holds: every layer of all {len(by_trial)} trials is injective on the data."
    first = int(failing["layer"].min())
    return (f"The certificate fails in {int((~by_trial).sum())} of {len(by_trial)} trials, "
            f"first at layer {first}.")


def _disagreement_note(metrics: pd.DataFrame, inits: list[str], depth: int) -> str:
    """A note when linear_r2 and distance_corr rank the initializers in different orders at the last layer."""
    last = metrics[(metrics["layer"] == depth) & metrics["metric"].isin(["linear_r2", "distance_corr"])]
    if len(inits) < 2 or last["metric"].nunique() < 2:
        return ""
    med = last.groupby(["metric", "init"])["value"].median().unstack("init").reindex(columns=inits)
    r2, dc = med.loc["linear_r2"], med.loc["distance_corr"]
    if r2.isna().any() or dc.isna().any():
        return ""
    by_r2 = list(r2.sort_values(ascending=False, kind="stable").index)
    by_dc = list(dc.sort_values(ascending=False, kind="stable").index)
    if by_r2 == by_dc:
        return ""
    return (f"linear_r2 and distance_corr rank the initializers differently at layer {depth} "
            f"(linear_r2: {' > '.join(by_r2)}; distance_corr: {' > '.join(by_dc)}). They ask different questions: "
            "linear_r2 whether a linear map can still read the input back, whatever the scale or the bending of the "
            "cloud; distance_corr whether the samples keep their relative distances. A network that shrinks every "
            "difference alike keeps linear_r2 and distance_corr; one that stretches some directions and squeezes "
            "others keeps linear_r2 but lowers distance_corr; one that folds the cloud can keep distances in part "
            "while no linear read-out recovers the input.")


def _title(init: str, gains: Mapping[str, float] | None, cfg: Mapping[str, Any]) -> str:
    gain = (gains or {}).get(init)
    if gain is None:
        gain = cfg.get("gain")
    if gain is None or (isinstance(gain, float) and math.isnan(gain)):
        try:
            gain = default_gain(init, str(cfg.get("activation", "relu")))
        except ValueError:  # an initializer this registry does not know (a table from elsewhere)
            return init
    return f"{init} (gain {float(gain):.4g})"


def _certificate_of(certificate, init: str):
    if certificate is None:
        return None
    if isinstance(certificate, Mapping):
        return certificate.get(init)
    if "init" in certificate.columns:
        return certificate[certificate["init"].astype(str) == init]
    return certificate


def run_verdict(metrics: pd.DataFrame, spectra: pd.DataFrame | None = None, flags: pd.DataFrame | None = None, *,
                config: Any = None, gains: Mapping[str, float] | None = None, certificate=None,
                lost_derived: bool = False, training: pd.DataFrame | None = None) -> RunVerdict:
    """Every initializer's verdict in sentences, and the run-wide notes.

    metrics, spectra, flags: a run's tidy tables (flags may lack the
    lost_directions rows: they are derived here from spectra and rms).
    config: a Config or mapping (else the metrics' config columns); gains:
    init -> resolved gain; certificate: a certify table (trial, layer,
    certified[, init]) or a mapping init -> table, when one was computed.
    lost_derived: flags already holds every lost_directions row (as `run()`'s
    flags do, also when there are none), so they are not derived again.
    training: a trained run's training.csv table: each verdict ends with how its training went.
    """
    trained = {s.init: training_sentence(s) for s in summary(training)} if training is not None and len(training) \
        else {}
    cfg = config_fields(config, metrics)
    inits = list(dict.fromkeys([*(str(i) for i in (cfg.get("init") or ())),
                                *(str(i) for i in metrics["init"].unique())]))
    inits = [i for i in inits if (metrics["init"].astype(str) == i).any()]
    depth = int(metrics["layer"].max()) if len(metrics) else 0
    lost_known = spectra is not None and len(spectra) > 0 and {"samples", "width", "input_dim"} <= set(cfg)
    if not lost_derived:
        flags = with_lost_directions(metrics, spectra, flags, cfg)
    out = []
    for init in inits:
        med = _medians(metrics, init)
        trials = int(metrics.loc[metrics["init"].astype(str) == init, "trial"].nunique())
        sentences = _scale_sentence(med, depth)
        sentences.append(_flag_sentence(flags, init, "overflow", trials, "the states overflow (non-finite)."))
        sentences.append(_gradient_overflow_sentence(flags, init, trials))
        sentences.append(_flag_sentence(flags, init, "collapsed", trials,
                                        "the states collapse to one point (all samples equal)."))
        base = med["numerical_rank"].get(0, math.nan) if "numerical_rank" in med else math.nan
        if lost_known and not math.isfinite(base):
            base = float(kept_base(metrics, spectra, cfg, init))
        directions = _directions_sentence(flags, init, trials, base, lost_known)
        sentences.append(directions)
        sentences.append(_certificate_sentence(_certificate_of(certificate, init)))
        sentences.append(_information_sentence(med, depth, lost=directions.startswith("From layer")))
        sentences.append(trained.get(init, ""))
        words = [s[0].upper() + s[1:] for s in sentences if s]
        out.append(Verdict(init, _title(init, gains, cfg), tuple(words)))
    notes = [_disagreement_note(metrics, inits, depth)]
    grads = metrics[(metrics["metric"] == "grad_norm") & (metrics["layer"] >= 1)]["value"]
    if str(cfg.get("readout")) == "zeros" and len(grads) and not np.any(grads.to_numpy(dtype=np.float64) != 0):
        notes.append(READOUT_NOTE)
    return RunVerdict(tuple(out), tuple(n for n in notes if n))
