"""The results store: one SQLite file that loses nothing and can be shared.

Tables (the views are what readers query):

- `trials`: one row per configuration-trial: `trial_id`, `config_id` (see
  `sweep.config_id`), `trial`, every config field but `trials` as its own
  column, `status` ('ok' or 'failed'), `error`, `seconds` (the batch's wall
  time over its trials), `finished_at` (UTC), `worker`, `config_json`.
  Unique on (config_id, trial, seed).
- `metric_values` (trial_id, layer, metric_id, value) with `metric_names`,
  `singular_values` (trial_id, layer, k, singular_value), `flags`
  (trial_id, layer, flag).
- views `metrics` and `spectra`: the tidy tables of `initscope run`
  (init, trial, layer, metric, value, then the config columns, config_id).

Writes: a configuration's finished trials go in one `BEGIN IMMEDIATE`
transaction, trial rows and their values together, so a kill at any moment
leaves whole configurations or nothing of them. The file is in WAL mode with
synchronous=NORMAL (no commit is lost when a process dies; a power cut may
drop the last few, which a resumed sweep recomputes) and a busy timeout, so
several sweeps may write one store at once; trials already stored 'ok' are never written twice. NaN metric values
are stored as NULL and read back as NaN.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from initscope.study.batches import ConfigBatch
from initscope.study.config import DEPRECATED_FIELDS, Config, make_config
from initscope.study.sql import BUSY_TIMEOUT_S, enable_wal, insert_rows
from initscope.study.sweep import config_record

__all__ = [
    "Store",
    "StoreSummary",
    "is_store",
    "store_state",
    "SCHEMA_VERSION",
    "CONFIG_COLUMNS",
]

SCHEMA_VERSION = "1"
_SQLITE_MAGIC = b"SQLite format 3\x00"
CONFIG_COLUMNS = (
    ("init", "TEXT"), ("gain", "REAL"), ("data", "TEXT"), ("input_dim", "INTEGER"), ("width", "INTEGER"),
    ("depth", "INTEGER"), ("samples", "INTEGER"), ("activation", "TEXT"), ("shift", "TEXT"),
    ("shift_scale", "REAL"), ("residual", "REAL"), ("norm", "TEXT"), ("readout", "TEXT"), ("target", "TEXT"),
    ("seed", "INTEGER"), ("dtype", "TEXT"), ("metrics", "TEXT"),
)
_CONFIG_NAMES = tuple(name for name, _ in CONFIG_COLUMNS)
_CONFIG_SELECT = ", ".join(f"t.{name}" for name in _CONFIG_NAMES)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id INTEGER PRIMARY KEY,
    config_id TEXT NOT NULL,
    trial INTEGER NOT NULL,
    {", ".join(f"{name} {kind}" for name, kind in CONFIG_COLUMNS)},
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    seconds REAL,
    finished_at TEXT NOT NULL,
    worker TEXT,
    config_json TEXT NOT NULL,
    UNIQUE (config_id, trial, seed)
);
CREATE TABLE IF NOT EXISTS metric_names (metric_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS metric_values (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id),
    metric_id INTEGER NOT NULL REFERENCES metric_names(metric_id),
    layer INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (trial_id, metric_id, layer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS singular_values (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id),
    layer INTEGER NOT NULL,
    k INTEGER NOT NULL,
    singular_value REAL,
    PRIMARY KEY (trial_id, layer, k)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flags (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id),
    layer INTEGER NOT NULL,
    flag TEXT NOT NULL,
    PRIMARY KEY (trial_id, layer, flag)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS metrics AS
    SELECT t.init, t.trial, v.layer, n.name AS metric, v.value, {", ".join(f"t.{c}" for c in _CONFIG_NAMES[1:])},
           t.config_id
    FROM metric_values v JOIN trials t USING (trial_id) JOIN metric_names n USING (metric_id);
CREATE VIEW IF NOT EXISTS spectra AS
    SELECT t.init, t.trial, s.layer, s.k, s.singular_value, t.config_id
    FROM singular_values s JOIN trials t USING (trial_id);
"""


@dataclass
class StoreSummary:
    """What a store holds. failures: one row per failed configuration (config_id, fields, error)."""

    configs: int
    configs_complete: int
    trials_ok: int
    trials_failed: int
    metric_rows: pd.DataFrame  # metric, rows, finite
    spectra_rows: int
    failures: pd.DataFrame
    axes: dict[str, list[Any]]


def is_store(path: str | os.PathLike) -> bool:
    """True when `path` is an SQLite file with an initscope store in it."""
    return store_state(path) == "store"


def store_state(path: str | os.PathLike) -> str:
    """'missing', 'empty' (no tables yet: a store another process is creating, or an empty file),
    'store' (an initscope store) or 'foreign' (any other file)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "foreign"
    if not head:
        return "empty"
    if head != _SQLITE_MAGIC:
        return "foreign"
    try:
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return "empty"
            if "meta" not in tables:
                return "foreign"
            row = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return "foreign"
    return "store" if row is not None and row[0] == "initscope-store" else "foreign"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _real(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class Store:
    """An open results store. Use as a context manager, or call `close()`.

    Store(path) creates the file (and its folder) when missing; with
    create=False a missing or foreign file raises ValueError.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"The 'store' parameter must be a file. Got {str(self.path)!r}, which is a folder.")
        state = store_state(self.path)
        if state == "foreign":
            raise ValueError(
                f"The 'store' parameter must be an initscope results store. Got {str(self.path)!r}, "
                "which is some other file."
            )
        if not create and state != "store":
            raise ValueError(f"The 'store' parameter must be an existing results store. Got {str(self.path)!r} instead.")
        if state == "missing":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write is an explicit BEGIN IMMEDIATE.
        self._con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if state == "store":
            self._check_sound()
        enable_wal(self._con)
        # In WAL mode NORMAL survives any crash of the process (kill -9 included) without fsync per
        # commit; only a power cut can drop the last commits, which a resumed sweep recomputes.
        self._con.execute("PRAGMA synchronous = NORMAL")
        self._con.execute("PRAGMA foreign_keys = ON")
        if create:
            self._create_schema()
        self._metric_ids: dict[str, int] = {}

    def _check_sound(self) -> None:
        """Refuse a damaged file now, naming it, rather than with a DatabaseError mid-way.

        `PRAGMA quick_check` reads every page once (about a second per GB)
        but skips the index cross-checks of integrity_check.
        """
        try:
            rows = self._con.execute("PRAGMA quick_check(1)").fetchall()
            problem = None if rows and rows[0][0] == "ok" else (rows[0][0] if rows else "no answer")
        except sqlite3.OperationalError:
            raise  # e.g. locked: not damage
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        if problem is not None:
            self._con.close()
            raise ValueError(
                f"The 'store' parameter must be a sound results store. Got {str(self.path)!r}, which is damaged "
                f"({' '.join(problem.split())}). Keep it for inspection and sweep into a new store; "
                "'sqlite3 FILE .recover' may rescue its rows."
            )

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create_schema(self) -> None:
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._con.execute(statement)
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', 'initscope-store')")
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (_utc_now(),))

    class _Tx:
        def __init__(self, con: sqlite3.Connection):
            self.con = con

        def __enter__(self):
            self.con.execute("BEGIN IMMEDIATE")
            return self.con

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                self.con.execute("COMMIT")
            else:
                self.con.execute("ROLLBACK")
            return False

    def _transaction(self) -> "Store._Tx":
        return Store._Tx(self._con)

    # -- writing ---------------------------------------------------------------------------------
    def done_trials(self, ids: Iterable[str] | None = None) -> dict[str, set[int]]:
        """Trials stored 'ok', by config_id (all configs, or only `ids`)."""
        out: dict[str, set[int]] = {}
        if ids is None:
            rows = self._con.execute("SELECT config_id, trial FROM trials WHERE status = 'ok'").fetchall()
        else:
            ids = list(ids)
            rows = []
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                rows += self._con.execute(
                    f"SELECT config_id, trial FROM trials WHERE status = 'ok' AND config_id IN "
                    f"({','.join('?' * len(part))})", part).fetchall()
        for cid, trial in rows:
            out.setdefault(cid, set()).add(int(trial))
        return out

    def _metric_id(self, name: str) -> int:
        if name not in self._metric_ids:
            self._con.execute("INSERT OR IGNORE INTO metric_names (name) VALUES (?)", (name,))
            (mid,) = self._con.execute("SELECT metric_id FROM metric_names WHERE name = ?", (name,)).fetchone()
            self._metric_ids[name] = int(mid)
        return self._metric_ids[name]

    def write(self, batch: ConfigBatch) -> int:
        """Store a configuration's trials in one transaction; return how many trial rows were new.

        Trials already 'ok' are left alone (another sweep, or an earlier run,
        got there first). A failed batch records 'failed' rows only for trials
        with no row yet, or refreshes the error of earlier failures; an ok
        batch replaces earlier failures.
        """
        cfg = batch.config
        record = config_record(cfg)
        cols = ["config_id", "trial", *_CONFIG_NAMES, "status", "error", "seconds", "finished_at", "worker",
                "config_json"]
        insert = f"INSERT INTO trials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        per_trial = batch.seconds / max(len(batch.trials), 1)
        config_json = json.dumps(record, sort_keys=True)
        fixed = [_real(record[c]) for c in _CONFIG_NAMES]
        stamp = _utc_now()
        new = 0
        self._metric_ids = {}  # ids are read inside the transaction; another writer may have added names
        with self._transaction() as con:
            existing = dict(con.execute(
                "SELECT trial, status FROM trials WHERE config_id = ? AND seed = ?", (batch.config_id, cfg.seed)
            ).fetchall())
            if not batch.ok:
                for t in batch.trials:
                    if t not in existing:
                        con.execute(insert, (batch.config_id, t, *fixed, "failed", batch.error, per_trial, stamp,
                                             batch.worker, config_json))
                        new += 1
                    elif existing[t] == "failed":
                        con.execute("UPDATE trials SET error = ?, finished_at = ? WHERE config_id = ? AND trial = ? "
                                    "AND seed = ?", (batch.error, stamp, batch.config_id, t, cfg.seed))
                return new
            wanted = [t for t in batch.trials if existing.get(t) != "ok"]
            if not wanted:
                return 0
            stale = [t for t in wanted if existing.get(t) == "failed"]
            if stale:
                con.executemany("DELETE FROM trials WHERE config_id = ? AND trial = ? AND seed = ?",
                                [(batch.config_id, t, cfg.seed) for t in stale])
            ids: dict[int, int] = {}
            for t in wanted:
                cur = con.execute(insert, (batch.config_id, t, *fixed, "ok", None, per_trial, stamp, batch.worker,
                                           config_json))
                ids[t] = int(cur.lastrowid)
            self._insert_values(con, batch, ids)
        return len(ids)

    def _insert_values(self, con: sqlite3.Connection, batch: ConfigBatch, ids: dict[int, int]) -> None:
        """An ok batch's metric values, singular values and flags for the new trial rows `ids` (trial -> trial_id)."""
        code_to_id = np.array([self._metric_id(n) for n in batch.metric_names] or [0], dtype=np.int64)
        tid = _trial_ids(batch.metric_trial, ids)
        keep = tid >= 0
        values = [None if math.isnan(v) else v for v in batch.metric_value[keep].tolist()]  # NaN -> NULL
        insert_rows(con, "metric_values (trial_id, metric_id, layer, value)",
                     [tid[keep].tolist(), code_to_id[batch.metric_code[keep]].tolist(),
                      batch.metric_layer[keep].tolist(), values])
        sid = _trial_ids(batch.spectra_trial, ids)
        keep = sid >= 0
        insert_rows(con, "singular_values (trial_id, layer, k, singular_value)",
                     [sid[keep].tolist(), batch.spectra_layer[keep].tolist(), batch.spectra_k[keep].tolist(),
                      batch.spectra_value[keep].tolist()])
        con.executemany(
            "INSERT OR IGNORE INTO flags (trial_id, layer, flag) VALUES (?, ?, ?)",
            [(ids[t], layer, f) for t, layer, f in batch.flags if t in ids],
        )

    # -- reading ---------------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple | list = ()) -> pd.DataFrame:
        cur = self._con.execute(sql, params)
        names = [d[0] for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=names)

    def trials(self) -> pd.DataFrame:
        """One row per configuration-trial (without config_json)."""
        df = self._query(
            "SELECT trial_id, config_id, trial, " + ", ".join(_CONFIG_NAMES)
            + ", status, error, seconds, finished_at, worker FROM trials ORDER BY trial_id")
        return _typed(df)

    def metrics(self, *, metric: str | Iterable[str] | None = None, last_layer: bool = False) -> pd.DataFrame:
        """The tidy metrics table of every 'ok' trial: init, trial, layer, metric, value, config columns, config_id.

        metric: only these metrics; last_layer: only layer == depth (each config's last).
        """
        where, params = ["t.status = 'ok'"], []
        if metric is not None:
            names = [metric] if isinstance(metric, str) else list(metric)
            where.append(f"n.name IN ({','.join('?' * len(names))})")
            params += names
        if last_layer:
            where.append("v.layer = t.depth")
        df = self._query(
            f"SELECT t.init, t.trial, v.layer, n.name AS metric, v.value, {', '.join(f't.{c}' for c in _CONFIG_NAMES[1:])}, "
            "t.config_id FROM metric_values v JOIN trials t USING (trial_id) JOIN metric_names n USING (metric_id) "
            f"WHERE {' AND '.join(where)} ORDER BY t.config_id, t.trial, n.metric_id, v.layer",
            params,
        )
        df["value"] = df["value"].astype(np.float64)
        return _typed(df)

    def spectra(self) -> pd.DataFrame:
        """init, trial, layer, k, singular_value, config_id for every 'ok' trial."""
        df = self._query(
            "SELECT t.init, t.trial, s.layer, s.k, s.singular_value, t.config_id FROM singular_values s "
            "JOIN trials t USING (trial_id) WHERE t.status = 'ok' ORDER BY t.config_id, t.trial, s.layer, s.k")
        df["singular_value"] = df["singular_value"].astype(np.float64)
        return df

    def flags(self) -> pd.DataFrame:
        """init, trial, layer, flag, config_id: overflow and collapse flags."""
        return self._query(
            "SELECT t.init, t.trial, f.layer, f.flag, t.config_id FROM flags f JOIN trials t USING (trial_id) "
            "ORDER BY t.config_id, t.trial, f.layer")

    def configs(self) -> list[Config]:
        """The stored configurations as Configs (trials = the number stored 'ok' or 'failed')."""
        rows = self._con.execute(
            "SELECT config_json, COUNT(*) FROM trials GROUP BY config_id ORDER BY MIN(trial_id)").fetchall()
        out = []
        for text, count in rows:
            rec = json.loads(text)
            # Stored under the renamed init-training fields' old names (config_fields): read as the new ones.
            rec = {DEPRECATED_FIELDS.get(k, k): v for k, v in rec.items()}
            rec["init"] = [rec["init"]]
            out.append(make_config(**rec, trials=count))
        return out

    def summary(self) -> StoreSummary:
        con = self._con
        configs, complete = con.execute(
            "SELECT COUNT(*), COALESCE(SUM(bad = 0), 0) FROM (SELECT config_id, SUM(status != 'ok') AS bad "
            "FROM trials GROUP BY config_id)").fetchone()
        ok, failed = con.execute(
            "SELECT COALESCE(SUM(status = 'ok'), 0), COALESCE(SUM(status = 'failed'), 0) FROM trials").fetchone()
        metric_rows = self._query(
            "SELECT n.name AS metric, COUNT(*) AS rows, COUNT(v.value) AS finite FROM metric_values v "
            "JOIN metric_names n USING (metric_id) GROUP BY n.metric_id ORDER BY n.metric_id")
        (spectra_rows,) = con.execute("SELECT COUNT(*) FROM singular_values").fetchone()
        failures = self._query(
            "SELECT config_id, " + ", ".join(_CONFIG_NAMES) + ", COUNT(*) AS trials, MAX(error) AS error "
            "FROM trials WHERE status = 'failed' GROUP BY config_id ORDER BY MIN(trial_id)")
        axes: dict[str, list[Any]] = {}
        for name in _CONFIG_NAMES:
            values = [r[0] for r in con.execute(f"SELECT DISTINCT {name} FROM trials ORDER BY {name}")]
            if len(values) > 1:
                axes[name] = values
        return StoreSummary(int(configs), int(complete), int(ok), int(failed), metric_rows, int(spectra_rows),
                            _typed(failures), axes)

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check`: 'ok' for a sound file."""
        return "; ".join(r[0] for r in self._con.execute("PRAGMA integrity_check").fetchall())


def _trial_ids(trials: np.ndarray, ids: dict[int, int]) -> np.ndarray:
    """Map trial indices to new trial_ids; -1 where that trial was not inserted."""
    lut = np.full(int(trials.max(initial=-1)) + 1, -1, dtype=np.int64)
    for t, tid in ids.items():
        if t < len(lut):
            lut[t] = tid
    return lut[trials] if len(trials) else np.zeros(0, dtype=np.int64)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """REAL columns that held only NULL come back as object; make them float (NaN)."""
    for name, kind in CONFIG_COLUMNS:
        if name in df.columns and kind == "REAL":
            df[name] = pd.to_numeric(df[name], errors="coerce").astype(np.float64)
    return df
