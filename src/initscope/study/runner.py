"""Turn a Config into batched trials and tidy tables: the study's main loop.

For each initializer, all trials run at once (weights (T, fan_in, fan_out),
states (T, n, w)); layers stream: each layer's metrics are computed as soon as
it exists and the state is then dropped, so memory does not grow with depth.
Trials are split into chunks run on threads (BLAS pinned to one thread each),
which changes nothing in the numbers: every trial draws from its own
generator, derived from (seed, initializer name, trial) with SeedSequence.
"""

from __future__ import annotations

import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from initscope.core import data as data_mod
from initscope.core import metrics as M
from initscope.study.config import Config, config_columns, load_table, make_config
from initscope.core.gradients import weight_gradient_norms
from initscope.core.initializers import INITIALIZERS, default_gain, draw as draw_weights
from initscope.core.fitted import LAYER_INITIALIZERS, quantile_shifts
from initscope.core.network import (
    Architecture,
    batch_norm_sigma,
    draw_layer,
    draw_shifts,
    layer_forward,
    layer_jvp,
    mse_output_gradient,
)

__all__ = ["RunResult", "run", "materialize", "init_gain", "NumericalWarning", "JACOBIAN_SAMPLES", "trial_generators",
           "ParamSource", "trained"]

JACOBIAN_SAMPLES = 64
WEIGHT_NORM_TRIALS = 10
WEIGHT_NORM_LAYERS = 10  # and the last layer: the histograms' rows, not a per-layer record of a deep net
_DATA_KEY = 0x5EED_DA7A  # spawn key of the data streams; crc32 of a name never collides by design here
_SUBSET_KEY = 0x5EED_5B5E
_TRAIN_KEY = 0x5EED_7A1F


class NumericalWarning(RuntimeWarning):
    """Overflow or collapse happened in a run; it is in the results, not an error."""


@dataclass
class RunResult:
    """Tidy tables of one run (see DESIGN.md's output contract)."""

    config: Config
    metrics: pd.DataFrame
    spectra: pd.DataFrame
    projections: pd.DataFrame
    weight_norms: pd.DataFrame
    flags: pd.DataFrame
    gains: dict[str, float] = field(default_factory=dict)
    init_log: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["init", "trial", "layer", "quantity", "value"]))
    train_log: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["init", "trial", "step", "objective", "seconds"]))


def _init_key(name: str) -> int:
    return zlib.crc32(name.encode())


def trial_generators(seed: int, key: int, trials: range | list[int]) -> list[np.random.Generator]:
    """One independent generator per trial, from (seed, key, trial) alone."""
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(key, t)))) for t in trials]


def _inputs(config: Config, table, trial_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """Data X (T, n, d) and targets y (T, n, 1) for every trial.

    Synthetic data are drawn fresh per trial; fixed data are the table's rows,
    a random subset per trial when fewer samples than rows are asked for.
    The same data serve every initializer (common random numbers).
    """
    dtype = np.dtype(config.dtype)
    ids = range(config.trials) if trial_ids is None else trial_ids
    T, n = len(ids), config.samples
    rngs = trial_generators(config.seed, _DATA_KEY, ids)
    if table is None:
        X = np.stack([data_mod.sample(config.data, n, config.input_dim, rng=r) for r in rngs])
        y = np.stack([data_mod.target(config.target, x) for x in X])
    else:
        rows = table.x.shape[0]
        idx = [np.arange(n) if n == rows else np.sort(r.choice(rows, n, replace=False)) for r in rngs]
        X = np.stack([table.x[i] for i in idx])
        if config.target == "dataset" or config.target.startswith("column:"):
            y = np.stack([table.y[i] for i in idx])
        else:
            y = np.stack([data_mod.target(config.target, x) for x in X])
    return X.astype(dtype, copy=False), y.reshape(T, n, 1).astype(dtype, copy=False)


@dataclass
class _Chunk:
    values: dict[str, np.ndarray]  # metric -> (Tc, L+1)
    spectra: list[np.ndarray]  # per layer (Tc, k_l)
    projections: np.ndarray | None  # (L+1, n, 3) for trial 0 when in this chunk
    weight_norms: list[tuple[int, list[int], np.ndarray]]  # (layer, trials, norms (k, fan_out))
    overflow_layer: np.ndarray  # (Tc,) first non-finite layer, -1 if none
    collapsed: np.ndarray  # (Tc, L+1) bool
    init_info: list[tuple[int, int, str, float]]  # (trial, layer, quantity, value)


def _top3(S_c: np.ndarray, G: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Coordinates (n, 3) of one trial's samples on its top-3 principal components.

    S_c: (n, w) centred states; G: their smaller Gram matrix (w×w or n×n);
    eig: G's full eigendecomposition (ascending values (k,), vectors (k, k))
    when linear_r2 already computed it, else only the top three eigenpairs
    are computed (LAPACK's MRRR on the tridiagonal form: cheaper than the
    spectrum itself at width 256, where a full eigh costs 2.6× eigvalsh).
    Signs are fixed (largest |coordinate| positive) so that frames do not flip.
    Components beyond the rank are 0.
    """
    n, w = S_c.shape
    out = np.zeros((n, 3))
    if n == 0 or w == 0:
        return out
    size = G.shape[0]
    k = min(3, size)
    if eig is not None:
        lam, V = eig[0][-k:].astype(np.float64), eig[1][:, -k:].astype(np.float64)
    else:
        from scipy.linalg import eigh

        lam, V = eigh(G.astype(np.float64), subset_by_index=[size - k, size - 1], check_finite=False)
    lam, top = lam[::-1], V[:, ::-1]
    if n >= w:
        coords = S_c.astype(np.float64) @ top
    else:
        coords = top * np.sqrt(np.clip(lam, 0.0, None))
    big = np.abs(coords).argmax(axis=0)
    coords *= np.where(coords[big, np.arange(k)] < 0, -1.0, 1.0)
    out[:, :k] = coords
    return out


class ParamSource:
    """Where one chunk's layer parameters come from, layer by layer.

    Drawn: from each trial's generator in layer order (registry rules), or
    fitted to the layer's input (layer-aware rules: looks-linear, lsuv,
    well-spaced), with `shift = "quantile"` set from the batch. With
    `remember=True` the generators' states before each layer are kept (a few
    bytes per trial and layer), so `regenerate` can draw layer l again for the
    backward pass without storing any weights. Given: explicit parameters
    (e.g. after initialization training), sliced to the chunk's trials.
    """

    def __init__(self, config: Config, init: str, gain: float, trials: list[int], *,
                 remember: bool = False, given: list[tuple[np.ndarray, np.ndarray]] | None = None):
        self.config, self.init, self.gain = config, init, gain
        self.dtype = np.dtype(config.dtype)
        self.rngs = trial_generators(config.seed, _init_key(init), trials)
        self.remember = remember
        self.snapshots: dict[int, list[dict[str, Any]]] = {}
        self.given = given
        self.info: list[tuple[int, int, str, float]] = []  # (local trial, layer, quantity, value)

    def layer(self, layer: int, S_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W (T, fan_in, width) and b (T, width) of `layer`, whose input is S_prev (T, n, fan_in)."""
        if self.given is not None:
            return self.given[layer - 1]
        if self.remember:
            self.snapshots[layer] = [r.bit_generator.state for r in self.rngs]
        return self._draw(layer, S_prev, self.rngs, record=True)

    def regenerate(self, layer: int, S_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same parameters as `layer` gave, drawn again from the remembered states."""
        if self.given is not None:
            return self.given[layer - 1]
        scratch = [np.random.Generator(np.random.PCG64()) for _ in self.rngs]
        for g, state in zip(scratch, self.snapshots[layer]):
            g.bit_generator.state = state
        return self._draw(layer, S_prev, scratch, record=False)

    def _draw(self, layer, S_prev, rngs, *, record):
        c = self.config
        fan_in, width = S_prev.shape[-1], c.width
        entry = LAYER_INITIALIZERS.get(self.init)
        if entry is None:
            W, b = draw_layer(self.init, fan_in, width, gain=self.gain, shift=c.shift,
                              shift_scale=c.shift_scale, rngs=rngs, dtype=self.dtype)
        else:
            W = np.empty((len(rngs), fan_in, width), dtype=self.dtype)
            b = np.empty((len(rngs), width), dtype=self.dtype)
            for t, rng in enumerate(rngs):
                shift = draw_shifts(c.shift, width, scale=c.shift_scale, rng=rng)
                fit = entry.fit(S_prev[t].astype(np.float64), width, gain=self.gain, rng=rng, layer=layer,
                                b=shift, tol=c.lsuv_tol, max_iter=c.lsuv_max_iter)
                W[t] = fit.W
                b[t] = fit.b if fit.b is not None else shift
                if record:
                    self.info += [(t, layer, key, value) for key, value in fit.info.items()]
            if entry.sets_shifts:
                return W, b
        if c.shift == "quantile":
            b = quantile_shifts(np.matmul(S_prev, W))
        return W, b


@dataclass
class _Layer:
    """One layer's measurements for a chunk of T trials."""

    values: dict[str, np.ndarray]  # metric -> (T,), NaN where overflowed
    spectrum: np.ndarray  # (T, k) float64, NaN rows where overflowed
    projection: np.ndarray | None  # (n, 3) for trial 0 when in the chunk
    collapsed: np.ndarray  # (T,) bool
    overflow_layer: np.ndarray  # (T,) first non-finite layer so far, -1 if none


@dataclass
class _Inputs:
    """One chunk's data and the measurements of layer 0, which every initializer shares."""

    trials: list[int]
    X: np.ndarray  # (T, n, d)
    y: np.ndarray  # (T, n, 1)
    X_c: np.ndarray  # (T, n, d) centred
    ref: M.DistanceReference | None
    layer0: _Layer


def _prepare(config: Config, table, trials: list[int]) -> _Inputs:
    """Draw a chunk's data and measure it (layer 0) once for all initializers."""
    with np.errstate(all="ignore"):
        X, y = _inputs(config, table, trials)
        X_c = M.centred(X)
        ref = None
        if "distance_corr" in config.metrics:
            ref = M.distance_reference(X, rng=np.random.default_rng([config.seed, _SUBSET_KEY]))
        tangent = None
        if "jacobian_rank" in config.metrics:
            m_jac = min(X.shape[1], JACOBIAN_SAMPLES)
            tangent = np.broadcast_to(np.eye(X.shape[2], dtype=X.dtype), (len(trials), m_jac, X.shape[2], X.shape[2]))
        layer0 = _measure(config, X, 0, np.full(len(trials), -1), X_c=X_c, ref=ref, tangent=tangent,
                          i0=trials.index(0) if 0 in trials else None, S_c=X_c)
    return _Inputs(trials, X, y, X_c, ref, layer0)


def _measure(config: Config, S: np.ndarray, layer: int, overflow_layer: np.ndarray, *, X_c, ref, tangent,
             i0: int | None, S_c: np.ndarray | None = None) -> _Layer:
    """Every wanted metric, the spectrum and trial 0's projection of the states S (T, n, w).

    overflow_layer (T,) is the first non-finite layer so far (-1: none); a
    copy updated with this layer is returned. Non-finite states, or finite
    ones whose Gram matrix overflows, give NaN from here on. S_c: the centred
    states when the caller has them already (the input's X_c).
    """
    want = set(config.metrics)
    rtol = M.rank_rtol(np.dtype(config.dtype))
    finite = np.isfinite(S).all(axis=(1, 2))
    S_work = S if finite.all() else np.where(finite[:, None, None], S, 0.0)
    S_c = S_c if S_c is not None and S_work is S else M.centred(S_work)
    G = M.gram(S_c)
    # Finite but huge states can still overflow in the Gram matrix.
    finite &= np.isfinite(G).all(axis=(1, 2))
    if not finite.all():
        S_work = np.where(finite[:, None, None], S_work, 0.0)
        S_c = np.where(finite[:, None, None], S_c, 0.0)
        G = np.where(finite[:, None, None], G, 0.0)
    eig = None
    if "linear_r2" in want:
        sv, eig = M.gram_spectrum(G, vectors=True)
    else:
        sv = M.gram_spectrum(G)
    finite &= np.isfinite(sv).all(axis=1)
    overflow_layer = np.where((~finite) & (overflow_layer < 0), layer, overflow_layer)
    bad = overflow_layer >= 0
    col_any = M.collapsed(S_work, sv)
    col = col_any & ~bad
    spectrum = sv.astype(np.float64)
    spectrum[bad] = np.nan
    projection = None
    if i0 is not None:
        projection = np.full((S.shape[1], 3), np.nan) if bad[i0] else _top3(
            S_c[i0], G[i0], None if eig is None else (eig[0][i0], eig[1][i0]))
    values = M.state_metrics(S_work, S_c, sv, want, activation=config.activation, rtol=rtol, is_input=layer == 0,
                             col=col_any)
    if "linear_r2" in want:
        values["linear_r2"] = M.linear_r2(S_c, X_c, eig, rtol)
    if "distance_corr" in want:
        values["distance_corr"] = M.distance_corr(S_work, ref)
    if "jacobian_rank" in want:
        values["jacobian_rank"] = M.jacobian_rank(tangent)
    values = {name: np.where(bad, np.nan, value) for name, value in values.items()}
    return _Layer(values, spectrum, projection, col, overflow_layer)


def _simulate(config: Config, init: str, gain: float, inputs: _Inputs, given=None) -> _Chunk:
    """Run one chunk of trials of one initializer through every layer.

    Overflow is expected (it is a result), so floating-point warnings are off
    here; errstate is per thread, hence set inside the worker.
    """
    with np.errstate(all="ignore"):
        return _simulate_chunk(config, init, gain, inputs, given)


def _simulate_chunk(config: Config, init: str, gain: float, inputs: _Inputs, given=None) -> _Chunk:
    want = set(config.metrics)
    dtype = np.dtype(config.dtype)
    arch = Architecture(config.activation, config.norm, config.residual)
    X, y, trials = inputs.X, inputs.y, inputs.trials
    T, n, d = X.shape
    L = config.depth
    source = ParamSource(config, init, gain, trials, given=given,
                         remember="grad_norm" in want and config.readout != "zeros")
    values = {m: np.full((T, L + 1), np.nan) for m in config.metrics}
    spectra: list[np.ndarray] = []
    weight_norms: list[tuple[int, list[int], np.ndarray]] = []
    collapsed = np.zeros((T, L + 1), dtype=bool)
    i0 = trials.index(0) if 0 in trials else None
    proj = np.zeros((L + 1, n, 3)) if i0 is not None else None
    m_jac = min(n, JACOBIAN_SAMPLES)
    tangent = None
    if "jacobian_rank" in want:
        tangent = np.broadcast_to(np.eye(d, dtype=dtype), (T, m_jac, d, d)).copy()

    def record(layer: int, out: _Layer) -> None:
        for name, value in out.values.items():
            values[name][:, layer] = value
        spectra.append(out.spectrum)
        collapsed[:, layer] = out.collapsed
        if proj is not None:
            proj[layer] = out.projection

    record(0, inputs.layer0)
    overflow_layer = inputs.layer0.overflow_layer
    S = X
    for layer in range(1, L + 1):
        W, b = source.layer(layer, S)
        sel = [i for i, t in enumerate(trials) if t < WEIGHT_NORM_TRIALS]
        if sel and (layer <= WEIGHT_NORM_LAYERS or layer == L):
            weight_norms.append((layer, [trials[i] for i in sel], np.linalg.norm(W[sel], axis=1)))
        S, z = layer_forward(S, W, b, arch, keep_pre=tangent is not None)
        if tangent is not None:
            tangent = layer_jvp(tangent, W, z[:, :m_jac], arch, batch_norm_sigma(z, arch))
        del z
        out = _measure(config, S, layer, overflow_layer, X_c=inputs.X_c, ref=inputs.ref, tangent=tangent, i0=i0)
        overflow_layer = out.overflow_layer
        record(layer, out)
        del out

    tangent = None  # the forward pass's Jacobians: not needed by the backward pass
    if "grad_norm" in want:
        values["grad_norm"][:, 1:] = _grad_norms(config, init, gain, X, y, S, source, arch)
        values["grad_norm"][overflow_layer >= 0, 1:] = np.where(
            np.arange(1, L + 1)[None, :] >= overflow_layer[overflow_layer >= 0, None],
            np.nan,
            values["grad_norm"][overflow_layer >= 0, 1:],
        )
    info = [(trials[t], layer, key, value) for t, layer, key, value in source.info]
    return _Chunk(values, spectra, proj, weight_norms, overflow_layer, collapsed, info)


def _grad_norms(config, init, gain, X, y, S_last, source: ParamSource, arch) -> np.ndarray:
    """‖∂loss/∂W_l‖_F for l = 1..L (T, L): MSE of the readout against the target."""
    T, _, w = S_last.shape
    dtype = np.dtype(config.dtype)
    if config.readout == "zeros":
        W_out = np.zeros((T, w, y.shape[2]), dtype=dtype)
    else:
        # The readout is drawn after the last layer, from the same per-trial streams.
        rule = init if init in INITIALIZERS else "orthogonal"
        W_out = np.stack([draw_weights(rule, w, y.shape[2], gain=gain, rng=r, dtype=dtype) for r in source.rngs])
    _, ds_last = mse_output_gradient(S_last, W_out, y)
    return weight_gradient_norms(X, source.regenerate, config.depth, arch, ds_last)


_BLAS = None  # a threadpoolctl controller, made once: threadpool_limits() rescans the libraries each call


def _parallel_map(fn, items: list, n_workers: int) -> list:
    """fn over items on n_workers threads, each with BLAS pinned to one thread.

    Two BLAS threads inside two Python threads would fight over two cores;
    small LAPACK calls (batched eigvalsh) also only scale this way.
    """
    global _BLAS
    if n_workers == 1:
        return [fn(item) for item in items]
    if _BLAS is None:
        import scipy.linalg  # noqa: F401  scipy's own OpenBLAS must be loaded before the scan
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1):
        pool = ThreadPoolExecutor(n_workers)
        try:
            return list(pool.map(fn, items))
        finally:
            # Not `with pool`: on Ctrl-C it would wait for the running chunks (minutes) before the
            # KeyboardInterrupt got out. On success every item is done, so nothing is left to wait for.
            pool.shutdown(wait=False, cancel_futures=True)


def _workers(requested: int | None, trials: int) -> int:
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"The 'workers' parameter must be an integer >= 1. Got {requested!r} instead.")
        return min(requested, trials)
    return max(1, min(os.cpu_count() or 1, trials))


def _trial_ids(trial_ids) -> np.ndarray:
    ids = np.asarray(list(trial_ids))
    if ids.ndim != 1 or len(ids) == 0 or ids.dtype.kind not in "iu" or ids.min() < 0 or len(set(ids.tolist())) != len(ids):
        raise ValueError(f"The 'trial_ids' parameter must be distinct integers >= 0. Got {list(trial_ids)!r} instead.")
    return np.sort(ids)


def init_gain(config: Config, init: str) -> float:
    """The gain an initializer runs with: the config's, or the rule's default."""
    if config.gain is not None:
        return config.gain
    if init in LAYER_INITIALIZERS:
        return 1.0  # orthogonal/whitened directions: gain 1 is the isometric choice
    return default_gain(init, config.activation)


def _resolve(config: Config | None, kwargs: dict[str, Any]) -> Config:
    if config is None:
        return make_config(**kwargs)
    if kwargs:
        raise TypeError("run() takes either a Config or keyword fields, not both")
    if not isinstance(config, Config):
        raise TypeError(f"run() expects a Config as its first argument. Got {type(config).__name__} instead.")
    return config


def materialize(config: Config, init: str) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """A config's data and one initializer's parameters for all trials, held in memory.

    Returns X (T, n, d), y (T, n, 1) and [(W_l (T, fan_in, w), b_l (T, w)) for l = 1..L]:
    exactly the networks `run` measures (same generators, same order). Memory
    grows with depth; the streaming `run` does not need this.
    """
    table = load_table(config) if config.data_is_fixed else None
    X, y = _inputs(config, table)
    source = ParamSource(config, init, init_gain(config, init), list(range(config.trials)))
    arch = Architecture(config.activation, config.norm, config.residual)
    params = []
    S = X
    with np.errstate(all="ignore"):
        for layer in range(1, config.depth + 1):
            W, b = source.layer(layer, S)
            params.append((W, b))
            S, _ = layer_forward(S, W, b, arch)
    return X, y, params


def trained(config: Config, init: str, X: np.ndarray) -> tuple[list, pd.DataFrame]:
    """Parameters after `init_train` (forward-gradient or backprop) and its history."""
    from initscope.core.init_train import train

    _, _, params = materialize(config, init)
    arch = Architecture(config.activation, config.norm, config.residual)
    rng = np.random.default_rng([config.seed, _init_key(init), _TRAIN_KEY])
    params, history = train(X, params, arch, method=config.init_train, steps=config.train_steps,
                            lr=config.train_lr, batch=config.train_batch, rng=rng)
    return params, history.assign(init=init)


def run(config: Config | None = None, /, *, workers: int | None = None, trial_ids=None, **kwargs: Any) -> RunResult:
    """Run the study a config describes; return its tidy tables.

    `run()` is the seed post's study; `run(depth=50, init="kaiming-normal")`
    takes config fields as keywords; `run(cfg)` takes a validated Config.
    workers: threads over trial chunks (default: the machine's cores).
    trial_ids: run only these trial indices (each gives exactly the numbers it
    gives in a full run: a trial's randomness depends on its index alone), e.g.
    to complete an interrupted sweep.
    """
    config = _resolve(config, kwargs)
    ids = np.arange(config.trials) if trial_ids is None else _trial_ids(trial_ids)
    if config.init_train != "none" and ids.max() >= config.trials:
        raise ValueError(f"The 'trial_ids' parameter must be below trials={config.trials} with init_train. "
                         f"Got {ids.max()} instead.")
    n_workers = _workers(workers, len(ids))
    table = load_table(config) if config.data_is_fixed else None
    positions = [p for p in np.array_split(np.arange(len(ids)), n_workers) if len(p)]
    chunks = [ids[p] for p in positions]
    # Data and layer 0 once per chunk, in parallel: every initializer sees the same input.
    inputs = _parallel_map(lambda c: _prepare(config, table, [int(t) for t in c]), chunks, n_workers)
    y = np.concatenate([part.y for part in inputs])

    gains: dict[str, float] = {}
    histories = []
    jobs = []
    with np.errstate(all="ignore"):
        for init in config.init:
            gain = gains[init] = init_gain(config, init)
            given = None
            if config.init_train != "none":
                given, history = trained(config, init, np.concatenate([part.X for part in inputs]))
                histories.append(history)
            jobs += [(init, gain, part, None if given is None else [(W[c], b[c]) for W, b in given])
                     for part, c in zip(inputs, chunks)]
    # All initializers' chunks share one pool, so one's Python overlaps another's LAPACK.
    done = _parallel_map(lambda job: _simulate(config, *job), jobs, n_workers)
    results: dict[str, list[_Chunk]] = {init: [] for init in config.init}
    for job, chunk in zip(jobs, done):
        results[job[0]].append(chunk)
    result = _tables(config, results, chunks, y, gains)
    if histories:
        result.train_log = pd.concat(histories, ignore_index=True)
    _warn(config, result.flags)
    return result


def _tables(config: Config, results: dict[str, list[_Chunk]], chunks, y: np.ndarray, gains) -> RunResult:
    """Assemble the chunks into tidy tables, one numpy array per column (no per-row Python)."""
    L = config.depth
    trials = np.concatenate(chunks)
    T = len(trials)
    names = list(config.metrics)
    m_cols: dict[str, list] = {"init": [], "trial": [], "layer": [], "metric": [], "value": []}
    s_cols: dict[str, list] = {"init": [], "trial": [], "layer": [], "k": [], "singular_value": []}
    proj_cols: dict[str, list] = {k: [] for k in ("init", "layer", "sample", "pc1", "pc2", "pc3", "target")}
    norm_cols: dict[str, list] = {k: [] for k in ("init", "trial", "layer", "kind", "norm")}
    flag_rows = []
    for init, parts in results.items():
        vals = np.stack([np.concatenate([p.values[name] for p in parts]) for name in names])  # (M, T, L+1)
        size = vals.size
        m_cols["init"].append(_repeat(init, size))
        m_cols["metric"].append(np.repeat(_names_array(names), T * (L + 1)))
        m_cols["trial"].append(np.tile(np.repeat(trials, L + 1), len(names)))
        m_cols["layer"].append(np.tile(np.arange(L + 1), len(names) * T))
        m_cols["value"].append(vals.reshape(-1))
        for layer in range(L + 1):
            sv = np.concatenate([p.spectra[layer] for p in parts])  # (T, k); NaN rows: overflowed trials
            keep = ~np.isnan(sv).any(axis=1)
            sv, kept = sv[keep], trials[keep]
            k = sv.shape[1]
            s_cols["init"].append(_repeat(init, sv.size))
            s_cols["trial"].append(np.repeat(kept.astype(np.int32), k))
            s_cols["layer"].append(np.full(sv.size, layer, dtype=np.int32))
            s_cols["k"].append(np.tile(np.arange(1, k + 1, dtype=np.int32), len(kept)))
            s_cols["singular_value"].append(sv.reshape(-1))
        for p in parts:
            if p.projections is not None:
                n = p.projections.shape[1]
                proj_cols["init"].append(_repeat(init, (L + 1) * n))
                proj_cols["layer"].append(np.repeat(np.arange(L + 1, dtype=np.int32), n))
                proj_cols["sample"].append(np.tile(np.arange(n, dtype=np.int32), L + 1))
                for k in range(3):
                    proj_cols[f"pc{k + 1}"].append(p.projections[:, :, k].reshape(-1))
                proj_cols["target"].append(np.tile(y[0, :, 0].astype(np.float64), L + 1))
        # Chunks arrive per thread; rows go by (trial, layer) within an initializer so
        # the table is the same bytes whatever the number of workers.
        pieces = [(np.repeat(np.asarray(ts, dtype=np.int64), norms.shape[1]), np.full(norms.size, layer, dtype=np.int64),
                   norms.reshape(-1)) for p in parts for layer, ts, norms in p.weight_norms]
        if pieces:
            t_col, l_col, n_col = (np.concatenate(col) for col in zip(*pieces))
            order = np.lexsort((l_col, t_col))  # stable: units keep their order within (trial, layer)
            t_col, l_col, n_col = t_col[order], l_col[order], n_col[order]
            kind = _repeat("internal", len(l_col))
            kind[l_col == 1] = "input"
            norm_cols["init"].append(_repeat(init, len(l_col)))
            norm_cols["trial"].append(t_col)
            norm_cols["layer"].append(l_col)
            norm_cols["kind"].append(kind)
            norm_cols["norm"].append(n_col)
        overflow = np.concatenate([p.overflow_layer for p in parts])
        collapsed = np.concatenate([p.collapsed for p in parts])
        rows = [(init, int(trials[i]), int(overflow[i]), "overflow") for i in np.flatnonzero(overflow >= 0)]
        rows += [(init, int(trials[i]), int(layer), "collapsed") for i, layer in zip(*np.nonzero(collapsed))]
        flag_rows += sorted(rows, key=lambda r: (r[1], r[2]))

    fixed = config_columns(config)
    metrics = _frame(m_cols, ["init", "trial", "layer", "metric", "value", *fixed], **fixed)
    spectra = _frame(s_cols, ["init", "trial", "layer", "k", "singular_value"])
    projections = _frame(proj_cols, ["init", "trial", "layer", "sample", "pc1", "pc2", "pc3", "target"], trial=0)
    weight_norms = _frame(norm_cols, ["init", "trial", "layer", "kind", "norm"])
    flags = pd.DataFrame(flag_rows, columns=["init", "trial", "layer", "flag"])
    info_rows = [(init, *row) for init, parts in results.items() for p in parts for row in p.init_info]
    init_log = pd.DataFrame(info_rows, columns=["init", "trial", "layer", "quantity", "value"])
    return RunResult(config, metrics, spectra, projections, weight_norms, flags, gains, init_log)


def _repeat(value: str, n: int) -> np.ndarray:
    """An object array of n references to one string.

    np.full(n, value, dtype=object) goes through a unicode array and makes n
    separate str objects (~70 bytes each): hundreds of MB for deep runs.
    """
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def _column(values: np.ndarray):
    return pd.Series(values, dtype=object, copy=False) if values.dtype == object else values


def _names_array(names: list[str]) -> np.ndarray:
    out = np.empty(len(names), dtype=object)
    out[:] = names
    return out


def _frame(cols: dict[str, list], order: list[str], **constant) -> pd.DataFrame:
    """One DataFrame from lists of column pieces (empty with the same columns when no pieces).

    Consumes `cols`. `constant` columns (one value for every row) are named in
    `order` too, and are built with the rest: inserting them one by one into a
    finished frame cost more than the whole table at seed scale.
    """
    if not cols[next(iter(cols))]:
        return pd.DataFrame(columns=order)
    # Pop each column's pieces as it is joined, so that the pieces and the joined
    # column are never all alive at once (deep runs have ~10⁶ spectrum rows).
    # Label columns stay object arrays of shared strs: pandas' inferred (Arrow) strings
    # would copy each row into a memory pool that the process keeps (~70 B/row).
    joined = {k: np.concatenate(cols.pop(k)) for k in list(cols)}
    rows = len(next(iter(joined.values())))
    for key, value in constant.items():
        joined[key] = _repeat(value, rows) if isinstance(value, str) else np.full(rows, value)
    return pd.DataFrame({k: _column(joined.pop(k)) for k in order})


def _warn(config: Config, flags: pd.DataFrame) -> None:
    """One warning per initializer that overflowed, naming the first layer."""
    over = flags[flags["flag"] == "overflow"]
    for init, rows in over.groupby("init", sort=False):
        first = int(rows["layer"].min())
        warnings.warn(
            f"init {init!r}: states overflow (non-finite) from layer {first} in "
            f"{rows['trial'].nunique()} of {config.trials} trials; metrics are NaN from there on",
            NumericalWarning,
            stacklevel=3,
        )
