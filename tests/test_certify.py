"""The certificate of no information loss: constructed cases that must pass and must fail, and the CLI."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from initscope.core.certify import FAILURE_COLUMNS, LAYER_COLUMNS, certify
from initscope.cli.certify import CERTIFICATE_FILE, main
from initscope.study.config import make_config
from initscope.core.data import sample
from initscope.core.initializers import draw
from initscope.core.network import Architecture, draw_layer


def _orthogonal(n, m, rng):
    return draw("orthogonal", n, m, gain=1.0, rng=rng)


def _looks_linear(d, width, depth, trials, rng):
    """Mirrored weights, zero shifts (Balduzzi et al. 2017), built by hand.

    Units come in pairs (u, −u) with width = 2m. Layer 1 maps x to [xV, −xV];
    a later layer reads the pair difference relu(u) − relu(−u) = u through
    W = [[V, −V], [−V, V]], so the ReLU net computes x·V_1·V_2·… in mirrored
    form, an injective map when every V is (semi-)orthogonal with m ≥ d.
    """
    m = width // 2
    params = []
    for layer in range(depth):
        Ws = []
        for _ in range(trials):
            if layer == 0:
                V = _orthogonal(d, m, rng)
                Ws.append(np.concatenate([V, -V], axis=1))
            else:
                V = _orthogonal(m, m, rng)
                top = np.concatenate([V, -V], axis=1)
                Ws.append(np.concatenate([top, -top], axis=0))
        params.append((np.stack(Ws), np.zeros((trials, width))))
    return params


def _ball(trials, n, d, rng):
    return np.stack([sample("ball", n, d, rng=rng) for _ in range(trials)])


@pytest.mark.parametrize("depth", [1, 5, 40])
def test_looks_linear_with_orthogonal_v_and_zero_shifts_is_certified_at_every_depth(depth, rng):
    X = _ball(3, 60, 3, rng)
    params = _looks_linear(3, 40, depth, 3, rng)
    cert = certify(X, params, Architecture("relu"))
    assert cert.certified, cert.by_layer()
    assert (cert.layers["min_rank"] == 3).all()
    # The map is an isometry onto its image (‖relu(u)‖² + ‖relu(−u)‖² = ‖u‖²): separations are kept.
    sep = cert.layers.pivot(index="trial", columns="layer", values="min_separation")
    np.testing.assert_allclose(sep.to_numpy() * 0 + sep[0].to_numpy()[:, None], sep.to_numpy(), rtol=0.2)


def test_registry_looks_linear_is_certified_through_materialize():
    # The same construction as the registry's looks-linear, fed through the run's own network builder.
    from initscope.study.runner import materialize

    cfg = make_config(init="looks-linear", shift="zeros", depth=30, trials=2, samples=50)
    X, _, params = materialize(cfg, "looks-linear")
    assert certify(X, params, Architecture("relu")).certified


def test_deep_relu_with_sphere_rows_and_the_seeds_shifts_is_not_certified():
    from initscope.study.runner import materialize

    cfg = make_config(init="sphere-rows", depth=40, trials=3)  # the seed otherwise: linspace shifts, width 40
    X, _, params = materialize(cfg, "sphere-rows")
    cert = certify(X, params, Architecture("relu"))
    assert not cert.certified
    by_layer = cert.by_layer()
    assert by_layer.loc[0, "certified"]  # the input itself is always fine
    failing = by_layer[~by_layer["certified"]]
    # Every trial's data are crushed onto a point: samples collide relative to the state scale.
    assert not by_layer.iloc[-1]["certified"] and by_layer.iloc[-1]["trials_certified"] == 0
    assert failing["reason"].str.contains("collide").all()
    # And at the post's input_dim = width = 40, the first ReLU layer already loses input directions.
    cfg40 = make_config(init="sphere-rows", input_dim=40, depth=2, trials=2)
    X, _, params = materialize(cfg40, "sphere-rows")
    cert40 = certify(X, params, Architecture("relu"))
    layer1 = cert40.layers[cert40.layers["layer"] == 1]
    assert (~layer1["certified"]).all() and (layer1["min_rank"] < 40).all()
    assert layer1["reason"].str.contains("jacobian rank").all()


def test_a_layer_narrower_than_the_input_fails_the_jacobian_test(rng):
    d, w = 5, 3
    X = _ball(2, 20, d, rng)
    rngs = [np.random.default_rng(s) for s in (1, 2)]
    params = [draw_layer("orthogonal", d, w, gain=1.0, shift="zeros", shift_scale=0.0, rngs=rngs),
              draw_layer("orthogonal", w, 8, gain=1.0, shift="zeros", shift_scale=0.0, rngs=rngs)]
    cert = certify(X, params, Architecture("identity"))
    assert not cert.certified
    for layer in (1, 2):  # once lost, a direction stays lost downstream
        rows = cert.layers[cert.layers["layer"] == layer]
        assert (rows["min_rank"] == 3).all() and (rows["rank_failures"] == 20).all()
        assert rows["reason"].str.startswith("jacobian rank 3 < 5 at sample 0").all()
    f = cert.failures
    assert set(f["kind"]) == {"rank"} and (f.loc[f["layer"] == 1, "rank"] == 3).all()


def test_a_wide_identity_network_with_orthogonal_weights_is_certified(rng):
    X = _ball(2, 30, 4, rng)
    rngs = [np.random.default_rng(s) for s in (3, 4)]
    params = [draw_layer("orthogonal", 4, 6, gain=1.0, shift="normal", shift_scale=1.0, rngs=rngs),
              draw_layer("orthogonal", 6, 6, gain=1.0, shift="normal", shift_scale=1.0, rngs=rngs)]
    for arch in (Architecture("identity"), Architecture("tanh"), Architecture("leaky_relu", residual=0.5)):
        assert certify(X, params, arch).certified


def test_identical_input_rows_are_not_distinct_samples(rng):
    X = _ball(1, 12, 3, rng)
    X[0, 5] = X[0, 2]
    X[0, 9] = X[0, 2]
    params = _looks_linear(3, 10, 3, 1, rng)
    cert = certify(X, params, Architecture("relu"))
    assert cert.certified
    assert cert.duplicates == (3,)  # pairs (2, 5), (2, 9), (5, 9)
    assert cert.layers["collisions"].eq(0).all()
    assert (cert.layers["min_separation"] > 0).all()  # measured over distinct pairs only


def test_two_samples_folded_together_by_relu_collide(rng):
    # x and −x differ, but a layer that reads only |x·a| through relu(u) + relu(−u)... folds them.
    d = 2
    a = np.array([[1.0], [0.0]])
    W1 = np.concatenate([a, -a], axis=1)[None]  # (1, 2, 2): u = x_0, −x_0
    W2 = np.array([[[1.0], [1.0]]])  # relu(u) + relu(−u) = |x_0|
    X = np.array([[[0.5, 0.0], [-0.5, 0.0], [0.2, 0.3]]])
    cert = certify(X, [(W1, np.zeros((1, 2))), (W2, np.zeros((1, 1)))], Architecture("relu"))
    layer2 = cert.layers[cert.layers["layer"] == 2].iloc[0]
    assert not layer2["certified"]
    assert "samples 0 and 1 collide" in layer2["reason"]
    assert layer2["rank_failures"] == 3  # and a 1-unit layer cannot keep 2 input directions
    assert cert.failures.query("kind == 'collision'")[["i", "j"]].values.tolist() == [[0, 1]]
    assert d == cert.input_dim


def test_a_collapsed_layer_fails_on_collisions(rng):
    X = _ball(2, 15, 3, rng)
    W = np.stack([draw("kaiming-normal", 3, 8, gain=1.0, rng=rng) for _ in range(2)])
    dead = (W, np.full((2, 8), -100.0))  # every unit off on the unit ball: the state is all zeros
    cert = certify(X, [dead], Architecture("relu"))
    row = cert.layers[cert.layers["layer"] == 1]
    assert (~row["certified"]).all()
    assert (row["collisions"] == 15 * 14 // 2).all()
    assert (row["min_rank"] == 0).all()
    constant = (np.zeros((2, 3, 8)), np.ones((2, 8)))  # every sample on the same nonzero state
    cert = certify(X, [constant], Architecture("identity"))
    assert (cert.layers.query("layer == 1")["collisions"] == 105).all()


def test_the_tolerance_is_relative_to_the_state_scale():
    X = np.array([[[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]]])
    arch = Architecture("identity")
    # A layer that squeezes the second coordinate 100-fold: rows 0 and 1 end 6e-4 apart
    # relative to the state's typical norm, whatever the overall scale (1e6 here).
    squeeze = [(np.diag([1.0, 1e-2])[None] * 1e6, np.zeros((1, 2)))]
    assert certify(X, squeeze, arch).certified  # rtol 1e-6: still apart
    loose = certify(X, squeeze, arch, rtol=1e-3)
    assert not loose.certified and loose.duplicates == (0,)
    assert loose.layers.query("layer == 1")["reason"].iloc[0] == "samples 0 and 1 collide"
    assert loose.layers.query("layer == 1")["min_separation"].iloc[0] == pytest.approx(6.1e-4, rel=0.05)
    # Inputs that coincide within the tolerance at the input are one sample, not a collision.
    close = np.array([[[1.0, 0.0], [1.0, 1e-4], [0.0, 1.0]]])
    merged = certify(close, [(np.eye(2)[None], np.zeros((1, 2)))], arch, rtol=1e-3)
    assert merged.certified and merged.duplicates == (1,)


def test_non_finite_states_fail_and_tables_have_the_documented_columns(rng):
    X = _ball(2, 10, 3, rng)
    W = np.stack([draw("normal", 3, 5, gain=1e200, rng=rng) for _ in range(2)])
    W2 = np.stack([draw("normal", 5, 5, gain=1e200, rng=rng) for _ in range(2)])
    cert = certify(X, [(W, np.zeros((2, 5))), (W2, np.zeros((2, 5)))], Architecture("relu"))
    assert tuple(cert.layers.columns) == LAYER_COLUMNS
    assert tuple(cert.failures.columns) == FAILURE_COLUMNS
    assert not cert.layers.query("layer == 2")["certified"].any()
    assert cert.layers.query("layer == 2")["reason"].str.contains("non-finite").all()


@pytest.mark.parametrize("X, params, name", [
    (np.zeros((2, 3)), [], "'X'"),
    (np.full((1, 3, 2), np.nan), [], "'X'"),
    (np.zeros((1, 3, 2)), [(np.zeros((1, 4, 5)), np.zeros((1, 5)))], "'params'"),
    (np.zeros((1, 3, 2)), [(np.zeros((1, 2, 5)), np.zeros((1, 4)))], "'params'"),
])
def test_bad_input_names_the_parameter(X, params, name):
    with pytest.raises(ValueError, match=name):
        certify(X, params, Architecture("relu"))
    with pytest.raises(ValueError, match="'rtol'"):
        certify(np.zeros((1, 2, 2)), [], Architecture("relu"), rtol=-1.0)


# --- the CLI -----------------------------------------------------------------

SMALL = ["--width", "8", "--samples", "20", "--trials", "2"]


def test_cli_exit_0_when_certified_and_writes_the_csv(tmp_path, capsys):
    code = main(["--init", "looks-linear", "--shift", "zeros", "--depth", "6", *SMALL, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "certified at every layer" in out
    table = pd.read_csv(tmp_path / CERTIFICATE_FILE)
    assert list(table.columns) == ["init", *LAYER_COLUMNS]
    assert len(table) == 2 * 7 and table["certified"].all()


def test_cli_exit_3_when_any_layer_is_not_certified(tmp_path, capsys):
    code = main(["--init", "sphere-rows,looks-linear", "--shift", "zeros", "--input-dim", "12", "--depth", "2",
                 *SMALL, "--out", str(tmp_path), "--quiet"])
    captured = capsys.readouterr()
    assert code == 3
    assert captured.out == ""
    table = pd.read_csv(tmp_path / CERTIFICATE_FILE)
    assert set(table["init"]) == {"sphere-rows", "looks-linear"}
    assert not table.query("init == 'sphere-rows' and layer == 1")["certified"].any()


@pytest.mark.parametrize("argv, needle", [
    (["--depth", "0"], "'depth'"),
    (["--init", "nope"], "'init'"),
    (["--rtol", "-1"], "'rtol'"),
    (["--no-such-flag"], "no-such-flag"),
])
def test_cli_exit_2_for_bad_input(argv, needle, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_cli_exit_2_when_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["--depth", "1", *SMALL, "--out", str(f)]) == 2


@pytest.mark.slow
def test_cli_runs_as_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "initscope.cli.certify", "--init", "kaiming-normal", "--depth", "2",
                           *SMALL, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 3), proc.stderr
    assert (tmp_path / CERTIFICATE_FILE).is_file()
    assert math.isfinite(pd.read_csv(tmp_path / CERTIFICATE_FILE)["min_separation"].iloc[0])
