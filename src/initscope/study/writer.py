"""The one writer of initscope's outputs: nothing half-written, nothing of yours lost.

Two primitives, used by every command and by `write_report`:

- `study.atomic.atomic_file(path)` / `atomic_write(path, data)`: one file, written under a
  temporary name beside it and renamed over it, so a reader sees the old file
  or the new one, never half of one.
- `Output`: an output folder. Everything is written into a fresh temporary
  folder first; only when all of it succeeded does it reach the target:
  - a target that does not exist is created by one rename;
  - a target that initscope wrote (its marker file `.initscope` lists every
    file in it, all written by the same command) is swapped for the new one
    with one rename (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere two renames);
  - any other target (an empty folder, the current folder, a mount point, a
    folder another initscope command also wrote into, or one holding files
    initscope did not write, which needs `overwrite=True`) is merged: each of
    initscope's files is renamed into place, every other file is left alone,
    and an earlier output of the same command is removed only where the
    marker lists it.
  A folder holding files initscope did not write is refused (`OutputError`,
  naming `out` and a few of those files) unless `overwrite=True`.

Temporary names are `.initscope-tmp-<pid>-<hex>` (and `.initscope-old-...`):
those whose process is gone are left-overs of a killed run, removed by the next
run that writes beside or into them. The `.NAME.tmp-XXXXXXXX` folders of
versions before the marker are removed beside NAME when their name, mode, age
and contents all say they are initscope's (`is_legacy_temporary`). The temporary folder is created beside the
target's real location (symlinks resolved), so every rename stays on one
filesystem; files get the user's umask (no `mkstemp` 0600). SIGINT, SIGTERM and
SIGHUP are held back while renames run, so an interrupt never lands between two of them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import Iterator

from initscope import __version__
from initscope.study.atomic import atomic_write, signals_held, temp_name
from initscope.study.leftovers import TEMP as _TEMP
from initscope.study.leftovers import is_stale as _is_stale
from initscope.study.leftovers import remove as _remove
from initscope.study.leftovers import remove_legacy, remove_stale

__all__ = ["MARKER", "Output", "OutputError", "mark_folder",
           "write_marker", "read_marker", "remove_stale", "remove_legacy", "is_legacy_temporary"]

MARKER = ".initscope"
_MARKER_LIMIT = 64 * 2**20  # a marker lists file names: even a huge sweep's is far smaller
_EXAMPLES = 5
_EMPTY_WALK = 1000  # entries looked at to decide that a folder holds no file


class OutputError(ValueError):
    """An output path initscope must not or cannot write (the CLI's exit status 2)."""

    def renamed(self, param: str, overwrite: str) -> OutputError:
        """The same refusal for a command or function whose path is `param`, overridden by `overwrite`
        (e.g. 'csv' and '--overwrite', or 'path' and 'overwrite=True')."""
        text = str(self).replace("The 'out' parameter", f"The '{param}' parameter", 1)
        return OutputError(text.replace("pass --overwrite", f"pass {overwrite}"))


def _out_error(constraint: str, out: object, why: str = "") -> OutputError:
    detail = f" ({why})" if why else ""
    return OutputError(f"The 'out' parameter must be {constraint}{detail}. Got {str(out)!r} instead.")


def read_marker(folder: Path) -> dict | None:
    """The marker of an initscope folder: {"files": {relpath: command}, "commands": {...}, ...}, or None."""
    path = Path(folder) / MARKER
    try:
        # Only a regular file (not a link, a folder or a FIFO) of a marker's size, written by initscope
        # (its "initscope" version key): a user's own `.initscope` of any other form is not a marker.
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MARKER_LIMIT:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("initscope"), str):
        return None
    files = data.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    data["files"] = {k: v for k, v in files.items() if _safe_relpath(k)}
    if not isinstance(data.get("commands"), dict):
        data["commands"] = {}
    return data


def _safe_relpath(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) and rel != MARKER


def write_marker(folder: Path, files: dict[str, str], commands: dict[str, str]) -> None:
    """Write `folder/.initscope`: the initscope version, the command lines and every file it wrote."""
    text = json.dumps({"initscope": __version__, "commands": dict(sorted(commands.items())),
                       "files": dict(sorted(files.items()))}, indent=1)
    atomic_write(Path(folder) / MARKER, (text + "\n").encode("utf-8"))


def mark_folder(folder: Path, command: str, line: str = "", owners: dict[str, str] | None = None) -> None:
    """Mark a folder written inside an `Output` (one run of `compare-fixes`) as initscope's own:
    every file in it is listed, written by `command` unless `owners` names another."""
    owners = owners or {}
    write_marker(folder, {rel: owners.get(rel, command) for rel in _files(Path(folder))}, {command: line})


def _files(folder: Path, prefix: str = "") -> list[str]:
    """Every file (and symlink) under `folder` as relative posix paths, the top marker excluded."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        rel = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            found += _files(Path(entry.path), rel + "/")
        elif rel != MARKER:
            found.append(rel)
    return found


def _holds_files(folder: Path, budget: list[int]) -> bool:
    """True when `folder` holds anything but (nested) empty folders: a file, a link, a device.

    budget: entries left to look at; a tree larger than that counts as holding files, so
    that `--out ~` is not walked."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:  # unreadable: it may well hold files
        return True
    budget[0] -= len(entries)
    if budget[0] < 0:
        return True
    return any(not entry.is_dir(follow_symlinks=False) or _holds_files(Path(entry.path), budget) for entry in entries)


def _foreign(folder: Path, listed: set[str], empty: list[str] | None = None) -> list[str]:
    """Entries of `folder` its marker does not list (folders as 'name/'); cleans stale temporaries.

    Only folders that hold listed files are entered, so a large foreign tree
    (`--out ~`) costs one directory listing, not a walk. A folder holding no
    file at all (empty, or only empty folders) holds nothing of anyone's: it is
    not foreign, but it is named in `empty`, so that it is kept.
    """
    prefixes = {"/".join(rel.split("/")[:i]) for rel in listed for i in range(1, rel.count("/") + 1)}
    foreign: list[str] = []
    empty = [] if empty is None else empty

    def visit(here: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(here), key=lambda e: e.name):
            rel = prefix + entry.name
            if _TEMP.match(entry.name):
                if _is_stale(entry.name):
                    _remove(Path(entry.path))
                continue  # a live temporary: another initscope run's, not the user's
            if rel == MARKER:
                continue
            if entry.is_dir(follow_symlinks=False):
                if rel in prefixes:
                    visit(Path(entry.path), rel + "/")
                elif _holds_files(Path(entry.path), [_EMPTY_WALK]):
                    foreign.append(rel + "/")
                else:
                    empty.append(rel + "/")
            elif rel not in listed:
                foreign.append(rel)

    visit(folder, "")
    return foreign


def _resolve(out: str | os.PathLike | None) -> tuple[Path, Path]:
    """(the path as given, its real location) after the checks that need no writing."""
    if out is None or str(out).strip() == "":
        raise _out_error("a folder path", "" if out is None else out, "an empty path would mean the current folder")
    given = Path(out)
    try:
        st = os.stat(given)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise _out_error("a folder path", out, "a part of it is a file, not a folder") from None
    except OSError as exc:  # a symlink loop, a name too long, no permission to look
        raise _out_error("a folder path initscope can use", out, exc.strerror or str(exc)) from None
    if st is not None and not os.path.isdir(given):
        raise _out_error("a folder", out, "it is a file")
    return given, Path(os.path.realpath(given))


def _existing_ancestor(path: Path) -> Path:
    here = path
    while not os.path.lexists(here):
        here = here.parent
    if not here.is_dir():
        raise _out_error("a folder path", path, f"{str(here)!r} is a file, not a folder")
    return here


class Output:
    """An output folder, written whole or not at all, never losing a file initscope did not write.

        with Output("runs/a", command="run", line="initscope run ...") as folder:
            (folder / "metrics.csv").write_text(...)   # a fresh temporary folder

    Constructing it checks `out` and creates the temporary folder, so a bad
    `out` fails before any computing (`OutputError`, naming `out`). Leaving
    the block normally puts the files in place; an exception (Ctrl-C included)
    removes the temporary folder and anything it created.

    command: the writing command (`run`, `inspect`, ...): the marker records
    which command wrote each file, and a new output replaces only files that
    the same command wrote. replace=False only adds files (`initscope report`
    redrawing a run's page); it refuses only when a file it writes exists and
    is not initscope's, and `writes` names those checked before computing.
    overwrite: write initscope's files into a folder that holds other files
    too (those are never touched, unless they bear one of initscope's names).
    """

    def __init__(self, out: str | os.PathLike | None, *, command: str, line: str = "", overwrite: bool = False,
                 replace: bool = True, writes: tuple[str, ...] = ()):
        self.given, self.target = _resolve(out)
        self.command, self.line, self.overwrite, self.replace = command, line, overwrite, replace
        self.writes = writes
        self._created: list[Path] = []
        mode = self._plan()
        where = self.target if mode == "merge" else self.target.parent
        self._prepare(where)
        try:
            self.staging = where / temp_name()
            os.mkdir(self.staging)  # not mkdtemp: its 0700 would end up as the folder's mode
        except OSError as exc:
            self._undo_parents()
            raise _out_error("a folder initscope can write", out, exc.strerror or str(exc)) from None
        self._inside = mode == "merge"

    @classmethod
    def check(cls, out: str | os.PathLike | None, *, command: str, overwrite: bool = False, replace: bool = True,
              writes: tuple[str, ...] = ()) -> None:
        """`Output`'s checks of `out`, leaving nothing behind: for a command that writes only at the end
        of a long computation (a sweep's report), so that a refusal comes before the computation. The
        temporary folder is made and removed again: only that proves the place can be written."""
        output = cls(out, command=command, overwrite=overwrite, replace=replace, writes=writes)
        with signals_held():
            output._abort()

    # --- planning ------------------------------------------------------------------------------

    def _plan(self) -> str:
        """'create', 'swap' or 'merge'; refuses a folder with files initscope did not write."""
        if not os.path.lexists(self.target):
            return "create"
        if not self.target.is_dir():
            raise _out_error("a folder", self.given, "it is a file")
        marker = read_marker(self.target) or {"files": {}, "commands": {}}
        empty: list[str] = []
        if self.replace:
            try:
                foreign = _foreign(self.target, set(marker["files"]), empty)
            except OSError as exc:
                raise _out_error("a folder initscope can read", self.given, exc.strerror or str(exc)) from None
        else:  # adding files: only the names it writes matter
            foreign = self._clashes(self.writes, marker)
        foreign += self._foreign_marker()
        if foreign and not self.overwrite:
            raise self._refusal(foreign)
        owners = set(marker["files"].values())
        try:  # swapping the current folder (or one above it) would leave the shell in a deleted one
            here = Path.cwd().resolve()
            around_cwd = self.target in (here, *here.parents)
        except OSError:  # the current folder is gone already
            around_cwd = False
        # Empty folders of yours are kept where they are: a swap would take them away with the old output.
        if (self.replace and not foreign and not empty and owners == {self.command}
                and not os.path.ismount(self.target) and not around_cwd):
            return "swap"
        return "merge"

    def _foreign_marker(self) -> list[str]:
        """['.initscope'] when the target holds a `.initscope` that is not initscope's marker (a file of
        yours, which only --overwrite replaces); a folder of that name is refused whatever the options."""
        path = self.target / MARKER
        if not os.path.lexists(path) or read_marker(self.target) is not None:
            return []
        if os.path.isdir(path):
            raise _out_error("a folder where initscope's marker name is free", self.given,
                             f"{MARKER!r} is a folder there, which initscope never writes over")
        return [MARKER]

    def _check_places(self, new: list[str]) -> None:
        """Refuse, before the first file moves, a new file whose folder in the target is a link leading
        out of it or lies on another filesystem: every rename stays inside `out`, and all of them can
        happen (a merge never stops half-way on EXDEV)."""
        device = os.stat(self.staging).st_dev
        for parent in sorted({str(Path(rel).parent) for rel in new}):
            here = self.target / parent if parent != "." else self.target
            if not os.path.lexists(here):
                continue
            real = Path(os.path.realpath(here))
            if real != self.target and self.target not in real.parents:
                raise _out_error("a folder whose own folders stay inside it", self.given,
                                 f"{parent!r} there is a link leading out of it, to {str(real)!r}")
            if os.path.isdir(real) and os.stat(real).st_dev != device:
                raise _out_error("a folder on one filesystem", self.given,
                                 f"{parent!r} there lies on another filesystem")

    def _clashes(self, names, marker: dict) -> list[str]:
        """Those of `names` that exist in the target but were not written by initscope."""
        return [rel for rel in names if os.path.lexists(self.target / rel) and rel not in marker["files"]]

    def _refusal(self, foreign: list[str]) -> OutputError:
        more = f" and {len(foreign) - _EXAMPLES} more" if len(foreign) > _EXAMPLES else ""
        if not self.replace:
            return _out_error("a folder where the files initscope writes are initscope's", self.given,
                              f"it holds {', '.join(foreign[:_EXAMPLES])}{more}, which initscope did not write; "
                              "pass --overwrite to replace it")
        return _out_error(
            "a new folder or one initscope wrote", self.given,
            f"it holds files initscope did not write: {', '.join(foreign[:_EXAMPLES])}{more}; "
            "pass --overwrite to write initscope's files beside them, leaving those untouched")

    def _prepare(self, where: Path) -> None:
        """Create the missing parents of `where` (remembered, to undo) and clean left-overs beside it."""
        base = _existing_ancestor(where)
        missing = [p for p in [where, *where.parents] if p not in (base, *base.parents)]
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                continue
            except OSError as exc:
                self._undo_parents()
                raise _out_error("a folder initscope can create", self.given, exc.strerror or str(exc)) from None
            self._created.append(folder)
        remove_stale(where)
        remove_legacy(self.target.parent, self.target.name)

    def _undo_parents(self) -> None:
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        self._created = []

    # --- the block -----------------------------------------------------------------------------

    def __enter__(self) -> Path:
        return self.staging

    def __exit__(self, kind, value, tb) -> None:
        with signals_held():
            if kind is None:
                try:
                    self._commit()
                    return
                except BaseException:
                    self._abort()
                    raise
            self._abort()

    def _abort(self) -> None:
        _remove(self.staging)
        self._undo_parents()

    def _commit(self) -> None:
        mode = self._plan()
        if mode == "swap" and self._inside:
            mode = "merge"  # the temporary folder sits inside the target: its files move one by one
        new = _files(self.staging)
        commands = {self.command: self.line}
        if mode in ("create", "swap"):
            write_marker(self.staging, {rel: self.command for rel in new}, commands)
            if mode == "create":
                os.rename(self.staging, self.target)
            else:
                _exchange(self.staging, self.target)
                _remove(self.staging)  # now the earlier output
            return
        self._merge(new, commands)
        _remove(self.staging)

    def _merge(self, new: list[str], commands: dict[str, str]) -> None:
        """Rename each new file into the target; remove the same command's earlier files the marker lists."""
        marker = read_marker(self.target) or {"files": {}, "commands": {}}
        clashes = self._clashes(new, marker)
        if clashes and not self.overwrite:
            raise self._refusal(clashes)
        for rel in new:
            dest = self.target / rel
            if dest.is_dir() and not dest.is_symlink():
                raise _out_error("a folder where initscope's file names are free", self.given,
                                 f"{rel!r} is a folder there")
        self._check_places(new)
        old = marker["files"]
        stale = [rel for rel, owner in old.items() if owner == self.command and rel not in new] if self.replace else []
        files = {**old, **{rel: self.command for rel in new}}
        # First the marker names everything this merge may leave behind, so that a kill part-way
        # leaves no file of ours unlisted.
        write_marker(self.target, files, {**marker["commands"], **commands})
        for rel in new:
            dest = self.target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / rel, dest)
        for rel in stale:
            if self._remove_listed(rel):
                files.pop(rel)
        write_marker(self.target, files, {**marker["commands"], **commands})

    def _remove_listed(self, rel: str) -> bool:
        """Remove one file the marker lists, only if it is a file inside the target; prune emptied folders."""
        path = self.target / rel
        real_parent = Path(os.path.realpath(path.parent))
        if real_parent != self.target and self.target not in real_parent.parents:
            return False  # a symlinked folder leading elsewhere: not ours to touch
        if path.is_dir() and not path.is_symlink():
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        for parent in path.relative_to(self.target).parents:
            if str(parent) == ".":
                break
            with contextlib.suppress(OSError):  # not empty: something else lives there
                os.rmdir(self.target / parent)
        return True


def _exchange(new: Path, old: Path) -> None:
    """Swap two folders: one atomic `renameat2(RENAME_EXCHANGE)` on Linux, else two renames."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(old), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(old))
    aside = old.with_name(temp_name("old"))
    os.rename(old, aside)
    try:
        os.rename(new, old)
    except BaseException:
        os.rename(aside, old)
        raise
    os.rename(aside, new)
