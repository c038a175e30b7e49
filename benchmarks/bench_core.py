#!/usr/bin/env python
"""Benchmark initscope's core study loop against the seed post's baseline, in one invocation.

Cases (select with --cases, default all):
  a  seed scale: 2 inits x 100 trials, input 40, width 40, depth 10, 100 samples, spectra only.
     Baseline trials/s vs initscope trials/s (best of 3 each, interleaved). Target ratio >= 10.
  b  large: 2 inits x 10 trials, input 40, width 256, depth 50, 1000 samples, spectra only.
     The baseline runs 2 trials per init (1 with --quick); trials/s are compared. Target >= 25.
  c  the large config with every default metric, readout "zeros" (the default: grad_norm is
     skipped as exactly 0) and readout "init" (real backprop). Wall time, ratio to (b)'s
     initscope time (target <= 5x) and achieved GFLOP/s = analytic FLOP count / wall time,
     against a numpy float64 batched matmul measured here (target >= 50%).
     (a) and (b) also print a kernel floor: the unavoidable kernels of one trial (weight draws,
     forward products, Gram matrices, eigvalsh), timed alone on one core, and the ceiling
     ratio they allow if two cores scaled perfectly and nothing else cost anything.
     Both (a) and (b) also run the peers (../shared/bench/peer_numpy.py and peer_torch.py, batched numpy
     and PyTorch scripts of the same study) in the same invocation: targets >= 3x peer_numpy at (a),
     >= 8x peer_torch at (b).
  s  start-up (benchmarks/everyday.py): import initscope, initscope --help, --version, each < 0.3 s.
  r  report build: the default run's page < 0.5 s, 5 inits x 50 layers x 1000 samples < 3 s; the default
     `initscope run` whole-process < 1.5 s.
  d  peak memory, depth 10 vs depth 200, each in a fresh subprocess (ru_maxrss at the end):
     1 init x 10 trials, width 256, 1000 samples, input 40; all metrics with readout "init",
     and spectra only. Target ratio <= 1.3. tracemalloc peaks in separate subprocesses.

The baseline is a separate script (default: <repo>/../shared/bench/seed_baseline.py, override
with --baseline); it runs as a subprocess of this one with the same interpreter and environment
and reports its own trials/s (its timer excludes imports). initscope runs in this process after
a warm-up call. OPENBLAS_* variables are printed and left alone; thread limits are only set
inside the matmul reference measurement, and everywhere with the opt-in --blas-threads.

    python benchmarks/bench_core.py                  # everything (several minutes)
    python benchmarks/bench_core.py --quick          # smoke run
    python benchmarks/bench_core.py --cases a,b --json out.json
    python -m cProfile -s tottime benchmarks/bench_core.py --cases b --side initscope --workers 1 --blas-threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import everyday  # noqa: E402  (start-up, report build and the peers)

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DEFAULT_BASELINE = everyday.PEERS / "seed_baseline.py"  # the shared reference, else benchmarks/peers

TARGETS = {"a_ratio": 10.0, "b_ratio": 25.0, "c_time_ratio": 5.0, "c_matmul_fraction": 0.5, "d_ratio": 1.3,
           "a_numpy_ratio": 3.0, "b_torch_ratio": 8.0}

SEED = {"inits": "normal,sphere", "input_dim": 40, "width": 40, "depth": 10, "samples": 100}
LARGE = {"inits": "normal,sphere", "input_dim": 40, "width": 256, "depth": 50, "samples": 1000}
MEMORY_INIT = "kaiming-normal"  # stays finite at depth 200 (plain "normal" overflows there: NaN metrics)


# --------------------------------------------------------------------------- helpers

def log(*parts) -> None:
    print(*parts, flush=True)


def status(target_ok: bool) -> str:
    return "MET" if target_ok else "MISSED"


def run_kwargs(cfg: dict, trials: int, **extra) -> dict:
    kw = {"init": cfg["inits"], "trials": trials, "input_dim": cfg["input_dim"], "width": cfg["width"],
              "depth": cfg["depth"], "samples": cfg["samples"]}
    kw.update(extra)
    return kw


def time_initscope(kwargs: dict, workers: int | None) -> float:
    from initscope.study.runner import run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumericalWarning: results carry it, timing does not care
        t0 = time.perf_counter()
        run(workers=workers, **kwargs)
        return time.perf_counter() - t0


def run_baseline(path: Path, cfg: dict, trials: int) -> dict:
    cmd = [sys.executable, str(path), "--inits", cfg["inits"], "--trials", str(trials),
           "--input-dim", str(cfg["input_dim"]), "--width", str(cfg["width"]),
           "--depth", str(cfg["depth"]), "--samples", str(cfg["samples"])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"baseline failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.strip().startswith("{")][-1]
    res = json.loads(line)
    res["command"] = " ".join(cmd[1:])
    return res


def n_inits(cfg: dict) -> int:
    return len(cfg["inits"].split(","))


# --------------------------------------------------------------------------- environment

def environment() -> dict:
    env: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "os.cpu_count": os.cpu_count(),
        "sched_getaffinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "blas_env": {k: v for k, v in sorted(os.environ.items())
                     if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GOTO", "BLIS_"))},
    }
    for mod in ("scipy", "sklearn", "pandas", "initscope", "threadpoolctl"):
        try:
            env[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - informational only
            env[mod] = f"unavailable ({exc})"
    try:
        with open("/proc/cpuinfo") as fh:
            env["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    except OSError:
        env["cpu_model"] = "?"
    try:
        import scipy.linalg  # noqa: F401  (load scipy's BLAS so threadpoolctl sees it)
        import sklearn.decomposition  # noqa: F401
        from threadpoolctl import threadpool_info

        env["threadpool_info"] = [
            {k: v for k, v in lib.items() if k in ("user_api", "internal_api", "prefix", "version",
                                                  "num_threads", "threading_layer", "architecture")}
            | {"file": os.path.basename(lib.get("filepath", ""))}
            for lib in threadpool_info()
        ]
    except Exception as exc:  # noqa: BLE001 - informational only
        env["threadpool_info"] = f"unavailable ({exc})"
    env["git"] = source_state()
    env["initscope_modules"] = [str(f.relative_to(REPO)) if f.is_relative_to(REPO) else str(f) for f in _SOURCE_FILES]
    return env


_SOURCE_FILES: list[Path] = []
_DIGESTS: list[str] = []  # every source_state() call's digest; the first is what this process imported


def source_state() -> str:
    """HEAD of the repo, and a digest of the initscope modules this process imported.

    The first call fixes the file list (the modules loaded by then: the run path);
    later calls hash the same files again, so a change under the benchmark's feet
    (subprocesses import afresh) shows, while edits elsewhere in src/ do not.
    """
    import hashlib

    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        rev = "?"
    if not _SOURCE_FILES:
        import initscope.study.runner  # noqa: F401

        _SOURCE_FILES.extend(sorted(Path(m.__file__) for name, m in list(sys.modules.items())
                                    if name.split(".")[0] == "initscope" and getattr(m, "__file__", None)))
    h = hashlib.sha1()
    for f in _SOURCE_FILES:
        h.update(f.name.encode())
        h.update(f.read_bytes() if f.exists() else b"<missing>")
    _DIGESTS.append(h.hexdigest()[:12])
    return f"{rev}, digest {h.hexdigest()[:12]} of the {len(_SOURCE_FILES)} initscope modules imported"


def print_environment(env: dict) -> None:
    log("== environment")
    for k in ("python", "platform", "cpu_model", "os.cpu_count", "sched_getaffinity", "loadavg",
              "numpy", "scipy", "sklearn", "pandas", "threadpoolctl", "initscope", "git"):
        log(f"  {k}: {env.get(k)}")
    log(f"  BLAS/OpenMP env vars (left as they are): {env['blas_env'] or '(none set)'}")
    log("  threadpoolctl.threadpool_info():")
    info = env["threadpool_info"]
    if isinstance(info, str):
        log(f"    {info}")
    else:
        for lib in info:
            log("    " + ", ".join(f"{k}={v}" for k, v in lib.items()))


def other_runnable(samples: int = 20, interval: float = 0.05) -> float | None:
    """Mean count of runnable threads on the machine other than this one (load-average's numerator, now)."""
    counts = []
    try:
        for _ in range(samples):
            with open("/proc/loadavg") as fh:
                counts.append(int(fh.read().split()[3].split("/")[0]) - 1)
            time.sleep(interval)
    except (OSError, ValueError, IndexError):
        return None
    return sum(counts) / len(counts)


# --------------------------------------------------------------------------- FLOP model

def grad_forward_layers(depth: int) -> tuple[list[int], int]:
    """Layers the checkpointed backward pass runs forward, in order, and the checkpoints it holds at most.

    gradients.recompute_schedule walks the same binomial checkpointing plan as
    weight_gradient_norms (one shared split rule).
    """
    from initscope.core.gradients import recompute_schedule

    return recompute_schedule(depth)


FLOP_FORMULAS = [
    "per init, per trial; w_0 = d (layer 0 is the input), w_l = w; k_l = min(n, w_l)",
    "forward      sum_{l=1..L} 2*n*w_{l-1}*w_l                          (s @ W)",
    "gram         sum_{l=0..L} 2*n*w_l^2 if n >= w_l else 2*n^2*w_l       (full matmul, both triangles)",
    "eig          sum_{l=0..L} (4/3) k_l^3 eigvalsh, or 9 k_l^3 eigh when linear_r2 is on",
    "top3 proj    trial 0 of each init only: 2*n*w_l*3, plus (4/3) k_l^3 (top-3 eigenpairs) when linear_r2 is off",
    "linear_r2    sum_l [2*n*k_l^2 (S_c V, only when n >= w_l)] + 2 * 2*n*k_l*d (U^T X and U coef)",
    "distance_corr m = min(n, 2000): reference 2*m^2*d once; sum_{l=0..L} 2*m^2*w_l (sample Gram)",
    "jacobian     J = 64 = min(n, 64) samples, p_l = min(d, w_l), q_l = max(d, w_l):",
    "               jvp sum_{l=1..L} 2*(J*d)*w_{l-1}*w_l;",
    "               rank sum_{l=0..L} J*[2*p^2*q (p x p Gram) + p^3/3 (Cholesky certificate)];",
    "               samples not certified also run QR + SVD (not counted: GFLOP/s is a lower bound)",
    "grad_norm    readout 'zeros': 0 (exact zeros, no work). readout 'init': forward recompute",
    "               sum over the layers the checkpointed recursion reruns of 2*n*w_{l-1}*w_l",
    "               + backward sum_{l=1..L} 2 * 2*n*w_{l-1}*w_l (dW and ds_prev) + readout 2*2*n*w",
    "not counted: elementwise work (activation, centring, reductions, sqrt, einsum norms),",
    "             random-number generation (weights drawn once, redrawn in the gradient pass), copies",
    "note: numpy sends A^T A and A A^T on one buffer to BLAS syrk, which does half of 2*n*w^2: the",
    "      gram and distance_corr rows count the full product (the formulas above); the 'syrk-adjusted'",
    "      figure halves those two rows, closer to the arithmetic actually executed",
]


def flop_count(cfg: dict, trials: int, metrics: tuple[str, ...], readout: str) -> dict:
    """Analytic floating-point operation count of run() for this config, by component."""
    I, T = n_inits(cfg), trials
    n, d, w, L = cfg["samples"], cfg["input_dim"], cfg["width"], cfg["depth"]
    widths = [d] + [w] * L
    want = set(metrics)
    c: dict[str, float] = {}

    def fwd(layer: int) -> float:  # layer >= 1
        return 2.0 * n * widths[layer - 1] * widths[layer]

    c["forward"] = sum(fwd(l) for l in range(1, L + 1))
    c["gram"] = sum(2.0 * n * wl * wl if n >= wl else 2.0 * n * n * wl for wl in widths)
    eig_c = 9.0 if "linear_r2" in want else 4.0 / 3.0
    c["eig"] = sum(eig_c * min(n, wl) ** 3 for wl in widths)
    # Per init, trial 0 only: linear_r2's eigh is reused when it runs; otherwise only the top
    # three eigenpairs are computed (tridiagonal reduction, then MRRR for three vectors).
    proj_eig = 0.0 if "linear_r2" in want else 4.0 / 3.0
    proj = sum(proj_eig * min(n, wl) ** 3 + 2.0 * n * wl * 3 for wl in widths)
    if "linear_r2" in want:
        c["linear_r2"] = sum((2.0 * n * min(n, wl) ** 2 if n >= wl else 0.0) + 4.0 * n * min(n, wl) * d
                             for wl in widths)
    if "distance_corr" in want:
        m = min(n, 2000)
        c["distance_corr"] = 2.0 * m * m * d + sum(2.0 * m * m * wl for wl in widths)
    if "jacobian_rank" in want:
        J = min(n, 64)
        jvp = sum(2.0 * (J * d) * widths[l - 1] * widths[l] for l in range(1, L + 1))
        rank = 0.0
        for wl in widths:
            # The certified path: the p×p Gram matrix and its Cholesky test. Samples it cannot
            # certify also take QR + SVD (2p²(q − p/3) + 4p³); not counted, so GFLOP/s is a
            # lower bound (about 17% of samples at the large config, deep layers whose
            # σ_min/σ_max fell below 1e-5).
            p, q = min(d, wl), max(d, wl)
            rank += J * (2.0 * p * p * q + p ** 3 / 3.0)
        c["jacobian_jvp"] = jvp
        c["jacobian_rank_gram_cholesky"] = rank
    grad_layers: list[int] = []
    if "grad_norm" in want and readout != "zeros":
        grad_layers, grad_peak = grad_forward_layers(L)
        c["grad_recompute_forward"] = sum(fwd(l) for l in grad_layers)
        c["grad_backward"] = sum(2.0 * fwd(l) for l in range(1, L + 1)) + 4.0 * n * w
    per_trial = dict(c)
    total = {k: v * I * T for k, v in per_trial.items()}
    total["top3_projection"] = proj * I
    return {
        "total": sum(total.values()),
        "syrk_adjusted_total": sum(total.values()) - 0.5 * (total["gram"] + total.get("distance_corr", 0.0)),
        "by_component": total,
        "grad_forward_layer_evals": len(grad_layers),
        "grad_forward_passes_exact": len(grad_layers) / L if L else 0.0,
        "grad_checkpoints_held": grad_peak if grad_layers else 0,
    }


def best_time(fn, repeats: int) -> float:
    """Seconds of fn()'s fastest call of `repeats`, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_rate(repeats: int) -> dict:
    """numpy float64 batched matmul (10,1000,256)@(10,256,256), best of `repeats`, in GFLOP/s.

    Three ways: one call with the default BLAS threads (the machine as it is); the batch
    split over one Python thread per core with BLAS pinned to one thread each (how run()
    executes its trial chunks); one thread alone. The reference is the best of the first
    two: on a loaded machine multi-threaded BLAS can collapse while the split holds up,
    and a collapsed reference would flatter the achieved fraction.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A = rng.standard_normal((10, 1000, 256))
    B = rng.standard_normal((10, 256, 256))
    flops = 2.0 * 10 * 1000 * 256 * 256
    cores = os.cpu_count() or 1
    parts = [(a, b) for a, b in zip(np.array_split(A, cores), np.array_split(B, cores)) if len(a)]
    out = {"shape": "(10,1000,256)@(10,256,256)", "flop": flops, "threads_split": len(parts)}

    def best(fn) -> float:
        return best_time(fn, repeats)

    out["gflops_default_threads"] = flops / best(lambda: np.matmul(A, B)) / 1e9
    with threadpool_limits(1), ThreadPoolExecutor(len(parts)) as pool:
        out["gflops_split_1_blas_thread_each"] = flops / best(
            lambda: list(pool.map(lambda ab: np.matmul(*ab), parts))) / 1e9
        out["gflops_1_thread"] = flops / best(lambda: np.matmul(A, B)) / 1e9
    out["reference_gflops"] = max(out["gflops_default_threads"], out["gflops_split_1_blas_thread_each"])
    return out


def kernel_floor(cfg: dict, repeats: int = 20) -> dict:
    """The least time a trial of this spectra-only config can take here, from its unavoidable kernels.

    Per layer: drawing the weights (the baseline draws them too), the forward
    product, the Gram matrix of the centred states and its eigenvalues (LAPACK
    through numpy); plus layer 0's Gram and eigenvalues, shared by the inits.
    Each is timed alone, single-threaded, on one trial's arrays (best of
    `repeats`), and the sum is divided by the core count as if two threads
    scaled perfectly and nothing else (centring, metrics, tables, Python) cost
    anything. The ceiling ratio is what that floor would give against the baseline.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    n, d, w, L = cfg["samples"], cfg["input_dim"], cfg["width"], cfg["depth"]

    def best(fn) -> float:
        return best_time(fn, repeats)

    def layer_costs(fan_in: int, width: int) -> dict:
        S = rng.standard_normal((n, fan_in))
        W = rng.standard_normal((fan_in, width))
        H = np.maximum(S @ W, 0)
        H -= H.mean(axis=0)
        G = H.T @ H if n >= width else H @ H.T
        return {"draw": best(lambda: rng.standard_normal((fan_in, width))),
                "forward": best(lambda: np.matmul(S, W)),
                "gram": best(lambda: H.T @ H if n >= width else H @ H.T),
                "eigvalsh": best(lambda: np.linalg.eigvalsh(G))}

    with threadpool_limits(1):
        first, inner = layer_costs(d, w), (layer_costs(w, w) if L > 1 else None)
        x = rng.standard_normal((n, d))
        Gx = x.T @ x if n >= d else x @ x.T
        layer0 = best(lambda: x.T @ x if n >= d else x @ x.T) + best(lambda: np.linalg.eigvalsh(Gx))
    per_kernel = {k: first[k] + (L - 1) * (inner[k] if inner else 0.0) for k in first}
    per_trial = sum(per_kernel.values()) + layer0 / n_inits(cfg)
    cores = os.cpu_count() or 1
    return {"per_trial_one_core_s": per_trial, "by_kernel_s": per_kernel, "layer0_s": layer0, "cores": cores,
            "ceiling_trials_per_s": cores / per_trial}


def log_floor(out: dict, floor: dict, target: float) -> None:
    kernels = ", ".join(f"{k} {v * 1e3:.3f}" for k, v in floor["by_kernel_s"].items())
    log(f"  kernel floor per trial, one core (ms): {kernels}; layer 0 {floor['layer0_s'] * 1e3:.3f}")
    log(f"  ceiling with {floor['cores']} cores scaling perfectly and nothing else costing: "
        f"{floor['ceiling_trials_per_s']:.1f} trials/s")
    if "baseline_trials_per_s" in out:
        ceiling = floor["ceiling_trials_per_s"] / out["baseline_trials_per_s"]
        out["ceiling_ratio"] = ceiling
        log(f"  ceiling ratio against this baseline run: {ceiling:.2f}x (target {target:g}x)")
    # What the peers' targets allow on this machine: the floor against the same run's peers.
    for key, goal in (("peer_numpy", TARGETS.get("a_numpy_ratio") if "numpy_ratio" in out else None),
                      ("peer_torch", TARGETS.get("b_torch_ratio"))):
        if f"{key}_trials_per_s" in out:
            ceiling = floor["ceiling_trials_per_s"] / out[f"{key}_trials_per_s"]
            out[f"{key}_ceiling_ratio"] = ceiling
            log(f"  ceiling ratio against this run's {key}: {ceiling:.2f}x"
                + (f" (target {goal:g}x; initscope reaches {out['initscope_trials_per_s'] / floor['ceiling_trials_per_s']:.0%}"
                   " of the ceiling)" if goal else ""))
    out["kernel_floor"] = floor


# --------------------------------------------------------------------------- cases

def case_a(args, res: dict) -> None:
    log("\n== (a) seed scale: inits normal,sphere; input 40, width 40, depth 10, samples 100; spectra only")
    T = args.trials_a
    kw = run_kwargs(SEED, T, metrics="effective_rank")
    log(f"  initscope: run({', '.join(f'{k}={v!r}' for k, v in kw.items())})")
    base, mine, peer = [], [], []
    if args.side in ("both", "baseline"):
        log(f"  baseline:  {Path(args.baseline).name} --inits {SEED['inits']} --trials {T} --input-dim 40 "
            f"--width 40 --depth 10 --samples 100")
    for r in range(args.repeats):  # interleaved so both sides see the same machine state
        if args.side in ("both", "baseline"):
            b = run_baseline(args.baseline, SEED, T)
            base.append(b["trials_per_s"])
        if args.side in ("both", "initscope"):
            mine.append(n_inits(SEED) * T / time_initscope(kw, args.workers))
        if args.side == "both":
            p = everyday.run_peer("peer_numpy.py", SEED, T)
            peer.append(p["trials_per_s"])
    out = {"trials_per_init": T, "total_trials": n_inits(SEED) * T, "repeats": args.repeats}
    if peer and mine:
        out["peer_numpy_trials_per_s_all"] = peer
        out["peer_numpy_trials_per_s"] = max(peer)
        out["numpy_ratio"] = max(mine) / max(peer)
        log(f"  peer_numpy trials/s: {max(peer):9.1f}   (best of {len(peer)}: {', '.join(f'{x:.1f}' for x in peer)}; "
            f"{p['command']})")
        log(f"  ratio initscope/peer_numpy: {out['numpy_ratio']:.2f}x   target >= {TARGETS['a_numpy_ratio']:g}: "
            f"{status(out['numpy_ratio'] >= TARGETS['a_numpy_ratio'])}")
    if base:
        out["baseline_trials_per_s_all"] = base
        out["baseline_trials_per_s"] = max(base)
        log(f"  baseline  trials/s: {max(base):10.1f}   (best of {len(base)}: {', '.join(f'{x:.1f}' for x in base)})")
    if mine:
        out["initscope_trials_per_s_all"] = mine
        out["initscope_trials_per_s"] = max(mine)
        log(f"  initscope trials/s: {max(mine):10.1f}   (best of {len(mine)}: {', '.join(f'{x:.1f}' for x in mine)})")
    if base and mine:
        ratio = max(mine) / max(base)
        out["ratio"] = ratio
        log(f"  ratio initscope/baseline: {ratio:.2f}x   target >= {TARGETS['a_ratio']:g}: {status(ratio >= TARGETS['a_ratio'])}")
    log("  note: the baseline computes layers 1..10; initscope also layer 0 (the input), 11 spectra per trial")
    if args.side in ("both", "initscope"):
        log_floor(out, kernel_floor(SEED), TARGETS["a_ratio"])
        if mine and args.workers is None:
            _one_worker_share(out, kw, args.repeats)
    res["a"] = out


def _one_worker_share(out: dict, kw: dict, repeats: int) -> None:
    """Where (a)'s time goes: one worker against the one-core floor, and what the second core adds."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        one = max(n_inits(SEED) * kw["trials"] / time_initscope(kw, 1) for _ in range(max(repeats, 3)))
    floor_one = 1.0 / out["kernel_floor"]["per_trial_one_core_s"]
    out.update(one_worker_trials_per_s=one, one_worker_floor_share=one / floor_one,
               two_worker_scaling=out["initscope_trials_per_s"] / one)
    log(f"  initscope, one worker and one BLAS thread: {one:.1f} trials/s = {one / floor_one:.0%} of the one-core "
        f"floor ({floor_one:.1f}); the default workers scale it {out['two_worker_scaling']:.2f}x")


def case_b(args, res: dict) -> None:
    log("\n== (b) large: inits normal,sphere; input 40, width 256, depth 50, samples 1000; spectra only")
    T = args.trials_large
    kw = run_kwargs(LARGE, T, metrics="effective_rank")
    log(f"  initscope: run({', '.join(f'{k}={v!r}' for k, v in kw.items())}), {T} trials per init")
    out: dict = {"initscope_trials_per_init": T}
    if args.side in ("both", "baseline"):
        bt = args.baseline_trials_large
        log(f"  baseline:  {bt} trials per init only (it is slow here); trials/s are compared, not totals")
        b = run_baseline(args.baseline, LARGE, bt)
        out.update(baseline_trials_per_init=bt, baseline_seconds=b["seconds"],
                   baseline_trials_per_s=b["trials_per_s"], baseline_command=b["command"])
        log(f"  baseline  trials/s: {b['trials_per_s']:10.3f}   ({b['trials']} trials in {b['seconds']:.2f} s)")
    if args.side in ("both", "initscope"):
        times = [time_initscope(kw, args.workers) for _ in range(args.repeats_large)]
        best = min(times)
        out.update(initscope_seconds_all=times, initscope_seconds=best,
                   initscope_trials_per_s=n_inits(LARGE) * T / best)
        log(f"  initscope trials/s: {out['initscope_trials_per_s']:10.3f}   ({n_inits(LARGE) * T} trials, best of "
            f"{len(times)}: {', '.join(f'{t:.2f}' for t in times)} s)")
    if args.side == "both" and "initscope_trials_per_s" in out:
        for name, trials in (("peer_torch.py", args.peer_trials_large), ("peer_numpy.py", args.peer_trials_large)):
            p = everyday.run_peer(name, LARGE, trials)
            key = name.split(".")[0]
            ratio = out["initscope_trials_per_s"] / p["trials_per_s"]
            out[f"{key}_trials_per_s"], out[f"{key}_ratio"], out[f"{key}_command"] = p["trials_per_s"], ratio, p["command"]
            target = TARGETS["b_torch_ratio"] if key == "peer_torch" else None
            log(f"  {key} trials/s: {p['trials_per_s']:10.3f}   ({p['trials']} trials in {p['seconds']:.2f} s); "
                f"ratio initscope/{key}: {ratio:.2f}x"
                + (f"   target >= {target:g}: {status(ratio >= target)}" if target else ""))
    if "baseline_trials_per_s" in out and "initscope_trials_per_s" in out:
        ratio = out["initscope_trials_per_s"] / out["baseline_trials_per_s"]
        out["ratio"] = ratio
        log(f"  ratio initscope/baseline (trials/s): {ratio:.2f}x   target >= {TARGETS['b_ratio']:g}: "
            f"{status(ratio >= TARGETS['b_ratio'])}")
    if args.side in ("both", "initscope"):
        log_floor(out, kernel_floor(LARGE, repeats=5), TARGETS["b_ratio"])
    res["b"] = out


def case_c(args, res: dict) -> None:
    from initscope.core.metrics import DEFAULT_METRICS

    log("\n== (c) large config, all default metrics")
    T = args.trials_large
    b_time = res.get("b", {}).get("initscope_seconds")
    if b_time is None:
        log("  (b) was not run: timing its initscope side once for the ratio")
        b_time = time_initscope(run_kwargs(LARGE, T, metrics="effective_rank"), args.workers)
    log("  FLOP model (analytic, from the config):")
    for line in FLOP_FORMULAS:
        log("    " + line)
    mm_before = matmul_rate(args.matmul_repeats)
    out: dict = {"spectra_only_seconds": b_time, "variants": {}}
    timed = {}
    for readout in ("zeros", "init"):
        kw = run_kwargs(LARGE, T, **({} if readout == "zeros" else {"readout": "init"}))
        timed[readout] = (kw, time_initscope(kw, args.workers))
    mm_after = matmul_rate(args.matmul_repeats)
    ref = max(mm_before["reference_gflops"], mm_after["reference_gflops"])
    res["matmul"] = {"before": mm_before, "after": mm_after, "reference_gflops": ref}
    log(f"  numpy float64 matmul {mm_before['shape']}, best of {args.matmul_repeats}, before / after the two runs:")
    log(f"    one call, default BLAS threads:            {mm_before['gflops_default_threads']:7.1f} / "
        f"{mm_after['gflops_default_threads']:7.1f} GFLOP/s")
    log(f"    split over {mm_before['threads_split']} threads, 1 BLAS thread each:  "
        f"{mm_before['gflops_split_1_blas_thread_each']:7.1f} / {mm_after['gflops_split_1_blas_thread_each']:7.1f}"
        " GFLOP/s  (how run() runs its chunks)")
    log(f"    one thread alone:                          {mm_before['gflops_1_thread']:7.1f} / "
        f"{mm_after['gflops_1_thread']:7.1f} GFLOP/s")
    log(f"    reference = best of the first two rows: {ref:.1f} GFLOP/s")
    for readout, (kw, secs) in timed.items():
        fl = flop_count(LARGE, T, tuple(DEFAULT_METRICS), readout)
        gf = fl["total"] / secs / 1e9
        frac = gf / ref
        v = {"seconds": secs, "ratio_to_b": secs / b_time, "flop": fl["total"], "gflops": gf,
             "fraction_of_matmul": frac, "flop_by_component": fl["by_component"]}
        if readout != "zeros":
            v["grad_forward_layer_evals"] = fl["grad_forward_layer_evals"]
            v["grad_forward_passes_exact"] = fl["grad_forward_passes_exact"]
            v["grad_checkpoints_held"] = fl["grad_checkpoints_held"]
        out["variants"][readout] = v
        log(f"\n  readout={readout!r}: run({', '.join(f'{k}={v!r}' for k, v in kw.items())})")
        log(f"    wall {secs:.2f} s; ratio to (b) initscope {b_time:.2f} s: {secs / b_time:.2f}x   "
            f"target <= {TARGETS['c_time_ratio']:g}x: {status(secs / b_time <= TARGETS['c_time_ratio'])}")
        if readout != "zeros":
            log(f"    gradient pass reruns {fl['grad_forward_layer_evals']} layer forwards = "
                f"{fl['grad_forward_passes_exact']:.2f} forward passes, holding at most "
                f"{fl['grad_checkpoints_held']} checkpoint states (binomial checkpointing)")
        log(f"    counted work {fl['total'] / 1e9:.1f} GFLOP:")
        for k, val in sorted(fl["by_component"].items(), key=lambda kv: -kv[1]):
            log(f"      {k:24s} {val / 1e9:9.2f} GFLOP  ({100 * val / fl['total']:5.1f}%)")
        log(f"    achieved {gf:.2f} GFLOP/s = {100 * frac:.1f}% of the matmul rate   "
            f"target >= {100 * TARGETS['c_matmul_fraction']:g}%: {status(frac >= TARGETS['c_matmul_fraction'])}")
        adj = fl["syrk_adjusted_total"] / secs / 1e9
        v["syrk_adjusted_flop"] = fl["syrk_adjusted_total"]
        v["syrk_adjusted_gflops"] = adj
        v["syrk_adjusted_fraction_of_matmul"] = adj / ref
        log(f"    syrk-adjusted: {fl['syrk_adjusted_total'] / 1e9:.1f} GFLOP, {adj:.2f} GFLOP/s = {100 * adj / ref:.1f}%"
            " of the matmul rate (context, not the target's measure)")
    res["c"] = out


_MEM_CHILD = r"""
import json, resource, sys, time, warnings

def vm_hwm_kib():
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None

spec = json.loads(sys.argv[1])
from initscope.study.runner import run
import hashlib
h = hashlib.sha1()
for f in spec["source_files"]:
    h.update(f.rsplit("/", 1)[-1].encode())
    try:
        h.update(open(f, "rb").read())
    except OSError:
        h.update(b"<missing>")
digest = h.hexdigest()[:12]
if spec["tracemalloc"]:
    import tracemalloc
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if spec["tracemalloc"]:
    tracemalloc.start()
t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    run(**spec["kwargs"])
wall = time.perf_counter() - t0
out = {"rss_before_run_kib": rss0, "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
       "vm_hwm_kib": vm_hwm_kib(), "seconds": wall, "digest": digest}
if spec["tracemalloc"]:
    out["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
print(json.dumps(out))
"""


# Linux keeps a process's ru_maxrss across execve, and subprocess starts children with vfork,
# so a child exec'd straight from this (large) process would report *this* process's peak as
# its own. The memory children are therefore started by a small launcher process (its own
# address space is fresh after exec, so theirs start small too). VmHWM (/proc/self/status,
# the peak of the child's own address space) is recorded as a cross-check.
_LAUNCHER = r"""
import json, subprocess, sys
for line in sys.stdin:
    argv = json.loads(line)
    p = subprocess.run(argv, capture_output=True, text=True)
    print(json.dumps({"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr[-4000:]}), flush=True)
"""


class Launcher:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str]) -> dict:
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def mem_child(launcher: Launcher, kwargs: dict, trace: bool) -> dict:
    spec = json.dumps({"kwargs": kwargs, "tracemalloc": trace, "source_files": [str(f) for f in _SOURCE_FILES]})
    p = launcher.run([sys.executable, "-c", _MEM_CHILD, spec])
    if p["rc"] != 0:
        raise RuntimeError(f"memory child failed ({p['rc']}): {p['stderr'].strip()[-2000:]}")
    return json.loads(p["stdout"].strip().splitlines()[-1])


def case_d(args, res: dict) -> None:
    shallow, deep = args.mem_depths
    log(f"\n== (d) peak memory, depth {shallow} vs depth {deep}: init {MEMORY_INIT}, {args.trials_mem} trials, "
        "input 40, width 256, samples 1000; fresh subprocess each")
    log("  ru_maxrss (KiB on Linux) read at the end of the child; 'before run' = after imports;"
        " VmHWM = /proc/self/status peak, a cross-check")
    out: dict = {"init": MEMORY_INIT, "trials": args.trials_mem, "depths": [shallow, deep], "variants": {}}
    variants = {
        "all_metrics_readout_init": {"readout": "init"},
        "spectra_only": {"metrics": "effective_rank"},
    }
    for name, extra in variants.items():
        rows = {}
        for depth in (shallow, deep):
            kw = dict(init=MEMORY_INIT, trials=args.trials_mem, input_dim=40, width=256, depth=depth,
                      samples=1000, **extra)
            r = mem_child(args.launcher, kw, trace=False)
            trace = args.tracemalloc == "all" or (args.tracemalloc == "spectra" and name == "spectra_only")
            if trace:
                r["tracemalloc"] = mem_child(args.launcher, kw, trace=True)
            rows[depth] = r
        a, b = rows[shallow], rows[deep]
        ratio = b["rss_peak_kib"] / a["rss_peak_kib"]
        inc_a = a["rss_peak_kib"] - a["rss_before_run_kib"]
        inc_b = b["rss_peak_kib"] - b["rss_before_run_kib"]
        v = {"runs": {str(k): v for k, v in rows.items()}, "rss_ratio": ratio,
             "rss_increment_ratio": inc_b / inc_a if inc_a > 0 else None}
        log(f"\n  {name}: run(init={MEMORY_INIT!r}, trials={args.trials_mem}, input_dim=40, width=256, depth=D, "
            f"samples=1000{''.join(f', {k}={v!r}' for k, v in extra.items())})")
        for depth, r in rows.items():
            line = (f"    depth {depth:4d}: peak RSS {r['rss_peak_kib'] / 1024:8.1f} MiB (after imports "
                    f"{r['rss_before_run_kib'] / 1024:6.1f} MiB, run adds {(r['rss_peak_kib'] - r['rss_before_run_kib']) / 1024:7.1f} MiB)"
                    f"; VmHWM {r['vm_hwm_kib'] / 1024 if r.get('vm_hwm_kib') else float('nan'):.1f} MiB; {r['seconds']:.1f} s")
            if r.get("digest") != _DIGESTS[0]:
                line += f"; SOURCE CHANGED since start (digest {r.get('digest')})"
            if "tracemalloc" in r:
                line += f"; tracemalloc peak {r['tracemalloc']['tracemalloc_peak_bytes'] / 2**20:.1f} MiB"
            log(line)
        log(f"    peak RSS ratio depth {deep}/{shallow}: {ratio:.3f}   target <= {TARGETS['d_ratio']:g}: "
            f"{status(ratio <= TARGETS['d_ratio'])}"
            + (f"   (ratio of what the run adds above imports: {v['rss_increment_ratio']:.3f})"
               if v["rss_increment_ratio"] else ""))
        if all("tracemalloc" in r for r in rows.values()):
            tm = [rows[x]["tracemalloc"]["tracemalloc_peak_bytes"] for x in (shallow, deep)]
            v["tracemalloc_ratio"] = tm[1] / tm[0]
            log(f"    tracemalloc peak ratio: {tm[1] / tm[0]:.3f}")
        elif name != "spectra_only":
            log("    tracemalloc skipped here (it slows this variant by ~70%; --tracemalloc all to include)")
        out["variants"][name] = v
    res["d"] = out


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--cases", default="s,r,a,b,c,d", help="comma-separated subset of s,r,a,b,c,d")
    p.add_argument("--quick", action="store_true", help="few trials, shallower memory case: a smoke run")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="seed_baseline.py (default: %(default)s)")
    p.add_argument("--side", choices=("both", "initscope", "baseline"), default="both",
                   help="time only one side of (a)/(b) (e.g. under cProfile); (c)/(d) are initscope only")
    p.add_argument("--workers", type=int, default=None, help="run(workers=...) (default: run()'s own default)")
    p.add_argument("--tracemalloc", choices=("spectra", "all", "none"), default="spectra",
                   help="which (d) variants also get a tracemalloc child (default: spectra-only ones)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="wrap everything in threadpool_limits(N) (default: leave BLAS as it is). With "
                        "--workers 1 under cProfile, 1 mirrors what each worker thread of run() sees")
    args = p.parse_args(argv)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(args.blas_threads):
            return _main(args, p)
    return _main(args, p)


def _main(args, p) -> int:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = set(cases) - set("srabcd")
    if bad:
        p.error(f"--cases: unknown {sorted(bad)}")
    args.baseline = args.baseline.resolve()
    if args.side != "initscope" and set(cases) & {"a", "b"} and not args.baseline.is_file():
        p.error(f"--baseline: {args.baseline} not found")
    if args.quick:
        args.trials_a, args.repeats, args.trials_large, args.repeats_large = 20, 2, 2, 1
        args.baseline_trials_large, args.trials_mem, args.mem_depths, args.matmul_repeats = 1, 2, (10, 40), 3
        args.peer_trials_large, args.everyday_repeats = 1, 2
    else:
        args.peer_trials_large, args.everyday_repeats = 2, 5
        args.trials_a, args.repeats, args.trials_large, args.repeats_large = 100, 3, 10, 2
        args.baseline_trials_large, args.trials_mem, args.mem_depths, args.matmul_repeats = 2, 10, (10, 200), 7

    started = time.time()
    args.launcher = Launcher() if "d" in cases and args.side != "baseline" else None
    log(f"initscope core benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  cases={','.join(cases)}"
        f"{'  (QUICK: fewer trials, not the reference numbers)' if args.quick else ''}")
    log(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    log(f"baseline script: {args.baseline}")
    log(f"run() workers: {args.workers if args.workers is not None else 'default (os.cpu_count(), capped at trials)'}"
        + (f"; BLAS limited to {args.blas_threads} thread(s) by --blas-threads" if args.blas_threads else ""))
    env = environment()
    print_environment(env)
    res: dict = {"environment": env, "quick": args.quick, "targets": TARGETS, "cases": cases, "errors": {}}

    if args.side != "baseline" and set(cases) & {"a", "b", "c"}:
        time_initscope(run_kwargs(SEED, 2, metrics="effective_rank"), args.workers)  # warm-up: imports, caches

    busy: list[str] = []
    def case_s(args, res):
        res["s"] = everyday.case_startup(args.everyday_repeats)

    def case_r(args, res):
        res["r"] = everyday.case_report(args.everyday_repeats)

    for case, fn in (("s", case_s), ("r", case_r), ("a", case_a), ("b", case_b), ("c", case_c), ("d", case_d)):
        if case not in cases:
            continue
        if case in "cdsr" and args.side == "baseline":
            continue
        load = os.getloadavg()
        res.setdefault("loadavg_before_case", {})[case] = load
        log(f"\n[load average before ({case}): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores]")
        others = other_runnable()
        res.setdefault("other_runnable_before_case", {})[case] = others
        if others is not None:
            log(f"[other runnable threads right now (mean of 20 samples over 1 s, from /proc/loadavg): {others:.2f}]")
            if others >= 1.0:
                busy.append(case)
                log("[BUSY: other processes hold a core or more; timings are unreliable, and the baseline's"
                    " multi-threaded BLAS/OpenMP degrades most under oversubscription]")
        try:
            fn(args, res)
        except Exception as exc:  # noqa: BLE001 - report and go on: one broken case should not hide the others
            res["errors"][case] = f"{type(exc).__name__}: {exc}"
            log(f"  case ({case}) FAILED: {type(exc).__name__}: {exc}")

    if args.launcher is not None:
        args.launcher.close()
    log(f"\n== summary  (load average at the end: {os.getloadavg()})")
    rows = []
    for name, v in res.get("s", {}).get("probes", {}).items():
        rows.append((f"(s) {name}", f"{v['best_s']:.3f} s", f"< {everyday.TARGETS['startup_s']:g} s",
                     v["best_s"] < everyday.TARGETS["startup_s"]))
    for key, label in (("report_default_s", "(r) report build, default run"),
                       ("report_large_s", "(r) report build, 5 inits x 50 x 1000"),
                       ("run_default_s", "(r) initscope run, whole process")):
        if key in res.get("r", {}):
            v = res["r"][key]["best_s"]
            rows.append((label, f"{v:.3f} s", f"< {everyday.TARGETS[key]:g} s", v < everyday.TARGETS[key]))
    if "numpy_ratio" in res.get("a", {}):
        rows.append(("(a) seed scale vs peer_numpy", f"{res['a']['numpy_ratio']:.2f}x",
                     f">= {TARGETS['a_numpy_ratio']:g}x", res["a"]["numpy_ratio"] >= TARGETS["a_numpy_ratio"]))
    if "peer_torch_ratio" in res.get("b", {}):
        rows.append(("(b) large vs peer_torch", f"{res['b']['peer_torch_ratio']:.2f}x",
                     f">= {TARGETS['b_torch_ratio']:g}x", res["b"]["peer_torch_ratio"] >= TARGETS["b_torch_ratio"]))
        rows.append(("(b) large vs peer_numpy", f"{res['b']['peer_numpy_ratio']:.2f}x", "(context)", True))
    if "ratio" in res.get("a", {}):
        rows.append(("(a) seed-scale speed-up", f"{res['a']['ratio']:.2f}x", f">= {TARGETS['a_ratio']:g}x",
                     res["a"]["ratio"] >= TARGETS["a_ratio"]))
    if "ratio" in res.get("b", {}):
        rows.append(("(b) large spectra speed-up", f"{res['b']['ratio']:.2f}x", f">= {TARGETS['b_ratio']:g}x",
                     res["b"]["ratio"] >= TARGETS["b_ratio"]))
    for ro, v in res.get("c", {}).get("variants", {}).items():
        rows.append((f"(c) all metrics, readout={ro}: time / (b)", f"{v['ratio_to_b']:.2f}x",
                     f"<= {TARGETS['c_time_ratio']:g}x", v["ratio_to_b"] <= TARGETS["c_time_ratio"]))
        rows.append((f"(c) all metrics, readout={ro}: GFLOP/s / matmul", f"{100 * v['fraction_of_matmul']:.1f}%",
                     f">= {100 * TARGETS['c_matmul_fraction']:g}%",
                     v["fraction_of_matmul"] >= TARGETS["c_matmul_fraction"]))
    for name, v in res.get("d", {}).get("variants", {}).items():
        rows.append((f"(d) peak RSS depth ratio, {name}", f"{v['rss_ratio']:.3f}", f"<= {TARGETS['d_ratio']:g}",
                     v["rss_ratio"] <= TARGETS["d_ratio"]))
    for label, value, target, ok in rows:
        log(f"  {label:48s} {value:>9s}  target {target:8s} {status(ok)}")
    for case, err in res["errors"].items():
        log(f"  ({case}) FAILED: {err}")
    res["busy_cases"] = busy
    if busy:
        log(f"  WARNING: other processes held a core or more before case(s) {','.join(busy)}: rerun when the machine is idle")
    end_state = source_state()
    res["source_at_end"] = end_state
    if _DIGESTS[-1] != _DIGESTS[0]:
        log(f"  WARNING: the source changed during the run ({env['git']} -> {end_state}); "
            "in-process cases used the first, later subprocesses may have used the second")
    elif end_state != env["git"]:
        log(f"  note: HEAD moved during the run ({env['git']} -> {end_state}), the run's modules did not")
    res["summary"] = [{"what": r[0], "value": r[1], "target": r[2], "met": r[3]} for r in rows]
    res["elapsed_s"] = time.time() - started
    log(f"  total benchmark time {res['elapsed_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
        log(f"  wrote {args.json}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
