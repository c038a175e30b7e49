"""`initscope inspect`: diagnose a user's own PyTorch model from the command line.

    initscope inspect path/to/file.py:factory --input data.npy [--init NAME] [--out DIR]

imports the factory (a function that returns the model), optionally loads a
state_dict (`--weights`, read with weights_only=True: never arbitrary
objects) or re-initializes it from the registry (`--init`), runs it on the
inputs (a .npy or .pt tensor, or `--input-shape 64,3,32,32` for standard
normal data), writes the same CSVs as `initscope run` plus layers.csv,
config.toml and report.html, and prints the per-layer table and the flags.
grad_norm differentiates `--loss` (output-norm, mse, cross-entropy or
random-projection; `initscope.torch.gradients`) against `--targets`.

The command lives on its own Typer app, `torch_app`, so that it is tested
alone (`main([...])`, `python -m initscope.cli_torch inspect ...`) and is
registered on the main CLI with `app.command("inspect")(inspect_command)`.
Bad input, a broken factory, and a model, loss or backward pass that raises
are one line on stderr ("initscope: error: ...", quoting the model's own
message) and exit status 2 (`BadInput`, mapped by `run_app` under either
app). `--out` is checked before the model is built. torch is imported only
when the command runs.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from initscope.cli.common import BadInput, Out, Overwrite, args_or_help, exit_process, output_folder, run_app, write_files
from initscope.core.engine import reads
from initscope.core.metrics import METRICS
from initscope.study.config import toml_text
from initscope.study.memory import check_estimate, inspect_estimate, memory_budget

__all__ = ["torch_app", "inspect_command", "main", "DEFAULT_OUT", "OUTPUT_FILES", "LOSSES"]

DEFAULT_OUT = Path("initscope-inspect")
# initscope.torch.gradients.LOSSES, repeated so that --loss is checked before torch is imported (a test compares them)
LOSSES = ("output-norm", "mse", "cross-entropy", "random-projection")
OUTPUT_FILES = ("metrics.csv", "spectra.csv", "projections.csv", "weight_norms.csv", "flags.csv", "layers.csv",
                "config.toml")

torch_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Diagnose a PyTorch model of your own, layer by layer.",
    pretty_exceptions_enable=False,
)


@torch_app.callback()
def _group() -> None:
    """Keeps `inspect` a named subcommand when this app runs alone."""


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise BadInput(f"The 'input-shape' parameter must be comma-separated integers >= 1, samples first "
                   f"(e.g. 64,3,32,32). Got {text!r} instead.")
    return shape


def _check_memory(shape: tuple[int, ...] | None, input_file: Path | None, limit: str | None) -> None:
    """Refuse at once inputs whose copies alone exceed the memory budget (before torch is imported)."""
    try:
        budget = memory_budget(limit)
        if shape is not None:
            check_estimate(inspect_estimate(shape), budget, "inspect", ",".join(map(str, shape)))
        elif input_file is not None and input_file.suffix.lower() == ".npy" and input_file.is_file():
            # The header alone gives the shape: nothing is loaded to find out it does not fit.
            import numpy as np

            try:
                fmt = np.lib.format
                with open(input_file, "rb") as fh:
                    version = fmt.read_magic(fh)
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    file_shape, _, file_dtype = read(fh)
            except (ValueError, OSError, EOFError, TypeError):
                return  # not a readable .npy: the loader says so, naming --input
            est = inspect_estimate(tuple(file_shape) or (1,), file_dtype.itemsize)
            check_estimate(est, budget, "inspect", str(input_file))
    except ValueError as exc:
        message = str(exc) if shape is not None else str(exc).replace("'input-shape' parameter", "'input' parameter")
        raise BadInput(message) from None


def _int(name: str, text: str | None, low: int, default: int, high: int = 2**31 - 1) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise BadInput(f"The '{name}' parameter must be an integer >= {low}. Got {text!r} instead.")
    if value > high:  # torch.manual_seed and SQLite stop at 64 bits; sizes far earlier
        raise BadInput(f"The '{name}' parameter must be an integer >= {low} and <= {high}. Got {text!r} instead.")
    return value


def _layout(text: str | None):
    """--layout: one layout for all ("tokens") or NAME=LAYOUT pairs ("GPT2Block=tokens,input=units")."""
    if text is None or "=" not in text:
        return text
    rules = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = part.rpartition("=")
        if not sep or not name:
            raise BadInput(f"The 'layout' parameter must be a layout or NAME=LAYOUT pairs separated by commas "
                           f"(e.g. GPT2Block=tokens,input=units). Got {text!r} instead.")
        rules[name.strip()] = value.strip()
    return rules


def _gain(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BadInput(f"The 'gain' parameter must be a finite number > 0. Got {text!r} instead.")
    return value


# long: a Typer command whose 22 options are its signature (34 lines); the body reads them in order (43)
@torch_app.command("inspect")
def inspect_command(
    factory: str = typer.Argument(..., metavar="FILE.py:FUNCTION",
                                  help="A function returning the model: path/to/file.py:name or package.module:name."),
    input_file: Optional[Path] = typer.Option(None, "--input", help="The inputs: a .npy or .pt tensor, samples first."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", metavar="N,...",
                                              help="Standard normal inputs of this shape instead, e.g. 64,3,32,32."),
    loss: Optional[str] = typer.Option(None, "--loss", metavar="|".join(LOSSES),
                                       help="The loss whose gradients grad_norm measures (default: mse with float "
                                            "--targets, cross-entropy with integer ones, else output-norm, or "
                                            "random-projection when the output is normalised, e.g. ends in "
                                            "LayerNorm)."),
    targets_file: Optional[Path] = typer.Option(None, "--targets",
                                                help="Targets (.npy/.pt) of the loss: floats shaped like the output "
                                                     "for mse, integer class ids for cross-entropy (without: "
                                                     "zeros for mse, seeded random ids for cross-entropy)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A state_dict file to load (weights_only=True)."),
    init: Optional[str] = typer.Option(None, help="Re-initialize every Linear/Conv weight with this initializer."),
    gain: Optional[str] = typer.Option(None, metavar="FLOAT", help="Gain of --init (default: the initializer's own)."),
    activation: str = typer.Option("relu", help="Activation whose recommended gain kaiming --init takes."),
    seed: Optional[str] = typer.Option(None, metavar="INT", help="Seed of --init, --input-shape and dropout (default: 0)."),
    mode: Optional[str] = typer.Option(None, help="train or eval (default: the mode the factory returns)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated module names or types to record (default: leaves)."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated subset of metrics (default: all)."),
    dtype: Optional[str] = typer.Option(None, help="float32 or float64: convert the model (default: as built)."),
    jacobian_samples: Optional[str] = typer.Option(None, "--jacobian-samples", metavar="INT",
                                                   help="Samples for jacobian_rank (default: 64)."),
    layout: Optional[str] = typer.Option(None, metavar="LAYOUT|NAME=LAYOUT,...",
                                         help="How multi-axis states read: units, channels-first or tokens, for all "
                                              "(e.g. tokens) or per module name or type (e.g. GPT2Block=tokens,"
                                              "input=units). Default: inferred from each module."),
    reference: Optional[str] = typer.Option(None, metavar="MODULE",
                                            help="The module whose output the scale and rank flags compare with, or "
                                                 "'input' (default: the input, or for token ids the embedding's "
                                                 "output and for images the first layer)."),
    max_rows: Optional[str] = typer.Option(None, "--max-rows", metavar="INT",
                                           help="Spectra of states with more rows use a seeded subset of this many "
                                                "(default: 8192); the sample size and standard error go to "
                                                "metrics.csv."),
    checkpoint: bool = typer.Option(True, "--checkpoint/--no-checkpoint",
                                    help="Recompute repeated blocks' activations in the gradients' backward pass "
                                         "instead of keeping them (less memory, one more forward pass); "
                                         "--no-checkpoint for blocks whose forward keeps state between calls."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", metavar="SIZE",
                                               help="Memory budget, e.g. 8GiB (default: 80% of available memory)."),
    out: Out = str(DEFAULT_OUT),
    overwrite: Overwrite = False,
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html (needs the 'report' extra)."),
    png: bool = typer.Option(False, "--png", help="Also write static PNG and GIF figures."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not print the tables."),
) -> None:
    """Run your model on a batch and write per-layer metrics, spectra, flags and report.html."""
    if (input_file is None) == (input_shape is None):
        raise BadInput("Give the inputs with exactly one of --input FILE or --input-shape N,... .")
    if init is not None and weights is not None:
        raise BadInput("Give either --weights (trained or saved weights) or --init (fresh ones), not both.")
    if gain is not None and init is None:
        raise BadInput("The 'gain' parameter applies to --init; give --init NAME with it.")
    if mode is not None and mode not in ("train", "eval"):
        raise BadInput(f"The 'mode' parameter must be one of ['train', 'eval']. Got {mode!r} instead.")
    if dtype is not None and dtype not in ("float32", "float64"):
        raise BadInput(f"The 'dtype' parameter must be one of ['float32', 'float64']. Got {dtype!r} instead.")
    if loss is not None and loss not in LOSSES:
        raise BadInput(f"The 'loss' parameter must be one of {list(LOSSES)}. Got {loss!r} instead.")
    if targets_file is not None and loss in ("output-norm", "random-projection"):
        raise BadInput(f"The 'targets' parameter is not read by --loss {loss}; give --loss mse (floating targets) "
                       "or --loss cross-entropy (class ids) with it.")
    shape = _shape(input_shape) if input_shape is not None else None
    _check_memory(shape, input_file, memory_limit)
    seed_value = _int("seed", seed, 0, 0, high=2**63 - 1)  # config.MAX_SEED, without importing the study
    jac = _int("jacobian-samples", jacobian_samples, 1, 64)
    rows = _int("max-rows", max_rows, 16, 8192)
    layout_value = _layout(layout)
    gain_value = _gain(gain)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BadInput("initscope inspect needs PyTorch: pip install 'initscope[torch]'.") from None

    with output_folder(out, command="inspect", overwrite=overwrite) as folder:
        result = _inspect_model(factory, input_file=input_file, shape=shape, targets_file=targets_file,
                                weights=weights, init=init, gain=gain_value, activation=activation,
                                seed=seed_value, mode=mode, layers=layers, metrics=metrics, dtype=dtype,
                                jacobian_samples=jac, layout=layout_value, reference=reference, max_rows=rows,
                                loss=loss, checkpoint=checkpoint)
        source = input_file if input_file is not None else f"standard normal {input_shape}"
        result.config.update(factory=factory, inputs=str(source))
        if weights is not None:
            result.config["weights"] = str(weights)
        given = {"--input": input_file, "--input-shape": input_shape, "--loss": loss, "--targets": targets_file,
                 "--weights": weights,
                 "--init": init, "--gain": gain, "--activation": activation if init else None, "--seed": seed,
                 "--mode": mode, "--layers": layers, "--metrics": metrics, "--dtype": dtype,
                 "--jacobian-samples": jacobian_samples, "--layout": layout, "--reference": reference,
                 "--max-rows": max_rows}
        flags = [] if checkpoint else ["--no-checkpoint"]
        result.config["command"] = " ".join(["initscope inspect", _quote(factory)] + [
            f"{flag} {_quote(str(value))}" for flag, value in given.items() if value is not None] + flags)
        _write(result, folder, report=report, png=png)
    if not quiet:
        _print(result, Path(out))


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _inspect_model(factory: str, *, input_file, shape, targets_file, weights, init, gain, activation, seed, mode,
                   layers, metrics, dtype, jacobian_samples, layout=None, reference=None, max_rows=8192, loss=None,
                   checkpoint=True):
    """Build the user's model, load or draw its weights and inputs, and inspect it; their errors are BadInput."""
    import torch

    from initscope.torch import (
        ModelError,
        build_model,
        initialize,
        inspect,
        load_factory,
        load_state_dict,
        load_tensor,
        random_inputs,
    )

    x = None
    try:
        model = build_model(load_factory(factory), factory)
        if dtype is not None:
            model = model.to(getattr(torch, dtype))
        if weights is not None:
            load_state_dict(model, weights)
        model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        x = random_inputs(shape, seed=seed, dtype=model_dtype) if shape is not None else load_tensor(input_file, "input")
        init_notes: list[str] = []  # what --init drew, kept (tied weights) and left alone
        if init is not None:  # the layer-wise ones (lsuv, well-spaced, looks-linear) fit to these inputs
            initialize(model, init, gain=gain, activation=activation, seed=seed, inputs=x, notes=init_notes)
        y = load_tensor(targets_file, "targets") if targets_file is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = inspect(model, x, targets=y, label=init or ("weights" if weights is not None else "model"),
                             layers=_names(layers), metrics=_names(metrics), mode=mode,
                             jacobian_samples=jacobian_samples, seed=seed, layout=layout, reference=reference,
                             max_rows=max_rows, loss=loss, checkpoint=checkpoint)
    except ModelError as exc:
        where = f" (inputs of shape {tuple(x.shape)})" if x is not None and "forward pass" in str(exc) else ""
        raise BadInput(f"{exc}{where}") from None
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    result.notes[:0] = init_notes
    return result


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _toml(config: dict) -> str:
    return toml_text(config, header="initscope inspect: the context of this diagnosis (`initscope report DIR` redraws it)")


def _write(result, folder: Path, *, report: bool, png: bool) -> None:
    """Every output into the output folder's temporary folder."""
    tables = {name: getattr(result, name) for name in ("metrics", "spectra", "projections", "weight_norms", "flags", "layers")}
    if len(result.jacobian_spectra):  # with jacobian_log_spread, as `initscope run` writes it
        tables["jacobian_spectra"] = result.jacobian_spectra
    write_files(folder, tables, {"config.toml": _toml(result.config)}, report_source=result if report else None, png=png)


def _number(v: float) -> str:
    if not math.isfinite(v):
        return "nan"
    return f"{v:.3g}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.2e}"


def _layer_table(result):
    """The per-layer rich Table: names, layout and shape, the metrics whose registry entry says `summary`, and
    the flags.

    With grad_norm (a metric reading the gradient), a param_kind column beside it says which parameters each
    layer's norm reads (layers.csv's column): the vanishing-gradient rule
    compares a layer only with the largest norm of its own kind. No cell is
    cut short: a name too long for the terminal wraps onto the next line
    (overflow "fold") instead of losing its tail to an ellipsis.
    """
    from rich.table import Table

    wide = result.metrics.pivot_table(index="layer", columns="metric", values="value", aggfunc="first", dropna=False)
    flags = result.flags.groupby("layer")["flag"].apply(lambda f: ", ".join(f)) if len(result.flags) else {}
    present = [m for m, entry in METRICS.items() if entry.summary and m in wide]
    gradient = set(reads("gradient", present))
    kinds = bool(gradient) and "param_kind" in result.layers
    label = result.config["init"][0]
    table = Table(title=f"{result.config['model']} ({label}), {result.config['samples']} samples, "
                        f"mode {result.config['mode']}", title_justify="left",
                  caption="grad_norm is compared only with the largest of the same param_kind" if kinds else None,
                  caption_justify="left")
    for column in ("layer", "module", "type", "layout", "shape", "units"):
        table.add_column(column, justify="right" if column in ("layer", "units") else "left", overflow="fold")
    for m in present:
        if m in gradient and kinds:
            table.add_column("param_kind", overflow="fold")
        table.add_column(METRICS[m].label, justify="right", overflow="fold")
    table.add_column("flags", overflow="fold")
    for row in result.layers.itertuples(index=False):
        cells = [str(row.layer), row.module, row.module_type, row.layout, row.shape, str(row.units)]
        for m in present:
            if m in gradient and kinds:
                cells.append(str(row.param_kind))
            cells.append(_number(float(wide.at[row.layer, m])))
        cells.append(flags.get(row.layer, "") if len(flags) else "")
        table.add_row(*cells)
    return table


def _print(result, out: Path) -> None:
    from rich.console import Console

    from initscope.torch import diagnose, flag_table

    console = Console(width=None if sys.stdout.isatty() else 180)
    console.print(_layer_table(result))
    for _, row in flag_table(result).iterrows():
        console.print(f"[bold]{row.iloc[0]}[/bold]")
        for column in row.index[1:]:
            console.print(f"  {column}: {row[column]}")
    for line in diagnose(result):
        console.print(line)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"wrote {out}/ ({', '.join(OUTPUT_FILES)}, report.html)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of this app alone; returns the exit status."""
    return run_app(torch_app, args_or_help(argv))


if __name__ == "__main__":
    exit_process(main())
