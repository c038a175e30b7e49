"""Initialization training: the forward-mode JVP, the exact gradient, the forward-gradient estimator, the loop."""

import math

import numpy as np
import pandas as pd
import pytest

from initscope.core import init_train as it
from initscope.core.data import sample
from initscope.core.network import Architecture, draw_layer, layer_forward, layer_param_jvp

ARCHS = [
    Architecture("relu"),
    Architecture("tanh", norm="layer", residual=0.5),
    Architecture("gelu", norm="batch"),
    Architecture("leaky_relu", residual=1.0),
]


def _net(rng, *, T=2, n=12, d=3, widths=(5, 5, 5), init="kaiming-normal", shift="normal", shift_scale=0.3):
    """Inputs (T, n, d) and parameters of a small network, one generator per trial."""
    X = np.stack([sample("ball", n, d, rng=rng) for _ in range(T)])
    rngs = [np.random.default_rng(rng.integers(2**32)) for _ in range(T)]
    params, fan_in = [], d
    for w in widths:
        params.append(draw_layer(init, fan_in, w, gain=math.sqrt(2), shift=shift, shift_scale=shift_scale,
                                 rngs=rngs))
        fan_in = w
    return X, [(W.copy(), b.copy()) for W, b in params]


def _random_tangents(params, rng):
    return [(rng.standard_normal(W.shape), rng.standard_normal(b.shape)) for W, b in params]


def _shifted(params, tangents, h):
    return [(W + h * dW, b + h * db) for (W, b), (dW, db) in zip(params, tangents)]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{a.activation}-{a.norm}-{a.residual}")
@pytest.mark.parametrize("objective", it.OBJECTIVES)
def test_jvp_matches_finite_differences(arch, objective, rng):
    X, params = _net(rng)
    v = _random_tangents(params, rng)
    f, slope = it.objective_jvp(X, params, v, arch, objective=objective, rms_penalty=0.7)
    np.testing.assert_allclose(f, it.objective_value(X, params, arch, objective=objective, rms_penalty=0.7),
                               rtol=1e-12)
    h = 1e-6
    plus = it.objective_value(X, _shifted(params, v, h), arch, objective=objective, rms_penalty=0.7)
    minus = it.objective_value(X, _shifted(params, v, -h), arch, objective=objective, rms_penalty=0.7)
    fd = (plus - minus) / (2 * h)
    # Central differences: truncation O(h²·f''') and rounding O(eps·|f|/h) ≈ 1e-10·|f|.
    # ReLU's kinks are crossed with probability O(h) — negligible at this h.
    np.testing.assert_allclose(slope, fd, rtol=1e-5, atol=1e-6 * (1 + np.abs(f).max()))


def test_state_jvp_matches_layer_forward(rng):
    # The JVP's own forward pass is network.layer_forward, exactly.
    X, params = _net(rng)
    for arch in ARCHS:
        s = X
        ds = None
        for (W, b), (dW, db) in zip(params, _random_tangents(params, rng)):
            ref, _ = layer_forward(s, W, b, arch)
            s, ds, _ = layer_param_jvp(s, ds, W, b, dW, db, arch)
            np.testing.assert_allclose(s, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{a.activation}-{a.norm}-{a.residual}")
@pytest.mark.parametrize("objective", it.OBJECTIVES)
def test_backprop_gradient_agrees_with_forward_mode(arch, objective, rng):
    X, params = _net(rng)
    f, grads = it.objective_gradient(X, params, arch, objective=objective)
    for _ in range(3):
        v = _random_tangents(params, rng)
        _, slope = it.objective_jvp(X, params, v, arch, objective=objective)
        dot = sum(np.einsum("tij,tij->t", gW, dW) + np.einsum("tj,tj->t", gb, db)
                  for (gW, gb), (dW, db) in zip(grads, v))
        np.testing.assert_allclose(dot, slope, rtol=1e-9, atol=1e-12)
    assert all(gW.shape == W.shape and gb.shape == b.shape for (gW, gb), (W, b) in zip(grads, params))


def test_forward_gradient_is_unbiased_with_the_known_variance(rng):
    """Average K forward-gradient estimates of one network; compare with the backprop gradient.

    For g = (∇f·v)v with v ~ N(0, I): E[g] = ∇f and Var(g_i) = ‖∇f‖² + (∂_i f)²
    (Baydin et al. 2022). The mean of K estimates is then within
    z·sqrt((‖∇f‖² + (∂_i f)²)/K) of ∂_i f, for every component i.
    """
    arch = Architecture("tanh", norm="layer")
    X1, params1 = _net(rng, T=1, n=10, d=3, widths=(4, 4))
    K = 20_000
    X = np.repeat(X1, K, axis=0)
    params = [(np.repeat(W, K, axis=0), np.repeat(b, K, axis=0)) for W, b in params1]
    _, exact = it.objective_gradient(X1, params1, arch)
    g = np.concatenate([np.concatenate([gW.ravel(), gb.ravel()]) for gW, gb in exact])
    _, est = it.forward_gradient(X, params, arch, rng=rng)
    E = np.concatenate([np.concatenate([eW.reshape(K, -1), eb.reshape(K, -1)], axis=1) for eW, eb in est], axis=1)
    P = g.size
    var = g @ g + g * g
    # Bonferroni over P components at a 1e-4 family-wise false alarm rate.
    from scipy.stats import norm

    z = norm.isf(1e-4 / (2 * P))
    assert np.all(np.abs(E.mean(axis=0) - g) <= z * np.sqrt(var / K))
    # The variance itself: each component's sample variance is within 6 of its
    # standard errors (its fourth moment is finite: v is Gaussian), averaged over components.
    ratio = E.var(axis=0) / var
    assert abs(ratio.mean() - 1) < 6 * math.sqrt(8 / K)
    # An estimator that ignored the tangent's direction would fail the mean test badly.
    assert np.linalg.norm(E.mean(axis=0) - g) < 0.2 * np.linalg.norm(g) * math.sqrt(P)


@pytest.mark.parametrize("method, lr", [("backprop", 0.05), ("forward-gradient", 0.002)])
@pytest.mark.parametrize("objective", it.OBJECTIVES)
def test_both_methods_increase_the_objective(method, lr, objective, rng):
    X, params = _net(rng, T=3, n=30, d=3, widths=(8, 8, 8, 8), shift="linspace", shift_scale=1.0)
    arch = Architecture("relu")
    before = [(W.copy(), b.copy()) for W, b in params]
    new, history = it.train(X, params, arch, method=method, steps=40, lr=lr, objective=objective,
                            rng=np.random.default_rng(1))
    first = history[history["step"] == 0].set_index("trial")["objective"]
    last = history[history["step"] == 40].set_index("trial")["objective"]
    assert (last > first).all(), (method, first.values, last.values)
    np.testing.assert_allclose(last.values, it.objective_value(X, new, arch, objective=objective), rtol=1e-12)
    # The input parameters are not modified.
    assert all(np.array_equal(W, W0) and np.array_equal(b, b0) for (W, b), (W0, b0) in zip(params, before))


def test_history_has_the_documented_columns(rng):
    X, params = _net(rng, T=2)
    _, history = it.train(X, params, Architecture("relu"), method="forward-gradient", steps=5, lr=1e-3,
                          batch=6, rng=rng, eval_every=2)
    assert tuple(history.columns) == it.HISTORY_COLUMNS
    assert sorted(history["step"].unique()) == [0, 2, 4, 5]
    assert len(history) == 2 * 4
    assert (history.groupby("trial")["seconds"].apply(lambda s: s.is_monotonic_increasing)).all()
    assert (history.loc[history["step"] == 0, "seconds"] == 0).all()
    assert pd.api.types.is_float_dtype(history["objective"])


def test_zero_steps_returns_the_same_network(rng):
    X, params = _net(rng)
    new, history = it.train(X, params, Architecture("relu"), method="backprop", steps=0, lr=0.1, rng=rng)
    assert all(np.array_equal(W, W0) and np.array_equal(b, b0) for (W, b), (W0, b0) in zip(new, params))
    assert len(history) == X.shape[0]


def test_accepts_read_only_broadcast_shifts(rng):
    # draw_layer's deterministic shifts are a read-only broadcast view; training must copy them.
    X = np.stack([sample("ball", 10, 3, rng=rng) for _ in range(2)])
    rngs = [np.random.default_rng(s) for s in (1, 2)]
    params = [draw_layer("kaiming-normal", 3, 6, gain=1.0, shift="linspace", shift_scale=1.0, rngs=rngs)]
    assert not params[0][1].flags.writeable
    new, _ = it.train(X, params, Architecture("relu"), method="backprop", steps=2, lr=0.01, rng=rng)
    assert new[0][1].flags.writeable


@pytest.mark.parametrize("kwargs, name", [
    (dict(method="adam"), "method"),
    (dict(objective="entropy"), "objective"),
    (dict(steps=-1), "steps"),
    (dict(lr=0.0), "lr"),
    (dict(batch=1.5), "batch"),
    (dict(rms_penalty=-1.0), "rms_penalty"),
])
def test_bad_arguments_name_the_parameter(kwargs, name, rng):
    X, params = _net(rng)
    args = dict(method="backprop", steps=1, lr=0.1, rng=rng) | kwargs
    with pytest.raises(ValueError, match=f"'{name}'"):
        it.train(X, params, Architecture("relu"), **args)
