"""The order-to-chaos phase diagram in theory (Poole et al. 2016; Schoenholz et al. 2017).

For a deep network with i.i.d. weights of variance σ_w²/fan_in and i.i.d.
shifts of variance σ_b² (no normalization, no residual), mean-field theory
gives at each (σ_w², σ_b²):

- q*: the fixed point of the length map; χ₁ = σ_w²·E[φ'(√q*·z)²], the
  slope of the correlation map at c = 1. χ₁ < 1: ordered (every pair of
  inputs ends up with correlation 1); χ₁ > 1: chaotic (c* < 1).
- ξ_c = −1/ln χ_c, χ_c the correlation map's slope at c*: the depth over which
  correlations reach c* (|c_l − c*| ∝ e^{−l/ξ_c}); it diverges on the χ₁ = 1 line.
- ξ_q = −1/ln χ_q, χ_q the length map's slope at q*: the depth over which
  q_l reaches q*. Schoenholz et al. write χ_q = χ₁ + σ_w²·E[φ''(u)φ(u)];
  integrating by parts (Stein's lemma) it is σ_w²·E[φ(u)φ'(u)·u]/q*, which
  needs no second derivative.

Pure numpy and scipy; no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from initscope.core import theory as th
from initscope.core.kernels import check_nodes, gaussian_expectation
from initscope.core.network import activation_derivative, activate

__all__ = ["PHASE_COLUMNS", "chi_q", "length_depth_scale", "depth_scale", "phase_point", "theory_grid",
           "critical_sigma_w2"]

PHASE_COLUMNS = ("sigma_w2", "sigma_b2", "q_star", "chi_1", "c_star", "chi_c", "xi_c", "chi_q", "xi_q", "phase")
_Q_FLOOR = 1e-12  # where q* = 0, the length map's slope is its limit at q → 0 (φ is linear there)


def depth_scale(chi: float) -> float:
    """−1/ln χ for a contraction rate χ: inf at χ ≥ 1 (up to rounding), 0 at χ = 0, NaN if undefined."""
    if not math.isfinite(chi) or chi < 0:
        return math.nan
    if chi == 0:
        return 0.0
    if chi >= 1.0 - 1e-12:
        return math.inf
    return -1.0 / math.log(chi)


def chi_q(activation: str, *, sigma_w2: float, sigma_b2: float = 0.0, q: float | None = None,
          nodes: int = th.DEFAULT_NODES) -> float:
    """χ_q = d q_map/dq at q (default q*) = σ_w²·E[φ(u)φ'(u)·u]/q, u ~ N(0, q).

    Stein's lemma turns Schoenholz et al.'s χ₁ + σ_w²·E[φ''φ] into this form.
    Piecewise-linear φ: exactly σ_w²·(1 + a²)/2 = χ₁. At q* = 0 the slope is
    taken at q = 1e-12 (its limit σ_w²·φ'(0)² for φ(0) = 0). NaN at q* = inf.
    """
    check_nodes(nodes)
    if q is None:
        q = th.q_star(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes)
    if not math.isfinite(q):
        return math.nan
    q = max(float(q), _Q_FLOOR)
    moment = gaussian_expectation(lambda u: activate(activation, u) * activation_derivative(activation, u) * u,
                                  q, nodes)
    return float(sigma_w2 * moment / q)


def length_depth_scale(activation: str, *, sigma_w2: float, sigma_b2: float = 0.0,
                       nodes: int = th.DEFAULT_NODES) -> float:
    """ξ_q = −1/ln χ_q: the depth over which q_l approaches q* (Schoenholz et al. 2017, eq. 6)."""
    return depth_scale(chi_q(activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes))


def phase_point(activation: str, sigma_w2: float, sigma_b2: float, *, nodes: int = th.DEFAULT_NODES) -> dict:
    """Every phase-diagram quantity at one (σ_w², σ_b²): a dict keyed by PHASE_COLUMNS.

    phase is "ordered" (χ₁ < 1), "chaotic" (χ₁ > 1), "critical" (|χ₁ − 1| ≤ 1e-9),
    or "undefined" where q* is 0 or infinite (no fixed length to speak of).
    """
    kw = dict(sigma_w2=sigma_w2, sigma_b2=sigma_b2, nodes=nodes)
    q = th.q_star(activation, **kw)
    row = dict.fromkeys(PHASE_COLUMNS, math.nan)
    row.update(sigma_w2=float(sigma_w2), sigma_b2=float(sigma_b2), q_star=q, phase="undefined")
    row["chi_q"] = chi_q(activation, q=q, **kw)
    row["xi_q"] = depth_scale(row["chi_q"])
    if not (math.isfinite(q) and q > 0):
        return row
    row["chi_1"] = th.chi_1(activation, q=q, **kw)
    row["c_star"] = th.c_star(activation, q=q, **kw)
    row["chi_c"] = th.chi_c(activation, q=q, c=row["c_star"], **kw)
    row["xi_c"] = depth_scale(row["chi_c"])
    gap = row["chi_1"] - 1.0
    row["phase"] = "critical" if abs(gap) <= 1e-9 else ("ordered" if gap < 0 else "chaotic")
    return row


def theory_grid(activation: str, sigma_w2s, sigma_b2s, *, nodes: int = th.DEFAULT_NODES) -> list[dict]:
    """`phase_point` at every (σ_w², σ_b²) of the grid, σ_b² outer: a list of row dicts.

    sigma_w2s (a,), sigma_b2s (b,): 1-D sequences of non-negative numbers.
    Returns a·b rows in the order (σ_b² index, σ_w² index).
    """
    th.q_map(1.0, activation, sigma_w2=1.0, nodes=nodes)  # validates activation and nodes once
    return [phase_point(activation, float(sw), float(sb), nodes=nodes)
            for sb in np.asarray(sigma_b2s, dtype=float) for sw in np.asarray(sigma_w2s, dtype=float)]


def critical_sigma_w2(activation: str, sigma_b2: float, *, lo: float = 0.1, hi: float = 20.0,
                      nodes: int = th.DEFAULT_NODES) -> float:
    """σ_w² on the χ₁ = 1 line at a given σ_b², by Brent's method on χ₁ − 1 over [lo, hi].

    Schoenholz et al. 2017 (Fig. 1): for tanh at σ_b² = 0.05 this is ≈ 1.76.
    NaN when χ₁ − 1 does not change sign on [lo, hi].
    """
    from scipy.optimize import brentq

    def gap(sw):
        q = th.q_star(activation, sigma_w2=sw, sigma_b2=sigma_b2, nodes=nodes)
        return th.chi_1(activation, sigma_w2=sw, sigma_b2=sigma_b2, q=q, nodes=nodes) - 1.0

    g_lo, g_hi = gap(lo), gap(hi)
    if not (math.isfinite(g_lo) and math.isfinite(g_hi)) or g_lo * g_hi > 0:
        return math.nan
    return float(brentq(gap, lo, hi, xtol=1e-12, rtol=1e-12))
