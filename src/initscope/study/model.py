"""Building the networks a config describes: data, per-trial generators and layer parameters.

Every trial draws from its own generator, derived from (seed, key, trial) with
SeedSequence, so a trial's data and weights depend on its index alone: not on
how many trials run beside it, in which chunk or on which worker.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from typing import Any

import numpy as np
import pandas as pd

from initscope.core import data as data_mod
from initscope.core.fitted import quantile_shifts
from initscope.core.init_train import train
from initscope.core.initializers import REGISTRY, default_gain, draw as draw_weights, initializer
from initscope.core.network import Architecture, draw_layer, draw_shifts, layer_forward
from initscope.study.config import Config, load_table

__all__ = ["trial_generators", "init_key", "inputs", "ParamSource", "init_gain", "materialize", "trained",
           "networks", "readout_weights", "DATA_KEY", "SUBSET_KEY", "TRAIN_KEY"]

DATA_KEY = 0x5EED_DA7A  # spawn key of the data streams; crc32 of a name never collides by design here
SUBSET_KEY = 0x5EED_5B5E
TRAIN_KEY = 0x5EED_7A1F


def init_key(name: str) -> int:
    """The spawn key of an initializer's weight streams: crc32 of its name."""
    return zlib.crc32(name.encode())


def trial_generators(seed: int, key: int, trials: range | list[int]) -> list[np.random.Generator]:
    """One independent generator per trial, from (seed, key, trial) alone."""
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(key, t)))) for t in trials]


def inputs(config: Config, table, trial_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """Data X (T, n, d) and targets y (T, n, 1) for every trial.

    Synthetic data are drawn fresh per trial; fixed data are the table's rows,
    a random subset per trial when fewer samples than rows are asked for.
    The same data serve every initializer (common random numbers).
    """
    dtype = np.dtype(config.dtype)
    ids = range(config.trials) if trial_ids is None else trial_ids
    T, n = len(ids), config.samples
    rngs = trial_generators(config.seed, DATA_KEY, ids)
    if table is None:
        X = data_mod.sample_trials(config.data, n, config.input_dim, rngs=rngs)
        y = data_mod.targets(config.target, X)
    else:
        rows = table.x.shape[0]
        idx = [np.arange(n) if n == rows else np.sort(r.choice(rows, n, replace=False)) for r in rngs]
        X = np.stack([table.x[i] for i in idx])
        if config.target == "dataset" or config.target.startswith("column:"):
            y = np.stack([table.y[i] for i in idx])
        else:
            y = data_mod.targets(config.target, X)
    return X.astype(dtype, copy=False), y.reshape(T, n, 1).astype(dtype, copy=False)


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
        self.rngs = trial_generators(config.seed, init_key(init), trials)
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
        entry = initializer(self.init)
        if entry.fit is None:
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


def readout_weights(config: Config, init: str, gain: float, width: int, outputs: int,
                    rngs: list[np.random.Generator]) -> np.ndarray:
    """The readout W_out (T, width, outputs): zeros, or drawn after the last layer from the same streams."""
    dtype = np.dtype(config.dtype)
    if config.readout == "zeros":
        return np.zeros((len(rngs), width, outputs), dtype=dtype)
    # Layer-aware rules have no rule for a readout without an input: orthogonal stands in.
    rule = init if REGISTRY[init].draw is not None else "orthogonal"
    return np.stack([draw_weights(rule, width, outputs, gain=gain, rng=r, dtype=dtype) for r in rngs])


def init_gain(config: Config, init: str) -> float:
    """The gain an initializer runs with: the config's, or the rule's default."""
    if config.gain is not None:
        return config.gain
    return default_gain(init, config.activation)


def materialize(config: Config, init: str) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """A config's data and one initializer's parameters for all trials, held in memory.

    Returns X (T, n, d), y (T, n, 1) and [(W_l (T, fan_in, w), b_l (T, w)) for l = 1..L]:
    exactly the networks `run` measures (same generators, same order). Memory
    grows with depth; the streaming `run` does not need this.
    """
    table = load_table(config) if config.data_is_fixed else None
    X, y = inputs(config, table)
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
    """Parameters after `init_train` (forward-gradient or backprop) and its history.

    The latest training is kept (its parameters read-only), keyed by the config, the initializer and
    the bytes of X: a run and then its certificate (`networks`, `compare-fixes`) train once, not twice."""
    key = (config, init, X.shape, X.dtype.str, hashlib.blake2b(np.ascontiguousarray(X).data, digest_size=16).digest())
    with _TRAINED_LOCK:
        if _TRAINED and _TRAINED[0] == key:
            return _TRAINED[1], _TRAINED[2].copy()
    params, history = _train(config, init, X)
    for W, b in params:
        W.flags.writeable = b.flags.writeable = False
    with _TRAINED_LOCK:
        _TRAINED[:] = [key, params, history]
    return params, history.copy()


_TRAINED: list = []  # [key, params, history] of the latest training
_TRAINED_LOCK = threading.Lock()


def _train(config: Config, init: str, X: np.ndarray) -> tuple[list, pd.DataFrame]:
    _, _, params = materialize(config, init)
    arch = Architecture(config.activation, config.norm, config.residual)
    rng = np.random.default_rng([config.seed, init_key(init), TRAIN_KEY])
    params, history = train(X, params, arch, method=config.init_train, steps=config.init_train_steps,
                            lr=config.init_train_lr, batch=config.init_train_batch, rng=rng)
    return params, history.assign(init=init)


def networks(config: Config, init: str) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """X (T, n, d) and [(W, b)] of one initializer: exactly the networks `run` measures.

    With init_train on, the parameters are the trained ones (the same training
    and generator as `run`).
    """
    with np.errstate(all="ignore"):
        X, _, params = materialize(config, init)
        if config.init_train != "none":
            params, _ = trained(config, init, X)
    return X, params
