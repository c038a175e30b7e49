"""The explorer against hostile requests: bodies refused before they are read, runs that other web sites
cannot start, the Host check for every loopback spelling, signals, and a bounded data listing.

A real server on 127.0.0.1 (a subprocess), called over raw sockets where a client must lie about its body.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest
from conftest_explore import Server, call, port_is_free

from initscope.explore import server as explore_server
from initscope.explore.guard import MAX_BODY
from initscope.explore.server import _unechoed

GIB = 2**30
SMALL = {"depth": "2", "width": "8", "samples": "10", "trials": "1", "metrics": "rms"}


@pytest.fixture(scope="module")
def server():
    srv = Server()
    yield srv
    assert srv.stop() == 130, srv.errors


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raw_request(port: int, head: str, body_chunks=(), *, read_timeout: float = 60.0) -> tuple[int, bytes, int]:
    """Send `head` and then body chunks until the server answers (or the chunks run out);
    returns (status, answer, bytes of body sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        sock.setblocking(False)
        answer = b""
        for chunk in body_chunks:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                sock.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.setblocking(True)
        sock.settimeout(read_timeout)
        while b"\r\n\r\n" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    status = int(answer.split(b" ", 2)[1])
    return status, answer, sent


def test_claimed_gigabyte_bodies_are_refused_unread_in_bounded_memory(server):
    call(server.url, "/api/meta")  # the first answers import what they need: idle means after that
    call(server.url, "/api/run", raw=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    idle = rss_bytes(server.proc.pid)
    for i in range(20):
        path = ("/api/run", "/api/stream", "/api/download", "/")[i % 4]
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {GIB}\r\n\r\n")
        status, answer, _ = raw_request(server.port, head, [b"{" + b" " * 65535] * 64)
        assert status == 413, answer[:300]
        assert b"   " not in answer  # the body is never echoed
    # A chunked body is counted as it streams: refused soon after MAX_BODY, not read to its end.
    head = (f"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    status, answer, sent = raw_request(server.port, head, [chunk] * 2048)  # 128 MiB offered
    assert status == 413, answer[:300]
    assert sent < 64 * MAX_BODY
    assert rss_bytes(server.proc.pid) - idle < 50 * 2**20
    assert json.loads(call(server.url, "/api/health")[2])["ok"] is True


def test_bodies_of_the_wrong_type_or_value_are_refused_without_echo(server):
    status, _, raw = call(server.url, "/api/run", raw=b"x" * 200_000, headers={"Content-Type": "text/plain"})
    assert status == 415 and len(raw) < 1000
    status, _, raw = call(server.url, "/api/run", {"activation": "y" * 500_000})
    answer = json.loads(raw)
    assert status == 400 and "'activation'" in answer["error"] and len(raw) < 2000, raw[:300]
    assert "characters left out" in answer["error"] and answer["error"].endswith("' instead.")
    status, _, raw = call(server.url, "/api/run", raw=b"{" * 500_000, headers={"Content-Type": "application/json"})
    assert status == 400 and len(raw) < 1000
    # Over MAX_BODY with an honest Content-Length.
    status, _, raw = call(server.url, "/api/run", raw=b" " * (MAX_BODY + 1),
                          headers={"Content-Type": "application/json"})
    assert status == 413 and b"at most" in raw


def test_unechoed_cuts_long_values_only():
    short = {"error": "The 'depth' parameter must be an integer >= 1. Got 0 instead."}
    assert _unechoed(short) == short
    long = {"error": f"The 'init' parameter must be one of ['normal']. Got {'z' * 5000!r} instead.", "field": "init"}
    cut = _unechoed(long)
    assert cut["field"] == "init" and len(cut["error"]) < 450 and "characters left out" in cut["error"]
    assert cut["error"].startswith("The 'init' parameter must be one of ['normal']. Got 'zz")


def test_other_web_sites_cannot_start_a_run(server):
    def runs() -> int:
        return json.loads(call(server.url, "/api/health")[2])["cache"]["misses"]

    before = runs()
    own = server.url.rstrip("/")
    hostile = [
        # An empty cross-site form POST (what any page can send without asking).
        ("/api/run", b"", {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"}),
        ("/api/stream", b"", {"Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site"}),
        ("/api/run", b"", {"Sec-Fetch-Site": "same-site"}),  # another port of this machine
        ("/api/run", b"", {"Origin": "null"}),  # a sandboxed page or a local file
        ("/api/run", b"", {"Referer": "http://evil.example/page"}),
    ]
    for path, raw, headers in hostile:
        status, _, answer = call(server.url, path, raw=raw, headers=headers, method="POST")
        assert status == 403, (path, headers, answer)
    # A cross-site GET of /api/download (an <img> or a link on another page).
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Referer": "http://evil.example/"}):
        status, _, answer = call(server.url, "/api/download?depth=2", headers=headers)
        assert status == 403, answer
    assert runs() == before  # nothing ran
    # The server's own page (same origin), a typed URL (none) and a non-browser client are answered.
    status, _, raw = call(server.url, "/api/run", SMALL, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert status == 200, raw[:300]
    status, _, raw = call(server.url, "/api/download?depth=2&width=8&samples=10&trials=1&metrics=rms",
                          headers={"Sec-Fetch-Site": "none"})
    assert status == 200 and raw[:2] == b"PK"
    # The page's read-only routes stay open to any client.
    assert call(server.url, "/api/meta", headers={"Sec-Fetch-Site": "cross-site"})[0] == 200


def test_stream_refuses_a_bad_orient_before_it_begins(server):
    status, headers, raw = call(server.url, "/api/stream?orient=bogus", SMALL)
    assert status == 400 and "'orient'" in json.loads(raw)["error"], raw[:300]
    status, _, raw = call(server.url, "/api/run?orient=bogus", SMALL)
    assert status == 400


@pytest.mark.slow
@pytest.mark.parametrize("host", ["127.1", "::1"])
def test_host_check_holds_for_every_loopback_spelling(host):
    if host == "::1":
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            pytest.skip("this machine has no IPv6 loopback")
    srv = Server("--host", host)
    try:
        assert host in srv.url
        url = srv.url
        if host == "::1":  # the URL it prints works as printed: Host [::1]:PORT
            assert call(url, "/api/health")[0] == 200
        else:
            assert call(url, "/api/health")[0] == 200
        assert call(url, "/api/health", headers={"Host": "attacker.example"})[0] == 400
        assert call(url, "/api/health", headers={"Host": f"attacker.example:{srv.port}"})[0] == 400
        assert call(url, "/api/health", headers={"Host": f"localhost:{srv.port}"})[0] == 200
    finally:
        assert srv.stop() == 130, srv.errors
    assert not any("no authentication" in e for e in srv.errors)


@pytest.mark.slow
def test_sigterm_exits_143_and_frees_the_port():
    srv = Server()
    assert call(srv.url, "/api/health")[0] == 200
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(60) == 143
    assert srv.stop() == 143
    assert port_is_free(srv.port)
    assert not [e for e in srv.errors if "Traceback" in e], srv.errors


def test_data_listing_is_bounded_and_reused(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "deep").mkdir(parents=True)
    for i in range(explore_server.DATA_FILES_LIMIT + 40):
        (root / "deep" / f"f{i:04d}.csv").write_text("a\n1\n")
    (root / "loop").symlink_to(root)  # a link to a folder is not followed (a loop would never end)
    listing = explore_server.data_files(root)
    assert len(listing) == explore_server.DATA_FILES_LIMIT
    assert all(name.startswith("deep/") for name in listing)
    # Reused while fresh: a new file shows only once the listing has aged.
    (root / "a-new.csv").write_text("a\n1\n")
    assert explore_server.data_files(root) == listing
    monkeypatch.setattr(explore_server, "_DATA_FILES_TTL", 0.0)
    time.sleep(0.01)
    assert "a-new.csv" in explore_server.data_files(root)
    # The walk looks at a bounded number of entries, whatever the tree holds.
    monkeypatch.setattr(explore_server, "_DATA_ENTRIES_LIMIT", 50)
    wide = tmp_path / "wide"
    for i in range(30):
        (wide / f"d{i:02d}").mkdir(parents=True)
        for j in range(10):
            (wide / f"d{i:02d}" / f"x{j}.npy").write_bytes(b"")
    assert len(explore_server.data_files(wide)) <= 60


def test_data_names_that_cannot_exist_are_400(tmp_path):
    from initscope.explore.api import RequestError, config_from_fields

    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop2.csv")
    (tmp_path / "loop2.csv").symlink_to(tmp_path / "loop.csv")
    for value in ("a\x00.csv", "loop.csv", "a" * 300 + ".csv"):
        with pytest.raises(RequestError) as caught:
            config_from_fields({"data": value}, data_dir=tmp_path)
        assert caught.value.status == 400 and "'data'" in caught.value.message
