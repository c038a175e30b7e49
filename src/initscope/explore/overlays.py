"""The theory lines of the live metric panels, as JSON: the run's theory table, drawn.

`theory_payload(result)` -> {"curves": {metric: {init: {"layers", "values",
"label"}}}, "notes": [...]}: the curves of the run's theory table
(`initscope.study.overlays`: for rms and mean_cosine the second-moment
recursion and the correlation map, where `theory_applies`; for pre_q,
pre_cosine and jacobian_sq_mean the mean-field q-map, c-map and ∏χ₁ started
from the measured layer 0) and, as the report prints them, the reasons an
initializer gets no mean-field line. The report's dashed lines draw the same
table. Non-finite values (the maps' breakdown) are null, drawn as gaps.
"""

from __future__ import annotations

import math
from typing import Any

from initscope.study.overlays import THEORY_METRICS, mean_field_notes, theory_lines, theory_table
from initscope.study.records import config_dict

__all__ = ["theory_payload", "THEORY_METRICS"]


def theory_payload(result) -> dict[str, Any]:
    """The dashed theory lines of the metric-vs-depth panels for a run's result (see the module doc)."""
    metrics = result.metrics
    used = metrics[metrics["metric"].isin(THEORY_METRICS)]
    if not len(used):
        return {"curves": {}, "notes": []}
    config = config_dict(result.config, metrics)
    table = getattr(result, "theory", None)
    lines = theory_lines(theory_table(used, config) if table is None else table)
    curves = {
        metric: {init: {"layers": [int(v) for v in layers],
                        "values": [float(v) if math.isfinite(v) else None for v in values.tolist()],
                        "label": label}
                 for init, (layers, values, label) in by_init.items()}
        for metric, by_init in lines.items()
    }
    ordered = {m: curves[m] for m in THEORY_METRICS if m in curves}
    return {"curves": ordered, "notes": mean_field_notes(used, config)}
