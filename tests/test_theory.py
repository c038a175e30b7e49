"""Measurements against closed forms, with tolerances derived from width, samples and trials."""

import math

import numpy as np
import pytest

from initscope.core import metrics as M
from initscope.core import theory
from initscope.core.data import sample
from initscope.core.initializers import default_gain, draw
from initscope.core.network import Architecture, layer_forward
from initscope.study.runner import run


def _forward_second_moments(init, *, activation, d, w, depth, n, trials, rng, gain):
    """Per-trial mean of s² at every layer, zero shifts: (trials, depth + 1)."""
    arch = Architecture(activation)
    X = np.stack([sample("ball", n, d, rng=rng) for _ in range(trials)])
    m = np.empty((trials, depth + 1))
    m[:, 0] = (X * X).mean(axis=(1, 2))
    S = X
    for layer in range(1, depth + 1):
        W = np.stack([draw(init, S.shape[-1], w, gain=gain, rng=rng) for _ in range(trials)])
        S, _ = layer_forward(S, W, np.zeros((trials, w)), arch)
        m[:, layer] = (S * S).mean(axis=(1, 2))
    return m


@pytest.mark.slow
def test_kaiming_relu_keeps_rms_flat_over_20_layers(rng):
    w, depth, trials = 256, 20, 60
    m = _forward_second_moments("kaiming-normal", activation="relu", d=3, w=w, depth=depth, n=20,
                                trials=trials, rng=rng, gain=default_gain("kaiming-normal", "relu"))
    ratio = m / m[:, :1]
    # Each layer multiplies m by an average over w units of relu(z)²/E, whose relative
    # variance is 5 for one sample (E[z⁴]/2 / (E[z²]/2)² − 1), so after l layers
    # Var(m_l/m_0) ≤ exp(5l/w) − 1. The mean over trials is 1 within 5 standard errors.
    layers = np.arange(depth + 1)
    se = np.sqrt(np.expm1(5 * layers / w) / trials)
    assert np.all(np.abs(ratio.mean(axis=0) - 1) <= 5 * se + 1e-12)
    # and the theory module's recursion says exactly "flat"
    pred = theory.expected_rms(1.0, init="kaiming-normal", gain=math.sqrt(2), activation="relu",
                               input_dim=3, width=w, depth=depth)
    np.testing.assert_allclose(pred, 1.0, rtol=1e-12)


def test_xavier_halves_second_moment_per_relu_layer(rng):
    w, depth, trials = 128, 8, 100
    m = _forward_second_moments("xavier-normal", activation="relu", d=w, w=w, depth=depth, n=20,
                                trials=trials, rng=rng, gain=1.0)
    ratio = (m / m[:, :1]).mean(axis=0)
    layers = np.arange(depth + 1)
    expected = 0.5**layers
    se = np.sqrt(np.expm1(5 * layers / w) / trials)
    assert np.all(np.abs(ratio / expected - 1) <= 5 * se + 1e-12)
    pred = theory.expected_rms(1.0, init="xavier-normal", gain=1.0, activation="relu",
                               input_dim=w, width=w, depth=depth) ** 2
    np.testing.assert_allclose(pred, expected, rtol=1e-12)


def test_orthogonal_identity_preserves_singular_values():
    res = run(init="orthogonal", activation="identity", shift="zeros", input_dim=40, width=40,
              depth=10, samples=100, trials=3, metrics="effective_rank")
    sp = res.spectra.pivot_table(index=["trial", "k"], columns="layer", values="singular_value")
    top = sp[0].groupby("trial").transform("max")
    for layer in range(1, 11):
        assert np.max(np.abs(sp[layer] - sp[0]) / top) < 1e-8


@pytest.mark.slow
def test_mean_cosine_follows_arc_cosine_map(rng):
    w, depth, trials, n = 800, 4, 8, 30
    arch = Architecture("relu")
    X = np.stack([sample("normal", n, 5, rng=rng) for _ in range(trials)])
    Xn = X / np.linalg.norm(X, axis=2, keepdims=True)
    c = np.einsum("tid,tjd->tij", Xn, Xn)
    off = ~np.eye(n, dtype=bool)
    S = X
    for layer in range(1, depth + 1):
        W = np.stack([draw("kaiming-normal", S.shape[-1], w, gain=math.sqrt(2), rng=rng) for _ in range(trials)])
        S, _ = layer_forward(S, W, np.zeros((trials, w)), arch)
        c = theory.relu_correlation_map(c)
        predicted = c[:, off].mean()
        measured = np.nanmean(M.mean_cosine(S))
        # The empirical kernel of w units fluctuates by O(1/sqrt(w)) per trial, with a
        # bias of O(1/w); averaged over trials.
        assert abs(measured - predicted) < 5 / math.sqrt(w * trials) + 2 / w, (layer, measured, predicted)


def test_relu_correlation_map_fixed_points_and_values():
    assert theory.relu_correlation_map(1.0) == pytest.approx(1.0)
    assert theory.relu_correlation_map(0.0) == pytest.approx(1 / math.pi)
    assert theory.relu_correlation_map(-1.0) == pytest.approx(0.0, abs=1e-15)
    # Monte Carlo check of the map itself, tolerance from the number of draws.
    rng = np.random.default_rng(5)
    rho, N = 0.3, 400_000
    z1 = rng.standard_normal(N)
    z2 = rho * z1 + math.sqrt(1 - rho**2) * rng.standard_normal(N)
    a, b = np.maximum(z1, 0), np.maximum(z2, 0)
    mc = (a * b).mean() / 0.5
    assert abs(mc - theory.relu_correlation_map(rho)) < 5 * 2 / math.sqrt(N)


def test_seed_observation_normal_scale_explodes():
    res = run(init="normal", trials=20, metrics="rms")
    rms = res.metrics.pivot_table(index="trial", columns="layer", values="value")
    assert np.median(rms[10] / rms[0]) > 1e3


def test_seed_observation_sphere_top_singular_value_falls_tenfold():
    res = run(init="sphere", input_dim=40, width=40, trials=50, metrics="effective_rank")
    top = res.spectra[res.spectra["k"] == 1].pivot_table(index="trial", columns="layer", values="singular_value")
    assert np.median(top[10] / top[1]) < 0.1
