"""The order-to-chaos phase diagram: theory on a grid of (σ_w², σ_b²), and measured depth scales.

`phase_study` returns tidy tables:

- theory (one row per grid point): q*, χ₁, c*, χ_c, ξ_c, χ_q, ξ_q and the phase
  (`core.phase.theory_grid`);
- measured (with `measure=True`, one row per point of a coarser grid): ξ_c
  and ξ_q measured in wide random networks against the theory's, with what the
  fits used;
- decay (one row per measured point × input group × network × layer): the
  pre-activations' mean cosine and mean square (the `pre_cosine` and `pre_q`
  metrics) that ξ_c and ξ_q are fitted to.

How ξ_c is measured. At each point, `networks` networks of width `width`
(kaiming-normal weights with gain σ_w, so fan_in·E[w²] = σ_w², and normal
shifts of std σ_b: the mean-field model exactly) get two groups A and B of
`samples` inputs each, with equal norms and equal pairwise cosines within a
group, chosen so that layer 1's pre-activations have second moment q* and
correlation c_A, c_B: c* + 0.05 and c* in the chaotic phase, 1 − 0.05 and
1 − 0.1 in the ordered one (c* = 1). Both groups share their input directions
and pass through the same weights, so the finite-width fluctuation of the
empirical cosine, O(1/√width) per layer and as large as the signal after a
few layers, is nearly the same in both and cancels in the difference
d_l = pre_cosine_A,l − pre_cosine_B,l ∝ χ_c^l = e^{−l/ξ_c} (common random
numbers; measuring |pre_cosine_l − c*| directly loses the chaotic phase's decay
in that noise within ~5 layers). The slope of ln(mean over networks of d_l)
against l, fitted from layer 2 while the mean stays above three standard
errors, gives ξ_c = −1/slope. Too few such layers (ξ_c ≲ 1) or q* not
positive and finite give NaN, with the reason in `note`. A measured ξ_c much
beyond `depth` is not resolved: near the χ₁ = 1 line it reads short.

How ξ_q is measured. A third group C is group B scaled so that layer 1's
pre-activations have second moment q*·(1 + 0.1) instead of q*; through the same
weights, d_l = pre_q_C,l − pre_q_B,l ∝ χ_q^l = e^{−l/ξ_q} (the q-map
linearised at q*), fitted as d_l above but from layer 1, since ξ_q is short
(about 1–2 layers for tanh): too few layers above the noise (ξ_q ≲ 0.9) give
NaN, with the reason in `note`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from initscope.core import phase as core_phase
from initscope.core import theory as th
from initscope.core.metrics import mean_cosine
from initscope.core.network import Architecture, draw_layer, layer_forward
from initscope.core.propagation import pre_q
from initscope.study import memory

__all__ = ["PhaseConfig", "PhaseResult", "phase_study", "measure_depth_scale", "parse_grid", "GROUPS",
           "MEASURED_COLUMNS", "plan_phase", "phase_estimate", "MAX_GRID_VALUES"]

_START_OFFSET = 0.05  # |c₁ − c*|: small enough for the linearised map, large against 1/√width noise
_Q_OFFSET = 0.1  # q₁/q* − 1 of group C: the q-map's curvature stays small against its slope there
GROUPS = ("A", "B", "C")
MEASURED_COLUMNS = ("sigma_w2", "sigma_b2", "xi_c_theory", "xi_c_measured", "xi_q_theory", "xi_q_measured", "c_star",
                    "c_start_a", "c_start_b", "layers_fitted", "q_layers_fitted", "note")
_MIN_LAYERS = 3  # a slope needs at least three points to mean anything
MAX_GRID_VALUES = 10**6  # per axis; the grid (a product of two) is then checked against the memory budget


@dataclass(frozen=True)
class PhaseConfig:
    """Everything `initscope phase` needs; saved with its outputs as phase.toml."""

    activation: str = "tanh"
    sigma_w2: tuple[float, ...] = tuple(np.round(np.linspace(1.0, 4.0, 25), 6))
    sigma_b2: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 0.3, 13), 6))
    measure: bool = False
    measure_sigma_w2: tuple[float, ...] = (1.2, 1.5, 2.0, 2.5, 3.0, 4.0)
    measure_sigma_b2: tuple[float, ...] = (0.05, 0.15, 0.3)
    width: int = 256
    depth: int = 30
    networks: int = 8
    samples: int = 32
    seed: int = 0
    nodes: int = th.DEFAULT_NODES


@dataclass
class PhaseResult:
    config: PhaseConfig
    theory: object  # pandas.DataFrame
    measured: object
    decay: object


def parse_grid(text: str, name: str) -> tuple[float, ...]:
    """'a,b,c' or 'START:STOP:N' (N evenly spaced values, both ends included) as a tuple of floats ≥ 0."""
    message = (f"The '{name}' parameter must be a comma-separated list of numbers >= 0 or START:STOP:N "
               f"with 1 <= N <= {MAX_GRID_VALUES}. Got {text!r} instead.")
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            n = int(count)
            if not 1 <= n <= MAX_GRID_VALUES:  # checked before linspace allocates N values
                raise ValueError
            values = np.linspace(float(start), float(stop), n)
        else:
            values = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ValueError(message) from None
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(message)
    # 12 significant digits (linspace's last-bit noise off), not 12 decimals: 1e-13 stays 1e-13, 1e300 finite.
    return tuple(float(f"{v:.12g}") for v in values)


def _check(config: PhaseConfig) -> None:
    th.q_map(1.0, config.activation, sigma_w2=1.0, nodes=config.nodes)  # activation and nodes, named errors
    for name in ("width", "depth", "networks", "samples"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"The '{name}' parameter must be an integer >= 1. Got {value!r} instead.")
    if config.samples < 2 or config.samples >= config.width:
        raise ValueError(f"The 'samples' parameter must be between 2 and width − 1 ({config.width - 1}): the "
                         f"inputs need samples + 1 orthonormal directions. Got {config.samples!r} instead.")
    if config.depth < _MIN_LAYERS + 1:
        raise ValueError(f"The 'depth' parameter must be >= {_MIN_LAYERS + 1} to fit a decay. Got {config.depth!r} instead.")


def _inputs(q: float, starts: tuple[float, float], sigma_w2: float, sigma_b2: float, n: int, width: int,
            networks: int, rng) -> np.ndarray | None:
    """(networks, 2n, width): groups A then B, n inputs each, of equal norm r, or None when a c0 < 0.

    Layer 1's pre-activation of x has second moment σ_w²·‖x‖²/width + σ_b² and the
    correlation of two is (σ_w²·r²·c0/width + σ_b²)/q; solve for r and c0 so these are q and
    the group's start. n inputs with pairwise cosine c0 ≥ 0: r·(√c0·u₀ + √(1 − c0)·u_i) with
    orthonormal u, the same u for both groups (common random numbers).
    """
    c0 = [(c1 * q - sigma_b2) / (q - sigma_b2) for c1 in starts]
    if not all(0.0 <= c <= 1.0 for c in c0):
        return None
    radius = math.sqrt(width * (q - sigma_b2) / sigma_w2)
    U = np.linalg.qr(rng.standard_normal((networks, width, n + 1)))[0].transpose(0, 2, 1)  # (networks, n + 1, width)
    return np.concatenate([radius * (math.sqrt(c) * U[:, :1, :] + math.sqrt(1.0 - c) * U[:, 1:, :]) for c in c0],
                          axis=1)


def measure_depth_scale(activation: str, sigma_w2: float, sigma_b2: float, *, width: int, depth: int,
                        networks: int, samples: int, rng: np.random.Generator,
                        nodes: int = th.DEFAULT_NODES,
                        networks_per_chunk: int | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Measured ξ_c and ξ_q at one point, and pre_cosine, pre_q per (group A/B/C, network, layer) (3, networks, depth).

    networks_per_chunk: how many networks' weights (chunk, width, width) are
    held at once (default all); each network draws from its own generator, so
    the numbers do not depend on it.
    Returns ({xi_c_theory, xi_c_measured, xi_q_theory, xi_q_measured, c_star, c_start_a, c_start_b,
    layers_fitted, q_layers_fitted, note}, cosines, lengths).
    """
    from threadpoolctl import threadpool_limits

    theory = core_phase.phase_point(activation, sigma_w2, sigma_b2, nodes=nodes)
    row = dict(xi_c_theory=theory["xi_c"], xi_c_measured=math.nan, xi_q_theory=theory["xi_q"],
               xi_q_measured=math.nan, c_star=theory["c_star"], c_start_a=math.nan, c_start_b=math.nan,
               layers_fitted=0, q_layers_fitted=0, note="")
    q, c_star = theory["q_star"], theory["c_star"]
    cosines, lengths = np.full((2, len(GROUPS), networks, depth), math.nan)
    if not (math.isfinite(q) and q > sigma_b2 and math.isfinite(c_star)):
        row["note"] = "q* is 0 or infinite: no fixed length, no depth scale"
        return row, cosines, lengths
    starts = (1.0 - _START_OFFSET, 1.0 - 2 * _START_OFFSET) if c_star >= 1.0 else (c_star + _START_OFFSET, c_star)
    row["c_start_a"], row["c_start_b"] = starts
    S = _inputs(q, starts, sigma_w2, sigma_b2, samples, width, networks, rng)
    if S is None:
        row["note"] = "no input cosine in [0, 1] gives the starting correlations"
        return row, cosines, lengths
    # C: B scaled so that σ_w²·‖x‖²/width + σ_b² = q*(1 + offset) at layer 1.
    S = np.concatenate([S, math.sqrt((q * (1 + _Q_OFFSET) - sigma_b2) / (q - sigma_b2)) * S[:, samples:]], axis=1)
    arch = Architecture(activation)
    rngs = rng.spawn(networks)
    chunk = networks if networks_per_chunk is None else max(1, min(networks, int(networks_per_chunk)))
    # Single-threaded BLAS: these matrices are small, and threads that spin on a busy machine cost 100x.
    with threadpool_limits(1):
        for start in range(0, networks, chunk):
            part = slice(start, min(networks, start + chunk))
            states = S[part]
            for layer in range(depth):
                W, b = draw_layer("kaiming-normal", width, width, gain=math.sqrt(sigma_w2), shift="normal",
                                  shift_scale=math.sqrt(sigma_b2), rngs=rngs[part])
                states, z = layer_forward(states, W, b, arch)
                del W, b  # before the next layer's draw: one layer's weights at a time, as planned
                for g in range(len(GROUPS)):
                    group = z[:, g * samples:(g + 1) * samples]
                    cosines[g, part, layer] = mean_cosine(group)
                    lengths[g, part, layer] = pre_q(group)
    row.update(_fit_decay(cosines[0] - cosines[1], first=2, name="ξ_c"))
    fit_q = _fit_decay(lengths[2] - lengths[1], first=1, name="ξ_q")
    row.update(xi_q_measured=fit_q.get("xi_c_measured", math.nan), q_layers_fitted=fit_q["layers_fitted"],
               note="; ".join(n for n in (row["note"], fit_q["note"]) if n))
    return row, cosines, lengths


def _fit_decay(difference: np.ndarray, *, first: int = 2, name: str = "ξ_c") -> dict:
    """ξ from d_l (networks, depth) = −1/slope of ln(mean d_l) over layers `first`.. while the mean stays
    above 3 standard errors (layer 1 is index 0). Returns {xi_c_measured, layers_fitted, note}."""
    networks = difference.shape[0]
    mean = difference.mean(axis=0)
    se = difference.std(axis=0, ddof=1) / math.sqrt(networks) if networks > 1 else np.zeros_like(mean)
    usable = first - 1
    while usable < len(mean) and mean[usable] > 3 * se[usable] and mean[usable] > 0:
        usable += 1
    layers = np.arange(first, usable + 1)
    if len(layers) < _MIN_LAYERS:
        return dict(layers_fitted=len(layers), note=f"the decay reaches the finite-width noise within "
                                                    f"{usable} layers: {name} too short to measure")
    slope = float(np.polyfit(layers, np.log(mean[first - 1:usable]), 1)[0])
    return dict(xi_c_measured=math.inf if slope >= 0 else -1.0 / slope, layers_fitted=len(layers), note="")


def phase_estimate(config: PhaseConfig, networks_per_chunk: int | None = None):
    """`study.memory.phase_estimate` of a config (all networks at once by default)."""
    grid = len(config.sigma_w2) * len(config.sigma_b2)
    measured = len(config.measure_sigma_w2) * len(config.measure_sigma_b2) if config.measure else 0
    return memory.phase_estimate(
        grid_points=grid, grid_driver="sigma_w2" if len(config.sigma_w2) >= len(config.sigma_b2) else "sigma_b2",
        measured_points=measured, width=config.width, depth=config.depth, networks=config.networks,
        samples=config.samples, networks_per_chunk=networks_per_chunk or config.networks)


def plan_phase(config: PhaseConfig, budget: int | None) -> int:
    """Networks per chunk that fit `budget` bytes (None: no check): all when they fit, else the largest
    halving that does; MemoryBudgetError naming the driving parameter when one network does not fit."""
    for chunk in memory.halvings(config.networks):
        est = phase_estimate(config, chunk)
        if budget is None or est.total <= budget:
            return chunk
    est = phase_estimate(config, 1)
    value = getattr(config, est.largest[2])
    memory.check_estimate(est, budget, "initscope phase" + (" --measure" if config.measure else ""),
                          len(value) if isinstance(value, tuple) else value)  # a grid: its number of values
    return 1  # not reached: check_estimate raised


def phase_study(config: PhaseConfig, *, memory_limit=None) -> PhaseResult:
    """The theory grid and, with config.measure, the measured grid; see the module docstring.

    memory_limit: the memory budget in bytes or text ("8GiB"; default 80% of
    the memory available now). The peak is estimated first: over the budget,
    fewer networks are held at once (the same numbers, a MemoryPlanWarning);
    when one network does not fit, MemoryBudgetError (a ValueError naming the
    parameter to reduce) before anything is computed.
    """
    import pandas as pd

    _check(config)
    budget = memory.memory_budget(memory_limit)
    chunk = plan_phase(config, budget)
    if chunk < config.networks:
        warnings.warn(f"memory: phase's estimated peak exceeds the budget of {memory.format_bytes(budget)}; "
                      f"measuring {chunk} of the {config.networks} networks at a time (the same numbers)",
                      memory.MemoryPlanWarning, stacklevel=2)
    theory = pd.DataFrame(core_phase.theory_grid(config.activation, config.sigma_w2, config.sigma_b2,
                                                 nodes=config.nodes), columns=list(core_phase.PHASE_COLUMNS))
    measured_rows, decay_rows = [], []
    if config.measure:
        root = np.random.SeedSequence(config.seed)
        points = [(sw, sb) for sb in config.measure_sigma_b2 for sw in config.measure_sigma_w2]
        for (sw, sb), child in zip(points, root.spawn(len(points))):
            row, cosines, lengths = measure_depth_scale(
                config.activation, sw, sb, width=config.width, depth=config.depth, networks=config.networks,
                samples=config.samples, rng=np.random.default_rng(child), nodes=config.nodes,
                networks_per_chunk=chunk)
            measured_rows.append(dict(sigma_w2=sw, sigma_b2=sb, **row))
            for g, group in enumerate(GROUPS):
                for net in range(cosines.shape[1]):
                    decay_rows += [(sw, sb, group, net, layer + 1, cosines[g, net, layer], lengths[g, net, layer])
                                   for layer in range(cosines.shape[2])]
    measured = pd.DataFrame(measured_rows, columns=list(MEASURED_COLUMNS))
    decay = pd.DataFrame(decay_rows, columns=["sigma_w2", "sigma_b2", "group", "network", "layer", "pre_cosine",
                                              "pre_q"])
    return PhaseResult(config=config, theory=theory, measured=measured, decay=decay)


def config_dict(config: PhaseConfig) -> dict:
    """The config as plain TOML-ready values (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
