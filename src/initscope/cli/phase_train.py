"""`initscope phase --train`: the trainability diagram over σ_w² × depth (`initscope.study.trainability`).

Writes into --out: phase_trained.csv (sigma_w2, sigma_b2, depth, network, loss, test_loss, accuracy,
test_accuracy at the last step), phase_theory_lines.csv (ξ_c and 6ξ_c of the theory along σ_w²),
phase.toml and report.html, all moved into place together by the one output writer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from initscope.cli.common import BadInput, has_report_extra, output_folder, parse_workers, write_files
from initscope.cli.progress import DelayedProgress
from initscope.study.config import load_table, make_config, toml_text
from initscope.study.executors import open_executor
from initscope.study.memory import format_bytes, memory_budget
from initscope.study.phase import parse_grid
from initscope.study.predictors import best_predictors
from initscope.study.trainability import (CellStore, TrainGrid, cell_config, grid_predictors, plan_grid, run_grid,
                                          theory_lines)

__all__ = ["train_command", "parse_depths", "export_cells", "CELL_TABLES"]

_FLOPS_PER_S = 5e9  # one core's float64 matmul throughput, roughly: the time plan's unit


def parse_depths(text: str) -> tuple[int, ...]:
    """'10,20,40' or 'START:STOP:N' (rounded to integers, duplicates merged) as depths >= 1."""
    message = f"The 'depth' parameter must be a comma-separated list of integers >= 1 or START:STOP:N. Got {text!r} instead."
    try:
        values = parse_grid(text, "depth")
    except ValueError:
        raise ValueError(message) from None
    depths = sorted({int(round(v)) for v in values})
    if depths[0] < 1:
        raise ValueError(message)
    return tuple(depths)


def _grid(**kw):
    sigma_b2 = parse_grid(kw["sigma_b2"], "sigma_b2")
    if len(sigma_b2) != 1:
        raise ValueError(f"The 'sigma_b2' parameter must be one value with --train (σ_b² is fixed). "
                         f"Got {kw['sigma_b2']!r} instead.")
    ints = {}
    for name in ("width", "networks", "seed"):
        try:
            ints[name] = int(kw[name])
        except ValueError:
            raise ValueError(f"The '{name}' parameter must be an integer. Got {kw[name]!r} instead.") from None
    # The training fields are checked as `run` checks them (same messages).
    checked = make_config(data=kw["data"], target="dataset", steps=kw["steps"], optimizer=kw["optimizer"],
                          lr=kw["lr"], batch_size=kw["batch_size"], width=ints["width"], trials=ints["networks"],
                          seed=ints["seed"], activation=kw["activation"])
    return TrainGrid(sigma_w2=parse_grid(kw["sigma_w2"], "sigma_w2"), depth=parse_depths(kw["depth"]),
                     sigma_b2=sigma_b2[0], activation=checked.activation, width=checked.width,
                     networks=checked.trials, data=checked.data, steps=checked.steps, optimizer=checked.optimizer,
                     lr=checked.lr, batch_size=checked.batch_size, seed=checked.seed)


def _loss(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"The 'trained_below' parameter must be a finite loss > 0. Got {text!r} instead.")
    return value


def command_line(grid) -> str:
    def values(v):
        return ",".join(f"{x:g}" for x in v)

    return (f"initscope phase --train --activation {grid.activation} --sigma-w2 {values(grid.sigma_w2)} "
            f"--sigma-b2 {grid.sigma_b2:g} --depth {values(grid.depth)} --width {grid.width} --networks "
            f"{grid.networks} --data {grid.data} --steps {grid.steps} --optimizer {grid.optimizer} --lr {grid.lr:g} "
            f"--batch-size {grid.batch_size} --seed {grid.seed}")


def train_command(*, out, overwrite, report, memory_limit, workers, scheduler, store: Path | None,
                  trained_below: str | None = None, **fields) -> None:
    try:
        grid = _grid(**fields)
        n_workers = parse_workers(workers)
        sample = cell_config(grid, grid.sigma_w2[0], grid.depth[0])
        table = load_table(sample)
        outputs = int(table.y.max()) + 1 if table.y is not None else 1
        plan = plan_grid(grid, sample.samples, sample.input_dim, outputs)
        budget = memory_budget(memory_limit)
        threshold = None if trained_below is None else _loss(trained_below)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    slots_hint = n_workers or 1
    if plan.peak_bytes * slots_hint > budget:
        raise BadInput(f"The 'depth' parameter must keep a cell within the memory budget: the deepest cell "
                       f"({max(grid.depth)} layers) needs about {format_bytes(plan.peak_bytes)} per process, "
                       f"{slots_hint} at once, over the budget of {format_bytes(budget)}. Got {max(grid.depth)} instead.")
    typer.echo(f"plan: {plan.cells} cells of {grid.networks} networks, peak {format_bytes(plan.peak_bytes)} per "
               f"cell, {plan.flops / 1e9:.3g} GFLOP (about {plan.seconds(_FLOPS_PER_S):.0f} core-seconds at 5 GFLOP/s)",
               err=True)
    lines = theory_lines(grid)
    cells = CellStore(store) if store is not None else None
    try:
        with output_folder(out, command="phase", overwrite=overwrite) as folder:
            try:
                with open_executor(n_workers, scheduler) as (executor, slots), \
                        DelayedProgress("training cells") as bar:
                    trained, features = run_grid(grid, executor, slots, store=cells, progress=bar)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            predictors, threshold = grid_predictors(trained, features, threshold=threshold, seed=grid.seed)
            toml = toml_text({k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(grid).items()
                              if v is not None}, header="initscope phase --train parameters")
            texts = {"phase.toml": toml}
            if report and has_report_extra():
                from initscope.report.phase_page import build_trainability_page

                texts["report.html"] = build_trainability_page(trained, lines, grid, command=command_line(grid),
                                                               toml=toml, predictors=predictors,
                                                               threshold=threshold)
            write_files(folder, {"phase_trained": trained, "phase_theory_lines": lines,
                                 "phase_features": features, "phase_predictors": predictors}, texts)
    finally:
        if cells is not None:
            cells.close()
    _print(trained, lines, grid, Path(out))
    typer.echo(f"{best_predictors(predictors)} ('trained': final loss below {threshold:.3g}; "
               f"phase_predictors.csv)")


def _print(trained, lines, grid, out: Path) -> None:
    value = "test_accuracy" if trained["test_accuracy"].notna().any() else "test_loss"
    med = trained.groupby(["sigma_w2", "depth"])[value].median()
    for s, row in lines.set_index("sigma_w2").iterrows():
        cells = " ".join(f"{d}:{med.get((s, d), float('nan')):.2f}" for d in grid.depth)
        typer.echo(f"σ_w² = {s:g} (6ξ_c = {row['six_xi_c']:.3g}): {value} by depth {cells}")
    typer.echo(f"wrote {out}/")


CELL_TABLES = ("predictors", "trained", "features")


def export_cells(store: Path, table: str, csv: Path | None, parquet: Path | None, overwrite: bool, export_to) -> None:
    """`initscope results` of a `phase --train` store: one table over every grid in it (a `grid` column: the
    training it was made with), written through the results command's export (`export_to`)."""
    import pandas as pd

    if table not in CELL_TABLES:
        raise BadInput(f"The 'table' parameter must be one of {list(CELL_TABLES)} for a phase --train store. "
                       f"Got {table!r} instead.")
    cells = CellStore(store)
    try:
        frames = []
        for key in cells.keys():
            trained, features = cells.table(key), cells.features(key)
            typer.echo(f"{store}: {len(trained.groupby(['sigma_w2', 'depth'])):,} cells, {len(trained):,} networks "
                       f"({key})")
            if table == "predictors":
                frame, threshold = grid_predictors(trained, features)
                typer.echo(f"  {best_predictors(frame)} ('trained': final loss below {threshold:.3g})")
            else:
                frame = trained if table == "trained" else features
            frames.append(frame.assign(grid=key))
    finally:
        cells.close()
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for path, kind in ((csv, "csv"), (parquet, "parquet")):
        if path is None:
            continue
        with export_to(path, kind, overwrite) as folder:
            if kind == "csv":
                frame.to_csv(folder / path.name, index=False)
            else:
                frame.to_parquet(folder / path.name, index=False)
        typer.echo(f"wrote {path} ({len(frame):,} rows of {table})")
