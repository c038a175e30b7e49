"""The trainability diagram (Schoenholz et al. 2017): train random networks over a σ_w² × depth grid.

Each cell is `networks` networks of `width` units and `depth` layers with the
mean-field model's initialization (kaiming-normal weights of gain σ_w, so
fan_in·E[w²] = σ_w², and normal shifts of std σ_b), trained on a real task
(`data`'s labels: classification; a regression target otherwise) with the
study's own training (`study.training`, `core.training`). A cell's row per
network: the loss, held-out loss and (classification) accuracies at the last
step. Theory says networks train while depth ≲ 6ξ_c (ξ_c from
`core.phase`), the correlation depth scale at (σ_w², σ_b²).

Cells are independent tasks: they run on the study's executors (processes, or
a Dask cluster), and each finished cell is written to a SQLite store at once,
so an interrupted grid resumes where it stopped. Memory and time are planned
before the first cell runs.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from initscope.core import phase as core_phase
from initscope.core.network import Architecture
from initscope.core.optimizers import make as make_optimizer
from initscope.core.training import train
from initscope.study.config import Config, load_table, make_config
from initscope.study.measure import prepare, simulate
from initscope.study.model import init_key
from initscope.study.predictors import network_features, predictor_table
from initscope.study.training import TASK_KEY, initial_networks, task_data

__all__ = ["TrainGrid", "TRAINED_COLUMNS", "cell_config", "train_cell", "plan_grid", "GridPlan", "run_grid",
           "CellStore", "theory_lines", "grid_predictors", "FEATURE_COLUMNS", "is_cell_store"]

TRAINED_COLUMNS = ("sigma_w2", "sigma_b2", "depth", "network", "loss", "test_loss", "accuracy", "test_accuracy")
FEATURE_COLUMNS = ("sigma_w2", "sigma_b2", "depth", "network", "feature", "value")
# Per cell and network: forward states and pre-activations of every layer kept for the backward pass,
# the parameters, their gradient and two optimiser moments (Adam), float64.
_BYTES = 8


@dataclass(frozen=True)
class TrainGrid:
    """What `initscope phase --train` trains: the grid and the training, saved as phase.toml."""

    sigma_w2: tuple[float, ...]
    depth: tuple[int, ...]
    sigma_b2: float = 0.05
    activation: str = "tanh"
    width: int = 100
    networks: int = 4
    data: str = "digits"
    samples: int | None = None  # None: all of the dataset's rows
    steps: int = 300
    optimizer: str = "sgd"
    lr: float = 0.01
    batch_size: int = 128
    seed: int = 0


def cell_config(grid: TrainGrid, sigma_w2: float, depth: int) -> Config:
    """The run config of one cell: the mean-field initialization at (σ_w², σ_b²), the grid's task and training."""
    fields = dict(init=["kaiming-normal"], gain=math.sqrt(sigma_w2), shift="normal",
                  shift_scale=math.sqrt(grid.sigma_b2), activation=grid.activation, width=grid.width, depth=depth,
                  data=grid.data, target="dataset", trials=grid.networks, seed=grid.seed, steps=grid.steps,
                  optimizer=grid.optimizer, lr=grid.lr, batch_size=grid.batch_size)
    if grid.samples is not None:
        fields["samples"] = grid.samples
    return make_config(**fields)


def train_cell(grid: TrainGrid, sigma_w2: float, depth: int) -> tuple[list[tuple], list[tuple]]:
    """Train one cell's networks: rows (TRAINED_COLUMNS) at the last step, one per network, and their step-0
    features (FEATURE_COLUMNS rows, `study.predictors.network_features` of every default metric measured by
    the study's measuring pass). Top level: it runs in worker processes."""
    config = cell_config(grid, sigma_w2, depth)
    trials = list(range(config.trials))
    table = None
    if config.data_is_fixed:
        table = load_table(config)
    part = prepare(config, table, trials)
    X, y = part.X, part.y
    task = task_data(config, X, y, trials)
    arch = Architecture(config.activation, config.norm, config.residual)
    params, readout = initial_networks(config, "kaiming-normal", config.gain, X, trials, task.outputs)
    rng = np.random.default_rng([config.seed, init_key("kaiming-normal"), TASK_KEY])
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one cell per core: BLAS threads would only fight the other cells
        _, _, history = train(task.X, task.target, params, readout, arch, loss=task.loss,
                              optimizer=make_optimizer(config.optimizer, config.lr), steps=config.steps,
                              batch_size=config.batch_size, rng=rng, test=(task.X_test, task.target_test),
                              log_at=[config.steps])
    with threadpool_limits(1):
        chunk = simulate(config, "kaiming-normal", config.gain, part)
    features = network_features(chunk.values, chunk.overflow_layer, chunk.collapsed)
    feature_rows = [(float(sigma_w2), float(grid.sigma_b2), int(depth), t, name, float(v[t]))
                    for name, v in features.items() for t in trials]
    nan = np.full(len(trials), math.nan)
    acc = history.accuracy[-1] if history.accuracy is not None else nan
    test_acc = history.test_accuracy[-1] if history.test_accuracy is not None else nan
    return [(float(sigma_w2), float(grid.sigma_b2), int(depth), t, float(history.loss[-1, t]),
             float(history.test_loss[-1, t]), float(acc[t]), float(test_acc[t])) for t in trials], feature_rows


@dataclass(frozen=True)
class GridPlan:
    """The grid's cost before it runs: cells, the largest cell's peak bytes and work in FLOPs."""

    cells: int
    peak_bytes: int
    flops: float

    def seconds(self, flops_per_s: float) -> float:
        return self.flops / flops_per_s


def plan_grid(grid: TrainGrid, samples: int, input_dim: int, outputs: int) -> GridPlan:
    """Peak memory of the deepest cell and the grid's total training FLOPs (forward + backward ≈ 3 forward)."""
    w, N = grid.width, grid.networks
    batch = grid.batch_size if 0 < grid.batch_size < samples else samples
    deepest = max(grid.depth)
    states = 2 * N * batch * w * deepest + 2 * N * samples * w  # kept for the backward pass; a full evaluation
    params = N * (input_dim * w + deepest * w * w + w * outputs)
    peak = _BYTES * (states + 4 * params)
    flops = 0.0
    for depth in grid.depth:
        per_step = 2.0 * N * batch * (input_dim * w + (depth - 1) * w * w + w * outputs)
        evals = 2.0 * N * samples * (input_dim * w + (depth - 1) * w * w)  # the last step's full evaluation
        flops += len(grid.sigma_w2) * (3 * per_step * grid.steps + evals)
    return GridPlan(len(grid.sigma_w2) * len(grid.depth), int(peak), flops)


def is_cell_store(path: str | Path) -> bool:
    """True when `path` is a SQLite file holding `phase --train`'s cells."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                return False
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except (OSError, sqlite3.Error):
        return False
    return {"cells", "features"} <= names


class CellStore:
    """The finished cells of a grid in a SQLite file: rows are written per cell, in one transaction, as each
    cell finishes, so a grid that was interrupted resumes with the cells still missing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.con = sqlite3.connect(self.path)
        cols = ", ".join(f"{c} {'INTEGER' if c in ('depth', 'network') else 'REAL'}" for c in TRAINED_COLUMNS)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS cells (grid TEXT NOT NULL, {cols})")
        self.con.execute("CREATE TABLE IF NOT EXISTS features (grid TEXT NOT NULL, sigma_w2 REAL, sigma_b2 REAL, "
                         "depth INTEGER, network INTEGER, feature TEXT, value REAL)")
        self.con.commit()

    def done(self, key: str) -> set[tuple[float, int]]:
        rows = self.con.execute("SELECT DISTINCT sigma_w2, depth FROM cells WHERE grid = ?", (key,)).fetchall()
        return {(float(s), int(d)) for s, d in rows}

    def add(self, key: str, rows: list[tuple], features: list[tuple]) -> None:
        with self.con:  # one transaction: a cell is stored whole or not at all
            self.con.executemany(f"INSERT INTO cells VALUES (?, {', '.join('?' * len(TRAINED_COLUMNS))})",
                                 [(key, *r) for r in rows])
            self.con.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?)", [(key, *r) for r in features])

    def keys(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT grid FROM cells ORDER BY grid")]

    def features(self, key: str) -> pd.DataFrame:
        rows = self.con.execute(f"SELECT {', '.join(FEATURE_COLUMNS)} FROM features WHERE grid = ? "
                                "ORDER BY sigma_w2, depth, network", (key,)).fetchall()
        return pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))

    def table(self, key: str) -> pd.DataFrame:
        rows = self.con.execute(f"SELECT {', '.join(TRAINED_COLUMNS)} FROM cells WHERE grid = ? "
                                "ORDER BY sigma_w2, depth, network", (key,)).fetchall()
        return pd.DataFrame(rows, columns=list(TRAINED_COLUMNS))

    def close(self) -> None:
        self.con.close()


def grid_key(grid: TrainGrid) -> str:
    """The identity of a grid's training (everything but the grid axes): cells of the same key are reused."""
    fields = {k: v for k, v in asdict(grid).items() if k not in ("sigma_w2", "depth")}
    return repr(sorted(fields.items()))


def run_grid(grid: TrainGrid, executor, slots: int, *, store: CellStore | None = None,
             progress: Callable[[int, int], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every cell not yet in `store` on `executor` (`study.executors.open_executor`), at most `slots`
    at a time; return phase_trained's table (TRAINED_COLUMNS) and the step-0 features (FEATURE_COLUMNS), by
    (sigma_w2, depth, network)."""
    import concurrent.futures as cf

    key = grid_key(grid)
    cells = [(float(s), int(d)) for s in grid.sigma_w2 for d in grid.depth]
    done = store.done(key) if store is not None else set()
    todo = [c for c in cells if c not in done]
    rows: list[tuple] = []
    feature_rows: list[tuple] = []
    finished = len(cells) - len(todo)
    if progress is not None:
        progress(finished, len(cells))
    pending: set = set()
    queue = iter(todo)

    def submit(cell) -> None:
        pending.add(executor.submit(train_cell, grid, *cell))

    for cell in _take(queue, max(1, slots)):
        submit(cell)
    while pending:
        complete, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in complete:
            pending.discard(future)
            cell_rows, cell_features = future.result()
            if store is not None:
                store.add(key, cell_rows, cell_features)
            rows += cell_rows
            feature_rows += cell_features
            finished += 1
            if progress is not None:
                progress(finished, len(cells))
            for cell in _take(queue, 1):
                submit(cell)
    table = store.table(key) if store is not None else pd.DataFrame(rows, columns=list(TRAINED_COLUMNS))
    features = (store.features(key) if store is not None
                else pd.DataFrame(feature_rows, columns=list(FEATURE_COLUMNS)))
    wanted = set(cells)

    def ours(t: pd.DataFrame) -> pd.DataFrame:
        keep = [(s, d) in wanted for s, d in zip(t["sigma_w2"], t["depth"])]
        return t[keep].sort_values(["sigma_w2", "depth", "network"], kind="stable").reset_index(drop=True)

    return ours(table), ours(features)


def grid_predictors(trained: pd.DataFrame, features: pd.DataFrame, *, threshold: float | None = None,
                    boot: int = 200, seed: int = 0) -> tuple[pd.DataFrame, float]:
    """`study.predictors.predictor_table` over a trained grid's networks: each step-0 feature against the final
    loss; 'trained' is a final loss below `threshold` (default: the median of the finite final losses, so that
    the grid splits in halves). Returns (table, the threshold used)."""
    wide = features.pivot_table(index=["sigma_w2", "depth", "network"], columns="feature", values="value",
                                aggfunc="first")
    outcome = trained.set_index(["sigma_w2", "depth", "network"]).loc[wide.index]
    loss = outcome["loss"].to_numpy(dtype=np.float64)
    if threshold is None:
        finite = loss[np.isfinite(loss)]
        threshold = float(np.median(finite)) if len(finite) else math.inf
    table = predictor_table(wide.reset_index(drop=True), loss, threshold=threshold, boot=boot,
                            rng=np.random.default_rng(seed))
    return table, threshold


def _take(it: Iterable, n: int) -> list:
    out = []
    for item in it:
        out.append(item)
        if len(out) == n:
            break
    return out


def theory_lines(grid: TrainGrid, sigma_w2: Iterable[float] | None = None) -> pd.DataFrame:
    """ξ_c and 6ξ_c of the theory at σ_b² along σ_w² (the trainable region's edge is near 6ξ_c)."""
    values = list(grid.sigma_w2 if sigma_w2 is None else sigma_w2)
    xi = [core_phase.phase_point(grid.activation, s, grid.sigma_b2)["xi_c"] for s in values]
    return pd.DataFrame({"sigma_w2": values, "xi_c": xi, "six_xi_c": [6 * x for x in xi]})
