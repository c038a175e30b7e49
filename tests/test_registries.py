"""Registries a user extends: a metric, an initializer and an activation defined here run end to end.

Through the API (`initscope.run`, make_config, sweeps, `initscope.torch.initialize`) and
the CLI (`main([...])`, and a subprocess with `--plugin FILE.py`); plus the contract every
built-in registry entry keeps, and the errors of bad registrations.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import initscope
from initscope.core import activations as A
from initscope.core import initializers as I
from initscope.core import engine as E
from initscope.core import metrics as M
from initscope.core import theory
from initscope.core.propagation import jacobian_singular_values
from initscope.study import plugins
from initscope.study.model import materialize

# A plugin as a user would write it; also written to a file for the --plugin and worker tests.
PLUGIN = textwrap.dedent('''
    import math

    import numpy as np

    import initscope


    def max_abs(S):
        """The largest |state| per trial: S (T, n, w) -> (T,)."""
        return np.abs(S).max(axis=(1, 2))


    def scaled_normal(fan_in, fan_out, gain, rng):
        """N(0, gain²/(2·fan_in)) entries."""
        return (gain / math.sqrt(2.0 * fan_in)) * rng.standard_normal((fan_in, fan_out))


    def softsign(z):
        return z / (1.0 + np.abs(z))


    def softsign_derivative(z):
        return 1.0 / (1.0 + np.abs(z)) ** 2


    initscope.register_metric("max_abs", max_abs, description="largest |state|", short="max|s|")
    initscope.register_initializer("scaled-normal", scaled_normal, default_gain=lambda activation: 3.0,
                                   variance=lambda fan_in, fan_out, gain: gain * gain / (2.0 * fan_in))
    initscope.register_activation("softsign", softsign, softsign_derivative, gain=1.5)
''')

NAMES = {"metric": "max_abs", "init": "scaled-normal", "activation": "softsign"}


def _unregister() -> None:
    M.METRICS.pop(NAMES["metric"], None)
    I.REGISTRY.pop(NAMES["init"], None)
    A.ACTIVATIONS.pop(NAMES["activation"], None)
    for key in [k for k in plugins._LOADED if "plugin_reg" in k]:
        module = plugins._LOADED.pop(key)
        sys.modules.pop(module.__name__, None)


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "plugin_reg.py"
    path.write_text(PLUGIN)
    return path


@pytest.fixture
def registered(plugin_file):
    """The plugin loaded in this process (as `--plugin` would), and unloaded afterwards."""
    _unregister()
    initscope.load_plugins([str(plugin_file)])
    yield plugin_file
    _unregister()


SMALL = dict(depth=3, width=8, samples=20, trials=2, input_dim=3, shift="zeros")


# ---- through the API --------------------------------------------------------------


def test_a_registered_metric_initializer_and_activation_run_through_the_api(registered):
    result = initscope.run(init=["scaled-normal"], activation="softsign", metrics=["rms", "max_abs"], **SMALL)
    rows = result.metrics[result.metrics["metric"] == "max_abs"].sort_values(["trial", "layer"])
    assert len(rows) == SMALL["trials"] * (SMALL["depth"] + 1)
    assert result.gains == {"scaled-normal": 3.0}  # the entry's default gain rule
    # The same networks, measured here by hand: the metric's values and the activation's φ are used.
    X, _, params = materialize(result.config, "scaled-normal")
    S, expected = X, [np.abs(X).max(axis=(1, 2))]
    for W, b in params:
        z = np.matmul(S, W) + b[:, None, :]
        S = z / (1.0 + np.abs(z))
        expected.append(np.abs(S).max(axis=(1, 2)))
        # gain 3, std gain/sqrt(2·fan_in): the rms of ≥ 48 entries is within 0.35 (3.5 standard errors)
        assert math.sqrt(np.mean(W * W)) == pytest.approx(3.0 / math.sqrt(2.0 * W.shape[1]), rel=0.35)
    np.testing.assert_allclose(rows["value"].to_numpy(), np.stack(expected, axis=1).reshape(-1), rtol=1e-12)


def test_registered_names_are_valid_everywhere_a_name_is(registered):
    config = initscope.make_config(init="scaled-normal,normal", activation="softsign", metrics="max_abs")
    assert config.init == ("scaled-normal", "normal") and config.metrics == ("max_abs",)
    assert "max_abs" in initscope.make_config().metrics  # registered metrics are measured by default
    assert I.default_gain("kaiming-normal", "softsign") == 1.5  # the activation's recommended gain
    assert theory.weight_variance("scaled-normal", 10, 4, 2.0) == pytest.approx(0.2)
    assert math.isnan(theory.activation_second_moment_factor("softsign"))  # no closed form given
    assert "softsign" in initscope.ACTIVATIONS and "scaled-normal" in initscope.INITIALIZERS
    assert "max_abs" in initscope.METRICS


def test_a_registered_activation_has_its_derivative_in_the_backward_pass(registered):
    result = initscope.run(init=["normal"], activation="softsign", readout="init", metrics=["grad_norm"], **SMALL)
    values = result.metrics[result.metrics["layer"] >= 1]["value"]
    assert np.isfinite(values).all() and (values > 0).all()


@pytest.mark.slow
def test_a_sweep_runs_them_in_worker_processes(registered, tmp_path):
    from initscope.study.executors import open_executor, run_sweep
    from initscope.study.store import Store
    from initscope.study.sweep import make_sweep

    spec = {"init": ["scaled-normal"], "activation": "softsign", "metrics": ["rms", "max_abs"], "depth": [2, 3],
            **{k: v for k, v in SMALL.items() if k != "depth"}}
    sweep = make_sweep(spec)
    with open_executor(2) as (executor, slots), Store(tmp_path / "s.sqlite") as store:
        outcome = run_sweep(sweep, store, executor, slots=slots)  # spawned workers load the plugin first
        metrics = store.metrics()
    assert outcome.ok, outcome.failures
    got = metrics[metrics["metric"] == "max_abs"]
    assert len(got) == SMALL["trials"] * (3 + 4)
    direct = initscope.run(init=["scaled-normal"], activation="softsign", metrics=["rms", "max_abs"], **SMALL)
    want = direct.metrics[direct.metrics["metric"] == "max_abs"].sort_values(["trial", "layer"])["value"]
    # The workers' numbers are the in-process run's, exactly.
    mine = got[got["depth"] == 3].sort_values(["trial", "layer"])["value"]
    np.testing.assert_array_equal(mine.to_numpy(), want.to_numpy())


def test_torch_initialize_accepts_a_registered_initializer(registered):
    torch = pytest.importorskip("torch")
    from initscope.torch import initialize

    model = torch.nn.Sequential(torch.nn.Linear(200, 300), torch.nn.Tanh(), torch.nn.Linear(300, 10))
    initialize(model, "scaled-normal", seed=0)
    std = float(model[0].weight.detach().std())
    assert std == pytest.approx(3.0 / math.sqrt(2 * 200), rel=0.05)  # default gain 3, fan_in 200


# ---- through the CLI -------------------------------------------------------------


def test_cli_main_shows_a_registered_metric_in_csv_table_and_report(registered, tmp_path, capsys):
    pytest.importorskip("plotly")
    from initscope.cli.app import main
    from initscope.report.depth import metric_depth_figure

    out = tmp_path / "run"
    status = main(["run", "--init", "scaled-normal", "--activation", "softsign", "--metrics", "rms,max_abs",
                   "--depth", "3", "--width", "8", "--samples", "20", "--trials", "2", "--out", str(out)])
    assert status == 0
    table = pd.read_csv(out / "metrics.csv")
    assert set(table["metric"]) == {"rms", "max_abs"}
    assert "max|s|" in capsys.readouterr().out  # the summary table's column, by the entry's short label
    html = (out / "report.html").read_text()
    assert "max_abs" in html
    titles = [a.text for a in metric_depth_figure(table).layout.annotations]
    assert titles == ["rms", "max_abs"]


@pytest.mark.slow
def test_cli_subprocess_with_plugin_file(plugin_file, tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != plugins.ENV_VAR}
    code = "import sys\nfrom initscope.cli.app import main\nsys.exit(main(sys.argv[1:]))"
    args = ["--plugin", str(plugin_file), "run", "--init", "scaled-normal,normal", "--activation", "softsign",
            "--metrics", "max_abs,rms", "--depth", "2", "--width", "6", "--samples", "12", "--trials", "2",
            "--no-report", "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert set(pd.read_csv(out / "metrics.csv")["metric"]) == {"max_abs", "rms"}
    assert "max|s|" in done.stdout
    # Without the plugin the names are unknown: one line on stderr, exit 2, naming the valid ones.
    bad = subprocess.run([sys.executable, "-c", code, *args[2:]], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "'init'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    # The environment variable does the same as --plugin.
    by_env = subprocess.run([sys.executable, "-c", code, *args[2:]], capture_output=True, text=True,
                            env={**env, plugins.ENV_VAR: str(plugin_file)}, cwd=tmp_path, timeout=300)
    assert by_env.returncode == 0, by_env.stderr


def test_a_missing_plugin_is_bad_input(tmp_path, capsys):
    from initscope.cli.app import main

    assert main(["--plugin", str(tmp_path / "nope.py"), "run", "--depth", "1"]) == 2
    err = capsys.readouterr().err
    assert "'plugin'" in err and "nope.py" in err
    assert main(["--plugin", "no_such_module_xyz", "run"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_loading_a_plugin_twice_registers_once(registered):
    first = initscope.load_plugins([str(registered)])
    again = initscope.load_plugins(str(registered))  # comma-separated string form
    assert first[0] is again[0]
    assert str(registered.resolve()) in plugins.active_plugins()


# ---- the contract of every registry entry ----------------------------------------


def _view(rng, T=3, n=12, w=5, d=4, dtype=np.float64):
    S = np.maximum(rng.standard_normal((T, n, w)), 0).astype(dtype)
    X = rng.standard_normal((T, n, d)).astype(dtype)
    S_c, X_c = M.centred(S), M.centred(X)
    sv, eig = M.gram_spectrum(M.gram(S_c), vectors=True)
    J = rng.standard_normal((T, min(n, 4), d, w)).astype(dtype)
    view = {"state": S, "centred": S_c, "spectrum": sv, "eigh": eig, "input": X_c, "pre": rng.standard_normal(S.shape),
            "distances": M.distance_reference(X, rng=rng), "tangents": J, "input_dim": d,
            "jacobian_spectrum": jacobian_singular_values(J, input_dim=d), "rtol": M.rank_rtol(dtype),
            "jacobian_log_stretches": np.log(jacobian_singular_values(J, input_dim=d)),
            "activation": "relu", "tokens": rng.standard_normal((T, 3, 6, w)).astype(dtype)}
    assert set(M.NEEDS) - {"gradient"} <= set(view), "a new need: give the contract test a value for it"
    return view


@pytest.mark.parametrize("name", list(M.METRICS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_metric_returns_one_value_per_trial(name, dtype, rng):
    entry = M.METRICS[name]
    assert entry.name == name and entry.description and set(entry.needs) <= set(M.NEEDS)
    if "gradient" in entry.needs:  # grad_norm: filled by the backward pass, not per layer
        assert entry.fn is None and E.layer_values([name], {}, col=np.zeros(3, bool), is_input=False) == {}
        return
    view = _view(rng, dtype=dtype)
    for is_input in (False, True):
        value = E.layer_values([name], view, col=np.zeros(3, bool), is_input=is_input)[name]
        assert value.shape == (3,)
        assert np.isfinite(value).all() or (entry.relu_only and is_input)
    if entry.rank_like:  # collapsed states read 0
        assert (E.layer_values([name], view, col=np.ones(3, bool), is_input=False)[name] == 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(I.REGISTRY))
@pytest.mark.parametrize("activation", list(A.ACTIVATIONS))
def test_every_initializer_has_a_gain_rule_and_a_variance_or_none(name, activation, rng):
    entry = I.REGISTRY[name]
    assert entry.name == name and entry.rule
    gain = I.default_gain(name, activation)
    assert math.isfinite(gain) and gain > 0
    var = I.variance(name, 30, 20, gain)
    assert (entry.variance is None and math.isnan(var)) or var > 0
    if entry.draw is not None and entry.variance is not None and entry.random:
        W = I.draw(name, 300, 200, gain=gain, rng=rng)
        var = I.variance(name, 300, 200, gain)
        # E[w²] over 60,000 entries; Var(w²) ≤ E[w⁴] ≤ 3·E[w²]² for these rules (Gaussian at most).
        se = math.sqrt(3.0 / W.size) * var
        assert abs(np.mean(W * W) - var) < 5 * se + 1e-12
    elif entry.fit is not None:
        S = rng.standard_normal((40, 6))
        fit = entry.fit(S, 8, gain=gain, rng=rng, layer=1, b=np.zeros(8), tol=0.01, max_iter=10)
        assert fit.W.shape == (6, 8) and np.isfinite(fit.W).all()


@pytest.mark.parametrize("name", list(A.ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_activation_keeps_shape_and_dtype_and_its_derivative_is_right(name, dtype, rng):
    entry = A.ACTIVATIONS[name]
    assert entry.name == name and math.isfinite(entry.gain) and entry.gain > 0
    z = rng.standard_normal((2, 5, 7)).astype(dtype)
    z[np.abs(z) < 1e-3] = 0.5  # away from ReLU's kink for the finite differences
    for fn in (entry.phi, entry.dphi):
        out = fn(z)
        assert out.shape == z.shape and out.dtype == dtype
    if entry.inplace is not None:
        np.testing.assert_array_equal(entry.inplace(z.copy()), entry.phi(z))
    if dtype == np.float64:
        h = 1e-6
        np.testing.assert_allclose(entry.dphi(z), (entry.phi(z + h) - entry.phi(z - h)) / (2 * h), atol=1e-6)


@pytest.mark.parametrize("name", [n for n, e in A.ACTIVATIONS.items() if math.isfinite(e.second_moment)])
def test_second_moment_factors_match_monte_carlo(name, rng):
    z = rng.standard_normal(400_000)
    phi2 = A.ACTIVATIONS[name].phi(z) ** 2
    se = phi2.std() / math.sqrt(z.size)
    assert abs(phi2.mean() - A.ACTIVATIONS[name].second_moment) < 5 * se + 1e-12


@pytest.mark.parametrize("name", [n for n, e in A.ACTIVATIONS.items() if e.correlation_map is not None])
def test_correlation_maps_match_monte_carlo(name, rng):
    entry = A.ACTIVATIONS[name]
    n = 400_000
    for c in (-0.5, 0.3, 0.9):
        u = rng.standard_normal(n)
        v = c * u + math.sqrt(1 - c * c) * rng.standard_normal(n)
        a, b = entry.phi(u), entry.phi(v)
        # cosine of the features: E[φ(u)φ(v)] / E[φ(u)²] (both have the same law)
        got = float(np.mean(a * b) / np.mean(a * a))
        assert abs(float(entry.correlation_map(c)) - got) < 10 / math.sqrt(n)
    assert float(entry.correlation_map(1.0)) == pytest.approx(1.0, abs=1e-12)


# ---- bad registrations -----------------------------------------------------------


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="'name'.*'rms' is already registered"):
        initscope.register_metric("rms", M.rms)
    with pytest.raises(ValueError, match="'name'.*'normal' is already registered"):
        initscope.register_initializer("normal", I.REGISTRY["normal"].draw)
    with pytest.raises(ValueError, match="'name'.*'relu' is already registered"):
        initscope.register_activation("relu", np.tanh, np.tanh)


@pytest.mark.parametrize(("call", "parameter", "error"), [
    (lambda: initscope.register_metric("m_x", 3), "fn", TypeError),
    (lambda: initscope.register_metric("m_x", M.rms, needs=("state", "weights")), "needs", ValueError),
    (lambda: initscope.register_metric("m_x", M.rms, needs=("gradient",)), "needs", ValueError),
    (lambda: initscope.register_metric("m_x", M.rms, needs=()), "needs", ValueError),
    (lambda: initscope.register_metric("not a name", M.rms), "name", ValueError),
    (lambda: initscope.register_initializer("i_x", "normal"), "fn", TypeError),
    (lambda: initscope.register_initializer("i_x", I.REGISTRY["normal"].draw, default_gain=-1), "default_gain",
     ValueError),
    (lambda: initscope.register_initializer("i_x", I.REGISTRY["normal"].draw, variance=2.0), "variance", TypeError),
    (lambda: initscope.register_initializer("a,b", I.REGISTRY["normal"].draw), "name", ValueError),
    (lambda: initscope.register_activation("a_x", np.tanh, None), "dphi", TypeError),
    (lambda: initscope.register_activation("a_x", "tanh", np.tanh), "phi", TypeError),
    (lambda: initscope.register_activation("a_x", np.tanh, np.tanh, gain=0), "gain", ValueError),
])
def test_bad_registrations_name_the_parameter(call, parameter, error):
    with pytest.raises(error, match=f"'{parameter}' parameter"):
        call()
    assert "m_x" not in M.METRICS and "i_x" not in I.REGISTRY and "a_x" not in A.ACTIVATIONS


def test_a_metric_returning_the_wrong_shape_is_named():
    try:
        initscope.register_metric("bad_shape", lambda S: S.mean(axis=1))  # (T, w), not (T,)
        with pytest.raises(ValueError, match="'bad_shape' must return one value per trial"):
            initscope.run(metrics=["bad_shape"], **SMALL)
    finally:
        M.METRICS.pop("bad_shape", None)


def test_no_public_name_shadows_a_module():
    import importlib.util

    for name in initscope.__all__:
        assert importlib.util.find_spec(f"initscope.{name}") is None, name
    assert callable(initscope.run) and initscope.Result.__name__ == "Result"
    assert json.dumps(sorted(initscope.__all__))  # the API is a plain list of names
