"""The theory lines of the live metric panels: the report's closed forms and mean-field maps, as JSON.

`theory_payload(result)` -> {"curves": {metric: {init: {"layers", "values",
"label"}}}, "notes": [...]}: for rms and mean_cosine the report's closed forms
(`report.depth.theory_curves`: the second-moment recursion and the
correlation map, where `theory_applies`), for pre_q, pre_cosine and
jacobian_sq_mean the mean-field q-map, c-map and ∏χ₁ started from the
measured layer 0 (`report.meanfield`), and, as the report prints them, the
reasons an initializer gets no mean-field line. The same curves as the
report's dashed lines: both call the same functions on the same summaries.
Non-finite values (the maps' breakdown) are null, drawn as gaps.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["theory_payload", "THEORY_METRICS"]

THEORY_METRICS = ("rms", "mean_cosine", "pre_q", "pre_cosine", "jacobian_sq_mean")


def theory_payload(result) -> dict[str, Any]:
    """The dashed theory lines of the metric-vs-depth panels for a RunResult (see the module doc)."""
    from initscope.report._common import all_summaries
    from initscope.report.depth import mean_field_notes, theory_curves
    from initscope.report.tables import config_dict

    metrics = result.metrics
    used = metrics[metrics["metric"].isin(THEORY_METRICS)]
    if not len(used):
        return {"curves": {}, "notes": []}
    config = config_dict(result.config, metrics)
    summaries = all_summaries(used)
    curves: dict[str, dict[str, Any]] = {}
    for metric in THEORY_METRICS:
        for init, summary in summaries.get(metric, {}).items():
            found = theory_curves(summary, metric, init, config, used)
            if found is None:
                continue
            layers, values, label = found
            curves.setdefault(metric, {})[str(init)] = {
                "layers": [int(v) for v in layers],
                "values": [float(v) if math.isfinite(v) else None for v in values.tolist()],
                "label": label,
            }
    return {"curves": curves, "notes": mean_field_notes(used, config)}
