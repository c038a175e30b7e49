"""Output folders never lose a user's file (issue 14, item 1), through every command that writes.

Each test first builds the situation the adversarial pass found (a user's
figures/my_plot.png, init_log.csv and report.html in --out; `--out .`; a
read-only mount; a symlink loop; a folder on another filesystem; a stale
temporary folder of a killed run) and then checks what initscope does to it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from initscope.cli.app import OUTPUT_FILES, main
from initscope.report.writer import MARKER, Output, OutputError, read_marker, temp_name

SMALL = ["--trials", "1", "--depth", "2", "--width", "8", "--samples", "10", "--no-report", "--quiet"]
USER_FILES = {"figures/my_plot.png": b"my figure", "init_log.csv": b"my,log\n1,2\n", "report.html": b"<p>mine</p>"}
ENTRY = "from initscope.cli.app import entry; entry()"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def with_user_files(folder: Path) -> Path:
    for rel, data in USER_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def user_files_intact(folder: Path) -> bool:
    return all((folder / rel).read_bytes() == data for rel, data in USER_FILES.items())


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".initscope-"))


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("initscope: error: The 'out' parameter must be "), lines[0]
    return lines[0]


@pytest.fixture
def no_computing(monkeypatch):
    """Make every command's computation fail the test: a refusal must come before it."""
    def computed(*args, **kwargs):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(importlib.import_module("initscope.study.runner"), "run", computed)
    monkeypatch.setattr(importlib.import_module("initscope.cli.compare"), "compare_fixes", computed)
    monkeypatch.setattr(importlib.import_module("initscope.cli.certify"), "_certificate", computed)


# --- the user's files --------------------------------------------------------------------------


def test_users_files_in_out_are_refused_and_survive(capsys, tmp_path, no_computing):
    out = with_user_files(tmp_path / "o")
    code, stdout, err = cli(capsys, "run", *SMALL, "--out", str(out))
    assert code == 2 and stdout == ""
    line = one_error_line(err)
    for name in ("figures/", "init_log.csv", "report.html", "--overwrite", repr(str(out))):
        assert name in line, (name, line)
    assert user_files_intact(out)
    assert sorted(p.name for p in out.iterdir()) == ["figures", "init_log.csv", "report.html"]
    assert temporaries(tmp_path) == []


def test_overwrite_writes_only_initscopes_names_and_keeps_the_users(capsys, tmp_path):
    out = with_user_files(tmp_path / "o")
    code, _, err = cli(capsys, "run", *SMALL, "--out", str(out), "--overwrite")
    assert code == 0, err
    assert user_files_intact(out)
    assert all((out / name).is_file() for name in OUTPUT_FILES)
    assert set(read_marker(out)["files"]) == set(OUTPUT_FILES)  # the user's files are not claimed
    # A second run with --overwrite: still the user's files untouched, nothing left behind.
    assert cli(capsys, "run", *SMALL, "--out", str(out), "--overwrite", "--seed", "3")[0] == 0
    assert user_files_intact(out)
    assert temporaries(out) == [] and temporaries(tmp_path) == []


def test_overwrite_removes_an_earlier_runs_optional_output_only_when_the_marker_lists_it(capsys, tmp_path):
    out = tmp_path / "o"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "my_plot.png").write_bytes(b"mine")
    assert cli(capsys, "run", *SMALL, "--init", "lsuv", "--out", str(out), "--overwrite")[0] == 0
    assert (out / "init_log.csv").is_file() and read_marker(out)["files"]["init_log.csv"] == "run"
    # The next run draws no LSUV: its init_log.csv would be stale beside the new CSVs, and it is initscope's.
    assert cli(capsys, "run", *SMALL, "--init", "normal", "--out", str(out), "--overwrite")[0] == 0
    assert not (out / "init_log.csv").exists()
    assert (out / "figures" / "my_plot.png").read_bytes() == b"mine"
    assert "init_log.csv" not in read_marker(out)["files"]


def test_initscopes_own_folder_is_swapped_whole(capsys, tmp_path):
    out = tmp_path / "o"
    assert cli(capsys, "run", *SMALL, "--init", "lsuv", "--out", str(out))[0] == 0
    first = out.stat().st_ino
    marker = read_marker(out)
    assert set(marker["files"]) == {*OUTPUT_FILES, "init_log.csv"}
    assert marker["commands"]["run"].startswith("initscope run ") and "--init lsuv" in marker["commands"]["run"]
    assert json.loads((out / MARKER).read_text())["initscope"]
    code, _, err = cli(capsys, "run", *SMALL, "--init", "normal", "--out", str(out))
    assert code == 0, err
    assert out.stat().st_ino != first  # a new folder took the old one's place in one rename
    assert sorted(p.name for p in out.iterdir()) == sorted((*OUTPUT_FILES, MARKER))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.parametrize("given", ["", ".", ".."])
def test_current_and_parent_folders_are_not_harmed(capsys, tmp_path, monkeypatch, no_computing, given):
    work = tmp_path / "parent" / "work"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    (tmp_path / "parent" / "thesis.tex").write_text("mine too")
    monkeypatch.chdir(work)
    code, _, err = cli(capsys, "run", *SMALL, "--out", given)
    assert code == 2
    line = one_error_line(err)
    assert f"Got {given!r} instead" in line
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in (tmp_path / "parent").iterdir()) == ["thesis.tex", "work"]


def test_overwrite_into_the_current_folder_writes_in_place(capsys, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    inode = work.stat().st_ino
    monkeypatch.chdir(work)
    assert cli(capsys, "run", *SMALL, "--out", ".", "--overwrite")[0] == 0
    assert work.stat().st_ino == inode and (work / "notes.txt").read_text() == "mine"
    assert (work / "metrics.csv").is_file() and temporaries(work) == []


# --- temporary folders of killed runs ---------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_runs_are_removed_live_ones_kept(capsys, tmp_path):
    out = tmp_path / "o"
    dead = tmp_path / f".initscope-tmp-{dead_pid()}-0123456789ab"
    (dead / "figures").mkdir(parents=True)
    (dead / "metrics.csv").write_text("half")
    live = tmp_path / f".initscope-tmp-{os.getppid()}-0123456789ab"  # the parent process is alive
    live.mkdir()
    assert cli(capsys, "run", *SMALL, "--out", str(out))[0] == 0
    assert not dead.exists() and live.is_dir()
    # A killed --overwrite run leaves its temporary folder inside the target: the next run removes it.
    inside = out / f".initscope-tmp-{dead_pid()}-ba9876543210"
    inside.mkdir()
    assert cli(capsys, "run", *SMALL, "--out", str(out))[0] == 0
    assert not inside.exists()


def legacy_temporary(parent: Path, name: str, files: dict[str, bytes], *, age: float = 3600.0,
                     mode: int = 0o700, links: tuple[str, ...] = ()) -> Path:
    """What an initscope before the marker left when killed while writing `parent/name`:
    `tempfile.mkdtemp(prefix=".NAME.tmp-")` holding some of the output's files."""
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    for rel in links:
        os.symlink("/etc/hostname", folder / rel)
    old = time.time() - age
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)) + [folder]:
        os.utime(path, (old, old), follow_symlinks=False)
    os.chmod(folder, mode)
    os.utime(folder, (old, old))
    return folder


RUN_LEFTOVER = {"metrics.csv": b"half", "config.toml": b"seed = 0", "figures/rms.png": b"png"}


@pytest.mark.parametrize("files", [RUN_LEFTOVER, {}, {"ranking.csv": b"x", "normal-depth10/metrics.csv": b"x",
                                                     "normal-depth10/figures/a.gif": b"x"}],
                         ids=["run", "empty", "compare-fixes"])
def test_temporary_folders_of_versions_before_the_marker_are_removed(capsys, tmp_path, files):
    """Issue 14: SIGKILL while writing left a hidden .NAME.tmp-XXXXXXXX/ that later runs never cleaned."""
    left = legacy_temporary(tmp_path, "o", files)
    assert cli(capsys, "run", *SMALL, "--out", str(tmp_path / "o"))[0] == 0
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.parametrize("kind", ["a file of yours", "a link", "another mode", "touched just now", "another output",
                                  "not mkdtemp's name", "a figure initscope never writes"])
def test_folders_that_only_look_like_old_temporaries_are_kept(capsys, tmp_path, kind):
    """Only a folder whose name, mode, age and every file say initscope's is removed: never yours."""
    files, kw, name = dict(RUN_LEFTOVER), {}, "o"
    if kind == "a file of yours":
        files["notes.txt"] = b"mine"
    elif kind == "a link":
        kw["links"] = ("report.html",)
    elif kind == "another mode":
        kw["mode"] = 0o755
    elif kind == "touched just now":
        kw["age"] = 0.0
    elif kind == "another output":
        name = "other"
    elif kind == "a figure initscope never writes":
        files["figures/mine.svg"] = b"<svg/>"
    folder = legacy_temporary(tmp_path, name, files, **kw)
    if kind == "not mkdtemp's name":
        folder = folder.rename(tmp_path / ".o.tmp-mine")
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert cli(capsys, "run", *SMALL, "--out", str(tmp_path / "o"))[0] == 0
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before


def test_empty_folders_in_out_hold_nothing_of_yours_and_are_kept(capsys, tmp_path):
    """An empty folder (or a tree of them) is not a file initscope did not write: the target is
    used, and the folder stays, through the first run and the ones that replace it."""
    out = tmp_path / "o"
    for rel in ("sub", "a/b/c", "figures/empty"):
        (out / rel).mkdir(parents=True)
    code, _, err = cli(capsys, "run", *SMALL, "--out", str(out))
    assert code == 0, err
    assert (out / "metrics.csv").is_file() and (out / "figures").is_dir()
    for _ in range(2):  # again, now that the folder is initscope's: still not swapped away
        assert cli(capsys, "run", *SMALL, "--out", str(out))[0] == 0
        assert all((out / rel).is_dir() for rel in ("sub", "a/b/c", "figures/empty"))
    assert read_marker(out)["files"]["metrics.csv"] == "run"


def test_a_folder_holding_only_a_hidden_file_is_still_yours(capsys, tmp_path, no_computing):
    out = tmp_path / "o"
    (out / "sub" / "deeper").mkdir(parents=True)
    (out / "sub" / "deeper" / ".keep").write_text("")
    code, _, err = cli(capsys, "run", *SMALL, "--out", str(out))
    assert code == 2 and "sub/" in one_error_line(err)
    assert (out / "sub" / "deeper" / ".keep").exists()


# --- --out that cannot be written: exit 2 naming out, before any computing ---------------------


def bad_out(tmp_path: Path, kind: str) -> str:
    if kind == "file":
        (tmp_path / "f").write_text("a file")
        return str(tmp_path / "f")
    if kind == "file-as-parent":
        (tmp_path / "f").write_text("a file")
        return str(tmp_path / "f" / "out")
    if kind == "symlink-loop":
        os.symlink("loop", tmp_path / "loop")
        return str(tmp_path / "loop")
    return "/proc/initscope-out"  # proc: a folder nobody can create files in


OUT_KINDS = ["file", "file-as-parent", "symlink-loop", "proc"]
COMMANDS = {
    "run": ["run", *SMALL],
    "certify": ["certify", "--depth", "2", "--width", "8", "--samples", "10", "--trials", "1", "--quiet"],
    "compare-fixes": ["compare-fixes", "--fixes", "normal", "--depths", "2", "--trials", "1", "--no-report"],
}


@pytest.mark.parametrize("kind", OUT_KINDS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_that_cannot_be_written_is_bad_input_before_computing(capsys, tmp_path, no_computing, kind, command):
    out = bad_out(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = cli(capsys, *COMMANDS[command], "--out", out)
    assert code == 2, err
    assert repr(out) in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_out_on_a_read_only_filesystem_is_bad_input(tmp_path):
    """A read-only mount (root ignores permission bits, so a bind mount in a private mount namespace);
    without root, a folder without write permission is the same refusal."""
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "out"
    argv = [sys.executable, "-c", ENTRY, "run", *SMALL, "--out", str(out)]
    if os.geteuid() == 0:
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), *argv],
                              capture_output=True, text=True, timeout=120)
        expected = "Read-only file system"
    else:
        folder.chmod(0o555)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        folder.chmod(0o755)
        expected = "Permission denied"
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert repr(str(out)) in line and expected in line
    assert list(folder.iterdir()) == []


def test_compare_fixes_with_an_existing_file_as_out_fails_before_computing(capsys, tmp_path, no_computing):
    out = tmp_path / "ranking"
    out.write_text("keep me")
    code, _, err = cli(capsys, *COMMANDS["compare-fixes"], "--out", str(out))
    assert code == 2 and "it is a file" in one_error_line(err)
    assert out.read_text() == "keep me"


# --- another filesystem; the user's umask --------------------------------------------------------


def other_filesystem(tmp_path: Path) -> Path:
    """A fresh folder on a filesystem other than tmp_path's: /dev/shm (tmpfs) where /tmp is a disk,
    else the repository's disk where /tmp is a tmpfs. Every Linux machine has one of the two."""
    here = tmp_path.stat().st_dev
    for base in ("/dev/shm", "/var/tmp", str(Path.home()), str(Path(__file__).resolve().parent)):
        if os.path.isdir(base) and os.access(base, os.W_OK) and os.stat(base).st_dev != here:
            return Path(tempfile.mkdtemp(prefix="initscope-test-", dir=base))
    raise AssertionError("no second filesystem found beside tmp_path")


def test_out_linked_to_another_filesystem(capsys, tmp_path):
    elsewhere = other_filesystem(tmp_path)
    try:
        link = tmp_path / "o"
        link.symlink_to(elsewhere / "o", target_is_directory=True)
        assert os.stat(elsewhere).st_dev != tmp_path.stat().st_dev
        # A link to a folder still to be made: created by one rename, then swapped, both over there.
        for _ in range(2):
            code, _, err = cli(capsys, "run", *SMALL, "--out", str(link))
            assert code == 0, err
        assert link.is_symlink() and (elsewhere / "o" / "metrics.csv").is_file()
        with_user_files(elsewhere / "o")
        code, _, err = cli(capsys, "run", *SMALL, "--out", str(link), "--overwrite")
        assert code == 0, err
        assert user_files_intact(elsewhere / "o")
        assert temporaries(elsewhere) == [] and temporaries(tmp_path) == []
    finally:
        shutil.rmtree(elsewhere)


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_users_umask(tmp_path, umask):
    out, fixes = tmp_path / "o", tmp_path / "fixes"
    for argv in (["run", *SMALL, "--out", str(out)], [*COMMANDS["compare-fixes"], "--out", str(fixes)]):
        proc = subprocess.run([sys.executable, "-c", f"import os; os.umask({umask}); {ENTRY}", *argv],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    folder_mode, file_mode = 0o777 & ~umask, 0o666 & ~umask
    for path in (out, fixes, fixes / "normal-depth2"):
        assert stat.S_IMODE(path.stat().st_mode) == folder_mode, path
    for path in (out / "metrics.csv", out / MARKER, fixes / "index.html", fixes / "ranking.csv",
                 fixes / "normal-depth2" / "certificate.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path


# --- every command through the same writer -------------------------------------------------------


def test_certify_adds_its_certificate_to_a_run_folder_and_a_later_run_keeps_it(capsys, tmp_path):
    out = tmp_path / "o"
    assert cli(capsys, "run", *SMALL, "--out", str(out))[0] == 0
    code, _, err = cli(capsys, *COMMANDS["certify"], "--out", str(out))
    assert code in (0, 3), err
    files = read_marker(out)["files"]
    assert files["certificate.csv"] == "certify" and files["metrics.csv"] == "run"
    assert cli(capsys, "run", *SMALL, "--out", str(out), "--seed", "5")[0] == 0
    assert (out / "certificate.csv").is_file()  # another command's file: the new run leaves it


def test_compare_fixes_refuses_users_files_and_marks_each_fix_folder(capsys, tmp_path):
    out = with_user_files(tmp_path / "fixes")
    code, _, err = cli(capsys, *COMMANDS["compare-fixes"], "--out", str(out))
    assert code == 2 and "init_log.csv" in one_error_line(err)
    code, _, err = cli(capsys, *COMMANDS["compare-fixes"], "--out", str(out), "--overwrite")
    assert code == 0, err
    assert user_files_intact(out)
    sub = read_marker(out / "normal-depth2")["files"]
    assert sub["metrics.csv"] == "run" and sub["certificate.csv"] == "certify"
    assert read_marker(out)["files"]["index.html"] == "compare-fixes"


@pytest.mark.slow
def test_report_rebuild_keeps_the_users_figures_and_refuses_a_page_it_did_not_write(capsys, tmp_path):
    pytest.importorskip("plotly")
    pytest.importorskip("matplotlib")
    out = tmp_path / "o"
    assert cli(capsys, "run", *SMALL, "--out", str(out))[0] == 0
    (out / "figures").mkdir()
    (out / "figures" / "my_plot.png").write_bytes(b"mine")
    code, _, err = cli(capsys, "report", str(out), "--png")
    assert code == 0, err
    assert (out / "figures" / "my_plot.png").read_bytes() == b"mine"
    files = read_marker(out)["files"]
    assert files["report.html"] == "run" and "figures/spectra.png" in files and "figures/my_plot.png" not in files
    # A page initscope did not write (no marker lists it) is not replaced without --overwrite.
    (out / MARKER).unlink()
    code, _, err = cli(capsys, "report", str(out))
    assert code == 2 and "report.html" in one_error_line(err)


SWEEP = 'init = ["normal"]\ndepth = [2, 3]\nwidth = 8\nsamples = 10\ntrials = 1\nmetrics = "rms,effective_rank"\n'


@pytest.mark.slow
def test_sweep_refuses_a_report_html_it_did_not_write_before_sweeping(capsys, tmp_path):
    pytest.importorskip("plotly")
    (tmp_path / "grid.toml").write_text(SWEEP)
    out = with_user_files(tmp_path / "sweep")
    sweep = ["sweep", str(tmp_path / "grid.toml"), "--out", str(out), "--workers", "1", "--quiet"]
    code, _, err = cli(capsys, *sweep)
    assert code == 2 and "report.html" in one_error_line(err)
    assert not (out / "results.sqlite").exists()  # refused before running anything
    code, _, err = cli(capsys, *sweep, "--no-report")
    assert code == 0, err
    store = out / "results.sqlite"
    code, _, err = cli(capsys, "report", str(store))
    assert code == 2 and "report.html" in one_error_line(err)
    assert user_files_intact(out)
    for _ in range(2):  # a page of its own, in any folder: listed by the marker, so replaced the second time
        code, _, err = cli(capsys, "report", str(store), "--out", str(out / "page.html"))
        assert code == 0, err
    assert read_marker(out)["files"] == {"page.html": "sweep"}
    assert cli(capsys, "report", str(store), "--overwrite")[0] == 0
    assert (out / "report.html").read_bytes() != USER_FILES["report.html"]
    assert (out / "figures" / "my_plot.png").read_bytes() == USER_FILES["figures/my_plot.png"]


def test_sweep_and_export_paths_that_cannot_be_written_are_bad_input(capsys, tmp_path):
    (tmp_path / "grid.toml").write_text(SWEEP)
    code, _, err = cli(capsys, "sweep", str(tmp_path / "grid.toml"), "--out", "/proc/initscope-sweep", "--no-report",
                       "--quiet")
    assert code == 2 and "'/proc/initscope-sweep'" in one_error_line(err)
    out = tmp_path / "sweep"
    assert cli(capsys, "sweep", str(tmp_path / "grid.toml"), "--out", str(out), "--no-report", "--quiet",
               "--workers", "1")[0] == 0
    code, _, err = cli(capsys, "results", str(out / "results.sqlite"), "--csv", "/proc/initscope.csv")
    assert code == 2 and err.startswith("initscope: error: The 'csv' parameter must be a folder initscope can")
    assert "'/proc'" in err and err.count("\n") == 1
    assert temporaries(out) == []


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_results_export_replaces_only_a_file_initscope_wrote(capsys, tmp_path, kind):
    """Issue 14: `results --csv PATH` replaced the named file whoever wrote it."""
    if kind == "parquet":
        pytest.importorskip("pyarrow")
    (tmp_path / "grid.toml").write_text(SWEEP)
    store = tmp_path / "sweep" / "results.sqlite"
    assert cli(capsys, "sweep", str(tmp_path / "grid.toml"), "--out", str(store.parent), "--no-report", "--quiet",
               "--workers", "1")[0] == 0
    mine = tmp_path / "data" / f"table.{kind}"
    mine.parent.mkdir()
    mine.write_bytes(b"my data")
    code, _, err = cli(capsys, "results", str(store), f"--{kind}", str(mine))
    assert code == 2 and err.startswith(f"initscope: error: The '{kind}' parameter must be ") and "--overwrite" in err
    assert err.count("\n") == 1 and mine.read_bytes() == b"my data" and temporaries(mine.parent) == []
    assert cli(capsys, "results", str(store), f"--{kind}", str(mine), "--overwrite")[0] == 0
    assert mine.read_bytes() != b"my data"
    assert read_marker(mine.parent)["files"][mine.name] == "results"
    # Now it is initscope's: the next export replaces it without being asked.
    assert cli(capsys, "results", str(store), f"--{kind}", str(mine), "--table", "trials")[0] == 0
    assert sorted(p.name for p in mine.parent.iterdir()) == [MARKER, mine.name]


def test_write_report_replaces_only_a_page_initscope_wrote(tmp_path):
    import initscope
    from initscope.report import write_report

    result = initscope.run(trials=1, depth=2, width=8, samples=10, workers=1)
    page = tmp_path / "report.html"
    page.write_text("<p>my page</p>")
    with pytest.raises(ValueError, match="The 'path' parameter must be .*report.html.*overwrite=True"):
        write_report(result, page)
    assert page.read_text() == "<p>my page</p>" and temporaries(tmp_path) == []
    assert write_report(result, page, overwrite=True) == page
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    write_report(result, page)  # initscope's now: replaced without asking
    assert read_marker(tmp_path)["files"]["report.html"] == "report"


FACTORY = textwrap.dedent(
    """
    from torch import nn

    def make():
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    """
)


@pytest.mark.slow
def test_inspect_refuses_users_files_before_building_the_model(capsys, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    torch_pkg = importlib.import_module("initscope.torch")
    (tmp_path / "models.py").write_text(FACTORY)
    out = with_user_files(tmp_path / "o")
    argv = ["inspect", f"{tmp_path}/models.py:make", "--input-shape", "16,4", "--no-report", "--quiet", "--out",
            str(out)]

    def built(*args, **kwargs):
        raise AssertionError("built the model before checking --out")

    with monkeypatch.context() as patch:
        patch.setattr(torch_pkg, "build_model", built)
        code, _, err = cli(capsys, *argv)
    assert code == 2 and "report.html" in one_error_line(err)
    code, _, err = cli(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert user_files_intact(out) and (out / "layers.csv").is_file()
    assert read_marker(out)["files"]["layers.csv"] == "inspect"


# --- the writer itself ---------------------------------------------------------------------------


def test_a_failure_inside_the_block_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with Output(target, command="run") as folder:
            (folder / "metrics.csv").write_text("half")
            raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []  # not even the parents it created


def test_the_marker_never_lets_initscope_delete_outside_the_folder(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("mine")
    out = tmp_path / "o"
    with Output(out, command="run") as folder:
        (folder / "metrics.csv").write_text("x")
    marker = json.loads((out / MARKER).read_text())
    marker["files"].update({"../precious.txt": "run", "/etc/hostname": "run"})
    (out / MARKER).write_text(json.dumps(marker))
    with Output(out, command="run") as folder:
        (folder / "spectra.csv").write_text("y")
    assert outside.read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "spectra.csv"]


def test_a_file_initscope_must_write_where_a_folder_stands_is_refused(tmp_path):
    out = tmp_path / "o"
    (out / "metrics.csv").mkdir(parents=True)
    with pytest.raises(OutputError, match="'out' parameter"):
        with Output(out, command="run", overwrite=True) as folder:
            (folder / "metrics.csv").write_text("x")
    assert (out / "metrics.csv").is_dir() and temporaries(out) == []


def test_temporary_names_are_recognisably_initscopes():
    name = temp_name(suffix=".gif")
    assert name.startswith(f".initscope-tmp-{os.getpid()}-") and name.endswith(".gif")
