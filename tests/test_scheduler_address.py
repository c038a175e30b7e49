"""`sweep --scheduler` with an address where no Dask scheduler answers: one line naming the parameter,
exit 2, and no traceback from a half-made Client's finalizer afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("distributed")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _garbage_server() -> tuple[socket.socket, int]:
    """A listener on 127.0.0.1 that answers every connection with bytes that are not Dask's protocol."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + os.urandom(64))
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.slow
def test_addresses_where_no_scheduler_answers(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text("depth = [2]\ntrials = 1\n")
    server, port = _garbage_server()
    env = dict(os.environ, PYTHONPATH=SRC)
    try:
        for address in ("garbage", "xyz://a:1", "inproc://x", f"tcp://127.0.0.1:{port}"):
            done = subprocess.run([sys.executable, "-c", "from initscope.cli import entry; entry()", "sweep",
                                   str(sweep), "--out", str(tmp_path / "store"), "--scheduler", address],
                                  capture_output=True, text=True, env=env, timeout=120)
            assert done.returncode == 2, (address, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "'scheduler'" in lines[0] and "Traceback" not in done.stderr, done.stderr
    finally:
        server.close()
