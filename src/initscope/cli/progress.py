"""The one progress bar of the command line: rich, on stderr.

`initscope run`: `run(..., progress=bar)` calls `bar(done, total)` as trial
chunks finish. The bar shows only once a run has taken ~2 s, stays off when
stderr is not a terminal (a pipe, a log file, CI) or under `--quiet`, and a
run that ends within the delay never shows one, so short runs print exactly
what they printed before. `initscope sweep` draws the same bar at once and
keeps it (`delay=0`, `transient=False`), with the trials' rate, counting
with `advance` and printing failed configurations above it with `note`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

__all__ = ["DelayedProgress", "DELAY_S"]

DELAY_S = 2.0


class DelayedProgress:
    """A `progress(done, total)` callback that draws a rich bar on stderr after `delay` seconds.

    enabled: None decides by whether stderr is a terminal; delay: None is
    `DELAY_S`; transient: the bar leaves the screen when it closes; rate:
    also show the rate ("trials/s"), the elapsed time and the ETA's label.
    `clock` and `console` are for tests (a fake clock, a recording console).
    """

    def __init__(self, description: str = "trials", *, enabled: bool | None = None, delay: float | None = None,
                 transient: bool = True, rate: bool = False, clock: Callable[[], float] = time.monotonic,
                 console=None):
        self.description = description
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.delay = DELAY_S if delay is None else delay
        self.transient = transient
        self.rate = rate
        self.clock = clock
        self.console = console
        self.started = clock()
        self.bar = None
        self.task = None
        self.done = 0
        self._lock = threading.Lock()  # run() reports from its worker threads

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.bar is None:
                if self.clock() - self.started < self.delay or done >= total:
                    return
                self._open()
            self.bar.update(self.task, completed=max(done, self.bar.tasks[0].completed), total=total)

    def advance(self, count: int, total: int) -> None:
        """`count` more of `total` done (for callers that count steps rather than report the total done)."""
        with self._lock:
            self.done += count
            done = self.done
        self(done, total)

    def note(self, text: str) -> None:
        """A line on stderr, above the bar when one is shown (rich markup allowed)."""
        if not self.enabled:
            return
        with self._lock:
            if self.bar is not None:
                self.bar.console.print(text, markup=True, highlight=False)
                return
        from rich.console import Console

        (self.console or Console(stderr=True)).print(text, markup=True, highlight=False)

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        console = self.console or Console(stderr=True)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        if self.rate:
            columns += [TextColumn("trials"), _rate_column(), TimeElapsedColumn(), TextColumn("ETA")]
        self.bar = Progress(*columns, TimeRemainingColumn(), console=console, transient=self.transient)
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=None)

    @property
    def shown(self) -> bool:
        return self.bar is not None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "DelayedProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rate_column():
    """A rich column with the finished (or current) speed in trials per second."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} trials/s" if speed else "- trials/s", style="progress.data.speed")

    return Rate()
