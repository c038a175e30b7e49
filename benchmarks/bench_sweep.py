"""Benchmark: a 200-configuration × 10-trial sweep of seed-scale networks into a results store.

Times the same sweep (init normal/sphere × input_dim × seeds, width 40,
depth 10, 100 samples: the seed post's network) four ways, in one run:

1. `initscope sweep --workers 1` (in-process),
2. `--workers 2` (two spawned processes, pool start-up included),
3. a Dask LocalCluster of 2 single-threaded worker processes (cluster start-up
   timed separately),
4. the seed post's way, one trial at a time: `seed_baseline.trial` (numpy
   forward pass + scikit-learn PCA per layer), for the same trials,

checks that 1–3 stored identical numbers, and reports the store's size per
million metric rows. The baseline only computes spectra, so `--metrics
spectral` (the three spectrum metrics) is the like-for-like comparison;
the default computes all twelve metrics.

    python benchmarks/bench_sweep.py                       # 200 × 10, all metrics
    python benchmarks/bench_sweep.py --metrics spectral --configs 200
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from initscope.study.executors import open_executor, run_sweep
from initscope.study.store import Store
from initscope.study.sweep import make_sweep

_SHARED = Path(__file__).resolve().parents[2] / "shared/bench/seed_baseline.py"
# The shared reference where it exists, else the project's own copy (a clone elsewhere).
DEFAULT_BASELINE = _SHARED if _SHARED.is_file() else Path(__file__).resolve().parent / "peers/seed_baseline.py"
INPUT_DIMS = (3, 10, 20, 30, 40)
SPECTRAL = ["effective_rank", "stable_rank", "numerical_rank"]


def sweep_spec(configs: int, trials: int, metrics: str) -> dict:
    seeds = max(1, configs // (2 * len(INPUT_DIMS)))
    spec = {"init": ["normal", "sphere"], "input_dim": list(INPUT_DIMS), "seed": list(range(seeds)),
            "width": 40, "depth": 10, "samples": 100, "trials": trials}
    if metrics == "spectral":
        spec["metrics"] = SPECTRAL
    return spec


def cpu_seconds() -> float:
    """CPU time of this process and its live descendants (pool or Dask workers).

    On a shared, loaded machine wall time depends on the neighbours; CPU time
    much less so.
    """
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def timed_sweep(sweep, path: Path, executor, slots: int) -> tuple[float, float, float]:
    """(wall seconds of the sweep, CPU seconds, seconds spent writing the store)."""
    with Store(path) as store:
        write = store.write
        spent = [0.0]

        def timed_write(batch):
            t = time.perf_counter()
            try:
                return write(batch)
            finally:
                spent[0] += time.perf_counter() - t

        store.write = timed_write
        cpu = cpu_seconds()
        start = time.perf_counter()
        outcome = run_sweep(sweep, store, executor, slots=slots)
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
    if not outcome.ok or outcome.written_trials != sweep.total_trials:
        raise SystemExit(f"sweep did not complete: {outcome}")
    return wall, cpu, spent[0]


def stored_values(path: Path) -> np.ndarray:
    with Store(path, create=False) as store:
        m = store.metrics().sort_values(["config_id", "trial", "metric", "layer"])
    return m["value"].to_numpy()


def store_size(path: Path) -> dict:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT COUNT(*) FROM metric_values").fetchone()[0]
        spectra = con.execute("SELECT COUNT(*) FROM singular_values").fetchone()[0]
        try:
            by_table = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.OperationalError:  # SQLite built without the dbstat table
            by_table = {}
    finally:
        con.close()
    size = path.stat().st_size
    out = {"file_bytes": size, "metric_rows": rows, "singular_values": spectra,
           "file_MB_per_million_metric_rows": size / rows * 1e6 / 2**20}
    if by_table:
        metric_bytes = by_table.get("metric_values", 0)
        out["metric_table_MB_per_million_rows"] = metric_bytes / rows * 1e6 / 2**20
        out["spectra_table_MB_per_million_values"] = by_table.get("singular_values", 0) / max(spectra, 1) * 1e6 / 2**20
    return out


def baseline_seconds(path: Path, sweep) -> tuple[float, float] | None:
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("seed_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from threadpoolctl import threadpool_limits

    start, cpu = time.perf_counter(), time.process_time()
    with threadpool_limits(1):  # as the sweep's workers run: one BLAS thread each
        for config in sweep.configs:
            rng = np.random.default_rng(config.seed)
            for _ in range(config.trials):
                mod.trial(rng, config.init[0], config.input_dim, config.width, config.depth, config.samples)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", type=int, default=200)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--metrics", choices=("all", "spectral"), default="all")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="path of seed_baseline.py")
    p.add_argument("--no-dask", action="store_true")
    a = p.parse_args()

    sweep = make_sweep(sweep_spec(a.configs, a.trials, a.metrics))
    n, T = len(sweep.configs), sweep.total_trials
    print(f"# bench_sweep: {n} configurations x {a.trials} trials = {T} trials; width 40, depth 10, "
          f"100 samples; metrics={a.metrics}")
    print(f"# {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print("# CPU s: this process and its workers; on a shared machine it is the steadier measure")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        with open_executor(1) as (ex, slots):
            wall, cpu, write = timed_sweep(sweep, tmp / "w1.sqlite", ex, slots)
        results["workers=1"] = {"s": wall, "cpu_s": cpu, "write_s": write}
        with open_executor(2) as (ex, slots):
            wall, cpu, write = timed_sweep(sweep, tmp / "w2.sqlite", ex, slots)
        results["workers=2"] = {"s": wall, "cpu_s": cpu, "write_s": write}
        reference = stored_values(tmp / "w1.sqlite")
        same = {"workers=2": np.array_equal(reference, stored_values(tmp / "w2.sqlite"), equal_nan=True)}
        if not a.no_dask:
            from distributed import LocalCluster

            start = time.perf_counter()
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                startup = time.perf_counter() - start
                with open_executor(scheduler=cluster.scheduler_address) as (ex, slots):
                    wall, cpu, write = timed_sweep(sweep, tmp / "dask.sqlite", ex, slots)
            results["dask 2x1"] = {"s": wall, "cpu_s": cpu, "write_s": write, "startup_s": startup}
            same["dask 2x1"] = np.array_equal(reference, stored_values(tmp / "dask.sqlite"), equal_nan=True)
        size = store_size(tmp / "w1.sqlite")
        timed = baseline_seconds(a.baseline, sweep)
        base = None
        if timed is not None:
            base = timed[0]
            results["seed baseline (1 process)"] = {"s": timed[0], "cpu_s": timed[1], "write_s": 0.0}

    print(f"{'way':<27}{'wall s':>8}{'trials/s':>10}{'CPU s':>8}{'store write s':>15}{'wall vs w=1':>13}")
    one = results["workers=1"]["s"]
    for name, r in results.items():
        extra = f"  (cluster start-up {r['startup_s']:.1f} s, not included)" if "startup_s" in r else ""
        print(f"{name:<27}{r['s']:>8.2f}{T / r['s']:>10.1f}{r['cpu_s']:>8.2f}{r['write_s']:>15.2f}"
              f"{one / r['s']:>12.2f}x{extra}")
    print("identical stored metrics: " + ", ".join(f"{k} vs workers=1: {v}" for k, v in same.items()))
    if base is not None:
        cpu_ratio = results["seed baseline (1 process)"]["cpu_s"] / results["workers=1"]["cpu_s"]
        print(f"ratio seed baseline / initscope (above 1: initscope is faster): CPU, 1 worker {cpu_ratio:.2f}x; "
              f"wall: workers=1 {base / one:.2f}x, "
              f"workers=2 {base / results['workers=2']['s']:.2f}x"
              + (f", dask {base / results['dask 2x1']['s']:.2f}x" if "dask 2x1" in results else ""))
    else:
        print(f"seed baseline not found at {a.baseline}; pass --baseline PATH")
    print(f"store: {size['metric_rows']:,} metric rows, {size['singular_values']:,} singular values, "
          f"{size['file_bytes'] / 2**20:.1f} MiB file = {size['file_MB_per_million_metric_rows']:.1f} MiB per million "
          "metric rows (whole file)")
    if "metric_table_MB_per_million_rows" in size:
        print(f"       metric_values table alone: {size['metric_table_MB_per_million_rows']:.1f} MiB per million rows; "
              f"singular_values: {size['spectra_table_MB_per_million_values']:.1f} MiB per million values")
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    print(json.dumps({"results": results, "identical": same, "store": size}, default=float))


if __name__ == "__main__":
    sys.exit(main())
