"""The layer's forward, JVP and VJP against DESIGN.md's model and finite differences."""

import itertools
import math

import numpy as np
import pytest

from initscope.core.gradients import recompute_schedule, weight_gradient_norms
from initscope.core.network import (
    NORM_EPS,
    Architecture,
    activate,
    activation_derivative,
    draw_shifts,
    forward,
    layer_forward,
    layer_jvp,
    layer_param_jvp,
    layer_param_vjp,
    layer_vjp,
    mse_output_gradient,
    pre_activation_vjp,
)

ACTS = ["relu", "leaky_relu", "tanh", "gelu", "identity"]
ARCHS = [Architecture(a, n, r) for a, n, r in itertools.product(ACTS, ["none", "layer", "batch"], [0.0, 0.5])]


def test_forward_is_the_seed_model(rng):
    """The seed's forward: clip(x @ W + shift, 0, inf), layer after layer."""
    x = rng.standard_normal((1, 7, 3))
    W1, W2 = rng.standard_normal((1, 3, 5)), rng.standard_normal((1, 5, 5))
    b = np.linspace(-1, 1, 5)[None]
    s1, _ = layer_forward(x, W1, b, Architecture())
    s2, _ = layer_forward(s1, W2, b, Architecture())
    ref = np.clip(np.clip(x[0] @ W1[0] + b[0], 0, np.inf) @ W2[0] + b[0], 0, np.inf)
    np.testing.assert_array_equal(s2[0], ref)


def test_layer_and_batch_norm_and_residual_definitions(rng):
    s_prev = rng.standard_normal((2, 6, 4))
    W = rng.standard_normal((2, 4, 4))
    b = rng.standard_normal((2, 4))
    z = s_prev @ W + b[:, None]
    h = np.tanh(z)
    ln = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + NORM_EPS)
    bn = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + NORM_EPS)
    np.testing.assert_allclose(layer_forward(s_prev, W, b, Architecture("tanh", "layer"))[0], ln, rtol=1e-12)
    np.testing.assert_allclose(layer_forward(s_prev, W, b, Architecture("tanh", "batch"))[0], bn, rtol=1e-12)
    np.testing.assert_allclose(layer_forward(s_prev, W, b, Architecture("tanh", "layer", 0.3))[0],
                               s_prev + 0.3 * ln, rtol=1e-12)
    # shapes differ: no residual branch
    W2 = rng.standard_normal((2, 4, 3))
    out, _ = layer_forward(s_prev, W2, b[:, :3], Architecture("tanh", "none", 0.3))
    np.testing.assert_allclose(out, np.tanh(s_prev @ W2 + b[:, None, :3]))


@pytest.mark.parametrize("act", ACTS)
def test_activation_derivative_matches_finite_differences(act, rng):
    z = rng.standard_normal(200) * 2
    z = z[np.abs(z) > 1e-3]  # away from ReLU's kink
    h = 1e-6
    fd = (activate(act, z + h) - activate(act, z - h)) / (2 * h)
    np.testing.assert_allclose(activation_derivative(act, z), fd, rtol=1e-6, atol=1e-8)


def test_shift_schemes(rng):
    np.testing.assert_array_equal(draw_shifts("linspace", 5, scale=2.0, rng=rng), 2 * np.linspace(-1, 1, 5))
    assert not draw_shifts("zeros", 4, scale=1.0, rng=rng).any()
    u = draw_shifts("uniform", 10_000, scale=0.5, rng=rng)
    assert u.min() >= -0.5 and u.max() <= 0.5 and abs(u.std() - 0.5 / np.sqrt(3)) < 5 * 0.5 / np.sqrt(3 * 2 * 10_000)
    g = draw_shifts("normal", 10_000, scale=0.2, rng=rng)
    assert abs(g.std() - 0.2) < 5 * 0.2 / np.sqrt(2 * 10_000)
    with pytest.raises(ValueError, match="'shift'.*linspace"):
        draw_shifts("bogus", 3, scale=1.0, rng=rng)


def _smooth_inputs(rng, arch, n=6, w=4):
    s_prev = rng.standard_normal((2, n, w))
    W = rng.standard_normal((2, w, w)) / np.sqrt(w)
    b = rng.standard_normal((2, w)) * 0.1
    return s_prev, W, b


@pytest.mark.parametrize("arch", [a for a in ARCHS if a.norm != "batch"], ids=str)
def test_jvp_matches_finite_differences(arch, rng):
    s_prev, W, b = _smooth_inputs(rng, arch)
    _, z = layer_forward(s_prev, W, b, arch)
    tangent = rng.standard_normal((2, 6, 3, 4))  # 3 tangent directions per sample
    got = layer_jvp(tangent, W, z, arch)
    h = 1e-6
    for k in range(3):
        plus, _ = layer_forward(s_prev + h * tangent[:, :, k], W, b, arch)
        minus, _ = layer_forward(s_prev - h * tangent[:, :, k], W, b, arch)
        np.testing.assert_allclose(got[:, :, k], (plus - minus) / (2 * h), rtol=1e-5, atol=1e-6)


def test_jvp_batch_norm_holds_statistics_fixed(rng):
    arch = Architecture("tanh", "batch")
    s_prev, W, b = _smooth_inputs(rng, arch)
    _, z = layer_forward(s_prev, W, b, arch)
    h = np.tanh(z)
    sigma = np.sqrt(h.var(axis=1, keepdims=True) + NORM_EPS)
    from initscope.core.network import batch_norm_sigma

    np.testing.assert_allclose(batch_norm_sigma(z, arch), sigma)
    tangent = rng.standard_normal((2, 6, 2, 4))
    got = layer_jvp(tangent, W, z, arch, sigma)
    want = (tangent @ W[:, None]) * (1 - np.tanh(z) ** 2)[:, :, None, :] / sigma[:, :, None, :]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_vjp_matches_finite_differences(arch, rng):
    s_prev, W, b = _smooth_inputs(rng, arch)
    cot = rng.standard_normal((2, 6, 4))

    def loss(sp, Wm):
        return (layer_forward(sp, Wm, b, arch)[0] * cot).sum(axis=(1, 2))

    _, z = layer_forward(s_prev, W, b, arch)
    ds_prev, dW = layer_vjp(cot, s_prev, W, z, arch)
    h = 1e-6
    for idx in [(0, 1, 2), (1, 3, 0), (0, 0, 0)]:
        E = np.zeros_like(W)
        E[idx] = h
        fd = (loss(s_prev, W + E) - loss(s_prev, W - E)) / (2 * h)
        assert dW[idx] == pytest.approx(fd[idx[0]], rel=1e-5, abs=1e-7)
        E = np.zeros_like(s_prev)
        E[idx] = h
        fd = (loss(s_prev + E, W) - loss(s_prev - E, W)) / (2 * h)
        assert ds_prev[idx] == pytest.approx(fd[idx[0]], rel=1e-5, abs=1e-7)


def test_mse_output_gradient(rng):
    s = rng.standard_normal((2, 5, 3))
    W_out = rng.standard_normal((2, 3, 1))
    y = rng.standard_normal((2, 5, 1))
    loss, ds = mse_output_gradient(s, W_out, y)
    np.testing.assert_allclose(loss, (((s @ W_out) - y) ** 2).mean(axis=(1, 2)))
    h = 1e-6
    E = np.zeros_like(s)
    E[1, 2, 0] = h
    fd = (mse_output_gradient(s + E, W_out, y)[0] - mse_output_gradient(s - E, W_out, y)[0]) / (2 * h)
    assert ds[1, 2, 0] == pytest.approx(fd[1], rel=1e-6)


def _params_fixture(rng, depth, d, w, T=2):
    Ws = [rng.standard_normal((T, d if l == 1 else w, w)) / np.sqrt(d if l == 1 else w) * 1.3 for l in range(1, depth + 1)]
    bs = [rng.standard_normal((T, w)) * 0.1 for _ in range(depth)]
    return lambda l, s_prev: (Ws[l - 1], bs[l - 1]), Ws, bs


@pytest.mark.parametrize("depth,slots,checkpoints", [(1, 4, 4), (3, 4, 4), (9, 2, 4), (17, 4, 4), (12, 1, 4),
                                                     (40, 2, 1), (23, 3, 2), (11, 2, 0)])
@pytest.mark.parametrize("arch", [Architecture("tanh", "layer", 0.5), Architecture("relu"), Architecture("gelu", "batch")], ids=str)
def test_checkpointed_gradients_equal_plain_backprop(depth, slots, checkpoints, arch, rng):
    T, n, d, w = 2, 8, 3, 5
    params, Ws, bs = _params_fixture(rng, depth, d, w, T)
    x = rng.standard_normal((T, n, d))
    states, zs = [x], []
    for l in range(1, depth + 1):
        s, z = layer_forward(states[-1], Ws[l - 1], bs[l - 1], arch)
        states.append(s)
        zs.append(z)
    ds_last = rng.standard_normal(states[-1].shape)
    ds, want = ds_last, np.zeros((T, depth))
    for l in range(depth, 0, -1):
        ds, dW = layer_vjp(ds, states[l - 1], Ws[l - 1], zs[l - 1], arch)
        want[:, l - 1] = np.linalg.norm(dW.reshape(T, -1), axis=1)
    got = weight_gradient_norms(x, params, depth, arch, ds_last, slots=slots, checkpoints=checkpoints)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("checkpoints", [0, 1, 2, 4])
def test_binomial_checkpointing_holds_a_fixed_number_of_states_at_any_depth(checkpoints, rng):
    # The forward calls weight_gradient_norms really makes are recompute_schedule's, in order;
    # the schedule never holds more than `checkpoints` states, whatever the depth; and no layer
    # runs forward more often than binomial checkpointing allows: the least r with
    # C(c + r, c) ≥ blocks sweeps before the leaf, plus the leaf's own.
    x = rng.standard_normal((1, 3, 2))
    for depth in (1, 2, 5, 9, 16, 33, 64, 129, 200):
        calls = []
        W = np.full((1, 2, 2), 0.5)

        def params(layer, s_prev):
            calls.append(layer)
            return W, np.zeros((1, 2))

        norms = weight_gradient_norms(x, params, depth, Architecture("tanh"), np.ones((1, 3, 2)), slots=4,
                                      checkpoints=checkpoints)
        order, peak = recompute_schedule(depth, slots=4, checkpoints=checkpoints)
        assert calls == order and np.all(norms > 0)
        assert peak <= max(checkpoints, 1)  # with none to spare, the last block's input is the one state
        blocks = -(-depth // 4)
        r = 0
        while checkpoints and math.comb(checkpoints + r, checkpoints) < blocks:
            r += 1
        most = max(np.bincount(order))
        assert most <= (r + 1 if checkpoints else blocks), (depth, most)


def test_gradient_norm_against_finite_differences_of_the_loss(rng):
    """grad_norm is ‖∂loss/∂W_l‖ for the MSE of the readout: check one entry by finite differences."""
    arch, depth, T, n, d, w = Architecture("tanh"), 4, 1, 10, 3, 6
    params, Ws, bs = _params_fixture(rng, depth, d, w, T)
    x = rng.standard_normal((T, n, d))
    W_out = rng.standard_normal((T, w, 1))
    y = rng.standard_normal((T, n, 1))

    def loss(Wlist):
        s = x
        for W, b in zip(Wlist, bs):
            s, _ = layer_forward(s, W, b, arch)
        return mse_output_gradient(s, W_out, y)[0][0]

    s = x
    for W, b in zip(Ws, bs):
        s, _ = layer_forward(s, W, b, arch)
    _, ds_last = mse_output_gradient(s, W_out, y)
    norms = weight_gradient_norms(x, params, depth, arch, ds_last)
    h = 1e-6
    for layer in (1, 3):
        grad = np.zeros_like(Ws[layer - 1][0])
        for i, j in np.ndindex(grad.shape):
            plus = [W.copy() for W in Ws]
            minus = [W.copy() for W in Ws]
            plus[layer - 1][0, i, j] += h
            minus[layer - 1][0, i, j] -= h
            grad[i, j] = (loss(plus) - loss(minus)) / (2 * h)
        assert norms[0, layer - 1] == pytest.approx(np.linalg.norm(grad), rel=1e-5)


def test_zero_readout_gives_exact_zero_gradients(rng):
    x = rng.standard_normal((2, 5, 3))
    norms = weight_gradient_norms(x, lambda l, s: (_ for _ in ()).throw(AssertionError("no work")), 4,
                                  Architecture(), np.zeros((2, 5, 4)))
    assert norms.shape == (2, 4) and not norms.any()


# ---- parameter tangents: the forward-mode and reverse-mode maps init training uses ----

# Every norm, and residual off, partial, full, and on a layer whose width changes (where it cannot apply).
PARAM_ARCHS = [Architecture(a, n, r) for a, n, r in itertools.product(["tanh", "gelu"], ["none", "layer", "batch"],
                                                                          [0.0, 0.5, 1.0])]


def _param_problem(rng, w_prev, w, T=2, n=6):
    s_prev = rng.standard_normal((T, n, w_prev))
    W = rng.standard_normal((T, w_prev, w)) / np.sqrt(w_prev)
    b = rng.standard_normal((T, w)) * 0.1
    tangents = rng.standard_normal(s_prev.shape), rng.standard_normal(W.shape), rng.standard_normal(b.shape)
    return s_prev, W, b, tangents


@pytest.mark.parametrize("w_prev", [4, 3], ids=["square", "widening"])
@pytest.mark.parametrize("arch", PARAM_ARCHS, ids=str)
def test_param_jvp_matches_finite_differences(arch, w_prev, rng):
    s_prev, W, b, (ds_prev, dW, db) = _param_problem(rng, w_prev, 4)
    s, ds, z = layer_param_jvp(s_prev, ds_prev, W, b, dW, db, arch)
    ref, ref_z = layer_forward(s_prev, W, b, arch)
    np.testing.assert_allclose(s, ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(z, ref_z, rtol=1e-13, atol=1e-13)
    h = 1e-6
    plus, _ = layer_forward(s_prev + h * ds_prev, W + h * dW, b + h * db, arch)
    minus, _ = layer_forward(s_prev - h * ds_prev, W - h * dW, b - h * db, arch)
    # Central differences of smooth maps: truncation O(h²), rounding O(eps/h) ≈ 1e-10.
    np.testing.assert_allclose(ds, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-7)
    # A fixed input (ds_prev None) is the zero input tangent.
    _, ds_fixed, _ = layer_param_jvp(s_prev, None, W, b, dW, db, arch)
    _, ds_zero, _ = layer_param_jvp(s_prev, np.zeros_like(s_prev), W, b, dW, db, arch)
    np.testing.assert_allclose(ds_fixed, ds_zero, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("w_prev", [4, 3], ids=["square", "widening"])
@pytest.mark.parametrize("arch", [Architecture("relu", n, r) for n in ("none", "layer", "batch") for r in (0.0, 0.5, 1.0)]
                         + PARAM_ARCHS, ids=str)
def test_param_vjp_is_the_adjoint_of_the_param_jvp(arch, w_prev, rng):
    """<JVP(v), u> = <v, VJP(u)> for v = (ds_prev, dW, db) and any cotangent u, trial by trial."""
    s_prev, W, b, (ds_prev, dW, db) = _param_problem(rng, w_prev, 4)
    s, ds, z = layer_param_jvp(s_prev, ds_prev, W, b, dW, db, arch)
    u = rng.standard_normal(s.shape)
    g_prev, gW, gb = layer_param_vjp(u, s_prev, W, z, arch)
    lhs = np.einsum("tnw,tnw->t", ds, u)
    rhs = (np.einsum("tnw,tnw->t", ds_prev, g_prev) + np.einsum("tij,tij->t", dW, gW)
           + np.einsum("tj,tj->t", db, gb))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-11, atol=1e-12)
    # layer_vjp is the same map without the shifts, and ∂/∂b sums ∂/∂z over samples.
    want_prev, want_W = layer_vjp(u, s_prev, W, z, arch)
    np.testing.assert_array_equal(g_prev, want_prev)
    np.testing.assert_array_equal(gW, want_W)
    np.testing.assert_array_equal(gb, pre_activation_vjp(u, s_prev, W, z, arch).sum(axis=1))


def test_forward_keeps_every_state_and_pre_activation(rng):
    arch = Architecture("gelu", "layer", 0.5)
    x = rng.standard_normal((2, 5, 3))
    params = [(rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4))),
              (rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 4)))]
    states, zs = forward(x, params, arch)
    assert len(states) == 3 and len(zs) == 2 and states[0] is x
    s = x
    for (W, b), got_s, got_z in zip(params, states[1:], zs):
        want_z = s @ W + b[:, None, :]
        s, _ = layer_forward(s, W, b, arch)
        np.testing.assert_array_equal(got_s, s)
        np.testing.assert_allclose(got_z, want_z, rtol=1e-14)


@pytest.mark.parametrize("init", ["normal", "sphere", "sphere-rows", "xavier-normal", "kaiming-normal", "lecun-normal",
                                  "uniform", "xavier-uniform", "kaiming-uniform", "torch-default", "orthogonal"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shift", ["linspace", "normal", "uniform"])
def test_draw_layer_batches_give_each_trials_rule_numbers_bit_for_bit(init, dtype, shift):
    """draw_layer fills a batch and transforms it at once (rules.BATCHED); per trial the rule itself is the contract."""
    from initscope.core.initializers import initializer
    from initscope.core.network import draw_layer

    for fan_in, fan_out in ((40, 40), (7, 3), (3, 9)):
        streams = lambda: [np.random.default_rng([7, t]) for t in range(6)]  # noqa: E731
        W, b = draw_layer(init, fan_in, fan_out, gain=1.3, shift=shift, shift_scale=0.7, rngs=streams(), dtype=dtype)
        rule, W_ref, b_ref = initializer(init).draw, [], []
        for r in streams():
            W_ref.append(rule(fan_in, fan_out, 1.3, r).astype(dtype))
            b_ref.append(draw_shifts(shift, fan_out, scale=0.7, rng=r if shift != "linspace" else None, dtype=dtype))
        assert W.dtype == dtype
        np.testing.assert_array_equal(W, np.stack(W_ref))
        np.testing.assert_array_equal(b, np.stack(b_ref))


def test_a_registered_rule_is_drawn_trial_by_trial(monkeypatch):
    """A user's rule has no batched form: draw_layer calls it once per trial, with that trial's generator."""
    from initscope.core import initializers
    from initscope.core.network import draw_layer

    calls = []

    def mine(fan_in, fan_out, gain, rng):
        calls.append(rng)
        return gain * rng.standard_normal((fan_in, fan_out))

    monkeypatch.setitem(initializers.REGISTRY, "mine-test", initializers.Initializer("mine-test", mine, "test"))
    rngs = [np.random.default_rng(t) for t in range(4)]
    W, _ = draw_layer("mine-test", 5, 3, gain=2.0, shift="zeros", shift_scale=1.0, rngs=rngs)
    assert calls == rngs
    np.testing.assert_array_equal(W[2], 2.0 * np.random.default_rng(2).standard_normal((5, 3)))
