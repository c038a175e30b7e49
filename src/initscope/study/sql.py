"""SQLite helpers of the results store: the WAL switch under contention and multi-row inserts."""

from __future__ import annotations

import random
import sqlite3
import time

import numpy as np

__all__ = ["BUSY_TIMEOUT_S", "enable_wal", "insert_rows"]

BUSY_TIMEOUT_S = 120.0
_ROWS_PER_STATEMENT = 200  # 4 columns × 200 = 800 parameters, under SQLite's oldest limit of 999


def insert_rows(con: sqlite3.Connection, target: str, columns: list[list]) -> None:
    """INSERT many rows with multi-row VALUES statements: about twice as fast as executemany row by row."""
    n, width = len(columns[0]), len(columns)
    if n == 0:
        return
    flat = np.empty(n * width, dtype=object)
    for j, column in enumerate(columns):
        flat[j::width] = column
    flat = flat.tolist()
    step = _ROWS_PER_STATEMENT * width
    full = (n // _ROWS_PER_STATEMENT) * step
    row = "(" + ", ".join("?" * width) + ")"
    if full:
        statement = f"INSERT INTO {target} VALUES " + ", ".join([row] * _ROWS_PER_STATEMENT)
        con.executemany(statement, (flat[i:i + step] for i in range(0, full, step)))
    if full < len(flat):
        con.execute(f"INSERT INTO {target} VALUES " + ", ".join([row] * ((len(flat) - full) // width)), flat[full:])


def enable_wal(con: sqlite3.Connection) -> None:
    """Switch the file to WAL, waiting out other processes that open it at the same moment.

    Changing the journal mode needs an exclusive lock, and SQLite answers
    "database is locked" at once, without the busy handler, when another
    connection is mid-way through the same switch; so retry until the timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            con.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005 + 0.02 * random.random())
