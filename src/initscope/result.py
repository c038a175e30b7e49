"""One result for a study run and an inspection: `initscope.Result`.

    >>> res = initscope.run(trials=10)                  # a Result
    >>> res = initscope.torch.inspect(model, inputs)    # a Result too
    >>> res.metrics, res.spectra, res.flags, res.layers, res.theory   # tidy tables
    >>> res.config                                      # a Config, or an InspectContext
    >>> res                                             # in a notebook: the verdict and a compact table
    >>> res.show()                                      # the full report, inline and offline
    >>> res.write("out/")                               # the folder `initscope run|inspect --out` writes

The result is a face of the package, above the report (DESIGN.md,
"Architecture"): it imports the report and the output writer directly, so
nothing below it reaches up, and the notebook HTML is built here. The study
and the framework adapters hand it their tables; `run` here is the public
`initscope.run`. `RunResult` and `InspectResult`, the two types this one
replaces, stay importable for one release and warn (`DeprecationWarning`).
"""

from __future__ import annotations

import dataclasses
import functools
import html
import importlib.util
import inspect
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from initscope.report.notebook import show as show_report
from initscope.report.page import page_writer
from initscope.study import runner
from initscope.study.config import Config, config_to_toml, toml_text
from initscope.study.flags import diagnosis_lines, model_flags_table
from initscope.study.records import JACOBIAN_COLUMNS, THEORY_COLUMNS, RunRecords
from initscope.study.run_files import OPTIONAL_TABLES, RUN_TABLES, write_files
from initscope.study.verdict import run_verdict
from initscope.study.writer import Output, OutputError

__all__ = ["Result", "InspectContext", "run", "COMPACT_METRICS", "compact_table"]

# The last layer's medians shown per initializer, with short headers.
COMPACT_METRICS = (("rms", "rms ×input"), ("effective_rank", "eff_rank"), ("numerical_rank", "num_rank"),
                   ("linear_r2", "linear_r2"), ("distance_corr", "distance_corr"), ("jacobian_rank", "jac_rank"))
_STYLE = ("<style>.initscope-result table{border-collapse:collapse;margin:.4em 0}"
          ".initscope-result td,.initscope-result th{border:1px solid #ddd;padding:2px 8px;text-align:right}"
          ".initscope-result th:first-child,.initscope-result td:first-child{text-align:left}"
          ".initscope-result ul{margin:.3em 0;padding-left:1.2em}.initscope-result p{margin:.3em 0}</style>")
_INSPECT_HEADER = "initscope inspect: the context of this diagnosis (`initscope report DIR` redraws it)"


@dataclass(frozen=True)
class InspectContext(Mapping):
    """What an inspection ran on: the context its tables were measured in (config.toml, the report's config).

    init: the `init` labels (one per inspected model; `combine` joins them);
    model: the model's class name; samples, input_dim (units of one input
    sample), dtype and mode ("train"/"eval") of the pass; seed; metrics;
    reference: the state the scale and rank flags compare with; max_rows,
    max_sequences: the subset sizes of spectra and token metrics. With
    gradients: loss and checkpoint. From the command line: factory, inputs,
    weights and the command that reruns it. It reads as a mapping of the
    fields that are set (`ctx["model"]`, `dict(ctx)`), as the report's
    config section and config.toml show it.
    """

    init: tuple[str, ...]
    model: str
    samples: int
    input_dim: int
    dtype: str
    mode: str
    seed: int
    metrics: tuple[str, ...]
    reference: str
    max_rows: int
    max_sequences: int
    loss: str | None = None
    checkpoint: bool | None = None
    factory: str | None = None
    inputs: str | None = None
    weights: str | None = None
    command: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> InspectContext:
        """The context of a mapping with these field names (a TypeError names any other key)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"The 'config' parameter of an inspection must have only the keys {sorted(names)}. "
                            f"Got {unknown} instead.")
        return cls(**{k: tuple(v) if k in ("init", "metrics") else v for k, v in values.items()})

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if isinstance(key, str) and key in self._names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._names() if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns))


@dataclass(repr=False)
class Result:
    """The tidy tables of a study run or of an inspection, and their context (DESIGN.md's output contract).

    metrics: init, trial, layer, metric, value, then the context's columns
    (a run: one per config field; an inspection: sample_size, std_error and
    the layer columns). spectra: init, trial, layer, k, singular_value.
    projections: each layer's samples on its top three principal components.
    weight_norms: each unit's incoming weight-vector norm. flags: init,
    trial, layer, flag (overflow, collapsed, lost_directions, ...).
    config: the run's `Config`, or the inspection's `InspectContext`.
    gains: the gain each initializer used (a run). layers: an inspection's
    layers table (module names, layout, units, reference); None for a run.
    notes: plain-language remarks of an inspection. init_log, train_log:
    what data-driven initializers and initialization training did.
    jacobian_spectra: counts of log10 normalised Jacobian singular values
    (with jacobian_log_spread). theory: the closed-form and mean-field curves
    that hold for a run's config, long (init, metric, layer, value, curve;
    `initscope.study.overlays`), empty where none does (an inspected model).
    """

    metrics: pd.DataFrame
    spectra: pd.DataFrame
    projections: pd.DataFrame
    weight_norms: pd.DataFrame
    flags: pd.DataFrame
    config: Config | InspectContext
    gains: dict[str, float] = field(default_factory=dict)
    layers: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    init_log: pd.DataFrame = field(default_factory=lambda: _empty(("init", "trial", "layer", "quantity", "value")))
    train_log: pd.DataFrame = field(default_factory=lambda: _empty(("init", "trial", "step", "objective", "seconds")))
    jacobian_spectra: pd.DataFrame = field(default_factory=lambda: _empty(JACOBIAN_COLUMNS))
    theory: pd.DataFrame = field(default_factory=lambda: _empty(THEORY_COLUMNS))
    # With steps > 0 (`initscope.study.training`): training.csv, and metrics/spectra/flags with a `step` column
    training: pd.DataFrame = field(default_factory=lambda: _empty(("init", "trial", "step", "loss", "test_loss")))
    stepped: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.config, Mapping) and not isinstance(self.config, InspectContext):
            self.config = InspectContext.from_mapping(self.config)
        if not isinstance(self.config, (Config, InspectContext)):
            raise TypeError(f"The 'config' parameter of Result must be a Config or an InspectContext. "
                            f"Got {type(self.config).__name__} instead.")

    @classmethod
    def from_records(cls, records: RunRecords) -> Result:
        """The result of a study run's records (`initscope.study.runner.run`)."""
        return cls(**{f.name: getattr(records, f.name) for f in dataclasses.fields(records)})

    @property
    def kind(self) -> str:
        """"run" for a study run, "inspect" for an inspection: the command that writes such a folder."""
        return "run" if isinstance(self.config, Config) else "inspect"

    # --- display -----------------------------------------------------------------------------------

    def __repr__(self) -> str:
        """'Result: run of normal, sphere × 10 trials, depth 10, width 40, 100 samples (ball); 2,640 metric rows'."""
        cfg = self.config
        if isinstance(cfg, Config):
            what = (f"run of {', '.join(cfg.init)} × {cfg.trials} trial{'s' if cfg.trials != 1 else ''}, "
                    f"depth {cfg.depth}, width {cfg.width}, {cfg.samples} samples ({cfg.data})")
        else:
            what = f"inspection of {cfg.model} ({', '.join(cfg.init)}), {len(self.layers)} layers, {cfg.samples} samples"
        return f"Result: {what}; {len(self.metrics):,} metric rows"

    def _repr_html_(self) -> str:
        """In a notebook: a run's verdict and last layer's numbers, or an inspection's diagnosis and layers."""
        return _run_html(self) if self.kind == "run" else _inspect_html(self)

    def show(self, *, height: int = 900):
        """Display the full report inline in a notebook (self-contained, offline); elsewhere open it in a browser
        and return the page's path."""
        return show_report(self, height=height)

    # --- files -------------------------------------------------------------------------------------

    def tables(self) -> dict[str, pd.DataFrame]:
        """The CSV tables of the output folder, by name: the run's five, an inspection's layers, and the
        optional ones (`OPTIONAL_TABLES`: init_log, train_log, jacobian_spectra, theory) when they have rows."""
        out = {name: getattr(self, name) for name in RUN_TABLES}
        if self.layers is not None:
            out["layers"] = self.layers
        out.update({name: getattr(self, name) for name in OPTIONAL_TABLES if len(getattr(self, name))})
        out.update(self.stepped)  # a trained run's tables carry a `step` column
        if len(self.training):
            out["training"] = self.training
        return out

    def config_toml(self) -> str:
        """config.toml: a run's exact config (`initscope run --config` reruns it), or an inspection's context."""
        if isinstance(self.config, Config):
            return config_to_toml(self.config)
        return toml_text(dict(self.config), header=_INSPECT_HEADER)

    def write_into(self, folder: Path, *, report: bool = True, png: bool = False) -> None:
        """The output files into `folder`, normally an `Output`'s temporary folder (see `write`)."""
        write_files(folder, self.tables(), {"config.toml": self.config_toml()},
                    report=page_writer(self, png=png) if report else None)

    def write(self, out: str | os.PathLike, *, report: bool = True, png: bool = False,
              overwrite: bool = False) -> Path:
        """Write the folder `initscope run` (or `inspect`) writes with `--out out`, and return its path.

        The tables as CSV, config.toml and, with report (needs plotly),
        report.html (with png, figures/ too). The folder is written whole or
        not at all by initscope's one writer (`initscope.study.writer`); a
        folder holding files initscope did not write is refused (ValueError
        naming 'out') unless overwrite=True.
        """
        if report and importlib.util.find_spec("plotly") is None:
            raise ImportError("report.html needs plotly: pip install 'initscope[report]', or pass report=False.")
        try:
            with Output(out, command=self.kind, overwrite=overwrite) as folder:
                self.write_into(folder, report=report, png=png)
        except OutputError as exc:
            raise exc.renamed("out", "overwrite=True") from None
        return Path(out)


@functools.wraps(runner.run)
def run(config: Config | None = None, /, **kwargs: Any) -> Result:
    return Result.from_records(runner.run(config, **kwargs))


# help(initscope.run) shows the study's parameters, and what this face returns.
run.__doc__ = (runner.run.__doc__ or "").rstrip() + "\n\n    Returns an `initscope.Result`.\n"
run.__annotations__ = {**runner.run.__annotations__, "return": "Result"}
run.__signature__ = inspect.signature(runner.run).replace(return_annotation="Result")
run.__module__, run.__qualname__ = __name__, "run"


# --- notebook HTML -----------------------------------------------------------------------------------


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
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def _table_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v if isinstance(v, str) else _num(float(v)))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_html(result: Result) -> str:
    """A run in a notebook: a one-line heading, the verdict, then the last layer's numbers per initializer."""
    cfg = result.config
    verdict = run_verdict(result.metrics, result.spectra, result.flags, config=cfg, gains=result.gains)
    table = compact_table(result.metrics, [v.init for v in verdict.verdicts])
    return (f'<div class="initscope-result">{_STYLE}<p><strong>initscope run</strong>: '
            f"{html.escape(repr(result))}</p>{verdict.to_html()}"
            f"<p>At layer {cfg.depth} (medians over trials):</p>{_table_html(table)}"
            "<p>res.show() displays the full report; res.metrics, res.spectra, … are the tidy tables.</p></div>")


def _inspect_html(result: Result) -> str:
    """An inspection in a notebook: the diagnosis lines, the flags per init label, and the layers table."""
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
            f"{html.escape(str(result.config.model))}, {len(result.layers)} layers</p>"
            f"<ul>{items}</ul>{notes}{_table_html(flags.astype(str))}{_table_html(table)}</div>")


# --- the names this type replaces, for one release ---------------------------------------------------


class _Deprecated(type):
    """A deprecated name of `Result`: constructing one warns and builds a `Result` from the old argument
    order; `isinstance(x, Name)` is `isinstance(x, Result)`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Result:
        warnings.warn(deprecation(cls.__name__), DeprecationWarning, stacklevel=2)
        kwargs.update(zip(cls.order, args))
        return Result(**kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, Result)


class RunResult(metaclass=_Deprecated):
    """Deprecated: `initscope.Result` (a study run's result), kept for one release."""

    order = ("config", "metrics", "spectra", "projections", "weight_norms", "flags", "gains", "init_log")


class InspectResult(metaclass=_Deprecated):
    """Deprecated: `initscope.Result` (an inspection's result), kept for one release."""

    order = ("metrics", "spectra", "projections", "weight_norms", "flags", "layers", "config", "notes",
             "jacobian_spectra")


DEPRECATED = {"RunResult": RunResult, "InspectResult": InspectResult}


def deprecation(name: str) -> str:
    """The warning a deprecated name gives."""
    return (f"initscope's {name} is now initscope.Result (one type for runs and inspections); "
            f"the name {name} will be removed in the next release.")
