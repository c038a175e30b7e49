"""A progress bar for long runs: rich, on stderr, shown only once a run has taken ~2 s.

`run(..., progress=bar)` calls `bar(done, total)` as trial chunks finish.
The bar stays off when stderr is not a terminal (a pipe, a log file, CI) or
under `--quiet`, and a run that ends within the delay never shows one, so
short runs print exactly what they printed before.
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
    `DELAY_S`. `clock` and
    `console` are for tests (a fake clock, a recording console).
    """

    def __init__(self, description: str = "trials", *, enabled: bool | None = None, delay: float | None = None,
                 clock: Callable[[], float] = time.monotonic, console=None):
        self.description = description
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.delay = DELAY_S if delay is None else delay
        self.clock = clock
        self.console = console
        self.started = clock()
        self.bar = None
        self.task = None
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

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = self.console or Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
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
