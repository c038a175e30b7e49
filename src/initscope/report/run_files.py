"""The files of an output folder: a run's CSVs, config.toml and report.html.

These write into a folder as they are given one, normally the temporary folder
of an `initscope.report.writer.Output`, which then puts them in place whole.
"""

from __future__ import annotations

from pathlib import Path

from initscope.report.page import write_page
from initscope.study.config import config_to_toml

__all__ = ["RUN_TABLES", "write_files", "write_run"]

RUN_TABLES = ("metrics", "spectra", "projections", "weight_norms", "flags")


def write_files(folder: Path, tables: dict, texts: dict[str, str], *, report_source=None, png: bool = False) -> None:
    """Tables (name -> DataFrame, as NAME.csv), texts (file name -> str) and, given a report source,
    report.html (needs plotly; with png, figures/ too) into `folder`, normally an `Output`'s."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    if report_source is not None:
        write_page(report_source, folder / "report.html", png=png)


def write_run(folder: Path, result, *, report: bool, png: bool = False) -> None:
    """The files of a run folder (the CSVs, config.toml, report.html when asked for) of a `RunResult`."""
    tables = {name: getattr(result, name) for name in RUN_TABLES}
    # What data-driven initializers did (LSUV iterations), init-training histories and the Jacobians'
    # singular-value histograms (with jacobian_log_spread), when there is any.
    tables.update({name: getattr(result, name) for name in ("init_log", "train_log", "jacobian_spectra")
                   if len(getattr(result, name))})
    tables.update(getattr(result, "stepped", None) or {})  # a trained run's tables carry a `step` column
    if len(getattr(result, "training", ())):
        tables["training"] = result.training
    write_files(folder, tables, {"config.toml": config_to_toml(result.config)},
                report_source=result if report else None, png=png)
