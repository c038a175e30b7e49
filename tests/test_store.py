"""The results store: exact round trip, idempotent writes, failures, atomic transactions."""

import dataclasses
import multiprocessing
import sqlite3

import numpy as np
import pytest

from initscope.study.runner import run
from initscope.study.store import Store, batch_from_result, failed_batch, is_store, store_state
from initscope.study.sweep import config_id, make_sweep

SPEC = {"init": ["normal", "sphere"], "depth": [2, 3], "width": 8, "samples": 20, "trials": 3}


@pytest.fixture(scope="module")
def sweep():
    return make_sweep(SPEC)


@pytest.fixture(scope="module")
def results(sweep):
    return [run(c, workers=1) for c in sweep.configs]


def _batch(result, config=None):
    config = config or result.config
    return batch_from_result(result, config_id(config), seconds=0.5, worker="test")


def _fill(path, sweep, results):
    with Store(path) as store:
        for r in results:
            assert store.write(_batch(r)) == sweep.trials
    return path


def test_round_trip_is_exact(tmp_path, sweep, results):
    with Store(_fill(tmp_path / "s.sqlite", sweep, results)) as store:
        metrics = store.metrics()
        spectra = store.spectra()
        for cid, r in zip(sweep.ids, results):
            got = metrics[metrics["config_id"] == cid].sort_values(["trial", "metric", "layer"])
            want = r.metrics.sort_values(["trial", "metric", "layer"])
            np.testing.assert_array_equal(got["value"].to_numpy(), want["value"].to_numpy())  # NaN == NaN here
            assert (got[["init", "trial", "layer", "metric", "depth", "width"]].to_numpy()
                    == want[["init", "trial", "layer", "metric", "depth", "width"]].to_numpy()).all()
            s_got = spectra[spectra["config_id"] == cid].sort_values(["trial", "layer", "k"])
            s_want = r.spectra.sort_values(["trial", "layer", "k"])
            np.testing.assert_array_equal(s_got["singular_value"].to_numpy(), s_want["singular_value"].to_numpy())
        assert metrics["value"].isna().any()  # NaN (e.g. linear_fraction at layer 0) survives as NULL -> NaN
        assert list(metrics.columns[:5]) == ["init", "trial", "layer", "metric", "value"]
        assert store.integrity_check() == "ok"


def test_writes_are_idempotent(tmp_path, sweep, results):
    with Store(_fill(tmp_path / "s.sqlite", sweep, results)) as store:
        before = len(store.metrics())
        assert store.write(_batch(results[0])) == 0
        assert len(store.metrics()) == before
        assert store.done_trials() == {cid: {0, 1, 2} for cid in sweep.ids}


def test_only_missing_trials_are_added(tmp_path, sweep):
    config = sweep.configs[0]
    with Store(tmp_path / "s.sqlite") as store:
        assert store.write(_batch(run(dataclasses.replace(config, trials=2), workers=1))) == 2
        assert store.write(_batch(run(dataclasses.replace(config, trials=4), workers=1))) == 2
        trials = store.trials()
        assert sorted(trials["trial"]) == [0, 1, 2, 3]
        per_trial = store.metrics().groupby("trial").size()
        assert per_trial.nunique() == 1


def test_failures_are_recorded_then_replaced(tmp_path, sweep, results):
    config, cid = sweep.configs[0], sweep.ids[0]
    with Store(tmp_path / "s.sqlite") as store:
        assert store.write(failed_batch(config, cid, "MemoryError: too big")) == 3
        summary = store.summary()
        assert (summary.trials_ok, summary.trials_failed, summary.configs_complete) == (0, 3, 0)
        assert summary.failures["error"].tolist() == ["MemoryError: too big"]
        assert store.done_trials() == {}
        assert store.write(_batch(results[0])) == 3
        summary = store.summary()
        assert (summary.trials_ok, summary.trials_failed, summary.configs_complete) == (3, 0, 1)
        # A later failure of the same configuration does not touch finished trials.
        assert store.write(failed_batch(config, cid, "boom")) == 0
        assert store.summary().trials_ok == 3


def test_a_failing_write_leaves_nothing(tmp_path, sweep, results):
    batch = _batch(results[0])
    batch.metric_layer = batch.metric_layer.copy()
    batch.metric_layer[5] = batch.metric_layer[4]  # a duplicate key, halfway through the values
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.write(batch)
        assert len(store.trials()) == 0
        assert store.write(_batch(results[0])) == 3


def test_summary_counts_and_axes(tmp_path, sweep, results):
    with Store(_fill(tmp_path / "s.sqlite", sweep, results)) as store:
        s = store.summary()
        assert (s.configs, s.configs_complete, s.trials_ok, s.trials_failed) == (4, 4, 12, 0)
        assert s.axes == {"init": ["normal", "sphere"], "depth": [2, 3]}
        rows = dict(zip(s.metric_rows["metric"], s.metric_rows["rows"]))
        assert rows["rms"] == 2 * 3 * (3 + 4)  # per init: trials × (layers of depth 2 + depth 3)
        assert [c.depth for c in store.configs()] == [c.depth for c in sweep.configs]


def test_store_recognition(tmp_path, sweep, results):
    path = _fill(tmp_path / "s.sqlite", sweep, results)
    assert is_store(path)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (a)").connection.close()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not is_store(other) and not is_store(text) and not is_store(tmp_path / "missing")
    with pytest.raises(ValueError, match="some other file"):
        Store(text)
    with pytest.raises(ValueError, match="existing results store"):
        Store(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


def _open_store_when_released(path, barrier, failures):
    barrier.wait()
    try:
        Store(path).close()
    except Exception as exc:  # reported to the parent: a child's traceback would be lost
        failures.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    # Switching a new file to WAL needs an exclusive lock that SQLite refuses at once (no
    # busy wait) while another connection is mid-switch: before the retry, about one open
    # in three failed here with "database is locked".
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    for round_ in range(25):
        path = tmp_path / f"s{round_}.sqlite"
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=_open_store_when_released, args=(path, barrier, failures)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        assert failures.empty(), failures.get()
        assert store_state(path) == "store"
