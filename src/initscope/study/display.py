"""What a run or an inspection shows in a notebook: the verdict and a compact table, as small HTML.

`RunResult._repr_html_` and `InspectResult._repr_html_` call these, so a
notebook cell that ends in `res` shows a few lines of words and one table
instead of a dump of every DataFrame; `summary_text` is the short plain
`repr`. Pure: tables in, strings out (every string escaped).
"""

from __future__ import annotations

import html
import math

import pandas as pd

from initscope.study.flags import diagnosis_lines, model_flags_table
from initscope.study.verdict import run_verdict

__all__ = ["run_html", "inspect_html", "run_repr", "compact_table", "COMPACT_METRICS"]

# The last layer's medians shown per initializer, with short headers.
COMPACT_METRICS = (("rms", "rms ×input"), ("effective_rank", "eff_rank"), ("numerical_rank", "num_rank"),
                   ("linear_r2", "linear_r2"), ("distance_corr", "distance_corr"), ("jacobian_rank", "jac_rank"))
_STYLE = ("<style>.initscope-result table{border-collapse:collapse;margin:.4em 0}"
          ".initscope-result td,.initscope-result th{border:1px solid #ddd;padding:2px 8px;text-align:right}"
          ".initscope-result th:first-child,.initscope-result td:first-child{text-align:left}"
          ".initscope-result ul{margin:.3em 0;padding-left:1.2em}.initscope-result p{margin:.3em 0}</style>")


def _num(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.3g}"


def compact_table(metrics: pd.DataFrame, inits: list[str]) -> pd.DataFrame:
    """One row per initializer: the last layer's medians over trials (rms relative to the input's)."""
    depth = int(metrics["layer"].max())
    med = metrics.groupby(["init", "layer", "metric"])["value"].median()
    rows = []
    for init in inits:
        row = {"init": init}
        for metric, header in COMPACT_METRICS:
            value = med.get((init, depth, metric), math.nan)
            if metric == "rms":
                base = med.get((init, 0, metric), math.nan)
                value = value / base if math.isfinite(base) and base > 0 else math.nan
            row[header] = value
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.dropna(axis=1, how="all")


def _table_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v if isinstance(v, str) else _num(float(v)))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def run_html(result) -> str:
    """A RunResult in a notebook: a one-line heading, the verdict, then the last layer's numbers per initializer."""
    cfg = result.config
    verdict = run_verdict(result.metrics, result.spectra, result.flags, config=cfg, gains=result.gains,
                          training=getattr(result, "training", None))
    table = compact_table(result.metrics, [v.init for v in verdict.verdicts])
    return (f'<div class="initscope-result">{_STYLE}<p><strong>initscope run</strong>: '
            f"{html.escape(run_repr(result))}</p>{verdict.to_html()}"
            f"<p>At layer {cfg.depth} (medians over trials):</p>{_table_html(table)}"
            "<p>res.show() displays the full report; res.metrics, res.spectra, … are the tidy tables.</p></div>")


def run_repr(result) -> str:
    """'RunResult: normal, sphere × 10 trials, depth 10, width 40, 100 samples (ball); 2,640 metric rows'."""
    cfg = result.config
    return (f"RunResult: {', '.join(cfg.init)} × {cfg.trials} trial{'s' if cfg.trials != 1 else ''}, "
            f"depth {cfg.depth}, width {cfg.width}, {cfg.samples} samples ({cfg.data}); "
            f"{len(result.metrics):,} metric rows")


def inspect_html(result) -> str:
    """An InspectResult in a notebook: the diagnosis lines, the flags per init label, and the layers table."""
    units = {init: dict(zip(part["layer"], part["units"]))
             for init, part in result.layers.groupby("init")} if "units" in result.layers else {}
    lines = diagnosis_lines(result.metrics, units) or ["no layer has a problem the rules flag"]
    flags = model_flags_table(result.metrics, result.flags, units)
    wide = result.metrics.pivot_table(index=["init", "layer"], columns="metric", values="value", aggfunc="median")
    shown = [m for m, _ in COMPACT_METRICS if m in wide.columns] + \
        [m for m in ("dead_fraction", "grad_norm") if m in wide.columns]
    layers = result.layers.set_index(["init", "layer"])
    table = wide[shown].join(layers[[c for c in ("module", "module_type", "units") if c in layers]]).reset_index()
    table = table[[c for c in ("layer", "module", "module_type", "units") if c in table] + shown]
    table = table.assign(**{c: table[c].astype(str) for c in ("layer", "module", "module_type", "units") if c in table})
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    notes = "".join(f"<p>note: {html.escape(n)}</p>" for n in result.notes)
    return (f'<div class="initscope-result">{_STYLE}<p><strong>initscope inspect</strong>: '
            f"{html.escape(str(result.config.get('model', 'model')))}, {len(result.layers)} layers</p>"
            f"<ul>{items}</ul>{notes}{_table_html(flags.astype(str))}{_table_html(table)}</div>")
