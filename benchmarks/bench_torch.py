#!/usr/bin/env python
"""Benchmark `initscope.torch.inspect` on real model layouts, against the model's own training step.

Cases (select with --cases, default all):
  resnet18  ResNet-18 layout (tests/torch_models.py), 32×3×224², all default metrics.
            Target: inspect within 4× one forward+backward pass of the same model on the same batch,
            peak RSS under 2 GB.
  resnet50  The same with ResNet-50's layout; peak RSS under 3 GB.
  bert      A 12-layer BERT-base-shaped encoder (hidden 256, 4 heads, intermediate 1024) on 32 sequences
            of 128 token ids, every leaf module recorded (139 states), all default metrics. Target: under 15 s.

Each side runs in its own fresh Python process (started from a small launcher, since Linux carries
ru_maxrss across exec), so that the peak RSS of each is its own: first one forward+backward of the
model on the batch with the squared output norm as the loss (inspect's default loss), then inspect,
then the forward+backward again; the ratio is inspect's time over the mean of the two passes.
Both sides build the same model from the same seed, with torch's default thread count. The
machine's load average and this process's view of other runnable threads are printed before each
side: on a shared machine the ratio is the number to read, since both sides see similar load.
Each side's CPU time (user + system, all threads) is printed too: under load it moves less than
wall time (though a spinning thread pool adds to it).

    python benchmarks/bench_torch.py                     # every case (minutes)
    python benchmarks/bench_torch.py --cases bert --json /tmp/bench_torch.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
TARGETS = {"resnet18": {"ratio": 4.0, "rss_gb": 2.0}, "resnet50": {"ratio": 4.0, "rss_gb": 3.0},
           "bert": {"seconds": 15.0}}

CHILD = r"""
import json, resource, sys, time, warnings
sys.path.insert(0, {tests!r})
import torch
import torch_models as tm
case, side = {case!r}, {side!r}
torch.manual_seed(0)
if case == "bert":
    model = tm.bert(depth=12, dim=256, heads=4)
    x = torch.randint(0, tm.VOCAB, (32, 128), generator=torch.Generator().manual_seed(1))
else:
    model = getattr(tm, case)()
    x = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(1))
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0, c0 = time.perf_counter(), cpu()
if side == "step":
    out = model(x)
    if not isinstance(out, torch.Tensor):
        out = out["last_hidden_state"]
    (out * out).sum().backward()
    extra = {{}}
else:
    from initscope.torch import inspect
    kw = {{"loss": lambda out, _: out["last_hidden_state"].square().sum()}} if case == "bert" else {{}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = inspect(model, x, **kw)
    extra = {{"states": int(len(result.layers)), "notes": result.notes[:6],
              "subsampled_layers": int(result.metrics.loc[result.metrics["metric"] == "effective_rank", "sample_size"]
                                       .notna().sum())}}
seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(seconds=seconds, cpu_seconds=cpu_seconds, peak_rss_bytes=rss, threads=torch.get_num_threads(),
                      **extra)))
"""

LAUNCHER = r"""
import subprocess, sys
sys.exit(subprocess.run([sys.executable, "-c", sys.argv[1]]).returncode)
"""


def log(*parts) -> None:
    print(*parts, flush=True)


def load() -> str:
    one, five, _ = os.getloadavg()
    runnable = 0
    try:
        with open("/proc/loadavg") as f:
            runnable = int(f.read().split()[3].split("/")[0]) - 1
    except OSError:
        pass
    return f"load {one:.1f} (1 min) {five:.1f} (5 min), other runnable threads now: {runnable}, cores: {os.cpu_count()}"


def side(case: str, which: str) -> dict:
    code = CHILD.format(tests=str(REPO / "tests"), case=case, side=which)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = load()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{case}/{which} failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    got["load_before"], got["load_after"] = before, load()
    return got


def run_case(case: str) -> dict:
    log(f"== {case}")
    steps = []

    def step_side():
        step = side(case, "step")
        log(f"  forward+backward: {step['seconds']:.1f} s (CPU {step['cpu_seconds']:.1f} s), "
            f"peak RSS {step['peak_rss_bytes'] / 2**30:.2f} GiB ({step['load_before']})")
        steps.append(step)

    step_side()
    got = side(case, "inspect")
    log(f"  inspect:          {got['seconds']:.1f} s (CPU {got['cpu_seconds']:.1f} s), "
        f"peak RSS {got['peak_rss_bytes'] / 2**30:.2f} GiB, "
        f"{got['states']} states, {got['subsampled_layers']} with subsampled spectra ({got['load_before']}; "
        f"after: {got['load_after']})")
    step_side()  # again after, so that a load change during the run shows, and the ratio uses both
    step_seconds = sum(s["seconds"] for s in steps) / len(steps)
    ratio = got["seconds"] / step_seconds
    target = TARGETS[case]
    verdict = [f"CPU-time ratio {got['cpu_seconds'] / (sum(s['cpu_seconds'] for s in steps) / len(steps)):.2f}×"]
    if "ratio" in target:
        verdict.insert(0, f"ratio {ratio:.2f}× to the mean of the two passes (target ≤ {target['ratio']}×: "
                          f"{'met' if ratio <= target['ratio'] else 'MISSED'})")
        rss = got["peak_rss_bytes"] / 1e9
        verdict.append(f"peak RSS {rss:.2f} GB (target < {target['rss_gb']} GB: "
                       f"{'met' if rss < target['rss_gb'] else 'MISSED'})")
    if "seconds" in target:
        verdict.insert(0, f"{got['seconds']:.1f} s (target < {target['seconds']} s: "
                          f"{'met' if got['seconds'] < target['seconds'] else 'MISSED'}); ratio {ratio:.2f}×")
    log("  " + "; ".join(verdict))
    return {"case": case, "steps": steps, "inspect": got, "ratio": ratio}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="resnet18,resnet50,bert")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load()}; {time.strftime('%Y-%m-%d %H:%M:%S')}")
    results = [run_case(case.strip()) for case in args.cases.split(",") if case.strip()]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
