"""The everyday path's timings for bench_core.py: start-up, report build, the whole default run, and the peers.

Cases (bench_core.py --cases s,r; (a) and (b) call `run_peer`):
  s  start-up: `python -c "import initscope"`, `initscope --help`, `initscope --version`, each a fresh
     process, best of N wall times; and `python -X importtime` of each, the slowest imports listed.
     Target < 0.3 s each.
  r  report build: `build_page` of the default run (target < 0.5 s) and of a real run of
     5 inits x 50 layers x 1000 samples (target < 3 s), best of N in this process after one warm
     build (plotly.js read once); and the default `initscope run` whole-process, best of N in
     fresh processes (target < 1.5 s).
The peers are ../shared/bench/peer_numpy.py and peer_torch.py: batched numpy / PyTorch scripts of the
same spectra-only study, run as subprocesses that time themselves (imports excluded).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve()
# The peers: the shared reference copies beside the repository (../shared/bench) where they exist, else
# the project's own copies in benchmarks/peers (a clone elsewhere); tests/test_bench_peers.py checks that
# the two are the same files wherever both exist.
SHARED_PEERS = HERE.parents[2] / "shared/bench"
OWN_PEERS = HERE.parent / "peers"
PEERS = SHARED_PEERS if (SHARED_PEERS / "peer_numpy.py").is_file() else OWN_PEERS
TARGETS = {"startup_s": 0.3, "report_default_s": 0.5, "report_large_s": 3.0, "run_default_s": 1.5}
LARGE_REPORT = {"init": "kaiming-normal,orthogonal,xavier-normal,sphere,lecun-normal", "depth": 50, "samples": 1000,
                "trials": 3}


def log(*parts) -> None:
    print(*parts, flush=True)


def _env() -> dict:
    """This process's environment with the repo's src first on PYTHONPATH (the code being measured)."""
    src = str(HERE.parents[1] / "src")
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=src + (os.pathsep + path if path else ""))


def run_peer(name: str, cfg: dict, trials: int) -> dict:
    """Run ../shared/bench/<name> on `cfg` and return its JSON line (trials, seconds, trials_per_s)."""
    script = PEERS / name
    cmd = [sys.executable, str(script), "--inits", cfg["inits"], "--trials", str(trials),
           "--input-dim", str(cfg["input_dim"]), "--width", str(cfg["width"]), "--depth", str(cfg["depth"]),
           "--samples", str(cfg["samples"])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    res = json.loads([ln for ln in out.stdout.splitlines() if ln.strip().startswith("{")][-1])
    res["command"] = " ".join([Path(sys.executable).name, *cmd[1:]])
    return res


def _cli() -> list[str]:
    script = shutil.which("initscope")
    return [script] if script else [sys.executable, "-c", "from initscope.cli import entry; entry()"]


def _wall(cmd: list[str], repeats: int, cwd: str | None = None) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=_env(), cwd=cwd)
        times.append(time.perf_counter() - t0)
    return times


def _importtime(cmd_args: list[str], top: int = 6) -> tuple[float, list[tuple[str, float]]]:
    """(total import seconds, the `top` slowest top-level packages) from `python -X importtime`."""
    done = subprocess.run([sys.executable, "-X", "importtime", *cmd_args], capture_output=True, text=True,
                          env=_env(), check=False)
    rows = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only (cumulative times)
            rows.append((m.group(4), int(m.group(2)) / 1e6))
    return sum(t for _, t in rows), sorted(rows, key=lambda r: -r[1])[:top]


def case_startup(repeats: int) -> dict:
    log("\n== (s) start-up: fresh processes, best of", repeats)
    cli = _cli()
    probes = {
        "import initscope": ([sys.executable, "-c", "import initscope"], ["-c", "import initscope"]),
        "initscope --help": ([*cli, "--help"], ["-c", "from initscope.cli import entry; import sys; "
                                                      "sys.argv = ['initscope', '--help']; entry()"]),
        "initscope --version": ([*cli, "--version"], ["-c", "from initscope.cli import entry; import sys; "
                                                            "sys.argv = ['initscope', '--version']; entry()"]),
    }
    python_alone = min(_wall([sys.executable, "-c", "pass"], repeats))
    log(f"  python -c pass: {python_alone:.3f} s (the interpreter alone)")
    out: dict = {"python_alone_s": python_alone, "probes": {}}
    for name, (cmd, importtime_args) in probes.items():
        times = _wall(cmd, repeats)
        total, slow = _importtime(importtime_args)
        out["probes"][name] = {"best_s": min(times), "all_s": times, "imports_s": total, "slowest_imports": slow,
                               "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}
        ok = min(times) < TARGETS["startup_s"]
        log(f"  {name:22s} {min(times):.3f} s  (imports {total:.3f} s: "
            f"{', '.join(f'{m} {t * 1e3:.0f} ms' for m, t in slow[:4])})  target < {TARGETS['startup_s']} s: "
            f"{'MET' if ok else 'MISSED'}")
    return out


def _build_seconds(tables, repeats: int) -> list[float]:
    from initscope.report.page import build_page

    build_page(tables)  # warm: plotly.js read from disk once, as a second page in one process would
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        build_page(tables)
        times.append(time.perf_counter() - t0)
    return times


def case_report(repeats: int) -> dict:
    from initscope.report.tables import as_tables
    from initscope.study.runner import run

    log("\n== (r) report build and the default `initscope run`, best of", repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumericalWarning: the page carries it, timing does not care
        small = as_tables(run())
        large_kw = dict(LARGE_REPORT)
        large = as_tables(run(**large_kw))
    out: dict = {}
    for name, tables, target in (("default run", small, "report_default_s"),
                                 ("5 inits x 50 layers x 1000 samples", large, "report_large_s")):
        times = _build_seconds(tables, repeats)
        ok = min(times) < TARGETS[target]
        out[target] = {"best_s": min(times), "all_s": times, "config": large_kw if tables is large else "defaults"}
        log(f"  build_page, {name:36s} {min(times):.3f} s   target < {TARGETS[target]} s: {'MET' if ok else 'MISSED'}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*_cli(), "run", "--out", "out", "--quiet"]
        times = _wall(cmd, repeats, cwd=tmp)
        ok = min(times) < TARGETS["run_default_s"]
        out["run_default_s"] = {"best_s": min(times), "all_s": times, "command": "initscope run --out out --quiet"}
        log(f"  initscope run (defaults, report.html included), whole process: {min(times):.3f} s   "
            f"target < {TARGETS['run_default_s']} s: {'MET' if ok else 'MISSED'}")
    return out
