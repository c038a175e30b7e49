"""Ctrl-C, SIGTERM and SIGKILL during a multi-threaded run (issue 14): stop at once, leave nothing half-written.

Each test starts `initscope run` as a process with two worker threads on a
config that computes for far longer than the test waits, sends the signal once
the run is computing (its temporary folder exists), and checks the exit status,
that the process did not hang on its worker threads (a generous 10 s bound on
`communicate`; before the fix SIGINT waited for the running chunks, 97 s in one
case), and that neither a temporary folder nor a half-written target is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from initscope.study.executors import available_cores

ENTRY = "from initscope.cli.app import entry; entry()"
# Minutes of work on two threads: the signal always lands while trials are being computed.
LONG = ["run", "--depth", "400", "--width", "256", "--samples", "256", "--trials", "64", "--workers", "2",
        "--metrics", "rms,effective_rank,jacobian_rank", "--no-report", "--quiet"]
SMALL = ["run", "--trials", "1", "--depth", "2", "--width", "8", "--samples", "10", "--no-report", "--quiet"]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".initscope-"))


def start_computing(out: Path) -> subprocess.Popen:
    """Start a long run into `out` and return once it computes (its temporary folder exists)."""
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *LONG, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # imports on a loaded machine; not a timing assertion
    while not temporaries(out.parent):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run never started computing: {proc.communicate()[1]}")
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the worker threads' first chunks
    return proc


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running 10 s after signal {sig}: it waited for its worker threads")
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_at_once_and_leaves_nothing(tmp_path, sig, status):
    out = tmp_path / "out"
    proc = start_computing(out)
    code, err = stop(proc, sig)
    assert code == status, err
    assert err.splitlines()[-1] == "initscope: interrupted; nothing was left half-written"
    assert list(tmp_path.iterdir()) == []  # no temporary folder, no target


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_an_earlier_run_as_it_was(tmp_path, sig):
    out = tmp_path / "out"
    assert subprocess.run([sys.executable, "-c", ENTRY, *SMALL, "--out", str(out)], timeout=300).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = start_computing(out)
    code, err = stop(proc, sig)
    assert code in (130, 143), err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert temporaries(tmp_path) == []


@pytest.mark.slow
def test_a_run_after_sigkill_removes_the_killed_runs_temporary_folder(tmp_path):
    out = tmp_path / "out"
    proc = start_computing(out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    left = temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".initscope-tmp-{proc.pid}-")  # nothing can clean up after -9
    done = subprocess.run([sys.executable, "-c", ENTRY, *SMALL, "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]



# --- sweeps with worker processes ---------------------------------------------------------------

LONG_SWEEP = """init = ["normal", "sphere", "kaiming-normal", "orthogonal"]
depth = [300, 301, 302, 303]
width = 256
samples = 256
trials = 8
"""


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (read from /proc; zombies count as gone)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)": state, ppid, ...
        if int(fields[1]) == pid and fields[0] not in "ZX":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] not in "ZX"


needs_proc_and_two_cores = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or available_cores() < 2,
    reason="reads the process tree from /proc; two worker processes need two cores (--workers is capped)")


def start_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(LONG_SWEEP)
    out = tmp_path / "o"
    # A session of its own, as a shell gives a job: a signal to its group reaches the workers too.
    # -X faulthandler: a sweep that does not stop is made to print where it is (SIGABRT), see stop_sweep.
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", ENTRY, "sweep", str(sweep_file), "--out",
                             str(out), "--workers", "2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120  # spawning interpreters on a loaded machine; not a timing assertion
    while len(children(proc.pid)) < 3:  # the resource tracker and the two workers
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the sweep never started its workers: {proc.communicate()[1]}")
        time.sleep(0.02)
    return proc, out


def stop_sweep(proc: subprocess.Popen) -> tuple[int, str]:
    """Wait for the signalled sweep; one still running after 30 s (a generous bound on a loaded machine, not
    a timing assertion) fails the test with its threads' tracebacks."""
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        with contextlib.suppress(ProcessLookupError):  # its workers, if any are left
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the sweep was still running 30 s after the signal:\n{err}")
    return proc.returncode, err


def assert_workers_gone(workers: set[int]) -> None:
    deadline = time.monotonic() + 10  # a terminated worker needs a moment to be reaped by init
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "worker processes outlived the sweep"


@needs_proc_and_two_cores
@pytest.mark.parametrize(("sig", "status", "group", "wait"), [
    (signal.SIGINT, 130, False, 3.0), (signal.SIGTERM, 143, False, 3.0),
    # Ctrl-C in a terminal signals the whole group, here while the workers are still importing.
    (signal.SIGINT, 130, True, 0.0), (signal.SIGTERM, 143, True, 0.0), (signal.SIGINT, 130, True, 3.0),
], ids=["SIGINT", "SIGTERM", "group-SIGINT-starting", "group-SIGTERM-starting", "group-SIGINT"])
@pytest.mark.slow
def test_sweep_stops_its_worker_processes(tmp_path, sig, status, group, wait):
    """`initscope sweep --workers 2` on a signal: exit 130/143 with the one interrupted line (no worker's
    traceback), no worker process left, no temporary folder."""
    proc, out = start_sweep(tmp_path)
    time.sleep(wait)
    workers = children(proc.pid)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    code, err = stop_sweep(proc)
    assert_workers_gone(workers)
    assert code == status, err
    assert "Traceback" not in err and "Error" not in err and "leaked" not in err, err
    assert err.splitlines()[-1] == "initscope: interrupted; nothing was left half-written", err
    assert [p.name for p in tmp_path.rglob(".initscope-*")] == []


@pytest.mark.slow
@needs_proc_and_two_cores
def test_sweep_workers_exit_when_the_sweep_is_killed(tmp_path):
    """Nothing can clean up after `kill -9`; the workers notice their parent is gone and exit."""
    proc, _ = start_sweep(tmp_path)
    time.sleep(3.0)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert_workers_gone(workers)
