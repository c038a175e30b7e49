"""Turn a Config into batched trials and tidy tables: `run`, the study's main loop.

The pieces live beside it: `model` builds the networks (data, per-trial
generators, parameters), `measure` measures them layer by layer, `parallel`
spreads trial chunks over threads and `records` assembles the tidy tables.
Threads change nothing in the numbers: every trial draws from its own
generator, derived from (seed, initializer name, trial) with SeedSequence.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from initscope.study.config import Config, load_table, make_config
from initscope.study.measure import Chunk, prepare, simulate
from initscope.study.memory import MemoryPlanWarning, RunPlan, format_bytes, memory_budget, plan_run
from initscope.study.model import init_gain, trained
from initscope.study.parallel import parallel_map, worker_count
from initscope.study.overlays import theory_table
from initscope.study.records import RunRecords, tables, warn_overflow
from initscope.study.training import check_training_memory, run_training

__all__ = ["run"]


def _trial_ids(trial_ids) -> np.ndarray:
    ids = np.asarray(list(trial_ids))
    if ids.ndim != 1 or len(ids) == 0 or ids.dtype.kind not in "iu" or ids.min() < 0 or len(set(ids.tolist())) != len(ids):
        raise ValueError(f"The 'trial_ids' parameter must be distinct integers >= 0. Got {list(trial_ids)!r} instead.")
    return np.sort(ids)


def _resolve(config: Config | None, kwargs: dict[str, Any]) -> Config:
    if config is None:
        return make_config(**kwargs)
    if kwargs:
        raise TypeError("run() takes either a Config or keyword fields, not both")
    if not isinstance(config, Config):
        raise TypeError(f"run() expects a Config as its first argument. Got {type(config).__name__} instead.")
    return config


def _chunking(config: Config, n_trials: int, workers, memory_limit, plan: RunPlan | None) -> tuple[int, int]:
    """(threads, chunks of trials) for a run: one chunk per thread, or smaller ones when memory says so.

    plan: the command's own plan when it made one already (`initscope run` refuses a run that cannot fit
    before its output folder exists): memory is planned once per command.
    """
    n_workers = worker_count(workers, n_trials)
    if plan is None:
        plan = plan_run(config, n_workers, memory_budget(memory_limit), trials=n_trials)
    if not plan.chunked:
        return plan.concurrent, plan.concurrent
    # Chunks change no number: every trial's reductions are its own. stacklevel 3: run's caller.
    warnings.warn(f"memory: the run's estimated peak exceeds the budget of {format_bytes(plan.budget)}; running "
                  f"{plan.trials_per_chunk} trial(s) per chunk, {plan.concurrent} at a time "
                  f"(estimated {format_bytes(plan.estimate.total)})", MemoryPlanWarning, stacklevel=3)
    return plan.concurrent, -(-n_trials // plan.trials_per_chunk)


# long: the study's main loop, its docstring the API's reference
def run(config: Config | None = None, /, *, workers: int | None = None, trial_ids=None, memory_limit=None,
        on_layer=None, progress=None, plan: RunPlan | None = None, **kwargs: Any) -> RunRecords:
    """Run the study a config describes; return its tidy tables (`initscope.run` returns them as a `Result`).

    `run()` is the seed post's study; `run(depth=50, init="kaiming-normal")`
    takes config fields as keywords; `run(cfg)` takes a validated Config.
    workers: threads over trial chunks (default: the machine's cores).
    trial_ids: run only these trial indices (each gives exactly the numbers it
    gives in a full run: a trial's randomness depends on its index alone), e.g.
    to complete an interrupted sweep.
    memory_limit: the memory budget in bytes (or text such as "8GiB"); default
    80% of the memory available now. The run's peak is estimated first
    (`study.memory`): over the budget, fewer trials run at a time (the same
    numbers, with a MemoryPlanWarning), and when one trial alone does not fit
    a `MemoryBudgetError` (a ValueError naming the parameter that drives the
    estimate) is raised before anything is allocated; plan: a `RunPlan` made already, used as it is.
    on_layer(init, layer): called on a worker thread after each hidden layer
    of each chunk of trials is measured; an exception it raises stops the
    run and propagates (the explorer stops a superseded request this way).
    progress: called as progress(done, total) from worker threads as hidden
    layers are measured (total: initializers × chunks × depth), e.g. the CLI's bar.
    flags gets the lost_directions rows (`study.directions`) from the measured arrays;
    theory the curves that hold for this config (`study.overlays`).
    """
    config = _resolve(config, kwargs)
    ids = np.arange(config.trials) if trial_ids is None else _trial_ids(trial_ids)
    if config.init_train != "none" and ids.max() >= config.trials:
        raise ValueError(f"The 'trial_ids' parameter must be below trials={config.trials} with init_train. "
                         f"Got {ids.max()} instead.")
    n_workers, n_chunks = _chunking(config, len(ids), workers, memory_limit, plan)
    if config.steps > 0:  # task training holds every layer of all trials for its backward pass: refused first
        check_training_memory(config, memory_budget(memory_limit), n_workers)
    table = load_table(config) if config.data_is_fixed else None
    positions = [p for p in np.array_split(np.arange(len(ids)), n_chunks) if len(p)]
    chunks = [ids[p] for p in positions]
    # Data and layer 0 once per chunk, in parallel: every initializer sees the same input.
    inputs = parallel_map(lambda c: prepare(config, table, [int(t) for t in c]), chunks, n_workers)
    y = np.concatenate([part.y for part in inputs])

    gains: dict[str, float] = {}
    histories, jobs = [], []
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
    hook = _layer_hook(on_layer, _ticker(progress, len(jobs) * config.depth))
    done = parallel_map(lambda job: simulate(config, *job, on_layer=hook), jobs, n_workers)
    results: dict[str, list[Chunk]] = {init: [] for init in config.init}
    for job, chunk in zip(jobs, done):
        results[job[0]].append(chunk)
    result = tables(config, results, chunks, y, gains)
    if histories:
        result.train_log = pd.concat(histories, ignore_index=True)
    result.theory = theory_table(result.metrics, config)
    if config.steps > 0:  # task training, measured at config.measure_at (study.training)
        result.training, result.stepped = run_training(config, gains, inputs, positions, chunks, y, result,
                                                       n_workers)
    warn_overflow(config, result.flags)
    return result


def _layer_hook(on_layer, tick):
    """One on_layer(init, layer) callback for simulate: the caller's, then the progress count."""
    if tick is None:
        return on_layer

    def hook(init: str, layer: int) -> None:
        if on_layer is not None:
            on_layer(init, layer)
        tick()

    return hook


def _ticker(progress, total: int):
    """A thread-safe `tick()` that counts finished layers and reports (done, total), or None."""
    if progress is None:
        return None
    import threading

    lock, count = threading.Lock(), [0]

    def tick() -> None:
        with lock:
            count[0] += 1
            done = count[0]
        progress(done, total)

    return tick
