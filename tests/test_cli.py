"""The command line's contract (DESIGN.md, "Outputs" and "Bad input"): files, columns, exit codes."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from initscope.cli.app import OUTPUT_FILES, main
from initscope.report.writer import MARKER
from initscope.study.config import FIELD_NAMES
from initscope.core.initializers import INITIALIZERS
from initscope.core.metrics import DEFAULT_METRICS

SMALL = {"--depth": "2", "--width": "8", "--samples": "20", "--trials": "2"}
CSV_FILES = tuple(name for name in OUTPUT_FILES if name.endswith(".csv"))
METRIC_COLUMNS = ["init", "trial", "layer", "metric", "value", *[f for f in FIELD_NAMES if f != "init"]]
SPECTRA_COLUMNS = ["init", "trial", "layer", "k", "singular_value"]
HAS_REPORT = importlib.util.find_spec("plotly") is not None


def args_of(options: dict[str, str], *extra: str) -> list[str]:
    return [token for pair in options.items() for token in pair] + list(extra)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def small_run(capsys, out: Path, *extra: str, options: dict[str, str] | None = None) -> tuple[int, str, str]:
    opts = dict(SMALL, **(options or {}))
    return cli(capsys, "run", "--out", str(out), *args_of(opts), "--no-report", "--quiet", *extra)


def snapshot(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def command() -> list[str]:
    script = shutil.which("initscope")
    if script is not None:
        return [script]
    return [sys.executable, "-c", "from initscope.cli import entry; entry()"]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """An output folder holding an earlier small run's files."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    code = main(["run", "--out", str(out), *args_of(SMALL), "--no-report", "--quiet"])
    assert code == 0
    return out


# --- what a run writes --------------------------------------------------------------------


def test_run_writes_exactly_the_contracted_files(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = small_run(capsys, out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted((*OUTPUT_FILES, MARKER))
    assert set(OUTPUT_FILES) == {"metrics.csv", "spectra.csv", "projections.csv", "weight_norms.csv",
                                 "flags.csv", "config.toml"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
    assert stdout == ""  # --quiet


def test_metrics_csv_is_tidy_with_one_column_per_config_field(capsys, tmp_path):
    out = tmp_path / "out"
    assert small_run(capsys, out)[0] == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    inits, trials, depth = ("normal", "sphere"), 2, 2
    assert len(metrics) == len(inits) * trials * (depth + 1) * len(DEFAULT_METRICS)
    assert not metrics.duplicated(["init", "trial", "layer", "metric"]).any()
    assert set(metrics["init"]) == set(inits)
    assert set(metrics["trial"]) == {0, 1}
    assert set(metrics["layer"]) == {0, 1, 2}
    assert set(metrics["metric"]) == set(DEFAULT_METRICS)
    assert (metrics["depth"] == depth).all() and (metrics["width"] == 8).all()
    assert (metrics["samples"] == 20).all() and (metrics["data"] == "ball").all()
    assert metrics["gain"].isna().all()  # unset: each initializer's own
    rms = metrics[metrics["metric"] == "rms"]["value"]
    assert np.isfinite(rms).all() and (rms > 0).all()


def test_spectra_csv_has_one_row_per_singular_value(capsys, tmp_path):
    out = tmp_path / "out"
    assert small_run(capsys, out)[0] == 0
    spectra = pd.read_csv(out / "spectra.csv")
    assert list(spectra.columns) == SPECTRA_COLUMNS
    # min(samples, units): 3 at the input, 8 in each hidden layer.
    sizes = spectra.groupby(["init", "trial", "layer"])["k"].agg(["min", "max", "count"])
    assert len(sizes) == 2 * 2 * 3
    assert (sizes["min"] == 1).all()
    for layer, want in [(0, 3), (1, 8), (2, 8)]:
        here = sizes.xs(layer, level="layer")
        assert (here["max"] == want).all() and (here["count"] == want).all()
    per_trial = spectra.groupby(["init", "trial", "layer"])["singular_value"]
    assert (per_trial.apply(lambda s: bool(np.all(np.diff(s.to_numpy()) <= 0)))).all()  # descending
    assert (spectra["singular_value"] >= 0).all()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_REPORT, reason="the report needs plotly (initscope[report])")
def test_default_run_writes_the_report_and_a_later_run_replaces_it_whole(capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--out", str(out), "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted((*OUTPUT_FILES, MARKER, "report.html"))
    html = (out / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "normal" in html and "sphere" in html
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 2 * 10 * 11 * len(DEFAULT_METRICS)  # the seed's study: 10 trials, depth 10
    assert tomllib.loads((out / "config.toml").read_text())["width"] == 40
    # A later run without a report must not leave the earlier run's page beside its CSVs.
    assert small_run(capsys, out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted((*OUTPUT_FILES, MARKER))


# --- every flag lands in config.toml --------------------------------------------------------

FLAG_CASES = {
    "init": ("kaiming-normal,orthogonal", ["kaiming-normal", "orthogonal"]),
    "gain": ("1.5", 1.5),
    "data": ("box", "box"),
    "input_dim": ("5", 5),
    "width": ("6", 6),
    "depth": ("3", 3),
    "samples": ("12", 12),
    "activation": ("tanh", "tanh"),
    "shift": ("zeros", "zeros"),
    "shift_scale": ("0.25", 0.25),
    "residual": ("0.5", 0.5),
    "norm": ("layer", "layer"),
    "readout": ("init", "init"),
    "target": ("sin-sum", "sin-sum"),
    "trials": ("3", 3),
    "seed": ("7", 7),
    "dtype": ("float32", "float32"),
    "metrics": ("rms,std", ["rms", "std"]),
    "lsuv_tol": ("0.05", 0.05),
    "lsuv_max_iter": ("3", 3),
    "init_train": ("backprop", "backprop"),
    "train_steps": ("5", 5),
    "train_lr": ("0.05", 0.05),
    "train_batch": ("6", 6),
}


def test_flag_cases_cover_every_config_field():
    assert set(FLAG_CASES) == set(FIELD_NAMES)


@pytest.mark.parametrize("field", list(FLAG_CASES))
def test_every_flag_lands_in_config_toml_and_metrics_csv(capsys, tmp_path, field):
    text, want = FLAG_CASES[field]
    flag = "--" + field.replace("_", "-")
    options = {**SMALL, "--metrics": "rms,effective_rank", flag: text}
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--out", str(out), *args_of(options), "--no-report", "--quiet")
    assert code == 0, err
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved[field] == want
    metrics = pd.read_csv(out / "metrics.csv")
    if field == "init":
        assert set(metrics["init"]) == set(want)
    else:
        column = ",".join(want) if isinstance(want, list) else want
        assert metrics[field].unique().tolist() == [column]


def test_config_file_reruns_to_identical_outputs(capsys, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert small_run(capsys, first, options={"--seed": "11", "--activation": "tanh"})[0] == 0
    code, _, err = cli(capsys, "run", "--config", str(first / "config.toml"), "--out", str(second),
                       "--no-report", "--quiet")
    assert code == 0, err
    # The marker records each run's own command line; everything else is byte-identical.
    assert snapshot(second, skip=(MARKER,)) == snapshot(first, skip=(MARKER,))


def test_flags_override_the_config_file(capsys, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert small_run(capsys, first)[0] == 0
    code, _, err = cli(capsys, "run", "--config", str(first / "config.toml"), "--out", str(second),
                       "--depth", "3", "--init", "orthogonal", "--no-report", "--quiet")
    assert code == 0, err
    saved = tomllib.loads((second / "config.toml").read_text())
    assert saved["depth"] == 3 and saved["init"] == ["orthogonal"]
    assert saved["width"] == 8 and saved["samples"] == 20 and saved["trials"] == 2  # from the file
    metrics = pd.read_csv(second / "metrics.csv")
    assert set(metrics["layer"]) == {0, 1, 2, 3}
    assert set(metrics["init"]) == {"orthogonal"}


# --- reproducibility ---------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_csvs_and_another_seed_does_not(capsys, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert small_run(capsys, a, options={"--seed": "5"})[0] == 0
    assert small_run(capsys, b, options={"--seed": "5"})[0] == 0
    assert small_run(capsys, c, options={"--seed": "6"})[0] == 0
    for name in CSV_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    values_a = pd.read_csv(a / "metrics.csv")["value"].to_numpy()
    values_c = pd.read_csv(c / "metrics.csv")["value"].to_numpy()
    assert values_a.shape == values_c.shape
    assert not np.allclose(values_a, values_c, equal_nan=True)
    assert (a / "spectra.csv").read_bytes() != (c / "spectra.csv").read_bytes()


def runs_with_one_and_three_workers(capsys, tmp_path) -> tuple[Path, Path]:
    one, three = tmp_path / "one", tmp_path / "three"
    assert small_run(capsys, one, "--workers", "1", options={"--trials": "3"})[0] == 0
    assert small_run(capsys, three, "--workers", "3", options={"--trials": "3"})[0] == 0
    return one, three


def test_workers_do_not_change_the_numbers(capsys, tmp_path):
    one, three = runs_with_one_and_three_workers(capsys, tmp_path)
    for name in ("metrics.csv", "spectra.csv", "projections.csv", "flags.csv"):
        assert (one / name).read_bytes() == (three / name).read_bytes(), name
    keys = ["init", "trial", "layer"]
    norms_one = pd.read_csv(one / "weight_norms.csv").sort_values(keys, kind="stable", ignore_index=True)
    norms_three = pd.read_csv(three / "weight_norms.csv").sort_values(keys, kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(norms_one, norms_three)


def test_weight_norms_csv_does_not_depend_on_the_worker_count(capsys, tmp_path):
    one, three = runs_with_one_and_three_workers(capsys, tmp_path)
    assert (one / "weight_norms.csv").read_bytes() == (three / "weight_norms.csv").read_bytes()


def test_metrics_subset_writes_only_those_metrics(capsys, tmp_path):
    out = tmp_path / "out"
    assert small_run(capsys, out, options={"--metrics": "rms,dead_fraction"})[0] == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["metric"]) == {"rms", "dead_fraction"}
    assert len(metrics) == 2 * 2 * 3 * 2
    assert (metrics["metrics"] == "rms,dead_fraction").all()


# --- bad input: exit 2, one line naming parameter and value, nothing written -----------------


def bad_data_file(tmp_path: Path, kind: str) -> str:
    if kind == "nan":
        path = tmp_path / "nan.csv"
        path.write_text("a,b\n1,2\n3,nan\n")
    elif kind == "empty":
        path = tmp_path / "empty.csv"
        path.write_text("")
    elif kind == "ndim":
        path = tmp_path / "cube.npy"
        np.save(path, np.zeros((4, 3, 2)))
    else:
        path = tmp_path / "missing.csv"
    return str(path)


BAD_INPUTS = {
    "negative-depth": (["--depth", "-3"], ["'depth'", "-3"]),
    "unknown-init": (["--init", "he-normal"], ["'init'", "he-normal", *INITIALIZERS]),
    "nan-data": (["--data", "{nan}"], ["'data'", "{nan}"]),
    "empty-data": (["--data", "{empty}"], ["'data'", "{empty}"]),
    "npy-ndim": (["--data", "{ndim}"], ["'data'", "{ndim}", "ndim"]),
    "missing-data": (["--data", "{missing}"], ["'data'", "{missing}"]),
    "depth-not-a-number": (["--depth", "abc"], ["depth", "abc"]),
    "gain-not-a-number": (["--gain", "lots"], ["gain", "lots"]),
    "zero-gain": (["--gain", "0"], ["'gain'", "0"]),
    "unknown-flag": (["--frobnicate", "3"], ["--frobnicate"]),
    "bad-toml": (["--config", "{toml}"], ["'config'", "{toml}"]),
    "missing-toml": (["--config", "{missing_toml}"], ["'config'", "{missing_toml}"]),
    "samples-over-iris": (["--data", "iris", "--samples", "200"], ["'samples'", "200"]),
    "zero-workers": (["--workers", "0"], ["'workers'", "0"]),
    "depth-without-value": (["--depth"], ["--depth"]),
}


def fill(tokens: list[str], tmp_path: Path) -> list[str]:
    toml = tmp_path / "broken.toml"
    toml.write_text("depth = [\n")
    paths = {kind: bad_data_file(tmp_path, kind) for kind in ("nan", "empty", "ndim", "missing")}
    paths.update(toml=str(toml), missing_toml=str(tmp_path / "absent.toml"))
    return [t.format(**paths) for t in tokens]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("earlier", [False, True], ids=["fresh-out", "earlier-out"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, earlier_run, case, earlier):
    bad, expected = BAD_INPUTS[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = fill(bad, inputs)
    expected = fill(expected, inputs)
    out = tmp_path / "out"
    if earlier:
        shutil.copytree(earlier_run, out)
        before = snapshot(out)
    code, stdout, err = cli(capsys, "run", "--out", str(out), *args_of(SMALL), "--no-report", *bad)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("initscope: error: ")
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert stdout == ""
    if earlier:
        assert snapshot(out) == before
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["inputs"] + (["out"] if earlier else []))


def test_out_that_is_a_file_is_bad_input(capsys, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    code, _, err = small_run(capsys, out)
    assert code == 2
    assert len(err.splitlines()) == 1 and "'out'" in err and str(out) in err
    assert out.read_text() == "not a folder"


def test_unexpected_error_exits_1_with_one_line_and_writes_nothing(capsys, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk is on fire")

    # The package re-exports run(), which hides the module behind the name initscope.run.
    monkeypatch.setattr(importlib.import_module("initscope.study.runner"), "run", broken)
    out = tmp_path / "out"
    code, _, err = small_run(capsys, out)
    assert code == 1
    assert err.splitlines() == ["initscope: unexpected error: RuntimeError: the disk is on fire"]
    assert not out.exists()


# --- report subcommand, summary, help ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "file", "empty-folder"])
def test_report_on_something_that_is_not_a_run_folder_exits_2(capsys, tmp_path, kind):
    target = tmp_path / "thing"
    if kind == "file":
        target.write_text("hello")
    elif kind == "empty-folder":
        target.mkdir()
    code, _, err = cli(capsys, "report", str(target))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and "'folder'" in lines[0] and str(target) in lines[0]
    assert not (tmp_path / "thing" / "report.html").exists()


def test_report_without_a_folder_is_a_usage_error(capsys):
    code, _, err = cli(capsys, "report")
    assert code == 2
    assert len(err.splitlines()) == 1 and "folder" in err


@pytest.mark.skipif(not HAS_REPORT, reason="the report needs plotly (initscope[report])")
def test_report_rebuilds_the_page_from_a_run_folder(capsys, tmp_path, earlier_run):
    folder = tmp_path / "run"
    shutil.copytree(earlier_run, folder)
    code, stdout, err = cli(capsys, "report", str(folder))
    assert code == 0, err
    page = folder / "report.html"
    assert page.is_file() and page.stat().st_size > 1000
    assert str(page) in stdout


def test_summary_table_is_printed(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "run", "--out", str(out), *args_of(SMALL), "--no-report")
    assert code == 0, err
    for word in ("normal", "sphere", "layer", "rms"):
        assert word in stdout
    table_rows = [line for line in stdout.splitlines() if line.strip("│ ").startswith(("0 ", "1 ", "2 "))]
    assert len(table_rows) >= 2 * 3  # a row per layer, per initializer


@pytest.mark.parametrize("argv", [[], ["--help"], ["run", "--help"]], ids=["bare", "help", "run-help"])
def test_help_exits_0(capsys, argv):
    code, stdout, err = cli(capsys, *argv)
    assert code == 0, err
    assert "Usage" in stdout
    if argv == ["run", "--help"]:
        for field in FIELD_NAMES:
            assert "--" + field.replace("_", "-") in stdout


# --- numerical hazards ----------------------------------------------------------------------


@pytest.mark.slow
def test_overflow_is_flagged_warned_and_nan_not_a_crash(capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "--out", str(out), "--init", "normal", "--depth", "400", "--width", "64",
                       "--shift", "zeros", "--trials", "2", "--metrics", "rms,effective_rank",
                       "--no-report", "--quiet")
    assert code == 0, err
    flags = pd.read_csv(out / "flags.csv")
    overflow = flags[flags["flag"] == "overflow"]
    assert len(overflow) >= 1
    first = int(overflow["layer"].min())
    assert 0 < first <= 400
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"layer {first}" in warnings[0]
    metrics = pd.read_csv(out / "metrics.csv")
    for _, row in overflow.iterrows():
        mine = metrics[(metrics["init"] == row["init"]) & (metrics["trial"] == row["trial"])]
        assert mine[mine["layer"] >= row["layer"]]["value"].isna().all()
        assert np.isfinite(mine[mine["layer"] < row["layer"]]["value"]).all()


# --- as a real process ----------------------------------------------------------------------


@pytest.mark.slow
def test_console_script_runs_and_writes_outputs(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([*command(), "run", "--out", str(out), *args_of(SMALL), "--no-report"],
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted((*OUTPUT_FILES, MARKER))
    assert "normal" in proc.stdout and "layer" in proc.stdout
    assert len(pd.read_csv(out / "metrics.csv")) == 2 * 2 * 3 * len(DEFAULT_METRICS)


@pytest.mark.slow
def test_console_script_bad_input_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([*command(), "run", "--out", str(out), "--depth", "-1"],
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "initscope: error: The 'depth' parameter must be an integer >= 1. Got '-1' instead."
    ]
    assert proc.stdout == ""
    assert not out.exists()


@pytest.mark.slow
def test_console_script_usage_error_exits_2(tmp_path):
    proc = subprocess.run([*command(), "run", "--out", str(tmp_path / "out"), "--width", "wide"],
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "'width'" in lines[0] and "wide" in lines[0]
