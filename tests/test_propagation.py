"""core.propagation: the Jacobian-spectrum and pre-activation metrics against direct computations."""

import math

import numpy as np
import pytest

from initscope.core import propagation as P
from initscope.core import theory as th
from initscope.study.config import make_config
from initscope.study.runner import run


def _jacobians(rng, T=3, m=5, d=4, w=7):
    return rng.standard_normal((T, m, d, w))


@pytest.mark.parametrize("d, w", [(4, 7), (7, 4), (5, 5)])
def test_singular_values_match_numpy_svd_per_sample(rng, d, w):
    J = _jacobians(rng, d=d, w=w)
    sv = P.jacobian_singular_values(J)
    np.testing.assert_allclose(sv, np.linalg.svd(J, compute_uv=False), rtol=1e-12)
    # Σσ² = ‖J‖_F²: jacobian_sq_mean is that over w, averaged over samples.
    np.testing.assert_allclose(P.jacobian_sq_mean(J), (J**2).sum(axis=(2, 3)).mean(axis=1) / w, rtol=1e-13)
    if d <= w:  # square or wide: the normalised values' mean square is jacobian_sq_mean
        normalised_sq = (sv**2 * d / w).mean(axis=(1, 2))
        np.testing.assert_allclose(normalised_sq, P.jacobian_sq_mean(J), rtol=1e-12)


def test_log_spread_is_the_std_of_log_sigma_above_the_rank_threshold(rng):
    T, m, d, w = 2, 6, 5, 8
    J = _jacobians(rng, T=T, m=m, d=d, w=w)
    J[0, 0, 4] = J[0, 0, 3]  # sample 0 of trial 0 loses a direction: rank 4
    sv = P.jacobian_singular_values(J)
    spread = P.jacobian_log_spread(sv)
    for t in range(T):
        logs = []
        for i in range(m):
            s = np.linalg.svd(J[t, i], compute_uv=False)
            logs += list(np.log(s[s > s.max() * max(d, w) * np.finfo(float).eps]))
        assert len(logs) == (m * d - 1 if t == 0 else m * d)
        assert spread[t] == pytest.approx(np.std(logs), rel=1e-12)
    # An isometry up to scale has no spread.
    Q = np.linalg.qr(rng.standard_normal((1, 3, w, d)))[0].transpose(0, 1, 3, 2) * 2.5
    assert P.jacobian_log_spread(P.jacobian_singular_values(Q))[0] == pytest.approx(0.0, abs=1e-12)


def test_non_finite_trials_give_nan(rng):
    J = _jacobians(rng)
    J[1, 2, 0, 0] = np.inf
    sq = P.jacobian_sq_mean(J)
    sv = P.jacobian_singular_values(J)
    spread = P.jacobian_log_spread(sv)
    assert np.isnan(sq[1]) and np.isfinite(sq[[0, 2]]).all()
    assert np.isnan(spread[1]) and np.isfinite(spread[[0, 2]]).all()
    assert P.jacobian_sq_mean(np.zeros((2, 0, 3, 4))).shape == (2,)


def test_histogram_counts_every_value_above_the_threshold(rng):
    J = _jacobians(rng, d=3, w=9)
    sv = P.jacobian_singular_values(J)
    counts = P.log10_histogram(sv, 3, 9)
    assert counts.shape == (3, len(P.JACOBIAN_LOG10_EDGES) - 1)
    assert (counts.sum(axis=1) == sv[0].size).all()
    counts = counts.sum(axis=0)
    # bin centres weighted by counts ≈ mean of log10(σ·√(d/w)), to half a bin
    centres = 0.5 * (P.JACOBIAN_LOG10_EDGES[1:] + P.JACOBIAN_LOG10_EDGES[:-1])
    assert (counts * centres).sum() / counts.sum() == pytest.approx(
        np.log10(sv * math.sqrt(3 / 9)).mean(), abs=0.05)


def test_pre_q(rng):
    z = rng.standard_normal((2, 6, 5))
    np.testing.assert_allclose(P.pre_q(z), (z**2).mean(axis=(1, 2)))
    assert np.isnan(P.pre_q(np.zeros((1, 0, 3)))).all()


# ---- through run(): the metrics against mean-field theory ------------------------------------------------

def _per_trial(result, metric):
    m = result.metrics
    return m[m["metric"] == metric].pivot(index="trial", columns="layer", values="value")


def test_jacobian_sq_mean_is_one_at_every_layer_for_kaiming_relu():
    # For ReLU without shifts E‖J_l‖² = ‖J_{l−1}‖²·σ_w²/2 exactly, at any width (the sign flip w → −w
    # halves every unit's contribution), so with kaiming's σ_w² = 2 the expectation is 1 at every layer.
    trials, width = 16, 256
    result = run(init=("kaiming-normal",), activation="relu", shift="zeros", width=width, input_dim=16,
                 data="sphere", depth=8, samples=16, trials=trials, metrics=("jacobian_sq_mean",), seed=1)
    values = _per_trial(result, "jacobian_sq_mean")
    assert (values[0] == 1.0).all()  # the input's Jacobian is the identity
    mean, se = values.mean(), values.std(ddof=1) / math.sqrt(trials)
    assert (np.abs(mean - 1.0) <= 5 * se).all(), (mean.tolist(), se.tolist())
    # and the spread across trials is the finite-width one: per layer a relative variance ≈ 5/width
    # (one unit's ‖w‖²·1[z > 0] has relative variance 5/4 over width units), never more
    layers = np.arange(1, 9)
    assert (values.std(ddof=1).to_numpy()[1:] <= 3 * np.sqrt(5 * layers / width)).all()


def _fan_in_bias(q, fan_in):
    """|relative error| of mean-field χ₁ at one layer from a unit's weight norm correlating with its z.

    E[‖w‖²φ'(z)²] has, besides σ_w²·E[φ'²], the part of w along the input, w_∥ = σ_w·g/√fan_in with z ∝ g:
    relative correction (E[g²φ'(√q·g)²]/E[φ'(√q·g)²] − 1)/fan_in (shifts only weaken the link).
    """
    from initscope.core.kernels import gaussian_expectation

    d2 = lambda u: (1 - np.tanh(u) ** 2) ** 2  # noqa: E731
    ratio = float(gaussian_expectation(lambda u: u * u / q * d2(u), q, 100) / gaussian_expectation(d2, q, 100))
    return abs(ratio - 1.0) / fan_in


@pytest.mark.slow
def test_jacobian_sq_mean_follows_the_chi_1_product_for_critical_tanh():
    from initscope.core.phase import critical_sigma_w2
    from initscope.study.overlays import mean_field_curves
    from initscope.study.records import config_dict

    sigma_b2 = 0.05
    sigma_w2 = critical_sigma_w2("tanh", sigma_b2)  # χ₁ = 1 at q*: the edge of chaos
    trials, width, d, depth = 16, 256, 64, 8
    result = run(init=("kaiming-normal",), gain=math.sqrt(sigma_w2), activation="tanh", shift="normal",
                 shift_scale=math.sqrt(sigma_b2), width=width, input_dim=d, data="sphere", depth=depth, samples=8,
                 trials=trials, metrics=("jacobian_sq_mean", "pre_q", "pre_cosine"), seed=2)
    values = _per_trial(result, "jacobian_sq_mean")
    q0, c0 = _per_trial(result, "pre_q")[0].mean(), _per_trial(result, "pre_cosine")[0].mean()
    curves = mean_field_curves(config_dict(result.config), "kaiming-normal", q0, c0)
    theory = curves["jacobian_sq_mean"]
    # The inputs start below q*, so χ₁(q_l) > 1 and the product grows towards its limit.
    assert theory[depth] > 1.5
    mean, se = values.mean().to_numpy(), values.std(ddof=1).to_numpy() / math.sqrt(trials)
    bias = np.cumsum([0.0] + [_fan_in_bias(curves["pre_q"][l], d if l == 1 else width) for l in range(1, depth + 1)])
    tolerance = 5 * se + bias * theory
    assert (np.abs(mean - theory) <= tolerance).all(), (mean.tolist(), theory.tolist(), tolerance.tolist())


@pytest.mark.slow
def test_pre_q_and_pre_cosine_reach_the_mean_field_fixed_points():
    # Schoenholz et al.'s chaotic tanh point: c* = 0.4468 for the pre-activations, while the
    # post-activation mean_cosine settles lower (0.4195 at infinite width): the trap the issue names.
    sigma_w2, sigma_b2 = 2.5, 0.05
    q_star = th.q_star("tanh", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    c_star = th.c_star("tanh", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    trials, width, depth = 8, 512, 80  # ξ_c = 11.8 layers: by layer 50 the start is forgotten (e^-4)
    result = run(init=("kaiming-normal",), gain=math.sqrt(sigma_w2), activation="tanh", shift="normal",
                 shift_scale=math.sqrt(sigma_b2), width=width, input_dim=8, data="sphere", depth=depth, samples=16,
                 trials=trials, metrics=("pre_q", "pre_cosine", "mean_cosine"), seed=1)
    late = {name: _per_trial(result, name).loc[:, 50:].mean(axis=1) for name in ("pre_q", "pre_cosine", "mean_cosine")}
    for name, target in (("pre_q", q_star), ("pre_cosine", c_star)):
        # Trials are independent networks: five standard errors of the trials' late-layer averages.
        se = late[name].std(ddof=1) / math.sqrt(trials)
        assert abs(late[name].mean() - target) <= 5 * se, (name, late[name].mean(), target, se)
        assert se < 0.02  # the tolerance is tight enough to mean something
    assert abs(late["pre_cosine"].mean() - c_star) < abs(late["mean_cosine"].mean() - c_star)


def _direct_log_spread(X, params, layers):
    """std of ln σ of ∂s_l/∂x over samples, from the product W_1 D_1 ⋯ W_l D_l per sample (trial 0),
    and the largest condition number σ_1/σ_k among the kept values, per layer."""
    out, cond = {}, {}
    for i in range(X.shape[1]):
        s, J = X[0, i], np.eye(X.shape[2])
        for layer, (W, b) in enumerate(params, start=1):
            z = s @ W[0] + b[0]
            J = J @ W[0] * (1 - np.tanh(z) ** 2)
            s = np.tanh(z)
            if layer in layers:
                sv = np.linalg.svd(J, compute_uv=False)
                kept = sv[sv > sv[0] * max(J.shape) * np.finfo(float).eps]
                out.setdefault(layer, []).extend(np.log(kept))
                cond[layer] = max(cond.get(layer, 1.0), kept[0] / kept[-1])
    return {layer: float(np.std(logs)) for layer, logs in out.items()}, cond


@pytest.mark.slow
def test_jacobian_log_spread_stays_small_for_orthogonal_critical_tanh_and_grows_for_gaussian():
    """Dynamical isometry (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017) at width 128."""
    from initscope.core.phase import critical_sigma_w2
    from initscope.study.model import materialize

    sigma_b2, width, depth = 1e-4, 128, 16
    sigma_w2 = critical_sigma_w2("tanh", sigma_b2)
    config = make_config(init=("orthogonal", "kaiming-normal"), gain=math.sqrt(sigma_w2), activation="tanh",
                         shift="normal", shift_scale=math.sqrt(sigma_b2), width=width, input_dim=width,
                         data="sphere", depth=depth, samples=6, trials=2, metrics=("jacobian_log_spread",), seed=3)
    result = run(config)
    m = result.metrics
    spread = {init: m[(m["init"] == init) & (m["metric"] == "jacobian_log_spread")].pivot(
        index="trial", columns="layer", values="value") for init in config.init}
    checked = (1, 4, depth)
    for init in config.init:
        X, _, params = materialize(config, init)
        direct, cond = _direct_log_spread(X, params, checked)
        for layer in checked:
            if cond[layer] * 1e3 * np.finfo(float).eps > 1:
                continue  # beyond float64's window: the stretches of core.lyapunov, tested in test_lyapunov
            # Two orders of rounding: ln σ_k moves by ~ eps·σ_1/σ_k, so allow 100·eps·(largest σ_1/σ_k).
            tol = 100 * np.finfo(float).eps * cond[layer]
            assert spread[init].loc[0, layer] == pytest.approx(direct[layer], rel=tol, abs=1e-12), (init, layer, cond)
    orth, gauss = spread["orthogonal"].mean(), spread["kaiming-normal"].mean()
    assert orth[depth] < 1.0  # O(1): the singular values stay within a factor e of each other
    assert gauss[depth] > gauss[2] + 2.0  # Gaussian weights spread them layer after layer
    assert gauss[depth] > 4 * orth[depth]


def test_wide_inputs_jacobian_metrics_equal_the_direct_product():
    # d > w: the loop carries each tangent as its (w, w) QR triangle; the metrics must not notice.
    from initscope.study.model import materialize

    config = make_config(init=("kaiming-normal",), activation="tanh", shift="normal", shift_scale=0.1, width=8,
                         input_dim=24, data="normal", depth=3, samples=5, trials=2,
                         metrics=("jacobian_sq_mean", "jacobian_log_spread", "jacobian_rank"), seed=4)
    result = run(config)
    X, _, params = materialize(config, "kaiming-normal")
    sq = _per_trial(result, "jacobian_sq_mean")
    spread, cond = _direct_log_spread(X, params, (1, 2, 3))
    for layer in (1, 2, 3):
        J = []
        for i in range(X.shape[1]):
            s, Ji = X[0, i], np.eye(24)
            for W, b in params[:layer]:
                z = s @ W[0] + b[0]
                Ji, s = Ji @ W[0] * (1 - np.tanh(z) ** 2), np.tanh(z)
            J.append(Ji)
        assert sq.loc[0, layer] == pytest.approx(np.mean([(j**2).sum() / 8 for j in J]), rel=1e-12)
        tol = 100 * np.finfo(float).eps * cond[layer]
        assert _per_trial(result, "jacobian_log_spread").loc[0, layer] == pytest.approx(spread[layer], rel=tol, abs=1e-12)


@pytest.mark.slow
def test_jacobian_log_spread_at_depth_is_the_lyapunov_spread_not_float64s_window():
    """A linear Gaussian network (identity, kaiming gain 1, width 48, depth 128): the formed product keeps ~36
    nats of its spectrum, the re-orthogonalised stretches all of it. Bartlett's decomposition gives every
    index's stretch mean L·½(ln(2/N) + ψ((N−i+1)/2)) and variance L·¼ψ'(·), hence the pooled spread."""
    from scipy.special import digamma, polygamma

    N, L = 48, 128
    config = make_config(init=("kaiming-normal", "orthogonal"), gain=1.0, activation="identity", shift="zeros",
                         width=N, input_dim=N, data="sphere", depth=L, samples=4, trials=2,
                         metrics=("jacobian_log_spread",), seed=2)
    m = run(config).metrics
    spread = m[(m["layer"] == L) & (m["init"] == "kaiming-normal")]["value"].to_numpy()
    dof = (N - np.arange(N)) / 2
    mean = L * 0.5 * (np.log(2 / N) + digamma(dof))
    theory = np.sqrt(np.mean(L * 0.25 * polygamma(1, dof)) + np.var(mean))  # ≈ 0.5·L for large N
    assert theory > 50  # far beyond the float64 window a formed product could show (~36/2 nats of spread)
    np.testing.assert_allclose(spread, theory, rtol=0.1)
    orth = m[(m["layer"] == L) & (m["init"] == "orthogonal")]["value"].to_numpy()
    assert np.all(orth < 1e-6)  # an orthogonal linear product is an isometry at any depth
