"""Task training of many independent networks at once: exact gradients, minibatches, divergence as a result.

The model is the network of `core.network` (layers [(W_l (T, fan_in, w),
b_l (T, w))]) followed by a linear readout R (T, w, o): out = s_L·R. Every
trial is its own network trained on its own data; the loss of the batch is
each trial's mean over samples (`core.losses`), and the gradient comes from
the network's own VJP (`network.layer_param_vjp`), so it is the exact
gradient of what `network.forward` computes (batch norm in training mode:
its statistics are the batch's). All parameters — weights, shifts and the
readout — are trained, as in the seed post.

Divergence is a result: a trial whose batch loss or gradient is not finite
stops there (its parameters keep their last values), its step is recorded,
and its loss is +inf from that step on. Pure numpy; randomness (the
minibatches) only through `rng`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from initscope.core.losses import accuracy, loss_value
from initscope.core.network import Architecture, forward, layer_forward, layer_param_vjp, pre_activation_vjp
from initscope.core.optimizers import Optimizer

__all__ = ["Params", "History", "predict", "evaluate", "loss_and_gradient", "minibatch", "train"]

Params = list[tuple[np.ndarray, np.ndarray]]


def predict(X: np.ndarray, params: Sequence[tuple[np.ndarray, np.ndarray]], readout: np.ndarray,
            arch: Architecture) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """out (T, n, o) = s_L·R, with the states [X, s_1, …, s_L] and pre-activations [z_1, …, z_L]."""
    states, zs = forward(X, params, arch)
    return np.matmul(states[-1], readout), states, zs


def evaluate(X: np.ndarray, target: np.ndarray, params, readout: np.ndarray, arch: Architecture,
             loss: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss (T,) and, for cross-entropy, accuracy (T,) of the networks on (X, target); no gradient."""
    with np.errstate(all="ignore"):
        out = np.matmul(_last_state(X, params, arch), readout)
        value, _ = loss_value(loss, out, target)
        return value, accuracy(out, target) if loss == "cross_entropy" else None


def _last_state(X, params, arch):
    s = X
    for W, b in params:
        s, _ = layer_forward(s, W, b, arch, keep_pre=False)
    return s


def loss_and_gradient(X: np.ndarray, target: np.ndarray, params, readout: np.ndarray, arch: Architecture,
                      loss: str) -> tuple[np.ndarray, np.ndarray | None, Params, np.ndarray]:
    """Loss (T,), accuracy (T,) or None, [(∂loss/∂W_l, ∂loss/∂b_l)] and ∂loss/∂R, exact (reverse mode).

    X (T, n, d); target (T, n, o) for 'mse', labels (T, n) for 'cross_entropy'.
    """
    out, states, zs = predict(X, params, readout, arch)
    value, dout = loss_value(loss, out, target)
    acc = accuracy(out, target) if loss == "cross_entropy" else None
    d_readout = np.matmul(states[-1].transpose(0, 2, 1), dout)
    ds = np.matmul(dout, readout.transpose(0, 2, 1))
    grads: Params = [None] * len(params)  # type: ignore[list-item]
    for layer in range(len(params), 1, -1):
        W, _ = params[layer - 1]
        ds, dW, db = layer_param_vjp(ds, states[layer - 1], W, zs[layer - 1], arch)
        grads[layer - 1] = (dW, db)
        states[layer] = zs[layer - 1] = None  # free as we go
    if params:  # the first layer: no gradient w.r.t. the data is needed
        W, _ = params[0]
        dz = pre_activation_vjp(ds, X, W, zs[0], arch)
        grads[0] = (np.matmul(X.transpose(0, 2, 1), dz), dz.sum(axis=1))
    return value, acc, grads, d_readout


def minibatch(n: int, T: int, batch_size: int, rng: np.random.Generator) -> np.ndarray | None:
    """Sample indices (T, batch_size), drawn afresh per trial without replacement; None for the full batch
    (batch_size 0 or >= n)."""
    if not 0 < batch_size < n:
        return None
    return np.argsort(rng.random((T, n)), axis=1)[:, :batch_size]


def _take(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    if idx is None:
        return a
    return np.take_along_axis(a, idx[:, :, None] if a.ndim == 3 else idx, axis=1)


@dataclass
class History:
    """The loss at the logged steps: steps (S,), loss/test_loss (S, T), accuracy/test_accuracy (S, T) or None,
    diverged_step (T,) the step whose parameters first gave a non-finite loss or gradient (−1: never)."""

    steps: np.ndarray
    loss: np.ndarray
    test_loss: np.ndarray
    accuracy: np.ndarray | None
    test_accuracy: np.ndarray | None
    diverged_step: np.ndarray


def _flat(params, readout) -> list[np.ndarray]:
    return [a for pair in params for a in pair] + [readout]


def _unflat(arrays: list[np.ndarray]) -> tuple[Params, np.ndarray]:
    return [(arrays[i], arrays[i + 1]) for i in range(0, len(arrays) - 1, 2)], arrays[-1]


def train(  # long: one loop whose steps share the divergence mask and the optimiser state
    X: np.ndarray,
    target: np.ndarray,
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    readout: np.ndarray,
    arch: Architecture,
    *,
    loss: str,
    optimizer: Optimizer,
    steps: int,
    batch_size: int = 0,
    rng: np.random.Generator,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    log_at: Sequence[int] | None = None,
    at_step: Callable[[int, Params, np.ndarray], None] | None = None,
    snapshot_at: Sequence[int] = (),
) -> tuple[Params, np.ndarray, History]:
    """Train every trial's network for `steps` optimiser steps; return (params, readout, history).

    X (T, n, d), target as `loss_and_gradient`'s; params and readout are not
    modified. batch_size: samples per step (0: all), drawn from rng. test:
    held-out (X_test, target_test). log_at: the steps (0..steps) whose loss
    on all of X (and on test) is recorded, default every step. at_step(step,
    params, readout) is called at each step in snapshot_at with the parameters
    after that many steps (step 0: the given ones), e.g. to measure them.
    """
    T, n = X.shape[0], X.shape[1]
    log = sorted({int(s) for s in (range(steps + 1) if log_at is None else log_at) if 0 <= s <= steps})
    row = {s: i for i, s in enumerate(log)}
    snap = {int(s) for s in snapshot_at}
    classify = loss == "cross_entropy"
    shape = (len(log), T)
    hist = History(np.array(log, dtype=np.int64), np.full(shape, np.nan), np.full(shape, np.nan),
                   np.full(shape, np.nan) if classify else None, np.full(shape, np.nan) if classify else None,
                   np.full(T, -1, dtype=np.int64))
    arrays = _flat(params, readout)
    state = optimizer.init(arrays)
    alive = np.ones(T, dtype=bool)

    def record(step, value, acc, params_, readout_):
        i = row[step]
        hist.loss[i] = value
        if classify:
            hist.accuracy[i] = acc
        if test is not None:
            hist.test_loss[i], test_acc = evaluate(*test, params_, readout_, arch, loss)
            if classify:
                hist.test_accuracy[i] = test_acc

    with np.errstate(all="ignore"):
        for step in range(steps + 1):
            params_, readout_ = _unflat(arrays)
            if step in snap and at_step is not None:
                at_step(step, params_, readout_)
            if step == steps:
                if step in row:
                    record(step, *evaluate(X, target, params_, readout_, arch, loss), params_, readout_)
                break
            idx = minibatch(n, T, batch_size, rng)
            value, acc, grads, d_readout = loss_and_gradient(_take(X, idx), _take(target, idx), params_,
                                                             readout_, arch, loss)
            g = _flat(grads, d_readout)
            bad = ~np.isfinite(value)
            for a in g:
                bad |= ~np.isfinite(a).reshape(T, -1).all(axis=1)
            newly = bad & alive
            hist.diverged_step[newly] = step
            alive &= ~bad
            if step in row:
                if idx is None:
                    record(step, value, acc, params_, readout_)
                else:
                    record(step, *evaluate(X, target, params_, readout_, arch, loss), params_, readout_)
            if not alive.any():
                continue  # nothing left to train; the remaining steps are all diverged
            if not alive.all():  # stopped trials take no step (and keep the optimiser's state finite)
                g = [np.where(alive.reshape((T,) + (1,) * (a.ndim - 1)), a, 0.0) for a in g]
            updates, state = optimizer.update(g, state)
            if not alive.all():
                updates = [np.where(alive.reshape((T,) + (1,) * (u.ndim - 1)), u, 0.0) for u in updates]
            arrays = [a + u for a, u in zip(arrays, updates)]
    _diverged_as_inf(hist)
    params_, readout_ = _unflat(arrays)
    return params_, readout_, hist


def _diverged_as_inf(hist: History) -> None:
    """Loss +inf (accuracy NaN) at and after each trial's divergence step: a result, not a gap."""
    gone = (hist.diverged_step >= 0)[None, :] & (hist.steps[:, None] >= hist.diverged_step[None, :])
    for table in (hist.loss, hist.test_loss):
        table[gone] = np.inf
    for table in (hist.accuracy, hist.test_accuracy):
        if table is not None:
            table[gone] = np.nan
