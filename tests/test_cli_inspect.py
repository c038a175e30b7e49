"""`initscope inspect`: a user's factory and data in, the run's CSVs, report and flags out; exit 2 on their errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")

from initscope.cli.inspect import OUTPUT_FILES, main  # noqa: E402
from initscope.core.fitted import LSUV_TOL  # noqa: E402

HAS_REPORT = importlib.util.find_spec("plotly") is not None
FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make():
        layers = [nn.Linear(6, 32), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Linear(32, 32), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(32, 1))

    def cnn():
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def raises():
        raise RuntimeError("cannot build without a GPU")

    class Grumpy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            raise ValueError("batch too small for this model")

    def grumpy():
        return Grumpy()

    def not_a_model():
        return 42

    class Seq(nn.Module):
        # token ids -> embedding -> Linear, tanh -> LayerNorm

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 8)
            self.mix = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)

        def forward(self, t):
            return self.norm(torch.tanh(self.mix(self.emb(t))))

    def seq():
        return Seq()

    def long_names():
        # a module name longer than the printed table is wide (180 columns off a terminal)
        from collections import OrderedDict

        return nn.Sequential(OrderedDict([("stem_" + "x" * 150 + "_end", nn.Linear(6, 8)), ("act", nn.ReLU()),
                                          ("head", nn.Linear(8, 2))]))
    """
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "models.py").write_text(FACTORY)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((40, 6)))
    return tmp_path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_writes_the_runs_files_and_prints_the_flags(project, capsys):
    out = project / "out"
    code, stdout, err = cli(capsys, f"{project}/models.py:make", "--input", str(project / "x.npy"),
                            "--init", "kaiming-normal", "--out", str(out), *([] if HAS_REPORT else ["--no-report"]))
    assert code == 0, err
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns[:5]) == ["init", "trial", "layer", "metric", "value"]
    assert {"module", "module_type"} <= set(metrics.columns)
    assert set(metrics["init"]) == {"kaiming-normal"}
    assert list(pd.read_csv(out / "spectra.csv").columns) == ["init", "trial", "layer", "k", "singular_value"]
    layers = pd.read_csv(out / "layers.csv")
    assert list(layers["module_type"]) == ["input"] + ["Linear", "ReLU"] * 5 + ["Linear"]
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["factory"].endswith("models.py:make") and config["samples"] == 40
    assert config["command"].startswith("initscope inspect ") and "--init kaiming-normal" in config["command"]
    assert "vanishing gradients:" in stdout and "scale (rms)" in stdout and "collapse:" in stdout
    if HAS_REPORT:
        page = (out / "report.html").read_text()
        assert (out / "report.html").stat().st_size > 10_000
        # the page's reproduce section gives the inspect command, not an `initscope run`
        assert "initscope inspect " in page and "initscope run --config" not in page
        from initscope.report import load_run

        assert len(load_run(out).metrics) == len(metrics)  # `initscope report DIR` can redraw it


def test_random_inputs_by_shape_and_conv_folding(project, capsys):
    out = project / "conv"
    code, stdout, err = cli(capsys, f"{project}/models.py:cnn", "--input-shape", "16,2,6,6", "--out", str(out),
                            "--no-report", "--quiet", "--metrics", "rms,effective_rank")
    assert code == 0, err and stdout == ""
    layers = pd.read_csv(out / "layers.csv")
    assert layers.loc[1, "state"] == "samples*positions x channels" and layers.loc[1, "state_samples"] == 16 * 36
    assert set(pd.read_csv(out / "metrics.csv")["metric"]) == {"rms", "effective_rank"}


def test_weights_load_state_dicts_and_refuse_pickled_objects(project, capsys):
    spec = importlib.util.spec_from_file_location("user_models", project / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    model = models.make()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
    torch.save(model.state_dict(), project / "weights.pt")
    out = project / "loaded"
    code, _, err = cli(capsys, f"{project}/models.py:make", "--input", str(project / "x.npy"),
                       "--weights", str(project / "weights.pt"), "--out", str(out), "--no-report", "--quiet")
    assert code == 0, err
    norms = pd.read_csv(out / "weight_norms.csv")
    assert np.allclose(norms.query("layer == 1")["norm"], 0.01 * np.sqrt(6))

    marker = project / "pwned"
    torch.save({"weight": Exploit(str(marker))}, project / "evil.pt")
    code, _, err = cli(capsys, f"{project}/models.py:make", "--input", str(project / "x.npy"),
                       "--weights", str(project / "evil.pt"), "--out", str(project / "evil"), "--no-report")
    assert code == 2
    assert "never unpickles arbitrary objects" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (project / "evil").exists()


class Exploit:
    """Unpickling this would run code (create a file): weights_only=True must refuse it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.py:make", "must name an existing Python file"),
        ("models.py", "'path/to/file.py:function'"),
        ("models.py:nope", "Got 'nope', which it does not define"),
        ("models.py:raises", 'raised RuntimeError: "cannot build without a GPU"'),
        ("models.py:not_a_model", "returned a int instead"),
        ("models.py:grumpy", 'the model raised ValueError: "batch too small for this model" in its forward pass'),
    ],
)
def test_user_errors_exit_2_quoting_their_message(project, capsys, spec, message):
    code, _, err = cli(capsys, f"{project}/{spec}", "--input", str(project / "x.npy"), "--out",
                       str(project / "never"), "--no-report")
    assert code == 2
    assert err.startswith("initscope: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (project / "never").exists()


def test_wrong_input_shape_exits_2_with_torchs_message(project, capsys):
    np.save(project / "wide.npy", np.zeros((10, 7)))
    code, _, err = cli(capsys, f"{project}/models.py:make", "--input", str(project / "wide.npy"), "--no-report",
                       "--out", str(project / "never"))
    assert code == 2
    assert "mat1 and mat2 shapes cannot be multiplied" in err and "(inputs of shape (10, 7))" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --input FILE or --input-shape"),
        (["--input-shape", "8,x"], "'input-shape' parameter"),
        (["--input-shape", "8,6", "--init", "he"], "'init' parameter must be one of"),
        (["--input-shape", "8,6", "--gain", "2"], "give --init NAME with it"),
        (["--input-shape", "8,6", "--mode", "test"], "'mode' parameter"),
        (["--input-shape", "8,6", "--layers", "nope"], "'layers' parameter"),
        (["--input-shape", "8,6", "--layout", "rows"], "'layout' parameter must give layouts from"),
        (["--input-shape", "8,6", "--layout", "=tokens"], "'layout' parameter must be a layout or NAME=LAYOUT"),
        (["--input-shape", "8,6", "--reference", "nope"], "'reference' parameter must be 'input' or the name"),
        (["--input-shape", "8,6", "--max-rows", "3"], "'max-rows' parameter must be an integer >= 16"),
    ],
)
def test_bad_options_exit_2(project, capsys, args, message):
    code, _, err = cli(capsys, f"{project}/models.py:make", *args, "--no-report", "--out", str(project / "never"))
    assert code == 2 and message in err


def test_token_ids_layout_and_reference_options(project, capsys):
    np.save(project / "ids.npy", np.random.default_rng(0).integers(0, 30, (12, 7)))
    out = project / "seq"
    code, stdout, err = cli(capsys, f"{project}/models.py:seq", "--input", str(project / "ids.npy"), "--out", str(out),
                            "--no-report", "--metrics", "rms,effective_rank,token_cosine")
    assert code == 0, err
    layers = pd.read_csv(out / "layers.csv")
    assert list(layers["layout"]) == ["units", "tokens", "tokens", "tokens"]
    assert list(layers["reference"]) == [False, True, False, False]
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"layout", "sample_size", "std_error"} <= set(metrics.columns)
    assert metrics.query("metric == 'token_cosine' and module == 'norm'")["sample_size"].item() == 12
    assert "tok_cos" in stdout and "tokens" in stdout
    code, _, err = cli(capsys, f"{project}/models.py:seq", "--input", str(project / "ids.npy"), "--out", str(out),
                       "--no-report", "--quiet", "--metrics", "rms", "--layout", "mix=units,norm=units",
                       "--reference", "norm")
    assert code == 0, err
    layers = pd.read_csv(out / "layers.csv")
    assert list(layers["layout"]) == ["units", "tokens", "units", "units"] and list(layers["units"])[2:] == [56, 56]
    assert list(layers["reference"]) == [False, False, False, True]
    assert "--layout mix=units,norm=units" in tomllib.loads((out / "config.toml").read_text())["command"]


def test_nan_inputs_are_bad_input(project, capsys):
    x = np.ones((4, 6))
    x[1, 2] = np.nan
    np.save(project / "nan.npy", x)
    code, _, err = cli(capsys, f"{project}/models.py:make", "--input", str(project / "nan.npy"), "--no-report")
    assert code == 2 and "'input' parameter must be finite" in err


def test_registered_on_the_main_cli(project, capsys):
    from initscope.cli.app import main as initscope_main

    code = initscope_main(["inspect", f"{project}/models.py:make", "--input-shape", "8,6", "--out",
                           str(project / "main"), "--no-report", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (project / "main" / "metrics.csv").is_file()


@pytest.mark.slow
def test_as_a_subprocess(project):
    out = project / "sub"
    proc = subprocess.run(
        [sys.executable, "-m", "initscope.cli.inspect", "inspect", f"{project}/models.py:grumpy", "--input-shape",
         "8,6", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert 'ValueError: "batch too small for this model"' in proc.stderr and not out.exists()


@pytest.mark.slow
def test_layer_wise_init_fits_the_given_inputs(project, capsys):
    out = project / "lsuv"
    code, _, err = cli(capsys, f"{project}/models.py:make", "--input", str(project / "x.npy"), "--init", "lsuv",
                       "--out", str(out), "--no-report", "--quiet", "--metrics", "rms,std")
    assert code == 0, err
    first = pd.read_csv(out / "metrics.csv").query("module == '0'").set_index("metric")["value"]
    # LSUV stops when the variance of the first Linear's whole output blob z is within LSUV_TOL of 1.
    # rms² = Var(z) + mean(z)² and std² (mean over units of each unit's variance) ≤ Var(z): the bounds
    # hold whatever the factory's unseeded bias; PyTorch's default init gives rms ≈ 0.58 here.
    assert first["rms"] ** 2 >= 1 - LSUV_TOL - 1e-9
    assert first["std"] ** 2 <= 1 + LSUV_TOL + 1e-9
    assert first["rms"] < 1.2  # the bias's mean adds a little, never much: U(±1/√6) over 32 units
    code, _, err = cli(capsys, f"{project}/models.py:cnn", "--input-shape", "4,2,6,6", "--init", "well-spaced",
                       "--out", str(out), "--no-report", "--quiet")
    assert code == 0, err


def _table_cells(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The printed layer table's header and rows, a cell wrapped over several lines joined again."""
    lines = stdout.splitlines()
    header = next([c.strip() for c in line.split("┃")[1:-1]] for line in lines if line.startswith("┃"))
    rows: list[list[str]] = []
    for line in (line for line in lines if line.startswith("│")):
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells[0]:
            rows.append(cells)
        else:  # a continuation line: the same row's cells go on
            rows[-1] = [a + b for a, b in zip(rows[-1], cells, strict=True)]
    return header, rows


def test_the_table_shows_each_grad_norms_parameter_kind(project, capsys):
    np.save(project / "ids.npy", np.random.default_rng(0).integers(0, 30, (12, 7)))
    out = project / "kinds"
    code, stdout, err = cli(capsys, f"{project}/models.py:seq", "--input", str(project / "ids.npy"),
                            "--out", str(out), "--no-report", "--metrics", "rms,grad_norm")
    assert code == 0, err
    header, rows = _table_cells(stdout)
    assert header.index("param_kind") == header.index("grad_norm") - 1  # beside the norms it qualifies
    layers = pd.read_csv(out / "layers.csv")
    shown = [row[header.index("param_kind")] for row in rows]
    assert shown == list(layers["param_kind"]) == ["none", "embedding", "weight", "norm_affine"]
    assert "compared only with the largest of the same param_kind" in stdout
    code, stdout, err = cli(capsys, f"{project}/models.py:seq", "--input", str(project / "ids.npy"),
                            "--out", str(out), "--no-report", "--metrics", "rms", "--overwrite")
    assert code == 0, err
    assert "param_kind" not in _table_cells(stdout)[0]  # without grad_norm it qualifies nothing


def test_the_table_wraps_a_long_module_name_and_never_cuts_it(project, capsys):
    out = project / "long"
    code, stdout, err = cli(capsys, f"{project}/models.py:long_names", "--input-shape", "16,6", "--out", str(out),
                            "--no-report", "--metrics", "rms,grad_norm")
    assert code == 0, err
    header, rows = _table_cells(stdout)
    name = "stem_" + "x" * 150 + "_end"
    assert name not in stdout  # a 180-column table cannot hold it on one line: it wrapped
    assert [row[header.index("module")] for row in rows] == ["input", name, "act", "head"]
    assert [row[header.index("param_kind")] for row in rows] == ["none", "weight", "none", "weight"]
    assert "…" not in stdout


def test_a_factory_file_defining_a_dataclass_loads(tmp_path, capsys):
    # dataclasses look their module up in sys.modules while the class is made: a config dataclass, as model code
    # usually has, once made every file factory fail with "'NoneType' object has no attribute '__dict__'".
    (tmp_path / "cfg_models.py").write_text(textwrap.dedent(
        """
        from __future__ import annotations
        from dataclasses import dataclass
        from torch import nn

        @dataclass
        class Config:
            width: int = 16
            depth: int = 3

        def make(config: Config = Config()):
            return nn.Sequential(*[nn.Sequential(nn.Linear(config.width, config.width), nn.Tanh())
                                   for _ in range(config.depth)])
        """))
    code, _, err = cli(capsys, f"{tmp_path}/cfg_models.py:make", "--input-shape", "20,16", "--out",
                       str(tmp_path / "out"), "--no-report", "--quiet")
    assert code == 0, err
    assert (tmp_path / "out" / "metrics.csv").is_file()
