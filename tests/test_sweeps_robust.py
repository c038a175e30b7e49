"""Sweeps, stores and executors on hostile input (issue 14): each test reproduces a reported defect."""

from __future__ import annotations

import os
import time

import pytest

from initscope.cli.app import main
from initscope.study.config import MAX_SEED
from initscope.study.executors import available_cores, open_executor
from initscope.study.store import Store
from initscope.study.sweep import load_sweep

TINY = "depth = 2\nwidth = 6\nsamples = 8\ntrials = 1\n"


def _write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("line", ["lsuv_tol = 0.1", "lsuv_max_iter = 3", "train_steps = 5", "train_lr = 0.001",
                                  "train_batch = 4", "lsuv_tol = [0.1, 0.05]", "train_lr = 1"])
def test_every_numeric_field_is_a_number_in_sweep_files(tmp_path, line):
    sweep = load_sweep(_write(tmp_path, TINY + line + "\n"))
    field, value = (part.strip() for part in line.split("="))
    got = {getattr(c, field) for c in sweep.configs}
    want = {float(v) for v in value.strip("[]").split(",")}
    assert {float(v) for v in got} == want


def test_numeric_fields_still_reject_text_in_sweep_files(tmp_path):
    with pytest.raises(ValueError, match="'lsuv_tol' field .* must be a number"):
        load_sweep(_write(tmp_path, TINY + 'lsuv_tol = "small"\n'))


def test_a_runs_own_config_toml_is_a_valid_sweep_file(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--depth", "2", "--width", "6", "--samples", "8", "--trials", "1",
                 "--no-report", "--quiet"]) == 0
    sweep = load_sweep(out / "config.toml")
    assert len(sweep.configs) == 2 and sweep.trials == 1  # normal and sphere
    store = tmp_path / "s.db"
    assert main(["sweep", str(out / "config.toml"), "--store", str(store), "--workers", "1", "--quiet",
                 "--no-report"]) == 0


def test_seed_past_64_bits_is_refused_before_a_store_exists(capsys, tmp_path):
    store = tmp_path / "s.db"
    sweep_file = _write(tmp_path, TINY + "seed = 99999999999999999999\n")
    assert main(["sweep", str(sweep_file), "--store", str(store), "--workers", "1", "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "'seed'" in err and str(MAX_SEED) in err and "OverflowError" not in err
    assert not store.exists()
    # The same bound for run, and the largest allowed seed is stored and read back exactly.
    assert main(["run", "--seed", str(MAX_SEED + 1), "--out", str(tmp_path / "o")]) == 2
    max_file = _write(tmp_path, TINY + f"seed = {MAX_SEED}\ninit = 'normal'\n", "max.toml")
    sweep = load_sweep(max_file)
    assert main(["sweep", str(max_file), "--store", str(store), "--workers", "1", "--quiet", "--no-report"]) == 0
    with Store(store, create=False) as db:
        assert db.done_trials(sweep.ids) == {sweep.ids[0]: {0}}
        assert set(db.trials()["seed"]) == {MAX_SEED}


@pytest.mark.parametrize("address", ["not an address", "tcp://", "tcp://127.0.0.1:notaport", "tcp://127.0.0.1:1"])
def test_bad_scheduler_is_refused_without_a_hang_or_traceback(capsys, tmp_path, address):
    pytest.importorskip("distributed")
    store = tmp_path / "s.db"
    start = time.monotonic()
    code = main(["sweep", str(_write(tmp_path, TINY)), "--store", str(store), "--scheduler", address, "--quiet",
                 "--no-report"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "'scheduler'" in err, err
    assert not store.exists()
    # No Client was created, so none is left to close itself (for 20 s) when collected.
    import gc

    gc.collect()
    assert "Traceback" not in capsys.readouterr().err
    assert time.monotonic() - start < 15  # the 20 s close never happens (generous: a loaded machine)


def test_damaged_store_is_exit_2_naming_it(capsys, tmp_path):
    store = tmp_path / "s.db"
    sweep_file = _write(tmp_path, "depth = [2, 3, 4, 5]\nwidth = 6\nsamples = 8\ntrials = 2\n")
    assert main(["sweep", str(sweep_file), "--store", str(store), "--workers", "1", "--quiet", "--no-report"]) == 0
    with Store(store) as db:  # fold the WAL into the file, so the damage below hits real pages
        db._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = store.stat().st_size
    with store.open("r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(min(8192, size // 2)))
    capsys.readouterr()
    for argv in (["results", str(store)], ["sweep", str(sweep_file), "--store", str(store), "--workers", "1",
                                            "--quiet", "--no-report"], ["report", str(store)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "'store'" in err and str(store.name) in err and "damaged" in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_workers_are_capped_at_the_cores(capsys, tmp_path):
    cores = available_cores()
    with open_executor(cores + 14) as (_, slots):
        assert slots == cores
    store = tmp_path / "s.db"
    assert main(["sweep", str(_write(tmp_path, TINY)), "--store", str(store), "--workers", str(cores + 14),
                 "--quiet", "--no-report"]) == 0
    assert f"capped at {cores}" in capsys.readouterr().err


def test_sweep_configuration_too_big_for_memory_is_refused_before_the_store(capsys, tmp_path):
    store = tmp_path / "s.db"
    sweep_file = _write(tmp_path, "depth = 2\nwidth = [8, 200000]\nsamples = 8\ntrials = 1\n")
    assert main(["sweep", str(sweep_file), "--store", str(store), "--workers", "1", "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "'width'" in err and "200000" in err and err.count("\n") == 1, err
    assert not store.exists()
