"""The per-layer summary table printed by `initscope run` (rich)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from initscope.core.metrics import METRICS
from initscope.study.flags import flags_table
from initscope.study.directions import with_lost_directions
from initscope.study.verdict import run_verdict


def summary_metrics() -> list[str]:
    """The table's metric columns: registry entries marked `summary`, in registry order (registered ones too)."""
    return [name for name, entry in METRICS.items() if entry.summary]


def layer_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over trials, per (init, layer, metric)."""
    g = metrics.groupby(["init", "layer", "metric"], sort=False)["value"]
    return g.agg(mean="mean", spread="std", count="count").reset_index()


def _num(v: float) -> str:
    """Three significant digits, short exponents: 6.27e5, 0.0414, 28.1."""
    text = f"{v:.3g}"
    return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _fmt(mean: float, spread: float, trials: int) -> str:
    if not math.isfinite(mean):
        return "nan"
    if trials > 1 and math.isfinite(spread):
        return f"{_num(mean)}±{_num(spread)}"
    return _num(mean)


_LAYER_WIDTH = 5  # "layer"


def column_groups(columns: list[tuple[str, list[str]]], width: int) -> list[list[tuple[str, list[str]]]]:
    """The columns (label, cells) in consecutive groups that each fit a table `width` characters wide
    beside the layer column: a narrow terminal gets the same numbers in more, narrower tables, never
    cut ones. A rich table takes each column's text plus 3 (padding and border), plus 1."""
    groups: list[list[tuple[str, list[str]]]] = [[]]
    used = 1 + _LAYER_WIDTH + 3
    for label, cells in columns:
        need = max([len(label), *map(len, cells)]) + 3
        if groups[-1] and used + need > width and label != "flags":
            groups.append([])
            used = 1 + _LAYER_WIDTH + 3
        groups[-1].append((label, cells))
        used += need
    if len(groups[-1]) == 1 and groups[-1][0][0] == "flags" and not any(groups[-1][0][1]) and len(groups) > 1:
        groups.pop()  # an empty flags column alone is not worth a table
    return groups


def print_verdict(result, console) -> None:
    """The verdict in words (`initscope.study.verdict`): one paragraph per initializer, then the notes."""
    from rich.markup import escape

    verdict = run_verdict(result.metrics, result.spectra, result.flags, config=result.config, gains=result.gains,
                          training=getattr(result, "training", None))
    console.print("[bold]Verdict[/bold]")
    for v in verdict.verdicts:
        console.print(f"[bold]{escape(v.title)}[/bold]: {escape(' '.join(v.sentences))}", highlight=False)
    for note in verdict.notes:
        console.print(f"note: {escape(note)}", highlight=False)


def print_summary(result, out: Path | None = None, console=None, *, verdict: bool = True) -> None:
    """Print one table per initializer (mean ± std over trials), the plain-words flags and (verdict) the
    verdict. The tables fit the console's width: fewer columns per table, never a cut number."""
    from rich.console import Console
    from rich.table import Table

    # A pipe or log file gets the full-width table rather than 80 squeezed columns.
    console = console or Console(width=None if sys.stdout.isatty() else 180)
    cfg = result.config
    summary = layer_summary(result.metrics)
    present = [m for m in summary_metrics() if m in cfg.metrics]

    flags = with_lost_directions(result.metrics, result.spectra, result.flags, cfg)
    for init in cfg.init:
        rows = summary[summary["init"] == init]
        gain = result.gains.get(init, float("nan"))
        columns: list[tuple[str, list[str]]] = [(METRICS[m].label, []) for m in present] + [("flags", [])]
        for layer in range(cfg.depth + 1):
            here = rows[rows["layer"] == layer].set_index("metric")
            for (_, cells), m in zip(columns, present):
                cells.append(_fmt(here.at[m, "mean"], here.at[m, "spread"], cfg.trials) if m in here.index else "")
            f = flags[(flags["init"] == init) & (flags["layer"] == layer)]
            columns[-1][1].append(", ".join(f"{k} ({n}/{cfg.trials})" for k, n in f["flag"].value_counts().items()))
        title = f"{init} (gain {gain:.4g}), {cfg.trials} trial(s): mean ± std over trials"
        for i, part in enumerate(column_groups(columns, console.width)):
            table = Table(title=title if i == 0 else f"{init} (continued)", title_justify="left")
            table.add_column("layer", justify="right", no_wrap=True)
            for label, _ in part:
                # Numbers are never cut or wrapped; only the flags' words may wrap.
                table.add_column(label, justify="left" if label == "flags" else "right", no_wrap=label != "flags")
            for layer in range(cfg.depth + 1):
                table.add_row(str(layer), *(cells[layer] for _, cells in part))
            console.print(table)
    ft = flags_table(result.metrics, flags)
    for _, row in ft.iterrows():
        console.print(f"[bold]{row.iloc[0]}[/bold]")
        for col in ft.columns[1:]:
            console.print(f"  {col}: {row[col]}")
    if verdict:
        print_verdict(result, console)
    if out is not None:
        console.print(f"wrote {out}/ (metrics.csv, spectra.csv, config.toml, …)")
