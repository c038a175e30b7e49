"""Helpers shared by the explorer's tests: a real server in a subprocess, HTTP calls, table checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

SRC = Path(__file__).resolve().parents[1] / "src"
START_TIMEOUT = 90.0  # seconds; the machine may be busy with other work


class Server:
    """`initscope explore --port 0 --no-browser ARGS` as a subprocess; `url` is read from its first line."""

    def __init__(self, *args: str, cwd: Path | None = None):
        env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from initscope.cli import entry; entry()", "explore", "--port", "0",
             "--no-browser", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        first = threading.Event()

        def read(stream, into, signal_first):
            for line in stream:
                into.append(line.rstrip("\n"))
                if signal_first:
                    first.set()
            first.set()  # the stream closed: the process is gone

        self.readers = [threading.Thread(target=read, args=(self.proc.stdout, self.lines, True), daemon=True),
                        threading.Thread(target=read, args=(self.proc.stderr, self.errors, False), daemon=True)]
        for reader in self.readers:
            reader.start()
        if not first.wait(START_TIMEOUT) or not self.lines:
            self.proc.kill()
            self.stop()
            raise RuntimeError(f"explore did not start: {self.errors}")
        words = self.lines[0].split()
        self.url = next(w for w in words if w.startswith("http://"))
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT (what Ctrl-C sends), then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for reader in self.readers:
                reader.join(10)
            self.proc.stdout.close()
            self.proc.stderr.close()


def call(url: str, path: str, body=None, *, method: str | None = None, headers: dict | None = None,
         raw: bytes | None = None, timeout: float = 300.0) -> tuple[int, dict, bytes]:
    """One HTTP request; returns (status, headers, body) whatever the status."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    heads = {"Content-Type": "application/json"} if body is not None else {}
    heads.update(headers or {})
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers=heads,
                                     method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def table_from_json(encoded, columns: list[str]) -> pd.DataFrame:
    """A table of the API (records: list of row objects; columns: the compact form) as a DataFrame."""
    if isinstance(encoded, list):
        assert all(list(row) == columns for row in encoded), "every row object has the CSV's columns, in order"
        return pd.DataFrame.from_records(encoded, columns=columns)
    rows = encoded["rows"]
    data = {name: (encoded["data"][name] if name in encoded["data"] else [encoded["constant"][name]] * rows)
            for name in encoded["columns"]}
    return pd.DataFrame(data, columns=encoded["columns"])


def assert_same_table(got: pd.DataFrame, expected: pd.DataFrame, name: str) -> None:
    """Same columns in the same order and the same values: numbers bit for bit (NaN <-> null), text equal."""
    assert list(got.columns) == [str(c) for c in expected.columns], name
    assert len(got) == len(expected), name
    for column in expected.columns:
        want = expected[column]
        have = got[column] if len(got) else pd.Series([], dtype=object)
        if want.dtype.kind in "fiub":
            a = np.array([np.nan if v is None else v for v in have.tolist()], dtype=np.float64)
            np.testing.assert_array_equal(a, want.to_numpy(dtype=np.float64), err_msg=f"{name}.{column}")
        else:
            assert [str(v) for v in have.tolist()] == [str(v) for v in want.tolist()], f"{name}.{column}"


def assert_answer_equals_run(answer: dict, result, tables=("metrics", "spectra", "projections", "flags")) -> None:
    for name in tables:
        got = table_from_json(answer["tables"][name], answer["columns"][name])
        assert_same_table(got, getattr(result, name), name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a new server can listen on the port (as servers do, with SO_REUSEADDR: the
    connections of the old one may linger in TIME_WAIT, its listening socket must not)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
        return True


def wait_until(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
