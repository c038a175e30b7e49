"""One result for runs and inspections (`initscope.Result`), and the names it replaces for one release."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

import initscope
from initscope.cli.app import main
from initscope.result import InspectContext, Result
from initscope.study.writer import read_marker

torch = pytest.importorskip("torch")

SMALL = dict(trials=2, depth=3, width=8, samples=12, init=("normal", "kaiming-normal"))


@pytest.fixture(scope="module")
def ran() -> Result:
    return initscope.run(**SMALL)


@pytest.fixture(scope="module")
def inspected() -> Result:
    import initscope.torch as it

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return it.inspect(model, torch.randn(24, 3, dtype=torch.float32), label="mine")


def test_a_run_and_an_inspection_return_the_same_type(ran, inspected):
    assert type(ran) is Result and type(inspected) is Result
    assert initscope.Result is Result
    assert isinstance(ran.config, initscope.Config) and ran.kind == "run" and ran.layers is None
    assert ran.gains == {"normal": 1.0, "kaiming-normal": pytest.approx(np.sqrt(2))}
    assert isinstance(inspected.config, InspectContext) and inspected.kind == "inspect"
    assert list(inspected.layers["module"]) == ["input", "0", "1", "2"]
    for res in (ran, inspected):
        assert list(res.metrics.columns[:5]) == ["init", "trial", "layer", "metric", "value"]
        assert list(res.flags.columns) == ["init", "trial", "layer", "flag"]


def test_the_inspection_context_is_typed_and_reads_as_a_mapping(inspected):
    ctx = inspected.config
    assert (ctx.model, ctx.samples, ctx.input_dim, ctx.init) == ("Sequential", 24, 3, ("mine",))
    assert ctx["model"] == "Sequential" and ctx.get("loss") == ctx.loss
    assert "factory" not in ctx and ctx.get("factory") is None  # unset fields are not keys
    with pytest.raises(KeyError):
        ctx["factory"]
    assert dataclasses.replace(ctx, factory="f.py:make")["factory"] == "f.py:make"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.model = "other"
    with pytest.raises(TypeError, match=r"The 'config' parameter of an inspection must have only the keys .*"
                                        r"Got \['colour'\] instead"):
        InspectContext.from_mapping({**dict(ctx), "colour": "red"})


def test_reprs_are_short_and_html_is_built_by_the_result(ran, inspected):
    assert repr(ran) == ("Result: run of normal, kaiming-normal × 2 trials, depth 3, width 8, 12 samples (ball); "
                         f"{len(ran.metrics):,} metric rows")
    assert repr(inspected).startswith("Result: inspection of Sequential (mine), 4 layers, 24 samples; ")
    page = ran._repr_html_()
    assert '<ul class="verdict">' in page and page.count("<tr>") == 1 + 2
    page = inspected._repr_html_()
    assert "<strong>initscope inspect</strong>: Sequential, 4 layers" in page


def test_write_gives_the_folder_the_cli_writes(ran, tmp_path, capsys):
    """`res.write(out)` and `initscope run --out` write the same files, the same bytes for the tables."""
    written = ran.write(tmp_path / "api", report=False)
    fields = ["--init", "normal,kaiming-normal", "--trials", "2", "--depth", "3", "--width", "8", "--samples", "12"]
    assert main(["run", *fields, "--out", str(tmp_path / "cli"), "--no-report", "--quiet"]) == 0
    capsys.readouterr()
    api = sorted(p.name for p in written.iterdir())
    assert api == sorted(p.name for p in (tmp_path / "cli").iterdir())
    for name in ("metrics.csv", "spectra.csv", "flags.csv", "weight_norms.csv", "config.toml"):
        assert (written / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert read_marker(written)["files"]["metrics.csv"] == "run"


def test_write_refuses_a_folder_of_yours_naming_out(ran, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="The 'out' parameter .*overwrite=True"):
        ran.write(tmp_path, report=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_inspection_writes_its_layers_and_context(inspected, tmp_path):
    folder = inspected.write(tmp_path / "out", report=False)
    assert {"layers.csv", "config.toml", "metrics.csv"} <= {p.name for p in folder.iterdir()}
    assert 'model = "Sequential"' in (folder / "config.toml").read_text()
    assert read_marker(folder)["files"]["metrics.csv"] == "inspect"
    layers = pd.read_csv(folder / "layers.csv")
    assert list(layers["layer"]) == [0, 1, 2, 3]


def test_the_old_names_still_work_and_warn(ran, inspected):
    """A user's code written against RunResult / InspectResult keeps working for one release, with a warning."""
    with pytest.warns(DeprecationWarning, match="RunResult is now initscope.Result"):
        from initscope import RunResult
    with pytest.warns(DeprecationWarning, match="InspectResult is now initscope.Result"):
        from initscope.torch import InspectResult
    assert isinstance(ran, RunResult) and isinstance(inspected, InspectResult)
    assert not isinstance(ran.metrics, RunResult)
    with pytest.warns(DeprecationWarning, match="RunResult"):  # the old positional order
        made = RunResult(ran.config, ran.metrics, ran.spectra, ran.projections, ran.weight_norms, ran.flags,
                         ran.gains)
    assert type(made) is Result and made.gains == ran.gains and made.metrics is ran.metrics
    with pytest.warns(DeprecationWarning, match="InspectResult"):
        made = InspectResult(inspected.metrics, inspected.spectra, inspected.projections, inspected.weight_norms,
                             inspected.flags, inspected.layers, dict(inspected.config), ["a note"])
    assert made.config == inspected.config and made.notes == ["a note"] and made.layers is inspected.layers


def test_the_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from initscope import Result as R  # noqa: F401
        from initscope.torch import combine, inspect  # noqa: F401
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        initscope.torch.Nope


def test_a_result_needs_a_typed_context(ran):
    with pytest.raises(TypeError, match="The 'config' parameter of Result must be a Config or an InspectContext. "
                                        "Got int instead"):
        Result(ran.metrics, ran.spectra, ran.projections, ran.weight_norms, ran.flags, 3)


def test_help_on_run_shows_the_studys_parameters_and_the_result():
    import inspect

    signature = inspect.signature(initscope.run)
    assert {"workers", "trial_ids", "memory_limit", "on_layer", "progress"} <= set(signature.parameters)
    assert signature.return_annotation == "Result" and initscope.run.__module__ == "initscope.result"
    assert "Returns an `initscope.Result`." in initscope.run.__doc__


def test_the_readme_api_section_shows_the_result_and_every_name_it_uses_exists(ran):
    """README's "The Python API" shows initscope.Result; every `res.NAME` it names is one of Result's."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## The Python API", 1)[1].split("\n## ", 1)[0]
    assert "`initscope.run` and `initscope.torch.inspect` return one type, `initscope.Result`" in section
    assert "DeprecationWarning" in section and "initscope.RunResult" in section
    named = set(re.findall(r"\bres\.([a-z_]+)", section))
    assert {"metrics", "config", "gains", "layers", "notes", "theory", "show", "write"} <= named
    assert all(hasattr(ran, name) for name in named), sorted(n for n in named if not hasattr(ran, n))
