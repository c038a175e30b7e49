"""The study loop: determinism, batching, numerical hazards, every option end to end."""

import numpy as np
import pandas as pd
import pytest

from initscope import make_config, run
from initscope.core.metrics import DEFAULT_METRICS
from initscope.study.runner import JACOBIAN_SAMPLES, NumericalWarning, materialize

SMALL = dict(depth=3, width=8, samples=12, trials=3)


def _values(res):
    return res.metrics.set_index(["init", "trial", "layer", "metric"])["value"]


def test_default_run_is_the_seed_study():
    res = run(trials=2)
    cfg = res.config
    assert (cfg.input_dim, cfg.width, cfg.depth, cfg.samples) == (3, 40, 10, 100)
    assert cfg.init == ("normal", "sphere") and cfg.readout == "zeros" and cfg.shift == "linspace"
    m = res.metrics
    assert set(m["metric"]) == set(DEFAULT_METRICS)
    assert len(m) == 2 * 2 * 11 * len(DEFAULT_METRICS)
    assert list(m.columns[:5]) == ["init", "trial", "layer", "metric", "value"]
    assert set(res.spectra["layer"]) == set(range(11))
    # layer 0 is the input: 3 singular values; hidden layers: min(100, 40)
    counts = res.spectra.groupby(["init", "trial", "layer"]).size()
    assert counts.xs(0, level="layer").eq(3).all() and counts.xs(5, level="layer").eq(40).all()
    assert len(res.projections) == 2 * 11 * 100
    assert set(res.weight_norms["kind"]) == {"input", "internal"}


def test_same_seed_identical_and_different_seed_different():
    a, b = run(seed=3, **SMALL), run(seed=3, **SMALL)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.spectra, b.spectra)
    c = run(seed=4, **SMALL)
    assert not np.allclose(a.metrics["value"].fillna(0), c.metrics["value"].fillna(0))


def test_batched_equals_one_trial_at_a_time():
    cfg = make_config(init="kaiming-normal,sphere", readout="init", shift="normal", **SMALL)
    batched = _values(run(cfg, workers=1))
    one_at_a_time = _values(run(cfg, workers=3))  # three chunks of one trial each
    np.testing.assert_allclose(one_at_a_time.to_numpy(), batched.to_numpy(), rtol=1e-10, equal_nan=True)
    alone = _values(run(make_config(init="kaiming-normal", readout="init", shift="normal", **{**SMALL, "trials": 1})))
    np.testing.assert_allclose(alone.to_numpy(), batched.loc[["kaiming-normal"]].xs(0, level="trial", drop_level=False).to_numpy(),
                               rtol=1e-10, equal_nan=True)


def test_an_initializer_does_not_depend_on_its_companions():
    both = _values(run(init="normal,sphere", **SMALL))
    alone = _values(run(init="sphere", **SMALL))
    np.testing.assert_array_equal(both.loc["sphere"].to_numpy(), alone.loc["sphere"].to_numpy())


@pytest.mark.slow
def test_overflow_is_a_result_not_a_crash():
    with pytest.warns(NumericalWarning, match=r"layer \d+"):
        res = run(init="normal", depth=300, width=64, shift="zeros", trials=2, metrics="rms,effective_rank,grad_norm",
                  readout="init")
    over = res.flags[res.flags["flag"] == "overflow"].set_index("trial")["layer"]
    assert sorted(over.index) == [0, 1]
    rms = res.metrics[res.metrics["metric"] == "rms"].pivot_table(index="layer", columns="trial", values="value", dropna=False)
    grad = res.metrics[res.metrics["metric"] == "grad_norm"].pivot_table(index="layer", columns="trial", values="value", dropna=False)
    for trial, first in over.items():
        assert rms.loc[first:, trial].isna().all() and grad.loc[first:, trial].isna().all()
        assert np.isfinite(rms.loc[: first - 1, trial]).all()
        assert rms.loc[first - 1, trial] > 1e100  # it really was heading for overflow


def test_collapse_is_flagged_with_rank_zero():
    # layer norm over a single unit maps every state to exactly 0.
    res = run(init="kaiming-normal", norm="layer", width=1, depth=2, samples=10, trials=2)
    m = res.metrics.set_index(["trial", "layer", "metric"])["value"]
    assert m.xs((0, 2), level=["trial", "layer"]).loc[["effective_rank", "numerical_rank", "stable_rank"]].eq(0).all()
    assert np.isnan(m.loc[(0, 2, "mean_cosine")])
    assert set(res.flags.query("flag == 'collapsed'")["layer"]) == {1, 2}


@pytest.mark.parametrize("samples,width", [(1, 6), (5, 40), (12, 1)])
def test_edge_sizes_run_end_to_end(samples, width):
    res = run(depth=2, width=width, samples=samples, trials=2, readout="init")
    assert len(res.metrics) == 2 * 2 * 3 * len(DEFAULT_METRICS)
    assert res.spectra.groupby(["init", "trial", "layer"]).size().max() == max(min(samples, 3), min(samples, width))


@pytest.mark.parametrize("opts", [
    dict(activation="tanh", norm="layer", residual=0.5, input_dim=8),
    dict(activation="gelu", norm="batch", shift="uniform"),
    dict(activation="leaky_relu", shift="normal", shift_scale=0.2, readout="init"),
    dict(activation="identity", shift="zeros", dtype="float32"),
    dict(data="box-spaced", target="sin-sum"),
    dict(data="iris", target="dataset"),
    dict(data="digits", samples=50, init="orthogonal,xavier-uniform,torch-default"),
])
def test_options_end_to_end(opts):
    res = run(**{**SMALL, **opts})
    m = res.metrics
    assert m["value"].notna().any()
    core = m[m["metric"].isin(["rms", "std", "effective_rank", "distance_corr", "jacobian_rank", "mean_cosine"])]
    assert np.isfinite(core["value"]).all()
    if opts.get("dtype") == "float32":
        assert res.config.dtype == "float32"
    if opts.get("data") == "iris":
        assert res.config.input_dim == 4


def test_gradients_nonzero_with_initialised_readout_and_zero_with_the_seeds():
    g = run(readout="init", **SMALL).metrics.query("metric == 'grad_norm' and layer > 0")["value"]
    assert (g > 0).all() and np.isfinite(g).all()
    z = run(**SMALL).metrics.query("metric == 'grad_norm'")
    assert (z.query("layer > 0")["value"] == 0).all() and z.query("layer == 0")["value"].isna().all()


def test_identity_jacobian_keeps_full_rank_and_relu_loses_it():
    ident = run(init="orthogonal", activation="identity", input_dim=5, width=5, depth=4, trials=2, metrics="jacobian_rank")
    assert (ident.metrics["value"] == 1).all()
    # width 2 < input 5: at most 2 of 5 directions get through
    thin = run(init="kaiming-normal", input_dim=5, width=2, depth=2, trials=2, metrics="jacobian_rank")
    assert (thin.metrics.query("layer > 0")["value"] <= 0.4 + 1e-12).all()


@pytest.mark.parametrize("d", [6, 7, 30])
def test_jacobian_rank_in_a_run_is_matrix_rank_of_the_chain_rule_jacobians(d):
    # Narrow ReLU layers with shifts: some samples lose input directions (exact path),
    # others keep all of them (certified path); both must count as matrix_rank does.
    # d = 30 > width: the run pushes (w, w) matrices with the (d, w) Jacobians' singular values.
    cfg = dict(init="kaiming-normal", input_dim=d, width=7, depth=5, samples=80, trials=3, shift="normal",
               shift_scale=0.5, metrics="jacobian_rank", seed=3)
    got = run(**cfg).metrics.pivot(index="trial", columns="layer", values="value")
    X, _, params = materialize(make_config(**cfg), "kaiming-normal")
    m = JACOBIAN_SAMPLES
    seen = set()
    for t in range(3):
        J = np.broadcast_to(np.eye(d), (m, d, d))  # (sample, input direction, unit)
        S = X[t]
        for layer, (W, b) in enumerate(params, start=1):
            z = S @ W[t] + b[t]
            J = (J @ W[t]) * (z[:m] > 0)[:, None, :]
            S = np.maximum(z, 0)
            ranks = [np.linalg.matrix_rank(J[i]) for i in range(m)]
            seen.update(ranks)
            assert got.loc[t, layer] == pytest.approx(np.mean(ranks) / d, abs=1e-12)
    assert len(seen) > 2  # the case really mixes full and deficient ranks


def test_metrics_subset_and_config_columns():
    res = run(metrics="rms,linear_r2", **SMALL)
    assert set(res.metrics["metric"]) == {"rms", "linear_r2"}
    assert (res.metrics["width"] == 8).all() and (res.metrics["metrics"] == "rms,linear_r2").all()


def test_bad_workers_and_mixed_arguments():
    with pytest.raises(ValueError, match="'workers'"):
        run(workers=0, **SMALL)
    with pytest.raises(TypeError):
        run(make_config(), depth=3)


def test_trial_ids_reproduce_those_trials_of_the_full_run():
    cfg = make_config(readout="init", shift="normal", **SMALL)
    full = _values(run(cfg))
    part = _values(run(cfg, trial_ids=[2, 0]))
    assert sorted(part.index.get_level_values("trial").unique()) == [0, 2]
    np.testing.assert_allclose(part.to_numpy(), full.loc[part.index].to_numpy(), rtol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="'trial_ids'"):
        run(cfg, trial_ids=[1, 1])


def test_on_layer_hook_sees_every_layer_and_can_stop_the_run():
    import pandas as pd

    from initscope.study.runner import run

    seen = []
    hooked = run(init="normal,sphere", depth=4, trials=3, samples=20, workers=1,
                 on_layer=lambda init, layer: seen.append((init, layer)))
    assert seen == [(init, layer) for init in ("normal", "sphere") for layer in range(1, 5)]
    plain = run(init="normal,sphere", depth=4, trials=3, samples=20, workers=1)
    pd.testing.assert_frame_equal(hooked.metrics, plain.metrics)

    class Stop(Exception):
        pass

    def stop_at_2(init, layer):
        if layer == 2:
            raise Stop

    with pytest.raises(Stop):
        run(init="normal", depth=50, trials=4, samples=20, workers=2, on_layer=stop_at_2)
