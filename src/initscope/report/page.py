"""Assemble the figures into one self-contained HTML page and write it atomically."""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from pathlib import Path
from typing import Any

from initscope import __version__
from initscope.report._common import figure_html
from initscope.report.depth import metric_depth_spec
from initscope.report.flags import NEVER, NOT_MEASURED, flags_table
from initscope.report.geometry import layer_projection_spec
from initscope.report.jacobian import JACOBIAN_SECTION, jacobian_spectrum_figure
from initscope.report.modules import layer_names
from initscope.report.spectra import spectrum_animation_spec, spectrum_heatmap_spec
from initscope.report.static import write_static
from initscope.report.tables import RunTables, as_tables
from initscope.report.training import TRAINING_SECTION, training_html
from initscope.report.weights import weight_norm_spec
from initscope.study.atomic import atomic_write
from initscope.study.writer import Output, OutputError
from initscope.study import directions as study_directions
from initscope.study.config import toml_text
from initscope.study.flags import model_context, model_flags_table
from initscope.study.verdict import run_verdict

__all__ = ["write_report", "write_page", "page_writer", "build_page", "report_specs", "command_line", "inspect_snippet",
           "SECTIONS"]

# (section id, heading, what the reader should look for)
SECTIONS = (
    ("layers-3d", "Data at every layer",
     "The samples projected on each layer's top three principal components, coloured by the target. "
     "Drag the slider or press play to move through the layers. <em>axes: one range for all layers</em> "
     "keeps the axes fixed, so growth or shrinkage of scale shows; <em>fit each layer</em> shows the shape, "
     "with true proportions between the components."),
    ("weight-norms", "Weight-vector norms",
     "Each neuron's weight-vector 2-norm. A norm above 1 tends to grow a unit's input, below 1 to shrink it."),
    ("spectra", "Singular-value spectra across depth",
     "Singular values of the centred states, layer by layer. A spectrum that drops to the dotted noise floor "
     "has lost those directions."),
    ("spectrum-heatmap", "Spectrum heat map",
     "The same spectra for all layers at once. Below the dashed line the components are at the noise floor "
     "σ₁·√eps of a Gram-matrix spectrum."),
    ("metrics-depth", "Metrics over depth",
     "Every metric of the run, layer by layer: median over trials with a 10–90% band; dashed lines are theory "
     "where its assumptions hold (ReLU, zero shifts, no normalization, no residual)."),
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
header, section { max-width: 1280px; margin: 0 auto; padding: 12px 24px; }
header { border-bottom: 1px solid #ddd; }
h1 { font-size: 1.6em; margin: 0.3em 0; }
h2 { font-size: 1.25em; margin: 0.8em 0 0.3em; border-top: 1px solid #e4e4e4; padding-top: 0.8em; }
nav a { margin-right: 1em; }
p.note { color: #555; margin: 0.2em 0 0.6em; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.92em; background: white; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.never { color: #2a7a2a; }
td.hit { color: #a14a00; font-weight: 600; }
ul.verdict { max-width: 70em; padding-left: 1.2em; }
ul.verdict li { margin: 0.45em 0; line-height: 1.45; }
pre { background: #f4f4f4; border: 1px solid #ddd; padding: 8px; white-space: pre-wrap; overflow-wrap: anywhere; }
.figure { background: white; border: 1px solid #e4e4e4; }
.figure > div { height: auto !important; }
"""


def report_specs(tables: RunTables) -> dict[str, dict]:
    """The page's figures by section id, each a plain plotly spec (dicts and numpy arrays)."""
    config = tables.config
    seed = int(config.get("seed") or 0)
    modules = layer_names(tables.metrics)  # an inspected model's module names; None for a run
    specs = {
        "layers-3d": layer_projection_spec(tables.projections, config=config, seed=seed, modules=modules),
        "weight-norms": weight_norm_spec(tables.weight_norms, config=config),
        "spectra": spectrum_animation_spec(tables.spectra, config=config, modules=modules),
        "spectrum-heatmap": spectrum_heatmap_spec(tables.spectra, config=config, modules=modules),
        "metrics-depth": metric_depth_spec(tables.metrics, config=config, theory=tables.theory, modules=modules),
    }
    if _has_jacobian_spectra(tables):
        figure = jacobian_spectrum_figure(tables.jacobian_spectra, tables.metrics, config=config, theory=tables.theory)
        specs["jacobian-spectrum"] = figure.to_plotly_json()
    return specs


def _has_jacobian_spectra(tables: RunTables) -> bool:
    return getattr(tables, "jacobian_spectra", None) is not None and len(tables.jacobian_spectra) > 0


def _sections(tables: RunTables) -> tuple:
    """SECTIONS, and the Jacobian spectrum's when the run measured it (jacobian_log_spread)."""
    if not _has_jacobian_spectra(tables):
        return SECTIONS

    return SECTIONS + (JACOBIAN_SECTION,)


def command_line(config: dict[str, Any]) -> str:
    """The `initscope run` command that reproduces a run, one flag per config field."""
    parts = ["initscope run"]
    for name, value in config.items():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value in ((), []):
            continue  # unset, or an empty list (measure_at's default)
        flag = "--" + name.replace("_", "-")
        values = value if isinstance(value, (tuple, list)) else [value]
        parts.append(f"{flag} {_shell_quote(','.join(_flag_value(v) for v in values))}")
    return " ".join(parts)


def inspect_snippet(config: dict[str, Any]) -> str:
    """The Python that reproduces an inspection made with `initscope.torch.inspect` (there is no command for it)."""
    labels = [str(label) for label in config.get("init", ("model",))]
    args = [f"mode={config['mode']!r}"] if config.get("mode") else []
    if config.get("seed") is not None:
        args.append(f"seed={int(config['seed'])}")
    lines = [
        "import initscope.torch as it",
        "from initscope.report import write_report",
        "",
        f"model = ...   # your {config.get('model', 'model')}, with the weights it had",
        f"inputs = ...  # the same {config.get('samples', 'n')} samples it was inspected on",
    ]
    calls = [f"it.inspect(model, inputs, label={label!r}, {', '.join(args)})".replace(", )", ")") for label in labels]
    if len(calls) == 1:
        lines.append(f"result = {calls[0]}")
    else:
        lines.append("# one inspection per label (re-initialize the model between them), then combined:")
        lines.append("result = it.combine(" + ", ".join(calls) + ")")
    lines.append('write_report(result, "report.html")')
    return "\n".join(lines)


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _shell_quote(text: str) -> str:
    safe = all(ch.isalnum() or ch in "-_.,:/+=@%" for ch in text) and text
    return text if safe else "'" + text.replace("'", "'\"'\"'") + "'"


def _toml(config: dict[str, Any]) -> str:
    return toml_text(config)


def with_lost_directions(tables: RunTables) -> RunTables:
    """The tables with the lost_directions flags (`initscope.study.directions`) added when a run lacks them."""
    import dataclasses

    return dataclasses.replace(tables, flags=study_directions.with_lost_directions(tables.metrics, tables.spectra, tables.flags, tables.config))


def _verdict_html(tables: RunTables) -> str:
    """The verdict in words (`initscope.study.verdict`), the page's first section."""
    verdict = run_verdict(tables.metrics, tables.spectra, tables.flags, config=tables.config,
                          training=_training(tables))
    return ('<section id="verdict"><h2>Verdict</h2><p class="note">What happened to the data under each '
            "initializer, in words (medians over trials; the sections below show it).</p>"
            f"{verdict.to_html()}</section>")


def _training(tables: RunTables):
    """A trained run's training table, or None."""
    training = getattr(tables, "training", None)
    return training if training is not None and len(training) else None


def _flags_html(tables: RunTables) -> str:
    model = "module" in tables.metrics.columns  # an inspected model: cells name the module of each layer
    if model:
        table = model_flags_table(tables.metrics, tables.flags, *model_context(tables.layers))
    else:
        table = flags_table(tables.metrics, tables.flags)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.itertuples(index=False):
        cells = [f"<th>{html.escape(str(row[0]))}</th>"]
        for value in row[1:]:
            text = str(value)
            css = "never" if text == NEVER else ("" if text.startswith(NOT_MEASURED) else "hit")
            cells.append(f'<td class="{css}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = ("For each initializer, the first hidden layer where something goes wrong. "
            "Scale, rank and dead units use the median over trials, compared with the input (layer 0); "
            "overflow, collapse and lost directions count any trial.")
    if model:
        note = ("For each label, the first recorded layer, named by its module, where something goes wrong. "
                "Scale and rank are compared with the reference state (layers.csv); gradients with the largest "
                "layer of the same parameter kind (weights, embeddings, norm γ/β).")
    return (
        '<section id="flags"><h2>Flags</h2>'
        f'<p class="note">{note}</p>'
        f'<table class="flags"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></section>'
    )


def _config_html(tables: RunTables, png_files: list[Path], page: Path) -> str:
    config = dict(tables.config)
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_display(v))}</td></tr>" for k, v in config.items()
    )
    figures = ""
    if png_files:
        links = " ".join(
            f'<a href="{html.escape(os.path.relpath(f, page.parent).replace(os.sep, "/"))}">{html.escape(f.name)}</a>'
            for f in png_files
        )
        figures = f"<p>Static figures: {links}</p>"
    if config.get("command"):
        # Not a `run` (e.g. `initscope inspect` of a torch model): its own command reproduces it.
        rerun = f"<p>Rerun with:</p><pre>{html.escape(str(config['command']))}</pre>"
    elif config.get("model"):
        # An inspection made from Python: no command exists for it, the API call does.
        rerun = f"<p>Rerun from Python:</p><pre>{html.escape(inspect_snippet(config))}</pre>"
    else:
        rerun = ("<p>Rerun with the config file saved next to this page:</p>"
                 "<pre>initscope run --config config.toml --out DIR\ninitscope report DIR</pre>"
                 f"<p>or with flags:</p><pre>{html.escape(command_line(config))}</pre>")
    return (
        '<section id="config"><h2>Config and reproduction</h2>'
        f"<p>initscope {html.escape(__version__)}, seed {html.escape(_display(config.get('seed')))}.</p>"
        f"{rerun}"
        f"<p>config.toml:</p><pre>{html.escape(_toml(config))}</pre>"
        f'<table class="config"><tbody>{rows}</tbody></table>{figures}</section>'
    )


def _display(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value)
    return str(value)


def build_page(tables: RunTables, *, png_files: list[Path] | None = None, page: Path | None = None) -> str:
    """The report as one HTML string: plotly.js inline once, then one figure per section."""
    from plotly.offline import get_plotlyjs

    tables = with_lost_directions(tables)
    figures = report_specs(tables)
    config = tables.config
    inits = ", ".join(str(i) for i in config.get("init", ()))
    trained = (TRAINING_SECTION + ("",),) if _training(tables) is not None else ()
    nav = " ".join(f'<a href="#{sid}">{html.escape(title)}</a>'
                   for sid, title, _ in (("verdict", "Verdict", ""), ("flags", "Flags", ""), *trained,
                                         *_sections(tables)))
    sections = [_verdict_html(tables), _flags_html(tables)]
    if trained:  # a trained run (steps > 0): its section follows the step-0 diagnosis
        sections.append(training_html(tables.training, (tables.stepped or {}).get("metrics")))
    for sid, title, note in _sections(tables):
        extra = ""
        meta = figures[sid]["layout"].get("meta")
        if sid == "layers-3d" and isinstance(meta, dict) and meta.get("shown", 0) < meta.get("samples", 0):
            extra = (f'<p class="note"><strong>Downsampled:</strong> showing {meta["shown"]:,} of '
                     f'{meta["samples"]:,} samples, the same random subset at every layer, to keep the page light.</p>')
        sections.append(
            f'<section id="{sid}"><h2>{html.escape(title)}</h2><p class="note">{note}</p>{extra}'
            f'<div class="figure">{figure_html(figures[sid], f"fig-{sid}")}</div></section>'
        )
    sections.append(_config_html(tables, png_files or [], page or Path("report.html")))
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>initscope report: {html.escape(inits)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>initscope report</h1><p>Initializers: {html.escape(inits)}. "
        f"initscope {html.escape(__version__)}, seed {html.escape(_display(config.get('seed')))}, "
        f"written {stamp}.</p><nav>{nav}</nav></header>"
        + "".join(sections)
        + "</body></html>\n"
    )


def write_report(result_or_tables, path, *, png: bool = False, overwrite: bool = False) -> Path:
    """Write the interactive report to `path` and return it.

    result_or_tables: an `initscope.Result`, the `RunTables` of `load_run`, or a
    mapping of tables. With `png=True`, static PNGs of every figure and GIFs
    of the layer views and spectra go to a `figures/` folder beside the page
    (matplotlib, no browser needed). The files go through initscope's one
    writer (`initscope.study.writer.Output`): written under temporary names
    and renamed, so a failed run leaves no half-written page, and recorded in
    the folder's `.initscope` marker. An existing page (or figure) that
    initscope did not write is refused (ValueError naming 'path') unless
    overwrite=True; one it wrote is replaced.
    """
    tables = as_tables(result_or_tables)
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"The 'path' parameter of write_report must end in .html. Got {str(path)!r} instead.")
    try:
        with Output(path.parent, command="report", replace=False, writes=(path.name,),
                    overwrite=overwrite) as folder:
            write_page(tables, folder / path.name, png=png)
    except OutputError as exc:
        raise exc.renamed("path", "overwrite=True") from None
    return path


def write_page(result_or_tables, path, *, png: bool = False) -> Path:
    """`write_report` into a folder that is already an `Output`'s temporary folder: the page (and with
    png, figures/ beside it), each file written under a temporary name and renamed."""
    tables = as_tables(result_or_tables)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png_files: list[Path] = []
    if png:
        png_files = write_static(tables, path.parent / "figures")
    atomic_write(path, build_page(tables, png_files=png_files, page=path).encode("utf-8"))
    return path


def page_writer(result_or_tables, *, png: bool = False):
    """A `report(folder)` callable for the output writer (`initscope.study.run_files`): it writes
    report.html (and with png, figures/) of `result_or_tables` into the folder it is given."""
    return lambda folder: write_page(result_or_tables, Path(folder) / "report.html", png=png)
