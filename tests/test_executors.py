"""Executors: the same numbers in-process, over 2 processes and on a Dask cluster; failures go on record."""

import concurrent.futures as cf
import json
import sys

import numpy as np
import pytest

from initscope.cli.sweep import main
from initscope.study.executors import InlineExecutor, estimated_cost, execute, open_executor, run_sweep
from initscope.study.store import Store
from initscope.study.sweep import make_sweep

SPEC = {"init": ["normal", "sphere"], "depth": [2, 3, 4], "width": [6, 10], "samples": 16, "trials": 3,
        "input_dim": 3}


@pytest.fixture(scope="module")
def sweep():
    return make_sweep(SPEC)


def _sweep_into(path, sweep, executor, slots):
    with Store(path) as store:
        outcome = run_sweep(sweep, store, executor, slots=slots)
        return outcome, store.metrics(), store.spectra()


def _same(a, b):
    assert len(a) == len(b) > 0
    keys = ["config_id", "trial", "metric", "layer"] if "metric" in a else ["config_id", "trial", "layer", "k"]
    a, b = a.sort_values(keys, ignore_index=True), b.sort_values(keys, ignore_index=True)
    value = "value" if "value" in a else "singular_value"
    assert a[keys].equals(b[keys])
    np.testing.assert_array_equal(a[value].to_numpy(), b[value].to_numpy())  # exact, NaN where NaN


@pytest.fixture(scope="module")
def inline_results(sweep, tmp_path_factory):
    with open_executor(1) as (executor, slots):
        assert isinstance(executor, InlineExecutor)
        outcome, metrics, spectra = _sweep_into(tmp_path_factory.mktemp("inline") / "s.sqlite", sweep, executor, slots)
    assert outcome.ok and outcome.written_trials == sweep.total_trials
    return metrics, spectra


@pytest.mark.slow
def test_two_processes_give_identical_results(sweep, inline_results, tmp_path):
    with open_executor(2) as (executor, slots):
        assert slots == 2
        outcome, metrics, spectra = _sweep_into(tmp_path / "s.sqlite", sweep, executor, slots)
    assert outcome.ok and outcome.written_trials == sweep.total_trials
    _same(metrics, inline_results[0])
    _same(spectra, inline_results[1])


@pytest.mark.slow
def test_dask_cluster_gives_identical_results(sweep, inline_results, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with open_executor(scheduler=cluster.scheduler_address) as (executor, slots):
            assert slots == 2
            outcome, metrics, spectra = _sweep_into(tmp_path / "s.sqlite", sweep, executor, slots)
        # The same through the command line's --scheduler.
        sweep_file = tmp_path / "sweep.toml"
        sweep_file.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in SPEC.items()) + "\n")
        status = main(["sweep", str(sweep_file), "--store", str(tmp_path / "cli.sqlite"), "--quiet", "--no-report",
                       "--scheduler", cluster.scheduler_address])
    assert status == 0
    assert outcome.ok and outcome.written_trials == sweep.total_trials
    _same(metrics, inline_results[0])
    _same(spectra, inline_results[1])
    with Store(tmp_path / "cli.sqlite") as store:
        _same(store.metrics(), inline_results[0])


def test_a_failed_configuration_is_recorded_and_the_sweep_goes_on(sweep, inline_results, tmp_path, monkeypatch):
    real_run = sys.modules["initscope.study.runner"].run

    def flaky(config, **kwargs):
        if config.depth == 3 and config.width == 10:
            raise MemoryError("Unable to allocate 8 TiB")
        return real_run(config, **kwargs)

    monkeypatch.setattr(sys.modules["initscope.study.runner"], "run", flaky)
    with open_executor(1) as (executor, slots):
        outcome, _, _ = _sweep_into(tmp_path / "s.sqlite", sweep, executor, slots)
    assert not outcome.ok and len(outcome.failures) == 2  # both initializers of that configuration
    assert all(err == "MemoryError: Unable to allocate 8 TiB" for _, _, err in outcome.failures)
    with Store(tmp_path / "s.sqlite") as store:
        s = store.summary()
        assert (s.trials_ok, s.trials_failed, s.configs, s.configs_complete) == (30, 6, 12, 10)

    monkeypatch.setattr(sys.modules["initscope.study.runner"], "run", real_run)
    with open_executor(1) as (executor, slots):
        outcome, metrics, _ = _sweep_into(tmp_path / "s.sqlite", sweep, executor, slots)
    assert outcome.ok and outcome.written_trials == 6 and outcome.skipped_trials == 30
    assert outcome.ran_configs == 2
    _same(metrics, inline_results[0])


def test_a_lost_worker_is_a_failure_not_a_crash(sweep):
    class Lost(cf.Executor):
        def submit(self, fn, /, *args, **kwargs):
            future = cf.Future()
            future.set_exception(cf.process.BrokenProcessPool("worker died"))
            return future

    class Refusing(cf.Executor):
        def submit(self, fn, /, *args, **kwargs):
            raise RuntimeError("cannot schedule new futures after shutdown")

    tasks = list(zip(sweep.configs[:2], sweep.ids[:2]))
    lost = list(execute(tasks, Lost(), window=2))
    assert [b.status for b in lost] == ["failed", "failed"]
    assert "worker lost: BrokenProcessPool: worker died" == lost[0].error
    refused = list(execute(tasks, Refusing()))
    assert refused[0].error.startswith("not submitted: RuntimeError")


def test_bad_executor_options():
    with pytest.raises(ValueError, match="'workers'"):
        with open_executor(0):
            pass
    with pytest.raises(ValueError, match="'scheduler'"):
        with open_executor(scheduler="tcp://127.0.0.1:1", connect_timeout=0.5):
            pass


def test_larger_configurations_are_estimated_costlier(sweep):
    costs = {(c.depth, c.width): estimated_cost(c) for c in sweep.configs}
    assert costs[(4, 10)] > costs[(2, 10)] > costs[(2, 6)]
