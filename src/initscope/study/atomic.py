"""One file written whole or not at all, and signals held while renames that belong together run.

- `atomic_file(path)` / `atomic_write(path, data)`: the file is written under
  a hidden temporary name beside `path` and renamed over it on success; a
  failure (or Ctrl-C) leaves the old file as it was.
- `signals_held()`: SIGINT, SIGTERM and SIGHUP wait until the block ends.
- `temp_name(kind)`: a hidden name no other process uses.

The output writer (`study.writer`) builds folders from these; the report's
page and figure writers use them for single files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_file", "atomic_write", "signals_held", "temp_name"]


def temp_name(kind: str = "tmp", suffix: str = "") -> str:
    """A hidden name no other process uses: `.initscope-<kind>-<pid>-<hex><suffix>`."""
    return f".initscope-{kind}-{os.getpid()}-{secrets.token_hex(6)}{suffix}"


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back until the block is done, then deliver them.

    Renames that must happen together (old folder out, new one in) and the
    clean-up of a temporary folder must not be cut in half by Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())
    saved = {sig: signal.getsignal(sig) for sig in held}
    for sig in saved:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in caught[:1]:
            signal.raise_signal(sig)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix: savers pick the format from it);
    rename it over `path` when the block succeeds, remove it when it fails."""
    path = Path(path)
    tmp = path.with_name(temp_name(suffix=path.suffix))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (a failure leaves the old file); return the path."""
    with atomic_file(path) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
    return Path(path)
