"""One measuring engine (`core.pieces`, `core.engine`): a metric registered with one `register_metric` call and
no other edit is measured by `initscope run` and by `initscope inspect` on a torch model with the same numbers,
shown by the CLI tables as its `summary` flag says, drawn by the explorer on the axis its entry declares, stored
by a sweep, and planned for in memory from the pieces it reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import initscope
from initscope.core import engine as E
from initscope.core import metrics as M
from initscope.core.pieces import PIECES, Pieces, Sampled, stages
from initscope.study import plugins
from initscope.study.config import make_config
from initscope.study.memory import run_estimate

ROOT = Path(__file__).resolve().parent.parent

# A plugin as a user writes it: one register_metric call per metric, nothing else.
PLUGIN = textwrap.dedent('''
    import numpy as np

    import initscope


    def abs_max(S):
        """The largest |state| per trial: S (T, n, w) -> (T,)."""
        return np.abs(S).max(axis=(1, 2))


    def top_share(sv):
        """σ_1² / Σσ²: the share of the top direction."""
        sq = sv * sv
        return sq[:, 0] / sq.sum(axis=1)


    def input_align(S_c, X_c):
        """‖S_cᵀX_c‖_F / (‖S_c‖_F ‖X_c‖_F): how much of the input's directions the state keeps."""
        cross = np.linalg.norm(np.matmul(S_c.transpose(0, 2, 1), X_c), axis=(1, 2))
        return cross / (np.linalg.norm(S_c, axis=(1, 2)) * np.linalg.norm(X_c, axis=(1, 2)))


    def jac_fro(J):
        """Mean over samples of ‖∂s/∂x‖_F."""
        return np.sqrt((J * J).sum(axis=(2, 3))).mean(axis=1)


    initscope.register_metric("abs_max", abs_max, description="largest |state|", short="absmax", degree=1)
    initscope.register_metric("top_share", top_share, needs="spectrum", description="top direction's share",
                              linear_scale=True, summary=False)
    initscope.register_metric("input_align", input_align, needs=("centred", "input"),
                              description="alignment with the input", linear_scale=True, short="in_align")
    initscope.register_metric("sq_max", lambda S: abs_max(S) ** 2, description="largest state², drawn linear",
                              linear_scale=True, summary=False, default=False)
    initscope.register_metric("jac_fro", jac_fro, needs="tangents", description="mean ‖∂s/∂x‖_F",
                              default=False, summary=False)
''')
NAMES = ("abs_max", "top_share", "input_align", "sq_max", "jac_fro")


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "plugin_engine.py"
    path.write_text(PLUGIN)
    initscope.load_plugins([str(path)])
    yield path
    for name in NAMES:
        M.METRICS.pop(name, None)
    for key in [k for k in plugins._LOADED if "plugin_engine" in k]:
        sys.modules.pop(plugins._LOADED.pop(key).__name__, None)


# ---- pieces and the engine ---------------------------------------------------------------------------


def test_a_view_builds_only_what_is_read_and_the_eigenvectors_with_the_spectrum(rng):
    S = rng.standard_normal((2, 9, 4))
    lazy = Pieces({"state": S})
    assert lazy["spectrum"].shape == (2, 4) and "eigh" not in lazy.values  # eigvalsh alone
    both = Pieces({"state": S}, wanted={"eigh", "spectrum"})
    sv = both["spectrum"]
    assert "eigh" in both.values  # one eigh for both
    np.testing.assert_allclose(sv, M.gram_spectrum(M.gram(M.centred(S))), rtol=1e-12)
    assert "tangents" not in lazy and "centred" in lazy


def test_passes_come_from_the_pieces_a_metric_reads():
    assert stages(["tangents"]) == {"jacobian"} and stages(["jacobian_spectrum"]) == {"jacobian"}
    assert stages(["gradient"]) == {"backward"} and stages(["spectrum", "input"]) == set()
    assert E.reading_metrics(["rms", "jacobian_sq_mean", "grad_norm", "jacobian_log_spread"], "jacobian") == \
        ["jacobian_sq_mean", "jacobian_log_spread"]
    assert E.reads("distances", ["rms", "distance_corr"]) == ["distance_corr"]


def test_a_missing_piece_reads_nan_and_a_sampled_spectrum_gives_jackknife_errors(rng):
    S = rng.standard_normal((1, 40, 5))
    view = Pieces({"state": S, "rtol": 1e-6, "activation": "relu"})
    got = E.evaluate(["token_cosine", "effective_rank"], view, col=np.zeros(1, bool), is_input=False)
    assert np.isnan(got.values["token_cosine"]).all() and np.isfinite(got.values["effective_rank"]).all()
    sv = view["spectrum"]
    reps = np.stack([sv[0] * f for f in (0.9, 1.0, 1.1, 1.2)])
    reps[:, 0] *= np.array([1.0, 1.3, 0.8, 1.1])  # the replicates' shapes differ, so the ranks do
    view.replicates["spectrum"] = reps
    view.sizes["spectrum"] = 20
    got = E.evaluate(["effective_rank", "rms"], view, col=np.zeros(1, bool), is_input=False)
    v = M.effective_rank(reps)
    assert got.errors["effective_rank"][0] == pytest.approx(np.sqrt(3 / 4 * ((v - v.mean()) ** 2).sum()))
    assert got.sizes == {"effective_rank": 20} and "rms" not in got.errors
    assert "effective_rank" not in E.evaluate(["effective_rank"], view, col=np.ones(1, bool), is_input=False).errors


def test_a_backend_form_is_used_only_where_its_pieces_are_native(rng):
    S = rng.standard_normal((1, 30, 4))
    numpy_view = Pieces({"state": S})
    assert E.form(M.METRICS["rms"], numpy_view).fn is M.rms  # numpy: the registry's own function
    pytest.importorskip("torch")
    import initscope.torch.providers  # noqa: F401 - registers torch's forms
    assert E.form(M.METRICS["rms"], numpy_view).fn is M.rms  # torch's form needs torch's row statistics
    assert any(f.backend == "torch" for f in M.METRICS["rms"].forms)
    assert "moments" in PIECES and not PIECES["moments"].user  # a backend's own pieces are not a plugin's


def test_sampled_values_carry_their_size():
    view = Pieces({})
    entry = M.Metric("tmp", lambda: Sampled(np.ones(1), size=7, error=0.5), needs=())
    M.METRICS["tmp"] = entry
    try:
        got = E.evaluate(["tmp"], view, col=np.zeros(1, bool), is_input=False)
    finally:
        M.METRICS.pop("tmp")
    assert got.sizes == {"tmp": 7} and got.errors["tmp"][0] == 0.5


# ---- a plugin metric, end to end ---------------------------------------------------------------------


def _sequential(config, init):
    """An nn.Sequential of Linear+ReLU with the weights of trial 0 of the study's network, and its input."""
    torch = pytest.importorskip("torch")
    from initscope.study.model import materialize

    X, _, params = materialize(config, init)
    layers = []
    for W, b in params:
        lin = torch.nn.Linear(W.shape[1], W.shape[2]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W[0].T.copy()))
            lin.bias.copy_(torch.from_numpy(b[0].copy()))
        layers += [lin, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers), X[0]


@pytest.mark.slow
def test_a_plugin_metric_reads_the_same_on_a_torch_model_as_in_the_study(plugin):
    names = ["rms", "effective_rank", "linear_r2", "abs_max", "top_share", "input_align", "jac_fro"]
    config = make_config(init=["kaiming-normal"], depth=3, width=12, input_dim=6, samples=20, trials=1,
                         dtype="float64", metrics=names)
    study = initscope.run(config, workers=1).metrics
    model, X = _sequential(config, "kaiming-normal")
    result = initscope.torch.inspect(model, X, metrics=names, seed=0)
    torch_values = result.metrics.set_index(["layer", "metric"])["value"]
    for layer in range(config.depth + 1):  # study layer l is the l-th ReLU's output: torch layer 2l
        for name in names:
            want = study.query("layer == @layer and metric == @name")["value"].item()
            got = torch_values[(2 * layer, name)]
            # effective_rank counts singular values at the Gram matrix's noise floor (σ_1·√eps, dead ReLU units),
            # which torch's syrk Gram and numpy's product round differently: 1e-9 apart, by definition noise.
            tol = 1e-7 if name == "effective_rank" else 1e-10
            assert got == pytest.approx(want, rel=tol, abs=1e-10), (layer, name)


@pytest.mark.slow
def test_a_plugin_metric_through_run_inspect_the_tables_and_the_report(plugin, tmp_path):
    env_args = [sys.executable, "-c", "import sys; from initscope.cli import main; sys.exit(main(sys.argv[1:]))",
                "--plugin", str(plugin)]
    run_out = tmp_path / "run"
    proc = subprocess.run([*env_args, "run", "--depth", "2", "--trials", "2", "--samples", "16", "--width", "8",
                           "--metrics", "rms,abs_max,top_share,input_align", "--out", str(run_out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode in (0, 3), proc.stderr
    metrics = __import__("pandas").read_csv(run_out / "metrics.csv")
    assert {"abs_max", "top_share", "input_align"} <= set(metrics["metric"])
    header = next(line for line in proc.stdout.splitlines() if "layer" in line and "rms" in line)
    assert "absmax" in header and "in_align" in header and "top_share" not in header  # summary flags
    page = (run_out / "report.html").read_text()
    assert "abs_max" in page and "top_share" in page
    models = tmp_path / "models.py"
    models.write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                      "    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))\n")
    ins_out = tmp_path / "inspect"
    proc = subprocess.run([*env_args, "inspect", f"{models}:make", "--input-shape", "12,6", "--metrics",
                           "rms,abs_max,top_share,jac_fro", "--out", str(ins_out), "--no-report"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode in (0, 3), proc.stderr
    got = __import__("pandas").read_csv(ins_out / "metrics.csv")
    for name in ("abs_max", "top_share", "jac_fro"):
        assert np.isfinite(got[got["metric"] == name]["value"]).all(), name
    header = next(line for line in proc.stdout.splitlines() if "layer" in line and "rms" in line)
    assert "absmax" in header and "top_share" not in header and "jac_fro" not in header


def test_a_sweep_stores_a_plugin_metric(plugin, tmp_path):
    from initscope.study.executors import InlineExecutor, run_sweep
    from initscope.study.store import Store
    from initscope.study.sweep import make_sweep

    sweep = make_sweep({"init": ["kaiming-normal"], "metrics": ["rms", "abs_max"], "depth": [2], "trials": 2,
                        "samples": 12, "width": 8})
    with Store(tmp_path / "s.sqlite") as store:
        outcome = run_sweep(sweep, store, InlineExecutor(), slots=1)
        stored = store.metrics()
    assert outcome.ok, outcome.failures
    mine = stored[stored["metric"] == "abs_max"].sort_values(["trial", "layer"])["value"].to_numpy()
    direct = initscope.run(init=["kaiming-normal"], metrics=["rms", "abs_max"], depth=2, trials=2, samples=12,
                           width=8).metrics
    want = direct[direct["metric"] == "abs_max"].sort_values(["trial", "layer"])["value"].to_numpy()
    np.testing.assert_array_equal(mine, want)


def test_the_memory_plan_sees_what_a_metric_reads(plugin):
    base = run_estimate(make_config(width=64, metrics="rms"), 2, 1)
    assert "jacobian" not in base.parts
    for names in ("jac_fro", "jacobian_sq_mean", "jacobian_log_spread"):  # tangents alone bring the Jacobian pass
        est = run_estimate(make_config(width=64, metrics=f"rms,{names}"), 2, 1)
        assert est.parts["jacobian"][0] > 0, names
    assert "distance" in run_estimate(make_config(width=64, metrics="distance_corr"), 2, 1).parts
    assert "eigenvectors" in run_estimate(make_config(width=64, metrics="input_align,linear_r2"), 2, 1).parts


def test_the_explorer_draws_each_metric_on_its_entrys_axis(plugin, tmp_path):
    node = __import__("shutil").which("node")
    if node is None:
        pytest.fail("node is needed to run the explorer's figure code")
    from initscope.explore.api import encode, metric_display, result_payload

    display = metric_display()
    assert display["pre_cosine"]["linear"] and display["token_cosine"]["linear"]
    assert display["linear_r2"]["floor"] == -1.0 and display["rms"]["floor"] is None
    result = initscope.run(init=["kaiming-normal", "normal"], metrics=["rms", "abs_max", "sq_max", "pre_cosine"],
                           depth=6, trials=2, samples=16, width=16)
    message = result_payload(result, "columns")
    message["config"]["metrics"] = ["abs_max", "sq_max", "pre_cosine"]
    script = tmp_path / "draw.js"
    script.write_text(
        "const fs = require('fs'), vm = require('vm');\n"
        f"vm.runInThisContext(fs.readFileSync({json.dumps(str(ROOT / 'src/initscope/explore/static/figures.js'))}, "
        "'utf8'));\n"
        "const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));\n"
        "setMetricDisplay(input.display);\n"
        "const fig = depthFigure(input.message, null);\n"
        "const axes = ['yaxis', 'yaxis2', 'yaxis3'].map(k => (fig.layout[k] || {}).type || 'linear');\n"
        "console.log(JSON.stringify(axes));\n")
    data = tmp_path / "in.json"
    data.write_bytes(encode({"display": display, "message": message}))  # as the server sends it
    proc = subprocess.run([node, str(script), str(data)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    axes = json.loads(proc.stdout)
    # abs_max spans decades (normal init's states grow) and its entry allows a log axis; sq_max spans twice as
    # many, but its entry says linear_scale; so does pre_cosine's.
    assert axes == ["log", "linear", "linear"]
