"""Hash the tables that `initscope run` and `initscope inspect` write, for refactors that must change no number.

    python benchmarks/golden_outputs.py --save golden.json     # before the change
    python benchmarks/golden_outputs.py --check golden.json    # after: exit 1 naming every table that moved

Eight configurations: every initializer kind (i.i.d., sphere, orthogonal,
ZerO, looks-linear, LSUV, well-spaced), layer and batch norm, a residual
branch, float32, a trained readout with gradients, the Jacobian metrics, and
two torch models (a GPT-2-shaped transformer over token ids and a small
ResNet). Each run writes into a temporary folder through the CLI, as a user's
run does; metrics.csv, spectra.csv, flags.csv and layers.csv are hashed
byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TABLES = ("metrics.csv", "spectra.csv", "flags.csv", "layers.csv")

RUNS = {
    "seed": ["run", "--trials", "4"],
    "iid-norms": ["run", "--init", "kaiming-normal,xavier-uniform,torch-default,uniform", "--norm", "layer",
                  "--activation", "tanh", "--depth", "6", "--trials", "3", "--input-dim", "8"],
    "sphere-orth-residual": ["run", "--init", "sphere,sphere-rows,orthogonal,zero", "--residual", "0.5",
                             "--shift", "zeros", "--depth", "8", "--trials", "3", "--input-dim", "40"],
    "data-driven-batchnorm": ["run", "--init", "looks-linear,lsuv,well-spaced", "--norm", "batch", "--depth", "6",
                              "--trials", "2", "--shift", "zeros"],
    "float32-readout": ["run", "--init", "kaiming-normal,normal", "--dtype", "float32", "--readout", "init",
                        "--depth", "12", "--trials", "3", "--activation", "gelu"],
    "jacobian-theory": ["run", "--init", "orthogonal,kaiming-normal", "--activation", "tanh", "--shift", "normal",
                        "--shift-scale", "0.1", "--input-dim", "16", "--width", "32", "--depth", "8",
                        "--samples", "24", "--trials", "2",
                        "--metrics", "rms,pre_q,pre_cosine,jacobian_rank,jacobian_sq_mean,jacobian_log_spread"],
}
INSPECTS = {
    "torch-gpt2": ["inspect", "{models}:gpt2", "--input", "{ids}", "--seed", "0"],
    "torch-resnet": ["inspect", "{models}:tiny_resnet", "--input-shape", "4,3,32,32", "--seed", "0"],
}
# The test models draw their weights from torch's global generator, which torch seeds at random per process:
# these factories seed it first, so that two runs build the same weights.
SEEDED_MODELS = """
import sys
import torch
sys.path.insert(0, {tests!r})
import torch_models


def gpt2():
    torch.manual_seed(0)
    return torch_models.gpt2()


def tiny_resnet():
    torch.manual_seed(0)
    return torch_models.tiny_resnet()
"""


def _hashes(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in TABLES if (folder / name).exists()}


def collect(only: list[str] | None = None, src: Path = ROOT / "src") -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    env = dict(os.environ, PYTHONPATH=str(src), INITSCOPE_NO_PROGRESS="1")
    for name, args in {**RUNS, **INSPECTS}.items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "out"
            ids = Path(tmp) / "ids.npy"  # token ids of 4 sequences of 16 positions, fixed
            np.save(ids, np.random.default_rng(0).integers(0, 50, size=(4, 16)))
            models = Path(tmp) / "seeded_models.py"
            models.write_text(SEEDED_MODELS.format(tests=str(ROOT / "tests")))
            args = [a.format(ids=ids, models=models) for a in args]
            cmd = [sys.executable, "-c", "import sys; from initscope.cli import main; sys.exit(main(sys.argv[1:]))",
                   *args, "--out", str(target), "--quiet", "--no-report"]
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode not in (0, 3):
                raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
            out[name] = _hashes(target)
            print(f"{name}: {', '.join(out[name])}", file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--check", type=Path)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the initscope sources to run (default: this tree's)")
    args = parser.parse_args()
    found = collect(args.only, args.src.resolve())
    if args.save:
        args.save.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        return 0
    expected = json.loads(args.check.read_text())
    moved = [f"{run}/{table}" for run, tables in expected.items() if run in found
             for table, digest in tables.items() if found[run].get(table) != digest]
    print("identical" if not moved else "changed: " + ", ".join(moved))
    return 1 if moved else 0


if __name__ == "__main__":
    raise SystemExit(main())
