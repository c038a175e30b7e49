"""The files of an output folder: a run's CSVs, config.toml and report.html.

These write into a folder as they are given one, normally the temporary folder
of an `initscope.study.writer.Output`, which then puts them in place whole.
The report page is built above this layer: a caller that wants one passes a
`report(folder)` callable that writes it (`initscope.report.page.page_writer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from initscope.study.config import config_to_toml

__all__ = ["RUN_TABLES", "OPTIONAL_TABLES", "write_files", "write_run"]

RUN_TABLES = ("metrics", "spectra", "projections", "weight_norms", "flags")
OPTIONAL_TABLES = ("init_log", "train_log", "jacobian_spectra", "theory")  # written when they have rows

ReportWriter = Optional[Callable[[Path], object]]


def write_files(folder: Path, tables: dict, texts: dict[str, str], *, report: ReportWriter = None) -> None:
    """Tables (name -> DataFrame, as NAME.csv), texts (file name -> str) and, given `report`,
    whatever it writes (report.html, figures/) into `folder`, normally an `Output`'s."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    if report is not None:
        report(folder)


def write_run(folder: Path, result, *, report: ReportWriter = None) -> None:
    """The files of a run folder (the CSVs, config.toml, and what `report` writes) of a run's result."""
    tables = {name: getattr(result, name) for name in RUN_TABLES}
    # What data-driven initializers did (LSUV iterations), init-training histories, the Jacobians'
    # singular-value histograms (with jacobian_log_spread) and the theory curves, when there is any.
    tables.update({name: getattr(result, name) for name in OPTIONAL_TABLES if len(getattr(result, name))})
    tables.update(getattr(result, "stepped", None) or {})  # a trained run's tables carry a `step` column
    if len(getattr(result, "training", ())):
        tables["training"] = result.training
    write_files(folder, tables, {"config.toml": config_to_toml(result.config)}, report=report)
