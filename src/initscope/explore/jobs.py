"""Runs behind the API: a bounded pool, per-client cancellation and depth-prefix streaming.

- At most `slots` runs compute at once, each on its own thread; at most
  `queue` more wait for a slot. Beyond that a request is answered 503 at
  once: the server degrades by refusing, never by piling up threads.
- A client that names itself (header `X-Initscope-Client`) has one live
  request: a newer one supersedes the older, which stops waiting at once or,
  when computing, at its next layer (initscope.run's `on_layer` hook), and is
  answered 429.
- Streaming: a large config runs as a short sequence of depth prefixes
  d_1 < d_2 < ... < depth. Each prefix is an exact run of its own config
  (`initscope.run` at depth d_i). Its layers carry the full run's numbers for
  every forward metric, since each layer draws from per-trial generators in
  layer order; grad_norm (a backward quantity), layer-fitted initializers
  after init training and the last layer's weight norms depend on the depth.
  So the first layers show while the rest compute, and the last message is
  `initscope.run` of the request itself.
- `RunCache`: the latest runs' results by config, within a memory budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from initscope.explore.api import RequestError, request_size
from initscope.study.config import Config

__all__ = ["Jobs", "Ticket", "Cancelled", "depth_plan", "RunCache", "table_bytes", "STREAM_SIZE", "FIRST_STEP_SIZE"]

# A config above this size (api.request_size: ~4× the seed's) streams; its first prefix is about
# FIRST_STEP_SIZE, so the first layers show in about the time of the seed's run.
STREAM_SIZE = 1e7
FIRST_STEP_SIZE = 3e6
MAX_STEPS = 6


def depth_plan(config: Config, *, stream_size: float = STREAM_SIZE, first: float = FIRST_STEP_SIZE) -> list[int]:
    """The depths to run, ending with config.depth: [depth] when small, else doubling prefixes.

    The ratio between steps grows beyond 2 when needed so that there are at
    most MAX_STEPS runs; the total work is then under twice the full run's
    (a geometric series), the price of exact partial answers.
    """
    depth = config.depth
    if request_size(config) <= stream_size or depth == 1:
        return [depth]
    per_layer = request_size(dataclasses.replace(config, depth=1))
    d = max(1, min(depth, int(first // per_layer)))
    ratio = max(2.0, (depth / d) ** (1 / (MAX_STEPS - 1)))
    plan = []
    while d < depth:
        plan.append(d)
        d = max(d + 1, int(math.ceil(d * ratio)))
    return plan + [depth]


class Cancelled(Exception):
    """Raised inside a run (by its layer hook) whose request was superseded or whose server is stopping."""


@dataclasses.dataclass(eq=False)
class Ticket:
    """One request's place: its client and whether a newer request from that client superseded it.

    `superseded` wakes the request while it waits for a slot (event loop);
    `stop` is read by its run's layer hook (`on_layer`, on a worker thread),
    so a computing run ends at its next layer rather than at its end.
    """

    client: str | None
    number: int
    superseded: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def check(self) -> None:
        if self.superseded.is_set():
            raise self.error()

    def error(self) -> RequestError:
        if self.superseded.is_set():
            return RequestError(429, f"Superseded by a newer request from client {self.client!r}.", superseded=True)
        return RequestError(503, "The server is stopping.", retry_after=1)

    def on_layer(self, init: str, layer: int) -> None:
        """initscope.run's layer hook: stop the run once this request is no longer wanted."""
        if self.stop.is_set():
            raise Cancelled


class Jobs:
    """The pool of runs. Use from the event loop: `ticket()`, then `async with slot(ticket)`, then `call`."""

    def __init__(self, *, slots: int = 2, queue: int = 16):
        if slots < 1 or queue < 0:
            raise ValueError(f"The 'slots' parameter must be >= 1 and 'queue' >= 0. Got {slots}, {queue} instead.")
        self.slots, self.queue = slots, queue
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix="initscope-explore")
        self._sem: asyncio.Semaphore | None = None
        self._waiting = 0
        self._running = 0
        self._lock = threading.Lock()
        self._count = itertools.count(1)
        self._latest: dict[str, Ticket] = {}
        self._live: set[Ticket] = set()
        # Whether the server is stopping (the CLI points it at uvicorn's should_exit): a run that a stopping
        # server's cancelled request ends before `shutdown` looks was still computing when the stop came.
        self.closing: Callable[[], bool] = lambda: False
        self._stopped_closing = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def ticket(self, client: str | None) -> Ticket:
        """A new request's ticket; supersedes the client's previous one, if any."""
        ticket = Ticket(client, next(self._count))
        if client:
            old = self._latest.get(client)
            if old is not None:
                old.superseded.set()
                old.stop.set()
            self._latest[client] = ticket
        self._live.add(ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The request is over (answered, or its client went away): its run, if still going, stops."""
        ticket.stop.set()
        self._live.discard(ticket)
        if ticket.client and self._latest.get(ticket.client) is ticket:
            del self._latest[ticket.client]

    def slot(self, ticket: Ticket):
        """An async context holding one of the run slots (503 when too many wait, 429 if superseded)."""
        return _Slot(self, ticket)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """fn() on a pool thread (the caller holds a slot)."""
        def counted():
            with self._lock:
                self._running += 1
            try:
                return fn()
            except Cancelled:
                if self.closing():
                    with self._lock:
                        self._stopped_closing += 1
                raise
            finally:
                with self._lock:
                    self._running -= 1

        return await asyncio.get_running_loop().run_in_executor(self._pool, counted)

    def shutdown(self, grace: float = 2.0) -> tuple[int, int]:
        """Stop taking work and ask every run to stop at its next layer; wait up to `grace` seconds.

        Returns (runs that were computing, runs still computing after the grace period: a layer can
        be long, and their threads are abandoned). Called outside the event loop, once it has stopped.
        """
        with self._lock:  # those computing now, and those the stop reached first
            computing = self._running + self._stopped_closing
        for ticket in list(self._live):
            ticket.stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        end = time.monotonic() + grace
        while self.running and time.monotonic() < end:
            time.sleep(0.02)
        return computing, self.running

    def refusing(self) -> bool:
        """True when every slot is taken and the queue is full: a new request gets 503."""
        return self._sem is not None and self._sem.locked() and self._waiting >= self.queue

    def busy(self) -> RequestError:
        return RequestError(503, f"The server is busy: {self.slots} runs computing and {self._waiting} "
                                 f"waiting. Retry shortly.", retry_after=1)

    async def _acquire(self, ticket: Ticket) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        ticket.check()
        if self.refusing():
            raise self.busy()
        self._waiting += 1
        acquire = asyncio.ensure_future(self._sem.acquire())
        stop = asyncio.ensure_future(ticket.superseded.wait())
        finished = False
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
            finished = True
        finally:
            self._waiting -= 1
            stop.cancel()
            if not acquire.done():
                acquire.cancel()  # asyncio's Semaphore passes a slot on if it was handed one meanwhile
            got = acquire.done() and not acquire.cancelled()
            # A slot taken by a request that is leaving (superseded, or the client went away) goes back.
            if got and (not finished or ticket.superseded.is_set()):
                self._sem.release()
        ticket.check()


class _Slot:
    def __init__(self, jobs: Jobs, ticket: Ticket):
        self.jobs, self.ticket = jobs, ticket

    async def __aenter__(self):
        await self.jobs._acquire(self.ticket)
        return self

    async def __aexit__(self, *exc):
        self.jobs._sem.release()
        return False


def table_bytes(result) -> int:
    """The memory a run's tables hold (their arrays; text columns counted by pointer)."""
    total = 0
    for name in ("metrics", "spectra", "projections", "weight_norms", "flags", "init_log", "train_log",
                 "jacobian_spectra", "theory"):
        df = getattr(result, name, None)
        if df is not None:
            total += int(df.memory_usage(index=True, deep=False).sum())
    return total


class RunCache:
    """The latest runs by config (least recently used out first), within `max_bytes` of tables.

    A run is a function of its config alone (every trial draws from a
    generator seeded by (seed, initializer, trial)), so an answer can be
    served again: a slider dragged back, a reload, the download of the run on
    screen. Results are shared between threads read-only.
    """

    def __init__(self, max_bytes: int):
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, config: Config):
        with self._lock:
            item = self._items.get(config)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(config)
            self.hits += 1
            return item[0]

    def put(self, config: Config, result) -> None:
        size = table_bytes(result)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(config, None)
            self._bytes -= old[1] if old else 0
            self._items[config] = (result, size, {})
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped, _) = self._items.popitem(last=False)
                self._bytes -= dropped

    def derived(self, result, name: str, make: Callable[[], Any]) -> Any:
        """make() -- a pure function of `result` (its verdict) -- computed once while the cache holds it."""
        with self._lock:
            item = self._items.get(result.config)
            memo = item[2] if item is not None and item[0] is result else None
            if memo is not None and name in memo:
                return memo[name]
        value = make()
        if memo is not None:
            with self._lock:
                memo[name] = value
        return value
