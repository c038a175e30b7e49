"""`initscope sweep`, `initscope results` and the sweep report, through main([...]) and as subprocesses."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from initscope.cli.sweep import main, study_app
from initscope.core.metrics import DEFAULT_METRICS
from initscope.study.store import Store

SMALL = """
init = ["normal", "sphere"]
depth = [2, 3]
width = [6, 10]
samples = 16
trials = 2
"""
# 32 configurations of ~50 ms each: long enough to be killed half-way.
KILLABLE = """
init = ["normal", "sphere"]
depth = [4, 6, 8, 10]
width = [24, 32]
seed = [0, 1]
samples = 64
trials = 4
"""
N_METRICS = len(DEFAULT_METRICS)  # what a sweep measures when its configs name no metrics


def _write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _sweep_process(sweep_file, store, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "initscope.cli.sweep", "sweep", str(sweep_file), "--store", str(store),
         "--no-report", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _ok_trials(store) -> int:
    if not Path(store).exists():
        return 0
    try:
        con = sqlite3.connect(store, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM trials WHERE status = 'ok'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def _assert_complete(store, n_configs, trials):
    """Exactly the full set: every trial once, each with all its rows, no orphans."""
    con = sqlite3.connect(store)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM trials WHERE status = 'ok'").fetchone()[0] == n_configs * trials
        assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == n_configs * trials
        assert con.execute("SELECT COUNT(DISTINCT config_id) FROM trials").fetchone()[0] == n_configs
        assert con.execute("SELECT COUNT(*) FROM (SELECT config_id, trial FROM trials GROUP BY config_id, trial "
                           "HAVING COUNT(*) > 1)").fetchone()[0] == 0
        # No half rows: every trial has one value per metric and layer, and singular values.
        bad = con.execute(
            "SELECT COUNT(*) FROM trials t WHERE (SELECT COUNT(*) FROM metric_values v WHERE v.trial_id = t.trial_id)"
            f" != {N_METRICS} * (t.depth + 1) OR NOT EXISTS (SELECT 1 FROM singular_values s "
            "WHERE s.trial_id = t.trial_id)").fetchone()[0]
        assert bad == 0
        orphans = con.execute("SELECT COUNT(*) FROM metric_values WHERE trial_id NOT IN (SELECT trial_id FROM trials)"
                              ).fetchone()[0]
        assert orphans == 0
    finally:
        con.close()


def test_sweep_then_resume_skips_everything(tmp_path, capsys):
    sweep_file = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--workers", "1", "--quiet", "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "8 configurations x 2 trials = 16 trials" in text and "16 trials written" in text
    assert main(["sweep", str(sweep_file), "--out", str(out), "--workers", "1", "--quiet", "--no-report"]) == 0
    assert "already in the store: 16 trials" in capsys.readouterr().out
    _assert_complete(out / "results.sqlite", 8, 2)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    sweep_file = _write(tmp_path, KILLABLE)
    store = tmp_path / "s.sqlite"
    total = 32 * 4
    proc = _sweep_process(sweep_file, store, "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while _ok_trials(store) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            import psutil  # comes with dask.distributed
        except ImportError:
            psutil = None
        workers = psutil.Process(proc.pid).children(recursive=True) if psutil else []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        done = _ok_trials(store)
        assert 0 < done < total, f"the sweep was not killed half-way ({done} of {total})"
        if psutil:  # pool workers notice their parent is gone and exit by themselves
            _, alive = psutil.wait_procs(workers, timeout=10)
            assert not alive
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    rerun = _sweep_process(sweep_file, store, "--workers", "1")
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert f"already in the store: {done} trials" in stdout
    _assert_complete(store, 32, 4)


@pytest.mark.slow
def test_concurrent_sweeps_into_one_store(tmp_path):
    a = _write(tmp_path, SMALL, "a.toml")
    b = _write(tmp_path, SMALL.replace("depth = [2, 3]", "depth = [3, 4]"), "b.toml")
    store = tmp_path / "shared.sqlite"
    procs = [_sweep_process(a, store, "--workers", "1"), _sweep_process(b, store, "--workers", "1")]
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    _assert_complete(store, 12, 2)  # depth 2, 3, 4 × width 2 × init 2; depth 3 shared


def test_failures_exit_1_and_are_listed(tmp_path, capsys, monkeypatch):
    real_run = sys.modules["initscope.study.runner"].run

    def flaky(config, **kwargs):
        if config.depth == 3 and config.init == ("sphere",) and config.width == 6:
            raise MemoryError("Unable to allocate 8 TiB")
        return real_run(config, **kwargs)

    monkeypatch.setattr(sys.modules["initscope.study.runner"], "run", flaky)
    out = tmp_path / "out"
    args = ["sweep", str(_write(tmp_path, SMALL)), "--out", str(out), "--workers", "1", "--quiet", "--no-report"]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "failed: 1 configurations" in text
    assert "init='sphere'" in text and "depth=3" in text and "MemoryError: Unable to allocate 8 TiB" in text
    assert main(["results", str(out / "results.sqlite")]) == 0
    assert "failed configurations: 1" in capsys.readouterr().out
    monkeypatch.setattr(sys.modules["initscope.study.runner"], "run", real_run)
    assert main(args) == 0
    _assert_complete(out / "results.sqlite", 8, 2)


@pytest.mark.parametrize("text, needle", [
    ("depht = [2, 3]\n", "Unknown field 'depht'"),
    ('depth = ["two", 3]\n', "'depth' field"),
    ("width = []\n", "'width' field"),
    ('data = "iris"\nsamples = [50, 500]\n', "samples=500"),
    ('activation = ["relu", "swish"]\n', "'swish'"),
    ("depth = [2, 3\n", "valid TOML"),
])
def test_bad_sweep_files_exit_2_and_write_nothing(tmp_path, capsys, text, needle):
    out = tmp_path / "out"
    assert main(["sweep", str(_write(tmp_path, text)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("initscope: error: ") and needle in err and err.count("\n") == 1
    assert not out.exists()


def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys):
    sweep_file = _write(tmp_path, SMALL)
    assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    notes = tmp_path / "notes.txt"
    notes.write_text("not a store")
    assert main(["sweep", str(sweep_file), "--store", str(notes)]) == 2
    assert notes.read_text() == "not a store"
    assert main(["results", str(tmp_path / "missing.sqlite")]) == 2
    assert main(["results", str(notes)]) == 2
    err = capsys.readouterr().err
    assert err.count("initscope: error: ") == 5
    assert not (tmp_path / "o").exists() and not (tmp_path / "missing.sqlite").exists()


def test_sweep_as_a_subprocess_bad_file_exit_2(tmp_path):
    proc = _sweep_process(_write(tmp_path, "width = []\n"), tmp_path / "s.sqlite")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "'width' field" in stderr
    assert not (tmp_path / "s.sqlite").exists()


@pytest.fixture
def filled_store(tmp_path):
    out = tmp_path / "out"
    assert main(["sweep", str(_write(tmp_path, SMALL)), "--out", str(out), "--workers", "1", "--quiet",
                 "--no-report"]) == 0
    return out / "results.sqlite"


def test_results_summary_and_export_round_trip(filled_store, tmp_path, capsys):
    csv, parquet = tmp_path / "m.csv", tmp_path / "m.parquet"
    args = ["results", str(filled_store), "--csv", str(csv)]
    if _has_pyarrow():
        args += ["--parquet", str(parquet)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "8 configurations (8 complete), 16 trials ok, 0 failed" in text
    assert "effective_rank" in text and "wrote" in text
    with Store(filled_store, create=False) as store:
        want = store.metrics()
    got = pd.read_csv(csv)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)
    if _has_pyarrow():
        pd.testing.assert_frame_equal(pd.read_parquet(parquet), want, check_exact=True)
    assert main(["results", str(filled_store), "--table", "spectra", "--csv", str(tmp_path / "s.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == Store(filled_store).summary().spectra_rows


def _has_pyarrow():
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def test_parquet_without_pyarrow_is_a_clear_error(filled_store, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert main(["results", str(filled_store), "--parquet", str(tmp_path / "m.parquet")]) == 2
    assert "pip install 'initscope[parquet]'" in capsys.readouterr().err
    assert not (tmp_path / "m.parquet").exists()
    assert main(["results", str(filled_store), "--table", "nope"]) == 2


def test_sweep_report(filled_store, tmp_path, capsys):
    pytest.importorskip("plotly")
    page = tmp_path / "r.html"
    assert main(["report", str(filled_store), "--out", str(page), "--x", "depth", "--y", "width",
                 "--metric", "effective_rank,rms", "--group-by", "width"]) == 0
    html = page.read_text()
    assert html.count("<script") == 1 + 4  # plotly.js once, then 2 figures × 2 metrics
    assert html.count("plotly.js v") == 1
    for sid in ("heatmap-effective_rank", "curves-effective_rank", "heatmap-rms", "curves-rms"):
        assert f'id="{sid}"' in html and f'id="fig-{sid}"' in html
    assert main(["report", str(filled_store), "--out", str(page), "--x", "nope"]) == 2
    assert main(["report", str(filled_store), "--out", str(page), "--metric", "nope"]) == 2
    assert main(["report", str(tmp_path / "missing.sqlite")]) == 2
    assert capsys.readouterr().err.count("initscope: error: ") == 3


def test_sweep_figures(filled_store):
    pytest.importorskip("plotly")
    from initscope.report.sweep_page import sweep_curves_figure, sweep_heatmap_figure

    with Store(filled_store, create=False) as store:
        table = store.metrics(metric="effective_rank")
    heat = sweep_heatmap_figure(table, x="depth", y="width", metric="effective_rank", facet="init")
    assert len(heat.data) == 2 and heat.layout.meta["panels"] == 2
    normal = table[(table["init"] == "normal") & (table["layer"] == table["depth"])]
    want = normal[(normal["depth"] == 3) & (normal["width"] == 10)]["value"].median()
    trace = heat.data[0]
    assert trace.z[list(trace.y).index("10")][list(trace.x).index("3")] == pytest.approx(want, rel=0, abs=0)
    curves = sweep_curves_figure(table, metric="effective_rank", group="depth")
    lines = [t for t in curves.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["depth=2", "depth=3"]
    assert list(lines[1].x) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="'group_by'"):
        sweep_curves_figure(table, group="colour")


def test_help_states_the_exit_statuses(capsys):
    assert main(["sweep", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "0 if every configuration succeeded, 1 if some failed" in text


def test_registered_on_the_main_cli():
    from initscope.cli.app import COMMANDS, load_command

    assert {"sweep", "results"} <= set(COMMANDS)
    assert load_command("sweep").name == "sweep" and load_command("results").name == "results"
    assert {c.name for c in study_app.registered_commands} >= {"sweep", "results", "report"}
