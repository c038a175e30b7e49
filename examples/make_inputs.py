"""Write the small inputs the README's `initscope inspect` examples read (seeded: the same bytes every time).

    python examples/make_inputs.py        # x.npy (64, 32) float32, labels.npy (64,) int64, ids.npy (16, 32) int64
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(2024)
    np.save(HERE / "x.npy", rng.standard_normal((64, 32)).astype(np.float32))
    np.save(HERE / "labels.npy", rng.integers(0, 10, 64).astype(np.int64))
    np.save(HERE / "ids.npy", rng.integers(0, 100, (16, 32)).astype(np.int64))


if __name__ == "__main__":
    main()
