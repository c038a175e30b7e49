"""The theory lines of the live metric panels: the report's closed forms and mean-field maps, as JSON.

`theory_payload(result)` -> {"curves": {metric: {init: {"layers", "values",
"label"}}}, "notes": [...]}: for rms and mean_cosine the report's closed forms
(`report.depth.theory_curves`: the second-moment recursion and the
correlation map, where `theory_applies`), for pre_q, pre_cosine and
jacobian_sq_mean the mean-field q-map, c-map and ∏χ₁ started from the
measured layer 0 (`report.meanfield`), and, as the report prints them, the
reasons an initializer gets no mean-field line. The same curves as the
report's dashed lines (`report.depth.theory_lines`, the function its figure
uses). Non-finite values (the maps' breakdown) are null, drawn as gaps.
"""

from __future__ import annotations

import math
from typing import Any

from initscope.report.depth import mean_field_notes, theory_lines
from initscope.report.tables import config_dict

__all__ = ["theory_payload", "THEORY_METRICS"]

THEORY_METRICS = ("rms", "mean_cosine", "pre_q", "pre_cosine", "jacobian_sq_mean")


def theory_payload(result) -> dict[str, Any]:
    """The dashed theory lines of the metric-vs-depth panels for a RunResult (see the module doc)."""
    metrics = result.metrics
    used = metrics[metrics["metric"].isin(THEORY_METRICS)]
    if not len(used):
        return {"curves": {}, "notes": []}
    config = config_dict(result.config, metrics)
    curves = {
        metric: {init: {"layers": [int(v) for v in layers],
                        "values": [float(v) if math.isfinite(v) else None for v in values.tolist()],
                        "label": label}
                 for init, (layers, values, label) in by_init.items()}
        for metric, by_init in theory_lines(used, config).items()
    }
    ordered = {m: curves[m] for m in THEORY_METRICS if m in curves}
    return {"curves": ordered, "notes": mean_field_notes(used, config)}
