"""Running independent pieces of work on threads, with BLAS pinned to one thread each.

Two BLAS threads inside two Python threads would fight over two cores; small
LAPACK calls (batched eigvalsh) also only scale this way. Threads change no
number: every trial draws from its own generator.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["parallel_map", "worker_count"]


@functools.cache
def _blas_controller():
    """A threadpoolctl controller, made once: threadpool_limits() rescans the libraries each call."""
    import scipy.linalg  # noqa: F401  scipy's own OpenBLAS must be loaded before the scan
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def parallel_map(fn, items: list, n_workers: int) -> list:
    """[fn(item) for item in items], on n_workers threads each with BLAS pinned to one thread."""
    if n_workers == 1:
        return [fn(item) for item in items]
    with _blas_controller().limit(limits=1):
        pool = ThreadPoolExecutor(n_workers)
        try:
            return list(pool.map(fn, items))
        finally:
            # Not `with pool`: on Ctrl-C it would wait for the running chunks (minutes) before the
            # KeyboardInterrupt got out. On success every item is done, so nothing is left to wait for.
            pool.shutdown(wait=False, cancel_futures=True)


def worker_count(requested: int | None, trials: int) -> int:
    """Threads for `trials` trials: the request (an integer >= 1), capped at trials; default the cores."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"The 'workers' parameter must be an integer >= 1. Got {requested!r} instead.")
        return min(requested, trials)
    return max(1, min(os.cpu_count() or 1, trials))
