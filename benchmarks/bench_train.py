"""Time the study's task training against the PyTorch peer on the same work, in the same invocation.

    python benchmarks/bench_train.py                          # both cases, the issue's sizes (slow: see below)
    python benchmarks/bench_train.py --cases mlp --steps 200
    python benchmarks/bench_train.py --cases large --steps 5 --json /tmp/train.json

Cases (issue 22):
- mlp: the post's MLP (ReLU, input 3, width 40, depth 10, 100 ball samples, cos-norm target, linspace
  shifts, zero readout), 100 trials, SGD lr 0.01, init sphere.
- large: width 256, depth 50, 1000 samples, 8 trials, Adam lr 1e-3, init kaiming-normal.

For each case: (1) the peer `../shared/bench/peer_train_torch.py` (batched torch.bmm + autograd +
torch.optim, float64) in a subprocess, its own steps/s; (2) initscope's training alone
(`study.training.train_and_measure(..., measure=False)`: the study's data, networks, held-out loss at
every step, no metric measured); (3) `initscope.run` with the same training and every default metric
measured at 10 log-spaced steps (0, 1, 2, 5, 10, 20, 50, 100, 150 and the last, scaled to --steps), the
step-0 measuring pass included. Targets: (2) >= 1.5x the peer's steps/s; (3) <= 1.5x (2)'s time.
On a shared machine every number moves with others' load: the load average is printed per case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEER = HERE.parent.parent / "shared" / "bench" / "peer_train_torch.py"
CASES = {
    "mlp": dict(config=dict(init="sphere", width=40, depth=10, samples=100, trials=100, optimizer="sgd", lr=0.01),
                peer=["--trials", "100", "--init", "sphere", "--optimizer", "sgd", "--lr", "0.01"]),
    "large": dict(config=dict(init="kaiming-normal", width=256, depth=50, samples=1000, trials=8, optimizer="adam",
                              lr=1e-3),
                  peer=["--trials", "8", "--width", "256", "--depth", "50", "--samples", "1000", "--init",
                        "kaiming-normal", "--optimizer", "adam", "--lr", "1e-3"]),
}
LOG_STEPS = (1, 2, 5, 10, 20, 50, 100, 150)  # of 200 steps; scaled to --steps


def measured_steps(steps: int) -> list[int]:
    """Ten log-spaced steps from 0 to `steps` (LOG_STEPS scaled, duplicates merged)."""
    return sorted({0, steps, *(max(1, round(s * steps / 200)) for s in LOG_STEPS if s * steps / 200 <= steps)})


def peer(args: list[str], steps: int, peer_path: Path) -> dict:
    out = subprocess.run([sys.executable, str(peer_path), *args, "--steps", str(steps)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_alone(config) -> dict:
    from initscope.study.measure import prepare
    from initscope.study.model import init_gain
    from initscope.study.training import train_and_measure

    from initscope.study.parallel import parallel_map, worker_count

    init = config.init[0]
    parts = [prepare(config, None, list(range(config.trials)))]
    start = time.perf_counter()
    # As `run` trains one initializer: parallel_map over one item, so BLAS keeps its threads.
    [(_, history)] = parallel_map(lambda i: train_and_measure(config, i, init_gain(config, i), parts,
                                                              [np.arange(config.trials)], measure=False),
                                  [init], min(worker_count(None, config.trials), len(config.init)))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps_per_s": config.steps / seconds,
            "loss_first": float(np.median(history.loss[0])), "loss_last": float(np.median(history.loss[-1]))}


def with_measuring(config) -> dict:
    import initscope

    start = time.perf_counter()
    initscope.run(config)  # default workers, as a user runs it
    return {"seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="mlp,large")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--peer", type=Path, default=PEER)
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    from initscope.study.config import make_config

    results = {}
    for name in a.cases.split(","):
        case = CASES[name]
        config = make_config(**case["config"], steps=a.steps, measure_at=measured_steps(a.steps))
        print(f"[{name}] load average {os.getloadavg()[0]:.1f}; measure_at {list(config.measure_at)}", flush=True)
        theirs = peer(case["peer"], a.steps, a.peer)
        print(f"  peer (torch):        {theirs['steps_per_s']:.3g} steps/s ({theirs['seconds']:.1f} s), median loss "
              f"{theirs['loss_first']:.3g} -> {theirs['loss_last']:.3g}", flush=True)
        ours = training_alone(config)
        print(f"  initscope training:  {ours['steps_per_s']:.3g} steps/s ({ours['seconds']:.1f} s), median loss "
              f"{ours['loss_first']:.3g} -> {ours['loss_last']:.3g}; {ours['steps_per_s'] / theirs['steps_per_s']:.2f}x "
              "the peer (target >= 1.5x)", flush=True)
        full = with_measuring(config)
        extra = full["seconds"] / ours["seconds"] - 1
        print(f"  + every default metric at {len(config.measure_at)} steps: {full['seconds']:.1f} s, "
              f"+{extra:.0%} over training alone (target <= +50%)", flush=True)
        results[name] = {"peer": theirs, "training": ours, "measured": full, "ratio": ours["steps_per_s"] /
                         theirs["steps_per_s"], "measuring_overhead": extra, "steps": a.steps}
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
