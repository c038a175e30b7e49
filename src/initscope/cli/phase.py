"""`initscope phase`: the order-to-chaos phase diagram in (σ_w², σ_b²), from theory and, with --measure, measured.

Writes into --out: phase_theory.csv (one row per grid point), phase_critical.csv
(σ_w² on the χ₁ = 1 line at each σ_b²), with --measure phase_measured.csv and
phase_decay.csv, phase.toml (the parameters) and report.html, all moved into
place together by the one output writer (`--out` checked before computing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from initscope.cli.common import (BadInput, MemoryLimit, Out, Overwrite, has_report_extra, memory_plan_warnings,
                                   output_folder, write_files)
from initscope.core.phase import critical_sigma_w2
from initscope.study.config import toml_text
from initscope.study.memory import memory_budget
from initscope.study.phase import PhaseConfig, config_dict, parse_grid, phase_study, plan_phase

__all__ = ["phase_command"]

_INTS = ("width", "depth", "networks", "samples", "seed", "nodes")


def phase_command(  # long: Typer reads every option from this signature (phase's and --train's)
    activation: str = typer.Option("tanh", "--activation", help="relu, leaky_relu, tanh, gelu, identity."),
    sigma_w2: str = typer.Option("1:4:25", "--sigma-w2", metavar="LIST|START:STOP:N",
                                 help="σ_w² grid: comma-separated values or START:STOP:N."),
    sigma_b2: Optional[str] = typer.Option(None, "--sigma-b2", metavar="LIST|START:STOP:N",
                                           help="σ_b² grid, the same way (default 0:0.3:13; with --train one "
                                                "value, default 0.05)."),
    measure: bool = typer.Option(False, "--measure/--no-measure",
                                 help="Also measure ξ_c in wide random networks on a coarser grid."),
    measure_sigma_w2: str = typer.Option("1.2,1.5,2,2.5,3,4", "--measure-sigma-w2", metavar="LIST|START:STOP:N",
                                         help="σ_w² values measured."),
    measure_sigma_b2: str = typer.Option("0.05,0.15,0.3", "--measure-sigma-b2", metavar="LIST|START:STOP:N",
                                         help="σ_b² values measured."),
    width: Optional[str] = typer.Option(None, "--width", metavar="INT",
                                        help="Width of the measured networks (default 256; with --train 100)."),
    depth: Optional[str] = typer.Option(None, "--depth", metavar="INT|LIST|START:STOP:N",
                                        help="Depth of the measured networks (default 30); with --train the depth "
                                             "axis, a list or START:STOP:N (default 10:120:12)."),
    networks: str = typer.Option("8", "--networks", metavar="INT", help="Networks per measured point."),
    samples: str = typer.Option("32", "--samples", metavar="INT", help="Inputs per group (two groups)."),
    seed: str = typer.Option("0", "--seed", metavar="INT", help="Seed of every random draw."),
    nodes: str = typer.Option("100", "--nodes", metavar="INT", help="Gauss–Hermite nodes of the theory."),
    out: Out = "initscope-phase",
    overwrite: Overwrite = False,
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html (needs plotly)."),
    memory_limit: MemoryLimit = None,
    train: bool = typer.Option(False, "--train", help="Train networks over σ_w² × depth on a real task: the "
                                                      "trainability diagram (Schoenholz et al. 2017)."),
    data: str = typer.Option("digits", "--data", help="--train: the task's dataset (its labels)."),
    steps: str = typer.Option("300", "--steps", metavar="INT", help="--train: training steps per network."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="--train: sgd, momentum or adam."),
    lr: str = typer.Option("0.01", "--lr", metavar="FLOAT", help="--train: learning rate."),
    batch_size: str = typer.Option("128", "--batch-size", metavar="INT", help="--train: samples per step, 0 = all."),
    workers: Optional[str] = typer.Option(None, "--workers", metavar="INT",
                                          help="--train: processes over cells (default: cores)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                            help="--train: a Dask scheduler to run the cells on."),
    store: Optional[Path] = typer.Option(None, "--store", metavar="FILE",
                                         help="--train: SQLite file of finished cells; a rerun resumes from it."),
    trained_below: Optional[str] = typer.Option(None, "--trained-below", metavar="LOSS",
                                                help="--train: a network 'trained' when its final loss is below "
                                                     "this (the predictors' AUC; default: the grid's median)."),
) -> None:
    """Draw the order-to-chaos phase diagram (χ₁ = 1 line, ξ_c and ξ_q) and optionally measure ξ_c."""
    if train:
        from initscope.cli.phase_train import train_command

        train_command(activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2 or "0.05",
                      depth=depth or "10:120:12", width=width or "100", networks=networks,
                      seed=seed, data=data, steps=steps, optimizer=optimizer, lr=lr, batch_size=batch_size,
                      workers=workers, scheduler=scheduler, store=store, out=out, overwrite=overwrite, report=report,
                      memory_limit=memory_limit, trained_below=trained_below)
        return
    sigma_b2 = sigma_b2 or "0:0.3:13"
    depth = depth or "30"
    width = width or "256"
    ints = {}
    for name, text in zip(_INTS, (width, depth, networks, samples, seed, nodes)):
        try:
            ints[name] = int(text)
        except ValueError:
            raise BadInput(f"The '{name}' parameter must be an integer. Got {text!r} instead.") from None
    if ints["seed"] < 0:
        raise BadInput(f"The 'seed' parameter must be an integer >= 0. Got {seed!r} instead.")
    try:
        config = PhaseConfig(activation=activation, sigma_w2=parse_grid(sigma_w2, "sigma_w2"),
                             sigma_b2=parse_grid(sigma_b2, "sigma_b2"), measure=measure,
                             measure_sigma_w2=parse_grid(measure_sigma_w2, "measure_sigma_w2"),
                             measure_sigma_b2=parse_grid(measure_sigma_b2, "measure_sigma_b2"), **ints)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    try:  # before the output folder exists: what cannot fit is refused at once
        budget = memory_budget(memory_limit)
        plan_phase(config, budget)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    with output_folder(out, command="phase", overwrite=overwrite) as folder:
        try:
            with memory_plan_warnings():
                result, critical = _study(config, budget)
        except (ValueError, TypeError) as exc:
            raise BadInput(str(exc)) from None
        _write(result, critical, folder, report=report)
    _print_summary(result, critical, Path(out))


def _study(config, budget):
    import pandas as pd

    result = phase_study(config, memory_limit=budget)
    critical = pd.DataFrame({"sigma_b2": list(config.sigma_b2),
                             "sigma_w2_critical": [critical_sigma_w2(config.activation, b, nodes=config.nodes)
                                                   for b in config.sigma_b2]})
    return result, critical


def command_line(config) -> str:
    """The `initscope phase` command that reproduces a result."""
    def grid(values):
        return ",".join(f"{v:g}" for v in values)

    parts = ["initscope phase", f"--activation {config.activation}", f"--sigma-w2 {grid(config.sigma_w2)}",
             f"--sigma-b2 {grid(config.sigma_b2)}"]
    if config.measure:
        parts += ["--measure", f"--measure-sigma-w2 {grid(config.measure_sigma_w2)}",
                  f"--measure-sigma-b2 {grid(config.measure_sigma_b2)}"]
        parts += [f"--{name} {getattr(config, name)}" for name in ("width", "depth", "networks", "samples", "seed")]
    parts.append(f"--nodes {config.nodes}")
    return " ".join(parts)


def _write(result, critical, folder: Path, *, report: bool) -> None:
    toml = toml_text(config_dict(result.config), header="initscope phase parameters")
    tables = {"phase_theory": result.theory, "phase_critical": critical}
    if result.config.measure:
        tables.update(phase_measured=result.measured, phase_decay=result.decay)
    texts = {"phase.toml": toml}
    if report and has_report_extra():
        from initscope.report.phase_page import build_phase_page

        texts["report.html"] = build_phase_page(result, critical, command=command_line(result.config), toml=toml)
    write_files(folder, tables, texts)


def _print_summary(result, critical, out: Path) -> None:
    import math

    for b, w in zip(critical["sigma_b2"], critical["sigma_w2_critical"]):
        where = f"σ_w² = {w:.4f}" if math.isfinite(w) else "no crossing in [0.1, 20]"
        typer.echo(f"σ_b² = {b:g}: χ₁ = 1 at {where}")
    if result.config.measure:
        m = result.measured
        for row in m.itertuples(index=False):
            typer.echo(f"σ_w² = {row.sigma_w2:g}, σ_b² = {row.sigma_b2:g}: ξ_c theory {row.xi_c_theory:.3g}, "
                       f"measured {row.xi_c_measured:.3g}; ξ_q theory {row.xi_q_theory:.3g}, "
                       f"measured {row.xi_q_measured:.3g}" + (f" ({row.note})" if row.note else ""))
    typer.echo(f"wrote {out}/")
