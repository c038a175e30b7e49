"""Where a sweep's configurations run: this process, a local process pool, or a Dask cluster.

All three are a `concurrent.futures.Executor` running the same task,
`run_config(config, config_id)`, which runs one configuration's trials as one
batch (`run(config, workers=1)` with BLAS on one thread) and returns a
`ConfigBatch`. Only the parent process writes the store, so Dask workers on
other machines need no access to it. Results do not depend on the executor
or the number of workers: every trial's randomness comes from (seed,
initializer, trial index) alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.context
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from initscope.study import runner  # runner.run looked up per call: tests stand in a failing run
from initscope.study.config import Config
from initscope.study.memory import MemoryPlanWarning
from initscope.study.plugins import active_plugins, load_plugins
from initscope.study.records import NumericalWarning
from initscope.study.batches import ConfigBatch, batch_from_result, failed_batch
from initscope.study.store import Store
from initscope.study.sweep import Sweep

__all__ = [
    "InlineExecutor",
    "open_executor",
    "run_config",
    "execute",
    "run_sweep",
    "SweepOutcome",
    "estimated_cost",
    "available_cores",
]

DASK_CONNECT_TIMEOUT_S = 5


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_config(config: Config, cid: str, trial_ids=None, plugins: tuple[str, ...] = (),
               memory_limit: int | None = None) -> ConfigBatch:
    """Run one single-initializer configuration, all its (or the given) trials at once.

    plugins: the parent's loaded plugins (see `plugins.load_plugins`), loaded
    here first (once per process), so that a worker process or a Dask worker
    knows the user's metrics, initializers and activations; INITSCOPE_PLUGINS
    is honoured too. Any exception (MemoryError included) becomes a 'failed' batch carrying
    the error, so one bad configuration never stops a sweep. Overflow and
    collapse are results (flags), so their NumericalWarning is not shown.
    memory_limit: this process's share of the sweep's memory budget, in bytes
    (None: 80% of what is available when it runs); a configuration over it
    runs in smaller chunks of trials, with the same numbers (the parent has
    said so once: the MemoryPlanWarning is not repeated here).
    """
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    try:
        load_plugins()
        load_plugins(plugins)
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", NumericalWarning)
            warnings.simplefilter("ignore", MemoryPlanWarning)
            result = runner.run(config, workers=1, trial_ids=trial_ids, memory_limit=memory_limit)
        return batch_from_result(result, cid, seconds=time.perf_counter() - start, worker=_worker_name())
    except Exception as exc:  # noqa: BLE001 - recorded in the store, the sweep goes on
        return failed_batch(config, cid, _describe(exc), seconds=time.perf_counter() - start,
                            worker=_worker_name())


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class InlineExecutor(cf.Executor):
    """Runs each task in this process when it is submitted: `--workers 1`."""

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future, as a pool would
            future.set_exception(exc)
        return future


def _pool_worker_init(parent: int) -> None:
    """Ctrl-C is the parent's to handle; and a worker exits when its parent dies (even by SIGKILL)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="initscope-parent-watch", daemon=True).start()


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _check_scheduler(scheduler: str, timeout: float) -> None:
    """Refuse a scheduler address that is malformed or where nothing listens, before any Client exists.

    A Client that failed half-way still closes itself from its finalizer,
    which blocks for 20 s and prints a traceback after the one-line error
    (issue 14); a parse and a plain TCP connect decide first, in at most
    `timeout` seconds.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    def bad(reason: str) -> ValueError:
        return ValueError(f"The 'scheduler' parameter must be the address of a running Dask scheduler "
                          f"(e.g. 'tcp://10.0.0.5:8786'). Got {scheduler!r} ({reason}).")

    if not isinstance(scheduler, str) or not scheduler.strip() or any(c.isspace() for c in scheduler):
        raise bad("not an address")
    try:
        scheme, location = parse_address(scheduler)
        if scheme == "ucx":
            return  # no plain TCP socket to try: left to dask
        if scheme not in ("tcp", "tls", "ws", "wss"):  # inproc:// lives in one process, never the CLI's
            raise ValueError(f"unknown or unusable address scheme {scheme!r}; use tcp://, tls://, ws://, wss:// "
                             f"or ucx://")
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise bad(_describe(exc)) from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise bad(f"cannot connect: {_describe(exc)}") from None


@contextmanager
def _dask_executor(scheduler: str, connect_timeout: float) -> Iterator[tuple[cf.Executor, int]]:
    """A running Dask scheduler's executor and its threads (`open_executor`'s scheduler case)."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("The 'scheduler' option needs dask.distributed: pip install 'initscope[dask]'.") from None
    _check_scheduler(scheduler, connect_timeout)

    class _Client(Client):
        # A Client whose start failed closes itself from its finalizer, which waits 20 s for a
        # connection that never was and prints a traceback after the one-line error: skip it.
        def __del__(self):
            if getattr(self, "_initscope_started", False):
                super().__del__()

    try:
        client = _Client(scheduler, timeout=connect_timeout, set_as_default=False)
        client._initscope_started = True
    except Exception as exc:  # noqa: BLE001 - whatever answers there (a proxy, an HTTP server) is not a scheduler
        raise ValueError(
            f"The 'scheduler' parameter must be the address of a running Dask scheduler. Got {scheduler!r} "
            f"({_describe(exc)})."
        ) from None
    try:
        slots = max(1, sum(client.nthreads().values()))
        yield client.get_executor(pure=False), slots
    finally:
        client.close()


@contextmanager
def open_executor(workers: int | None = None, scheduler: str | None = None, *,
                  connect_timeout: float = DASK_CONNECT_TIMEOUT_S) -> Iterator[tuple[cf.Executor, int]]:
    """An executor and its number of slots (tasks that run at once).

    scheduler: address of a running Dask scheduler (e.g. 'tcp://10.0.0.5:8786');
    workers is then ignored. Otherwise workers=1 runs in this process and
    workers=N>1 uses N spawned processes (default: the machine's cores), at
    most `available_cores()`: the slots returned say how many.
    Raises ValueError for a bad workers value, a missing dask.distributed, or
    a scheduler that cannot be reached within connect_timeout seconds.
    """
    if scheduler is not None:
        with _dask_executor(scheduler, connect_timeout) as pair:
            yield pair
        return
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"The 'workers' parameter must be an integer >= 1. Got {workers!r} instead.")
    # More processes than cores only adds memory (each holds its own interpreter and arrays,
    # ~130 MiB) and contention: cap at the cores this process may use. The caller sees the cap
    # in the returned slots.
    workers = min(workers, available_cores())
    if workers == 1:
        yield InlineExecutor(), 1
        return
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=_SpawnContext(),
                                  initializer=_pool_worker_init, initargs=(os.getpid(),))
    try:
        yield pool, workers
    except BaseException:
        # Ctrl-C, SIGTERM or an error in the parent: do not wait for running configurations to
        # finish. The pool's futures are left to the pool (see `execute`), which marks them failed
        # once it sees its workers gone, and then closes its queues.
        # The pool's own list misses a worker whose start an interrupt cut short (the signal is
        # delivered as start() returns, before the pool records it): terminate every worker.
        workers = {*getattr(pool, "_processes", {}).values(),
                   *(p for p in multiprocessing.active_children() if isinstance(p, _SpawnProcess))}
        for process in workers:
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _SpawnProcess(multiprocessing.context.SpawnProcess):
    """A spawned worker that starts with SIGINT blocked.

    Ctrl-C in a terminal signals the whole process group. A worker ignores
    SIGINT once its initializer has run, but before that (seconds of imports)
    it would die with a KeyboardInterrupt traceback of its own. The signal
    mask is inherited through fork and exec, so blocking SIGINT in this
    thread while the worker starts covers it from its first instruction; the
    parent gets a Ctrl-C that arrives meanwhile as soon as it is unblocked.
    (Module level: spawn pickles the process object by reference.)
    """

    def start(self) -> None:
        if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to signal
            super().start()
            return
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = _SpawnProcess


def execute(tasks: Iterable[tuple[Config, str]], executor: cf.Executor, *, window: int = 1,
            memory_limit: int | None = None) -> Iterator[ConfigBatch]:
    """Run (config, config_id) tasks on any executor; yield each ConfigBatch as it finishes.

    Tasks are pulled lazily, at most `window` in flight, so the caller's
    iterator can skip configurations that another sweep finished meanwhile.
    A task whose worker died (or that could not be submitted) comes back as
    a failed batch. Closing the generator cancels what has not started.
    memory_limit: each task's budget in bytes (`run_config`).
    """
    it = iter(tasks)
    plugins = active_plugins()  # a process pool's or Dask's workers load them before each task
    pending: dict[cf.Future, tuple[Config, str]] = {}
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < max(1, window):
                try:
                    task = next(it)
                except StopIteration:
                    exhausted = True
                    break
                config, cid = task[0], task[1]
                try:
                    pending[executor.submit(run_config, *task, plugins=plugins, memory_limit=memory_limit)] = (config, cid)
                except Exception as exc:  # noqa: BLE001 - e.g. a broken pool: record it, go on
                    yield failed_batch(config, cid, f"not submitted: {_describe(exc)}")
            if not pending:
                return
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for future in done:
                config, cid = pending.pop(future)
                try:
                    yield future.result()
                except Exception as exc:  # noqa: BLE001 - the worker itself was lost
                    yield failed_batch(config, cid, f"worker lost: {_describe(exc)}")
    finally:
        # A process pool cancels its own queued work when it shuts down. Cancelling here races
        # with its manager thread, which after a worker was terminated (Ctrl-C) sets an error on
        # every future it holds and dies with InvalidStateError on a cancelled one, leaving its
        # queues and semaphores behind (CPython 3.11).
        if not isinstance(executor, cf.ProcessPoolExecutor):
            for future in pending:
                future.cancel()


def estimated_cost(config: Config) -> float:
    """A rough relative cost of one configuration: matmuls, Gram spectra and Jacobians per layer."""
    n, w, d = config.samples, config.width, config.input_dim
    per_layer = n * w * max(w, d) + min(n, w) ** 3 + min(n, 64) * d * w * w
    return config.trials * config.depth * per_layer


@dataclass
class SweepOutcome:
    """What one `run_sweep` did. failures: (config_id, config, error) of configurations that failed."""

    configs: int
    trials: int
    skipped_trials: int = 0
    ran_configs: int = 0
    written_trials: int = 0
    failures: list[tuple[str, Config, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def run_sweep(
    sweep: Sweep,
    store: Store,
    executor: cf.Executor,
    *,
    slots: int = 1,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int, ConfigBatch | None], None] | None = None,
    memory_limit: int | None = None,
) -> SweepOutcome:
    """Run what the store lacks of a sweep, writing each configuration as it finishes.

    A configuration whose trials are all stored 'ok' is skipped, checked again
    just before it is submitted (another sweep may be writing the same store).
    A configuration with some trials missing runs only those trials
    (`run(..., trial_ids=...)`). Larger configurations go first, so the last ones to
    finish are short. on_start(trials_to_run, trials_already_done) is called
    once; on_progress(trials, batch) after each configuration (batch None when
    it was skipped because another sweep finished it). memory_limit: each
    running configuration's budget in bytes (the sweep's budget over its slots).
    """
    start = time.perf_counter()
    outcome = SweepOutcome(configs=len(sweep.configs), trials=sweep.total_trials)
    done = store.done_trials(sweep.ids)
    wanted = set(range(sweep.trials))
    order = sorted(range(len(sweep.configs)), key=lambda i: -estimated_cost(sweep.configs[i]))
    todo = [i for i in order if not wanted <= done.get(sweep.ids[i], set())]
    outcome.skipped_trials = sum(len(wanted & done.get(cid, set())) for cid in sweep.ids)
    if on_start is not None:
        on_start(outcome.trials - outcome.skipped_trials, outcome.skipped_trials)
    missing_at_start = {sweep.ids[i]: len(wanted - done.get(sweep.ids[i], set())) for i in todo}

    def tasks() -> Iterator[tuple[Config, str]]:
        for i in todo:
            cid = sweep.ids[i]
            now_done = store.done_trials([cid]).get(cid, set())
            if wanted <= now_done:  # another sweep finished it meanwhile
                outcome.skipped_trials += missing_at_start[cid]
                if on_progress is not None:
                    on_progress(missing_at_start[cid], None)
                continue
            missing = sorted(wanted - now_done)
            # Only the missing trials run: each trial's numbers depend on its index alone.
            yield sweep.configs[i], cid, (missing if now_done else None)

    # In-process, one at a time: a kill then loses at most the configuration being run.
    window = 1 if isinstance(executor, InlineExecutor) else 2 * slots
    for batch in execute(tasks(), executor, window=window, memory_limit=memory_limit):
        outcome.ran_configs += 1
        outcome.written_trials += store.write(batch)
        if not batch.ok:
            outcome.failures.append((batch.config_id, batch.config, batch.error or "unknown error"))
        if on_progress is not None:
            on_progress(missing_at_start[batch.config_id], batch)
    outcome.seconds = time.perf_counter() - start
    return outcome
