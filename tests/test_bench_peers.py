"""The benchmarks run from a clone: the project keeps its own copies of the peer scripts (benchmarks/peers),
which must be the shared reference copies (../shared/bench) wherever those exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN = ROOT / "benchmarks" / "peers"
SHARED = ROOT.parent / "shared" / "bench"
NAMES = ("peer_numpy.py", "peer_torch.py", "peer_train_torch.py", "seed_baseline.py")


def test_the_project_has_every_peer():
    assert all((OWN / name).is_file() for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_own_copies_are_the_shared_references(name):
    if not (SHARED / name).is_file():
        pytest.skip("no shared reference beside this clone")
    assert (OWN / name).read_bytes() == (SHARED / name).read_bytes(), f"benchmarks/peers/{name} differs from {SHARED}"


def test_the_own_peer_runs(tmp_path):
    """peer_numpy.py from benchmarks/peers runs on its own and answers its JSON line."""
    done = subprocess.run([sys.executable, str(OWN / "peer_numpy.py"), "--trials", "2", "--depth", "3"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and "trials_per_s" in done.stdout, done.stderr
