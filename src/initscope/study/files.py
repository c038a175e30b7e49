"""The user's files, judged before they are read: a regular file of bounded size, or a clear refusal.

Config files, data files and plugin files all come through here. A path is
looked at with one `os.stat` (what it is, how big it is) before a byte of it
is read, so that `--config /dev/zero` (a device that never ends), a FIFO (a
read that never returns) or a multi-gigabyte file given by mistake is one
line naming the parameter, not a hang or the OOM killer. What is read is
then read in bounded chunks, since a file can grow between the look and the
read (or, like some files under /proc, report a size of 0).

Every refusal is a ValueError "The 'PARAMETER' parameter must be ... Got ... instead."
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["regular_file", "read_bounded", "CONFIG_LIMIT", "PLUGIN_LIMIT", "DATA_LIMIT"]

CONFIG_LIMIT = 1 * 2**20  # a TOML of config fields is a few hundred bytes; a sweep file a few kilobytes
PLUGIN_LIMIT = 8 * 2**20  # a Python module of a few metrics
DATA_LIMIT = 8 * 2**30  # a data table; the memory check refuses what its run cannot hold

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file(path: str | os.PathLike, *, parameter: str, what: str, limit: int) -> int:
    """The size of `path`, a regular file (links followed) of at most `limit` bytes; ValueError otherwise.

    what: the file's kind in the message ("TOML file", ".csv or .npy file")."""
    shown = os.fspath(path)
    try:
        info = os.stat(path)
    except ValueError:  # a NUL byte: no such name can exist
        raise ValueError(f"The '{parameter}' parameter must be an existing {what}. Got {shown!r} instead "
                         f"(a file name cannot hold a NUL byte).") from None
    except FileNotFoundError:
        raise ValueError(f"The '{parameter}' parameter must be an existing {what}. Got {shown!r} instead "
                         f"(file not found).") from None
    except OSError as exc:  # too long a name, a symlink loop, no permission on a folder above
        raise ValueError(f"The '{parameter}' parameter must be an existing, readable {what}. Got {shown!r} "
                         f"instead ({exc.strerror or exc}).") from None
    for test, kind in _KINDS:
        if test(info.st_mode):
            raise ValueError(f"The '{parameter}' parameter must be a regular {what}. Got {shown!r} instead, "
                             f"which is {kind}.")
    if info.st_size > limit:
        raise ValueError(f"The '{parameter}' parameter must be a {what} of at most {_size(limit)}. Got {shown!r} "
                         f"instead, of {_size(info.st_size)}.")
    return info.st_size


def read_bounded(path: str | os.PathLike, *, parameter: str, what: str, limit: int) -> bytes:
    """The bytes of `path` (checked by `regular_file`), read in chunks and refused past `limit`."""
    regular_file(path, parameter=parameter, what=what, limit=limit)
    chunks, size = [], 0
    try:
        # O_NONBLOCK: if the name became a FIFO since the look, open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb", closefd=True) as fh:
            while chunk := fh.read(min(2**20, limit + 1 - size)):
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"The '{parameter}' parameter must be a {what} of at most {_size(limit)}. "
                                     f"Got {os.fspath(path)!r} instead, which grew past it while read.")
                chunks.append(chunk)
    except OSError as exc:
        raise ValueError(f"The '{parameter}' parameter must be a readable {what}. Got {os.fspath(path)!r} "
                         f"instead ({exc.strerror or exc}).") from None
    return b"".join(chunks)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"

