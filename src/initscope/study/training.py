"""Does it train? The config's task trained from each initialization, every metric measured along the way.

With `steps` > 0, `run` trains every trial's network (all its weights, shifts
and the readout) on the config's target: squared error for a regression
target, cross-entropy and accuracy for class labels (`config.task_of`). The
networks are the ones `run` measures at step 0 (the same generators), trained
by `core.training` on the run's own samples; the held-out loss is on fresh
samples from the same distribution (synthetic data) or on a fifth of the
samples kept out of training (fixed data). At each of `measure_steps(config)`
the trained parameters go through the same measuring pass as step 0
(`measure.simulate(..., given=params)`), so every metric is tracked over
training; step 0 is the untrained run itself, bit for bit.

A trial whose loss or gradient stops being finite has diverged: it stops,
its loss is +inf from that step on, and the summary counts and dates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from initscope.core import data as data_mod
from initscope.core.gradients import weight_gradient_norms
from initscope.core.losses import loss_value
from initscope.core.network import Architecture, layer_forward
from initscope.core.optimizers import make as make_optimizer
from initscope.core.training import History, train
from initscope.study.config import Config, load_table, measure_steps, task_of
from initscope.study.measure import Chunk, Inputs, simulate
from initscope.study.memory import Estimate, check_estimate
from initscope.study.model import ParamSource, init_key, readout_weights, trained, trial_generators
from initscope.study.parallel import parallel_map
from initscope.study.records import tables

__all__ = ["TEST_KEY", "TASK_KEY", "TEST_SHARE", "TRAINING_COLUMNS", "Task", "task_data", "initial_networks",
           "train_and_measure", "history_table", "run_training", "STEPPED_TABLES", "training_estimate",
           "check_training_memory"]

TEST_KEY = 0x5EED_7E57  # spawn key of the held-out samples' streams
TASK_KEY = 0x5EED_7A5C  # the minibatches' generator
TEST_SHARE = 0.2  # of a fixed dataset's samples, held out of training
TRAINING_COLUMNS = ("init", "trial", "step", "loss", "test_loss")


@dataclass
class Task:
    """The training data of all trials: X (T, n, d), target ((T, n, 1) values or (T, n) labels), the held-out
    pair, the loss ('mse' or 'cross_entropy') and the readout's outputs."""

    loss: str
    outputs: int
    X: np.ndarray
    target: np.ndarray
    X_test: np.ndarray
    target_test: np.ndarray


def _as_target(loss: str, y: np.ndarray) -> np.ndarray:
    return y.astype(np.int64)[:, :, 0] if loss == "cross_entropy" else y


def task_data(config: Config, X: np.ndarray, y: np.ndarray, trials: list[int]) -> Task:
    """The task for the run's samples X (T, n, d), y (T, n, 1) of these trial ids."""
    classify = task_of(config) == "classification"
    loss = "cross_entropy" if classify else "mse"
    outputs = int(load_table(config).y.max()) + 1 if classify else 1
    rngs = trial_generators(config.seed, TEST_KEY, trials)
    if not config.data_is_fixed:
        X_test = data_mod.sample_trials(config.data, X.shape[1], X.shape[2], rngs=rngs).astype(X.dtype, copy=False)
        y_test = data_mod.targets(config.target, X_test)[:, :, None].astype(X.dtype, copy=False)
        return Task(loss, outputs, X, _as_target(loss, y), X_test, _as_target(loss, y_test))
    # Fixed data: a fifth of each trial's samples (at least one) is held out, the rest trained on.
    n = X.shape[1]
    held = max(1, int(round(TEST_SHARE * n))) if n > 1 else 0
    order = np.stack([r.permutation(n) for r in rngs])
    train_idx, test_idx = np.sort(order[:, held:], axis=1), np.sort(order[:, :held], axis=1)
    take = lambda a, idx: np.take_along_axis(a, idx[:, :, None], axis=1)  # noqa: E731
    return Task(loss, outputs, take(X, train_idx), _as_target(loss, take(y, train_idx)),
                take(X, test_idx), _as_target(loss, take(y, test_idx)))


def initial_networks(config: Config, init: str, gain: float, X: np.ndarray, trials: list[int],
                     outputs: int) -> tuple[list, np.ndarray]:
    """The step-0 networks of these trials, as `run` measures them, and their readout (T, width, outputs).

    With init_train the layers are the init-trained ones (as `run` measures them too).
    """
    arch = Architecture(config.activation, config.norm, config.residual)
    source = ParamSource(config, init, gain, trials)
    params, S = [], X
    with np.errstate(all="ignore"):
        for layer in range(1, config.depth + 1):
            W, b = source.layer(layer, S)
            params.append((W, b))
            S, _ = layer_forward(S, W, b, arch, keep_pre=False)
    readout = readout_weights(config, init, gain, config.width, outputs, source.rngs)
    if config.init_train != "none":
        params, _ = trained(config, init, X)
    return params, readout


def _grad_norms(config: Config, task: Task, part: Inputs, params, readout, arch, overflow: np.ndarray) -> np.ndarray:
    """‖∂loss/∂W_l‖ (Tc, L) of the training loss with the trained readout (the measuring pass's grad_norm
    assumes the untrained readout). NaN from each trial's overflow layer on."""
    S = part.X
    for W, b in params:
        S, _ = layer_forward(S, W, b, arch, keep_pre=False)
    target = _as_target(task.loss, part.y)
    _, dout = loss_value(task.loss, np.matmul(S, readout), target)
    ds_last = np.matmul(dout, readout.transpose(0, 2, 1))
    norms = weight_gradient_norms(part.X, lambda layer, s: params[layer - 1], config.depth, arch, ds_last)
    hit = overflow >= 0
    layers = np.arange(1, config.depth + 1)[None, :]
    norms[hit] = np.where(layers >= overflow[hit, None], np.nan, norms[hit])
    return norms


def train_and_measure(config: Config, init: str, gain: float, parts: list[Inputs],
                      positions: list[np.ndarray], *, measure: bool = True) -> tuple[dict[int, list[Chunk]], History]:
    """Train one initializer's networks and measure them at every step of `measure_steps` but 0.

    parts: the run's chunks (their data and layer 0); positions: each chunk's rows among all trials.
    measure=False: the training alone, measured nowhere (the benchmark's reference).
    Returns ({step: the chunks measured at that step}, the training history).
    """
    X = np.concatenate([p.X for p in parts])
    y = np.concatenate([p.y for p in parts])
    trials = [t for p in parts for t in p.trials]
    task = task_data(config, X, y, trials)
    arch = Architecture(config.activation, config.norm, config.residual)
    params, readout = initial_networks(config, init, gain, X, trials, task.outputs)
    measured: dict[int, list[Chunk]] = {}
    later = [s for s in measure_steps(config) if s > 0] if measure else []

    def measure(step: int, params_, readout_) -> None:
        from threadpoolctl import threadpool_limits

        chunks = []
        # The measuring pass's small eigendecompositions on several BLAS threads cost up to 30x on a busy
        # machine: one thread, as `run`'s workers measure step 0.
        with np.errstate(all="ignore"), threadpool_limits(1):
            for part, rows in zip(parts, positions):
                given = [(W[rows], b[rows]) for W, b in params_]
                chunk = simulate(config, init, gain, part, given=given)
                if "grad_norm" in chunk.values:
                    chunk.values["grad_norm"][:, 1:] = _grad_norms(config, task, part, given, readout_[rows], arch,
                                                                   chunk.overflow_layer)
                chunks.append(chunk)
        measured[step] = chunks

    rng = np.random.default_rng([config.seed, init_key(init), TASK_KEY])
    _, _, history = train(task.X, task.target, params, readout, arch, loss=task.loss,
                          optimizer=make_optimizer(config.optimizer, config.lr), steps=config.steps,
                          batch_size=config.batch_size, rng=rng, test=(task.X_test, task.target_test),
                          at_step=measure, snapshot_at=later)
    return measured, history


def history_table(init: str, trials: list[int], history: History) -> pd.DataFrame:
    """training.csv's rows of one initializer: init, trial, step, loss, test_loss (and accuracy, test_accuracy
    for classification), by (trial, step)."""
    S, T = history.loss.shape
    cols = {
        "init": np.full(S * T, init, dtype=object),
        "trial": np.repeat(np.asarray(trials, dtype=np.int64), S),
        "step": np.tile(history.steps, T),
        "loss": history.loss.T.reshape(-1),
        "test_loss": history.test_loss.T.reshape(-1),
    }
    if history.accuracy is not None:
        cols["accuracy"] = history.accuracy.T.reshape(-1)
        cols["test_accuracy"] = history.test_accuracy.T.reshape(-1)
    return pd.DataFrame(cols)


STEPPED_TABLES = ("metrics", "spectra", "flags")  # the tables that gain a `step` column when a run trains


def run_training(config: Config, gains: dict[str, float], parts: list[Inputs], positions: list[np.ndarray],
                 chunk_ids: list[np.ndarray], y: np.ndarray, step0, n_workers: int) -> tuple[pd.DataFrame, dict]:
    """Train every initializer (on n_workers threads) and measure it at `measure_steps`.

    step0: the untrained run's RunResult, whose tables are step 0's. Returns (training.csv's table,
    {name: metrics/spectra/flags over every measured step, with a `step` column after `init`}).
    """
    trials = [t for p in parts for t in p.trials]
    # One initializer per thread (BLAS pinned to one thread each); a lone initializer keeps every BLAS
    # thread for its training's large products.
    done = parallel_map(lambda init: train_and_measure(config, init, gains[init], parts, positions),
                        list(config.init), min(n_workers, len(config.init)))
    history = pd.concat([history_table(init, trials, h) for init, (_, h) in zip(config.init, done)],
                        ignore_index=True)
    pieces = {name: [_with_step(getattr(step0, name), 0)] for name in STEPPED_TABLES}
    for step in measure_steps(config)[1:]:
        at = tables(config, {init: measured[step] for init, (measured, _) in zip(config.init, done)}, chunk_ids,
                    y, gains)
        for name in STEPPED_TABLES:
            pieces[name].append(_with_step(getattr(at, name), step))
    return history, {name: pd.concat(frames, ignore_index=True) for name, frames in pieces.items()}


def _with_step(table: pd.DataFrame, step: int) -> pd.DataFrame:
    out = table.copy()
    out.insert(1, "step", np.full(len(out), step, dtype=np.int64))
    return out


def training_estimate(config: Config, workers: int = 1):
    """`study.memory.Estimate` of task training's peak: per initializer trained at once (up to `workers`), every
    layer's state and pre-activation of the batch kept for the backward pass (and a streaming evaluation), and the
    parameters with their gradient, update and two optimiser moments, all trials at once."""
    size = np.dtype(config.dtype).itemsize
    at_once = min(max(1, workers), len(config.init))
    n = config.batch_size if 0 < config.batch_size < config.samples else config.samples
    T, w, L, d = config.trials, config.width, config.depth, config.input_dim
    # The held-out and full-set evaluations stream (one layer at a time): two states of all samples.
    states = at_once * 2 * T * (n * L + config.samples) * w * size
    params = at_once * 5 * T * (d * w + (L - 1) * w * w + (L + 1) * w) * size
    return Estimate({"training states": (states, "depth" if L >= T else "trials"),
                     "training parameters": (params, "width")})


def check_training_memory(config: Config, budget: int | None, workers: int = 1) -> None:
    """MemoryBudgetError (naming the parameter to reduce) when training cannot fit the budget; nothing when
    steps is 0."""
    if config.steps == 0:
        return
    est = training_estimate(config, workers)
    check_estimate(est, budget, f"training ({config.steps} steps)", getattr(config, est.largest[2]))
