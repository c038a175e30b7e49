"""`initscope certify`: is any information lost on the way from the input to each layer?

The command takes the same config flags as `initscope run`, builds each
initializer's networks and data exactly as `run` does
(`initscope.study.model.materialize`), and certifies per layer that the map from the
input is injective on the data (`initscope.core.certify.certify`). It prints one
table per initializer and, with `--out DIR`, writes `DIR/certificate.csv`.

Exit status: 0 when every layer of every trial is certified, 3 when any is
not, 2 for bad input (one line on stderr), 1 for anything unexpected.
`initscope.cli.app` registers it as `initscope certify`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import typer

from initscope.cli.common import (
    BadInput,
    MemoryLimit,
    Overwrite,
    output_folder,
    say_ignored,
    with_config_flags,
    write_files,
)
from initscope.core.network import Architecture
from initscope.study.config import load_config, make_config
from initscope.study.memory import certify_estimate, check_estimate, memory_budget

__all__ = ["certify_command", "CERTIFICATE_FILE", "EXIT_NOT_CERTIFIED"]

CERTIFICATE_FILE = "certificate.csv"
EXIT_NOT_CERTIFIED = 3


@with_config_flags
def certify_command(
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file of config fields; flags override it."),
    out: Optional[str] = typer.Option(None, "--out", metavar="DIR", help="Folder for certificate.csv (default: print only)."),
    overwrite: Overwrite = False,
    rtol: Optional[str] = typer.Option(None, "--rtol", metavar="FLOAT", help="Collision tolerance relative to the state scale (default: 1e-6 float64, 1e-3 float32)."),
    fields: dict | None = None,
    quiet: bool = typer.Option(False, "--quiet", help="Do not print the tables."),
    memory_limit: MemoryLimit = None,
) -> None:
    """Certify per layer that no two samples merge and no input direction is lost (exit 0 yes, 3 no)."""
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        cfg = load_config(config_file, **given) if config_file else make_config(**given)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    say_ignored(fields, cfg)
    tolerance = _parse_rtol(rtol)

    try:  # certify holds every layer's parameters: refuse now what cannot fit
        est = certify_estimate(cfg)
        check_estimate(est, memory_budget(memory_limit), "certify", getattr(cfg, est.largest[2], None))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    with contextlib.ExitStack() as stack:
        folder = None if out is None else stack.enter_context(output_folder(out, command="certify", overwrite=overwrite))
        layers = _certificate(cfg, tolerance, quiet)
        if folder is not None:
            write_files(folder, {Path(CERTIFICATE_FILE).stem: layers}, {})
    if out is not None and not quiet:
        typer.echo(f"wrote {Path(out) / CERTIFICATE_FILE}")
    if not bool(layers["certified"].all()):
        raise typer.Exit(EXIT_NOT_CERTIFIED)


def _certificate(cfg, tolerance: float | None, quiet: bool):
    """The per-layer certificate of every initializer (one table), printed unless quiet."""
    import pandas as pd

    from initscope.core.certify import certify

    arch = Architecture(cfg.activation, cfg.norm, cfg.residual)
    tables = []
    for name in cfg.init:
        X, params = _network(cfg, name)
        cert = certify(X, params, arch, rtol=tolerance)
        tables.append(cert.layers.assign(init=name))
        if not quiet:
            _print_certificate(name, cert, cfg)
    layers = pd.concat(tables, ignore_index=True)
    return layers[["init", *[c for c in layers.columns if c != "init"]]]


def _parse_rtol(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text) if text.isascii() else float("nan")
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:  # core.certify's bound: 1 calls every pair a collision, 1e300 overflows
        raise BadInput(f"The 'rtol' parameter must be a finite number >= 0 and < 1. Got {text!r} instead.")
    return value


def _network(cfg, name: str):
    """X (T, n, d) and [(W, b)] of one initializer: the networks `initscope run` measures.

    With init_train on, the parameters are the trained ones, as `run` measures them.
    """
    from initscope.study.model import networks

    return networks(cfg, name)


def _print_certificate(name: str, cert, cfg) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    summary = cert.by_layer()
    verdict = "certified at every layer" if cert.certified else "NOT certified"
    table = Table(title=f"{name}: {verdict} ({cfg.trials} trial(s), input_dim {cert.input_dim}, rtol {cert.rtol:g})",
                  title_justify="left")
    for column, justify in (("layer", "right"), ("width", "right"), ("certified", "right"),
                            ("min rank", "right"), ("collisions", "right"), ("min separation", "right"),
                            ("first failure", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "first failure")
    for row in summary.itertuples(index=False):
        ok = f"{row.trials_certified}/{row.trials}"
        table.add_row(str(row.layer), str(row.width), ok if row.certified else f"[red]{ok}[/red]",
                      f"{row.min_rank}/{cert.input_dim}", str(row.collisions), f"{row.min_separation:.3g}",
                      row.reason)
    console.print(table)
    if any(cert.duplicates):
        console.print(f"note: {sum(cert.duplicates)} pair(s) of input rows coincide within rtol and count as one sample")

