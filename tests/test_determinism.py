"""Bit-identical outputs whatever the number of workers (issue 14, item 5).

Trials are split into chunks, one per worker thread; every per-trial
reduction must add in the same order whatever the chunk's size, and rows
must not come out in the order chunks finish. The CLI's files are compared
byte for byte, with every metric on, including distance_corr at more than
10,000 pairs' worth of samples (where BLAS and numpy's pairwise summation
both split long reductions) and an initializer that writes init_log.csv.
"""

from __future__ import annotations

import pytest

from initscope.cli.app import main

ARGS = ["--init", "normal,lsuv,sphere", "--trials", "7", "--depth", "3", "--width", "12", "--samples", "120",
        "--readout", "init", "--no-report", "--quiet"]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("w1") / "out"
    assert main(["run", "--out", str(out), "--workers", "1", *ARGS]) == 0
    return _files(out)


@pytest.mark.parametrize("workers", ["3", "7"])
def test_outputs_are_bit_identical_whatever_the_workers(tmp_path, one_worker, workers):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--workers", workers, *ARGS]) == 0
    files = _files(out)
    assert set(files) == set(one_worker)
    assert "init_log.csv" in files and "metrics.csv" in files
    for name, content in one_worker.items():
        assert files[name] == content, f"{name} differs between --workers 1 and --workers {workers}"
