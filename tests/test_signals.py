"""Ctrl-C, SIGTERM and SIGKILL during a multi-threaded run (issue 14): stop at once, leave nothing half-written.

Each test starts `initscope run` as a process with two worker threads on a
config that computes for far longer than the test waits, sends the signal once
the run is computing (its temporary folder exists), and checks the exit status,
that the process did not hang on its worker threads (a generous 10 s bound on
`communicate`; before the fix SIGINT waited for the running chunks, 97 s in one
case), and that neither a temporary folder nor a half-written target is left.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_at_once_and_leaves_nothing(tmp_path, sig, status):
    out = tmp_path / "out"
    proc = start_computing(out)
    code, err = stop(proc, sig)
    assert code == status, err
    assert err.splitlines()[-1] == "initscope: interrupted; nothing was left half-written"
    assert list(tmp_path.iterdir()) == []  # no temporary folder, no target


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

