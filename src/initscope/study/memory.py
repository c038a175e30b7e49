"""Memory planning: estimate a run's peak before allocating anything, then fit it or refuse it.

`run_estimate(config, trials_per_chunk, concurrent)` adds up what the runner
holds at its peak, in bytes: for each chunk of trials in flight, the weights
(T, fan_in, w), the states and their copies (T, n, w), the Gram matrices and
eigenvectors (T, k, k), the Jacobian tangents (T, m, d, w) that
jacobian_rank pushes forward, the distance matrices (T, m_d, m_d), the
gradient pass's checkpoints; and, once for the whole run, the inputs, the
per-layer results and the tidy tables (one row per trial × layer × metric and
per singular value). What a metric adds is the cost of the pieces it reads
(`core.pieces`: a metric reading "tangents" brings the Jacobian pass's
part, whatever its name). The constants count the temporaries each step makes
(measured with ru_maxrss on the runner; the estimate errs high).

`plan_run(config, workers, budget)` keeps the requested split of trials when
it fits; otherwise it first runs fewer trials per chunk (more chunks, the
same threads: results are identical whatever the chunking), then fewer
chunks at once; and when one trial alone does not fit, it raises
`MemoryBudgetError` (a ValueError) naming the parameter that drives the
estimate and both numbers, before anything is allocated.

The budget defaults to `DEFAULT_SHARE` of the memory available now
(/proc/meminfo's MemAvailable, or psutil's when installed); `memory_limit`
(`--memory-limit` on the CLI) sets it explicitly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from initscope.core.metrics import metric
from initscope.core.pieces import plan_costs
from initscope.core.propagation import JACOBIAN_SAMPLES
from initscope.study.config import Config

__all__ = ["Estimate", "RunPlan", "MemoryBudgetError", "MemoryPlanWarning", "available_memory", "memory_budget", "parse_memory",
           "run_estimate", "plan_run", "inspect_estimate", "certify_estimate", "phase_estimate", "check_estimate",
           "format_bytes", "halvings", "DEFAULT_SHARE"]

DEFAULT_SHARE = 0.8  # of MemAvailable: the rest is the page cache's and other processes' headroom
DISTANCE_MAX_SAMPLES = 2000
METRIC_ROW_BYTES = 260  # metrics.csv row in memory: 5 columns + ~24 config columns of 8-byte references, pandas overhead
SPECTRUM_ROW_BYTES = 90  # spectra row: 5 columns, built from pieces then joined (twice at the peak)


class MemoryPlanWarning(UserWarning):
    """A run was split into smaller chunks to fit the memory budget (its numbers do not change)."""


class MemoryBudgetError(ValueError):
    """A run that cannot fit the memory budget in any chunking; raised before anything is allocated.

    parameter: the one that drives the estimate (what to reduce); needed and
    budget: the estimate and the budget in bytes.
    """

    def __init__(self, message: str, *, parameter: str | None = None, needed: int | None = None,
                 budget: int | None = None):
        super().__init__(message)
        self.parameter, self.needed, self.budget = parameter, needed, budget


@dataclass(frozen=True)
class Estimate:
    """A peak in bytes and its parts: name -> (bytes, the parameter that drives that part)."""

    parts: dict[str, tuple[int, str]]

    @property
    def total(self) -> int:
        return sum(b for b, _ in self.parts.values())

    @property
    def largest(self) -> tuple[str, int, str]:
        """(part, bytes, parameter) of the largest part."""
        name = max(self.parts, key=lambda k: self.parts[k][0])
        return name, self.parts[name][0], self.parts[name][1]


@dataclass(frozen=True)
class RunPlan:
    """How a run splits its trials: chunks of at most `trials_per_chunk`, `concurrent` at once."""

    trials_per_chunk: int
    concurrent: int
    estimate: Estimate
    budget: int | None
    chunked: bool = False  # True when the chunks or the concurrency were shrunk to fit


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_memory(value, name: str = "memory_limit") -> int:
    """Bytes from 4000000, '4e9', '512MiB', '4 GB' or '2G'. ValueError naming `name` otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number, unit = float(value), ""
    elif isinstance(value, float):
        number, unit = value, ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        number = float(match.group(1)) if match else math.nan
        unit = match.group(2).lower() if match else "?"
    if unit not in _UNITS or not math.isfinite(number) or number * _UNITS[unit] < 1:
        raise ValueError(f"The '{name}' parameter must be a size in bytes such as 4000000000, '512MiB' or '4GB'. "
                         f"Got {value!r} instead.")
    return int(number * _UNITS[unit])


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (MemAvailable), or None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_budget(limit=None) -> int | None:
    """The budget in bytes: `limit` (parsed) when given, else DEFAULT_SHARE of the available memory."""
    if limit is not None:
        return parse_memory(limit)
    available = available_memory()
    return None if available is None else int(DEFAULT_SHARE * available)


def _sizes(config: Config) -> dict[str, int]:
    n, d, w = config.samples, config.input_dim, config.width
    return dict(n=n, d=d, w=w, fan=max(d, w), k=min(n, max(d, w)), m=min(n, JACOBIAN_SAMPLES),
                md=min(n, DISTANCE_MAX_SAMPLES), L=config.depth, M=len(config.metrics), I=len(config.init),
                b=np.dtype(config.dtype).itemsize)


def _wider(config: Config) -> str:
    return "width" if config.width >= config.input_dim else "input_dim"


def run_estimate(config: Config, trials_per_chunk: int, concurrent: int, *, trials: int | None = None) -> Estimate:
    """The runner's peak in bytes for chunks of `trials_per_chunk` trials, `concurrent` of them at once.

    trials: how many trials the run has (default config.trials); the global
    parts (inputs, results, tables) scale with it.
    """
    s = _sizes(config)
    n, d, w, fan, k, m, md, L, M, I, b = (s[x] for x in ("n", "d", "w", "fan", "k", "m", "md", "L", "M", "I", "b"))
    needs = {n for name in config.metrics for n in metric(name).needs}
    T = config.trials if trials is None else trials
    Tc = concurrent * trials_per_chunk  # trials in flight
    f8 = 8
    wide = _wider(config)
    states_driver = "samples" if n >= fan else wide
    rows_driver = "depth" if L + 1 > T else "trials"  # the tables have a row per trial × layer
    parts: dict[str, tuple[int, str]] = {
        # W is drawn, kept for weight norms and multiplied: about three copies at once.
        "weights": (3 * Tc * fan * w * b, wide),
        # S_prev, S, z, the centred copy and masked copies.
        "states": (6 * Tc * n * fan * b, states_driver),
        # Gram matrix, eigenvalues' workspace and vectors (linear_r2, projections).
        "gram": (4 * Tc * k * k * f8, states_driver),
        "inputs": (4 * T * n * d * f8, "trials" if T >= max(n, d) else "samples" if n >= d else "input_dim"),
        "results": (I * T * (L + 1) * (k + M) * f8, rows_driver),
        "tables": (I * T * (L + 1) * (M * METRIC_ROW_BYTES + k * SPECTRUM_ROW_BYTES), rows_driver),
    }
    # What the wanted metrics read costs on top (`core.pieces`): eigenvectors, distances, Jacobians, gradients.
    shapes = dict(s, T=T, Tc=Tc, concurrent=concurrent, states_driver=states_driver, readout=config.readout)
    parts.update(plan_costs(needs, shapes))
    if config.init_train != "none":
        # Training holds every layer's parameters of all trials, their gradients and the new ones.
        parts["init training"] = (3 * T * L * fan * w * b, "depth")
    return Estimate(parts)


def plan_run(config: Config, workers: int, budget: int | None, *, trials: int | None = None) -> RunPlan:
    """The split of trials that fits `budget` bytes (None: no check), or MemoryBudgetError.

    Requested: `workers` chunks at once of ceil(trials/workers) trials each.
    Then fewer trials per chunk, then fewer chunks at once, down to one
    trial at a time.
    """
    T = config.trials if trials is None else trials
    workers = max(1, min(workers, T))
    per_chunk = -(-T // workers)
    first = run_estimate(config, per_chunk, workers, trials=T)
    if budget is None or first.total <= budget:
        return RunPlan(per_chunk, workers, first, budget)
    for concurrent in range(workers, 0, -1):
        for tc in halvings(per_chunk):
            est = run_estimate(config, tc, concurrent, trials=T)
            if est.total <= budget:
                return RunPlan(tc, concurrent, est, budget, chunked=True)
    smallest = run_estimate(config, 1, 1, trials=T)
    raise _too_big(config, smallest, budget)


def halvings(start: int) -> list[int]:
    """start, ceil(start/2), ... down to 1: the chunk sizes a plan tries, largest first."""
    out, tc = [], start
    while tc > 1:
        out.append(tc)
        tc = -(-tc // 2)
    return out + [1]


def _too_big(config: Config, est: Estimate, budget: int) -> MemoryBudgetError:
    part, size, param = est.largest
    value = getattr(config, param) if hasattr(config, param) else None
    return MemoryBudgetError(
        f"The '{param}' parameter must be smaller for this run to fit in memory. Got {value!r}: the run needs "
        f"an estimated {format_bytes(est.total)} even one trial at a time ({part}: {format_bytes(size)}), over "
        f"the budget of {format_bytes(budget)} (memory_limit / --memory-limit; default "
        f"{DEFAULT_SHARE:.0%} of available memory).", parameter=param, needed=est.total, budget=budget)


CERTIFY_JACOBIAN_ENTRIES = 1 << 24  # core.certify._MAX_ELEMENTS: Jacobian entries it holds at once


def certify_estimate(config: Config) -> Estimate:
    """`certify`'s peak: every layer's parameters of all trials held at once (it materializes the
    networks), its states, the pairwise distances per trial and its Jacobian chunk: up to 2**24
    entries, fewer when all samples' Jacobians are fewer, and at least one sample's of every trial."""
    s = _sizes(config)
    T, n, d, fan, w, L, b = config.trials, s["n"], s["d"], s["fan"], s["w"], s["L"], s["b"]
    per_sample = T * d * fan
    entries = max(min(CERTIFY_JACOBIAN_ENTRIES, n * per_sample), per_sample)
    if n * per_sample <= CERTIFY_JACOBIAN_ENTRIES:  # every sample's Jacobians at once: (T, n, d, fan)
        jac_driver = "trials" if T >= n else "samples"
    elif per_sample > CERTIFY_JACOBIAN_ENTRIES:  # one sample at a time is already over the chunk
        jac_driver = "trials" if T >= max(d, fan) else _wider(config)
    else:
        jac_driver = "input_dim" if d >= w else "width"
    return Estimate({
        "parameters": (T * L * fan * w * b, "trials" if T > max(L, fan * w) else "depth" if L > fan * w
                       else _wider(config)),
        "states": (4 * T * n * fan * b, "trials" if T > max(n, fan) else "samples" if n >= fan else _wider(config)),
        "distances": (3 * n * n * 8, "samples"),
        # 4.5 copies: measured 44, 107 and 538 MiB peaks for the seed's fixes at 8, 20 and 100 trials.
        "jacobians": (9 * entries * 4, jac_driver),
    })


THEORY_ROW_BYTES = 1000  # a phase_point row dict (10 entries, 9 float objects) and its DataFrame row
DECAY_ROW_BYTES = 350  # a phase_decay row tuple (7 objects) and its DataFrame row


def phase_estimate(*, grid_points: int, grid_driver: str, measured_points: int, width: int, depth: int,
                   networks: int, samples: int, networks_per_chunk: int) -> Estimate:
    """`initscope phase`'s peak in bytes, networks run `networks_per_chunk` at a time.

    The theory grid's rows; with measured points (0 without --measure): the
    inputs of every network of a point, U (networks, width, samples + 1), its
    QR and the three groups' states (networks, 3·samples, width) with their
    concatenation; per chunk the weights (chunk, width, width) with one
    network's drawing temporaries, the states and pre-activations with their
    normalised copies; the decay rows (pre_cosine, pre_q) of all measured points.
    """
    n3 = 3 * samples  # groups A, B and C
    parts: dict[str, tuple[int, str]] = {"theory grid": (grid_points * THEORY_ROW_BYTES, grid_driver)}
    if measured_points:
        parts.update({
            "inputs": ((3 * (samples + 1) + 2 * n3) * networks * width * 8, "networks" if networks > width else "width"),
            "weights": ((networks_per_chunk + 2) * width * width * 8, "width"),
            "states": (6 * networks_per_chunk * n3 * width * 8, "width"),
            "decay table": (measured_points * 3 * networks * depth * DECAY_ROW_BYTES,
                            "depth" if depth >= networks else "networks"),
        })
    return Estimate(parts)


def inspect_estimate(shape: tuple[int, ...], itemsize: int = 4) -> Estimate:
    """A lower bound on `inspect`'s peak for random inputs of `shape` (samples first).

    The input, its float64 flat copy, its centred copy and its Gram matrix
    (k = min(n, features)) exist before the model runs at all.
    """
    n = shape[0]
    rest = math.prod(shape[1:]) if len(shape) > 1 else 1
    k = min(n, rest)
    return Estimate({
        "input": (n * rest * itemsize, "input-shape"),
        "flat copies": (2 * n * rest * 8, "input-shape"),
        "gram": (2 * k * k * 8, "input-shape"),
    })


def check_estimate(est: Estimate, budget: int | None, what: str, value) -> None:
    """Raise MemoryBudgetError naming the estimate's driver (`what`) when it exceeds the budget."""
    if budget is None or est.total <= budget:
        return
    part, size, param = est.largest
    raise MemoryBudgetError(
        f"The '{param}' parameter must be smaller to fit in memory. Got {value!r}: {what} needs an estimated "
        f"{format_bytes(est.total)} ({part}: {format_bytes(size)}), over the budget of {format_bytes(budget)} "
        f"(--memory-limit; default {DEFAULT_SHARE:.0%} of available memory).",
        parameter=param, needed=est.total, budget=budget)
