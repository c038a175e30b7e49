"""Left-overs of killed initscope runs, and how the writer recognises them (`initscope.study.writer`).

- `.initscope-tmp-<pid>-<hex>` / `.initscope-old-<pid>-<hex>`: the writer's own
  temporary names; one whose process no longer runs is a left-over
  (`is_stale`, `remove_stale`).
- `.NAME.tmp-XXXXXXXX/`: what versions before the marker file left beside an
  output folder NAME (`tempfile.mkdtemp(prefix=".NAME.tmp-")`). Such a folder is
  removed only when everything about it says initscope's (`is_legacy_temporary`):
  the name (NAME the output's, 8 mkdtemp characters), mkdtemp's mode 0700,
  nothing in it touched for LEGACY_MIN_AGE_S, and nothing inside but
  initscope's file names (a run's tables, config.toml, report.html,
  figures/*.png|gif, compare-fixes' FIX-depthN folders). A folder of yours that
  happens to share the name pattern keeps anything that breaks one of these.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from pathlib import Path

__all__ = ["TEMP", "is_stale", "remove_stale", "remove", "is_legacy_temporary", "remove_legacy", "LEGACY_MIN_AGE_S"]

TEMP = re.compile(r"^\.initscope-(?:tmp|old)-(\d+)-[0-9a-f]{12}(?:\..*)?$")
LEGACY_MIN_AGE_S = 60.0  # an older version's run moves its files out within seconds of creating the folder
_LEGACY_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-[a-z0-9_]{8}$")
_LEGACY_FILES = frozenset({
    "metrics.csv", "spectra.csv", "projections.csv", "weight_norms.csv", "flags.csv", "init_log.csv",
    "train_log.csv", "layers.csv", "certificate.csv", "ranking.csv", "jacobian_spectra.csv", "config.toml",
    "report.html", "index.html"})
_LEGACY_FIGURE = re.compile(r"^[A-Za-z0-9_.-]+\.(?:png|gif)$")
_LEGACY_FIX_FOLDER = re.compile(r"^[a-z0-9+-]+-depth[0-9]+$")


def is_stale(name: str) -> bool:
    """True for an initscope temporary name whose process no longer runs."""
    match = TEMP.match(name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, someone else's
        return False
    return False


def remove_stale(folder: Path) -> list[str]:
    """Remove the left-overs of killed initscope runs directly inside `folder`; return their names."""
    removed = []
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return removed
    for entry in entries:
        if is_stale(entry.name):
            remove(Path(entry.path))
            removed.append(entry.name)
    return removed


def _legacy_tree(folder: Path, *, top: bool, newest: list[float]) -> bool:
    """True when `folder` holds only initscope's names (plain files and folders, no links)."""
    with os.scandir(folder) as it:
        entries = list(it)
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        newest.append(st.st_mtime)
        if entry.is_symlink():
            return False
        if entry.is_dir(follow_symlinks=False):
            if entry.name == "figures":
                with os.scandir(entry.path) as it:
                    figures = list(it)
                newest += [f.stat(follow_symlinks=False).st_mtime for f in figures]
                if not all(f.is_file(follow_symlinks=False) and _LEGACY_FIGURE.match(f.name) for f in figures):
                    return False
            elif not (top and _LEGACY_FIX_FOLDER.match(entry.name)
                      and _legacy_tree(Path(entry.path), top=False, newest=newest)):
                return False
        elif not (entry.is_file(follow_symlinks=False) and entry.name in _LEGACY_FILES):
            return False
    return True


def is_legacy_temporary(path: Path, name: str, *, now: float | None = None) -> bool:
    """True for a temporary folder an initscope before the marker left beside the output `name`."""
    match = _LEGACY_TEMP.match(path.name)
    if match is None or match.group("name") != name:
        return False
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o700:
            return False
        newest = [st.st_mtime]
        if not _legacy_tree(path, top=True, newest=newest):
            return False
    except OSError:
        return False
    return (time.time() if now is None else now) - max(newest) >= LEGACY_MIN_AGE_S


def remove_legacy(folder: Path, name: str) -> list[str]:
    """Remove the temporary folders earlier initscope versions left beside the output `name` in
    `folder` (see `is_legacy_temporary`); return their names."""
    removed = []
    try:
        with os.scandir(folder) as it:
            entries = [Path(e.path) for e in it if e.name.startswith(f".{name}.tmp-")]
    except OSError:
        return removed
    for path in entries:
        if is_legacy_temporary(path, name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


