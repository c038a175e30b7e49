"""`initscope explore`: the server as a subprocess on a free port, called over HTTP.

The API's answers must be `initscope.run`'s numbers for the same config, bit
for bit; bad input, the size budget, the data folder, concurrency, streaming,
cancellation, the download and Ctrl-C are each checked against a real server.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest_explore import Server, assert_answer_equals_run, call, port_is_free, table_from_json, wait_until

import initscope
from initscope.explore.api import RequestError, check_budget, config_from_fields, request_size
from initscope.explore.jobs import MAX_STEPS, depth_plan

SMALL = {"init": ["kaiming-normal", "orthogonal"], "depth": 4, "width": 16, "samples": 30, "trials": 3,
         "gain": 1.2, "shift": "zeros", "norm": "layer", "residual": 0.5, "seed": 7}
# Above the streaming threshold (api.request_size > 1e7) yet quick: it runs as several depth prefixes.
STREAMED = {"init": "normal", "depth": 60, "width": 96, "samples": 400, "trials": 4, "seed": 3,
            "metrics": "rms,effective_rank,jacobian_rank"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explore-data")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 4))
    lines = ["a,b,c,d"] + [",".join(f"{v:.6f}" for v in row) for row in x]
    (root / "mine.csv").write_text("\n".join(lines) + "\n")
    (root / "sub").mkdir()
    outside = root.parent / f"{root.name}-outside.csv"
    outside.write_text("\n".join(lines) + "\n")
    (root / "link.csv").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def server(data_dir):
    srv = Server("--data-dir", str(data_dir))
    yield srv
    assert srv.stop() == 0, srv.errors


def post(server, path, body=None, **kw):
    status, headers, raw = call(server.url, path, body if body is not None else None,
                                method="POST", raw=None if body is not None else b"", **kw)
    return status, headers, (json.loads(raw) if raw and not path.startswith("/api/stream") else raw)


@pytest.mark.slow
def test_defaults_equal_initscope_run(server):
    status, headers, answer = post(server, "/api/run")
    assert status == 200, answer
    assert_answer_equals_run(answer, initscope.run())
    assert answer["config"]["init"] == ["normal", "sphere"] and answer["final"] is True
    assert "Server-Timing" in headers or "server-timing" in headers
    print(f"\nseed defaults, server side: {answer['timing_ms']} ms (run, tables)")


def test_config_equals_initscope_run_in_both_forms(server):
    expected = initscope.run(**SMALL)
    for orient in ("records", "columns"):
        status, _, answer = post(server, f"/api/run?orient={orient}", SMALL)
        assert status == 200, answer
        assert_answer_equals_run(answer, expected)
    assert answer["gains"] == {"kaiming-normal": 1.2, "orthogonal": 1.2}
    assert {row["init"] for row in answer["verdict"]["flags"]} == {"kaiming-normal", "orthogonal"}
    # The verdict in words is the study's, for the same run.
    from initscope.study.verdict import run_verdict

    words = run_verdict(expected.metrics, expected.spectra, expected.flags, config=expected.config,
                        gains=expected.gains)
    assert answer["verdict"]["lines"] == words.lines()
    assert [v["title"] for v in answer["verdict"]["initializers"]] == ["kaiming-normal (gain 1.2)", "orthogonal (gain 1.2)"]


@pytest.mark.slow
def test_overflow_is_a_result_nan_as_null(server):
    from initscope.study.runner import NumericalWarning

    config = {"init": "normal", "depth": 500, "trials": 2, "samples": 50, "metrics": "rms,effective_rank"}
    status, _, answer = post(server, "/api/run", config)
    assert status == 200, answer
    with pytest.warns(NumericalWarning):
        expected = initscope.run(**config)
    assert_answer_equals_run(answer, expected)
    values = [row["value"] for row in answer["tables"]["metrics"]]
    assert None in values  # NaN after the overflow
    assert float("inf") in values and np.isinf(expected.metrics["value"]).any()  # ±1e999 reads back as ±inf
    assert {row["flag"] for row in answer["tables"]["flags"]} >= {"overflow"}


def test_text_fields_as_from_a_form_or_url(server):
    # The page and the URL send text; an empty field means the default, as on the command line.
    status, _, answer = post(server, "/api/run?orient=columns", {"depth": "3", "gain": "", "init": "sphere,normal",
                                                                  "trials": "2", "shift_scale": "0.5"})
    assert status == 200, answer
    assert_answer_equals_run(answer, initscope.run(depth=3, init="sphere,normal", trials=2, shift_scale=0.5))


@pytest.mark.slow
def test_bad_input_is_400_with_the_cli_message(server, tmp_path):
    # The page sends text, as the command line does; a JSON number gets make_config's message for a number.
    status, _, answer = post(server, "/api/run", {"depth": 0})
    assert status == 400 and answer["error"] == "The 'depth' parameter must be an integer >= 1. Got 0 instead."
    status, _, answer = post(server, "/api/run", {"depth": "0"})
    assert status == 400
    cli = subprocess.run([sys.executable, "-c", "from initscope.cli import entry; entry()", "run", "--depth", "0",
                          "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"initscope: error: {answer['error']}"
    for body, words in (({"activation": "swish"}, "'activation'"), ({"width": "wide"}, "'width'"),
                        ({"depht": 3}, "Unknown config field 'depht'"), ({"init": []}, "'init'")):
        status, _, answer = post(server, "/api/run", body)
        assert status == 400 and words in answer["error"] and "\n" not in answer["error"], answer


def test_bodies_that_are_not_a_json_object(server):
    status, _, raw = call(server.url, "/api/run", raw=b"{depth: 3", headers={"Content-Type": "application/json"})
    assert status == 400 and b"JSON" in raw
    status, _, raw = call(server.url, "/api/run", raw=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert status == 400 and b"a list" in raw
    # A form post (what another web site can send without asking) is refused.
    status, _, raw = call(server.url, "/api/run", raw=b'{"depth": 3}', headers={"Content-Type": "text/plain"})
    assert status == 415


def test_size_budget_is_413_naming_the_field(server):
    status, _, answer = post(server, "/api/run", {"samples": 100000, "width": 500})
    assert status == 413
    assert answer["field"] == "samples" and "'samples'" in answer["error"] and answer["max"] > 0
    status, _, answer = post(server, "/api/run", {"depth": 2000000})
    assert status == 413 and answer["field"] == "depth"
    _, _, health = call(server.url, "/api/health")
    assert json.loads(health)["running"] == 0  # refused before any work


def test_budget_boundary_is_exact():
    config = initscope.make_config(init="normal", trials=1, width=10, samples=5, depth=1000, metrics="rms")
    budget = 50 * 10 * 5  # depth 50 fits exactly
    with pytest.raises(RequestError) as info:
        check_budget(config, budget)
    assert info.value.status == 413 and info.value.details["field"] == "depth" and info.value.details["max"] == 50
    check_budget(dataclasses.replace(config, depth=50), budget)
    with pytest.raises(RequestError):
        check_budget(dataclasses.replace(config, depth=51), budget)
    # The Jacobian pass counts: samples (at most 64) × input_dim tangents per state row.
    with_jac = dataclasses.replace(config, metrics=("rms", "jacobian_rank"))
    assert request_size(with_jac) == request_size(config) * (1 + config.input_dim)


def test_data_files_only_under_the_data_folder(server, data_dir):
    status, _, answer = post(server, "/api/run?orient=columns", {"data": "mine.csv", "trials": 2, "depth": 3})
    assert status == 200, answer
    assert_answer_equals_run(answer, initscope.run(data=str(data_dir / "mine.csv"), trials=2, depth=3))
    status, _, answer = post(server, "/api/run", {"data": "sub/../mine.csv", "trials": 2, "depth": 3})
    assert status == 200, answer  # inside the folder after resolution
    for bad in ("../../etc/passwd", "/etc/passwd", "../" + data_dir.name + "-outside.csv", "link.csv",
                "nothere.csv", str(data_dir / ".." / "x.npy"), "sub"):
        status, _, answer = post(server, "/api/run", {"data": bad})
        assert status == 400 and "'data'" in answer["error"], (bad, answer)


def test_no_data_folder_means_built_in_data_only(data_dir):
    with pytest.raises(RequestError) as info:
        config_from_fields({"data": "mine.csv"}, data_dir=None)
    assert info.value.status == 400 and "--data-dir" in info.value.message
    assert config_from_fields({"data": "iris"}, data_dir=None).data == "iris"


@pytest.mark.slow
def test_fifty_concurrent_requests(server):
    configs = [dict(SMALL, seed=s, depth=3) for s in range(5)]
    expected = [initscope.run(**c) for c in configs]

    def one(i):
        return i, post(server, "/api/run?orient=columns", configs[i % 5])

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(one, range(50)))
    statuses = [a[1][0] for a in answers]
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) >= 2
    for i, (status, headers, answer) in answers:
        if status == 200:
            assert_answer_equals_run(answer, expected[i % 5], tables=("metrics",))
        else:
            assert "error" in answer
    # From one named client only its newest request matters: the others are 429 or 503, none crashes.
    with ThreadPoolExecutor(50) as pool:
        same = list(pool.map(lambda i: post(server, "/api/run?orient=columns", configs[0],
                                            headers={"X-Initscope-Client": "one"})[0], range(50)))
    # The newest request that got a place is answered; a refused one (503) supersedes nothing.
    assert set(same) <= {200, 429, 503} and 429 in same and same.count(200) >= 1, same
    status, _, answer = post(server, "/api/run?orient=columns", configs[1])
    assert status == 200
    print(f"\n50 concurrent: {statuses.count(200)} answered, {statuses.count(503)} busy (503); "
          f"one client: {same.count(200)} answered, {same.count(429)} superseded, {same.count(503)} busy")


def stream_lines(raw: bytes) -> list[dict]:
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


@pytest.mark.slow
def test_stream_sends_exact_depth_prefixes(server):
    status, headers, raw = post(server, "/api/stream?orient=columns", STREAMED)
    assert status == 200
    lines = stream_lines(raw)
    # Per prefix two messages: its tables, then its verdict (computed while the page draws the tables).
    assert [m["part"] for m in lines] == ["tables", "verdict"] * (len(lines) // 2) and len(lines) % 2 == 0
    messages, verdicts = lines[::2], lines[1::2]
    depths = [m["depth"] for m in messages]
    assert [m["depth"] for m in verdicts] == depths and "verdict" not in messages[0]
    assert headers["x-initscope-plan"] == ",".join(map(str, depths))
    assert len(messages) >= 2 and depths == sorted(depths) and depths[-1] == STREAMED["depth"]
    assert [m["final"] for m in messages] == [False] * (len(messages) - 1) + [True]
    assert [m["final"] for m in verdicts] == [m["final"] for m in messages]
    expected = initscope.run(**STREAMED)
    assert_answer_equals_run(messages[-1], expected)
    from initscope.study.verdict import run_verdict

    words = run_verdict(expected.metrics, expected.spectra, expected.flags, config=expected.config,
                        gains=expected.gains)
    assert verdicts[-1]["verdict"]["lines"] == words.lines()
    first = messages[0]
    assert_answer_equals_run(first, initscope.run(**dict(STREAMED, depth=first["depth"])))
    # Its layers are the full run's (forward metrics do not depend on the layers after them).
    head = table_from_json(first["tables"]["metrics"], first["columns"]["metrics"])
    full = table_from_json(messages[-1]["tables"]["metrics"], messages[-1]["columns"]["metrics"])
    full = full[full["layer"] <= first["depth"]].reset_index(drop=True)
    np.testing.assert_array_equal(head["value"].to_numpy(float), full["value"].to_numpy(float))
    assert head[["init", "trial", "layer", "metric"]].equals(full[["init", "trial", "layer", "metric"]])
    # A small config is one prefix: its tables and its verdict, the same as /api/run's.
    status, _, raw = post(server, "/api/stream?orient=columns", SMALL)
    small = stream_lines(raw)
    assert [m["part"] for m in small] == ["tables", "verdict"] and small[1]["final"] is True
    _, _, answer = post(server, "/api/run?orient=columns", SMALL)
    assert small[1]["verdict"] == answer["verdict"]
    assert small[0]["tables"] == answer["tables"] and small[0]["columns"] == answer["columns"]


def test_stream_theory_lines_are_the_reports(server):
    # The verdict message carries the metric panels' theory lines: the report's dashed lines, same numbers.
    from initscope.report.depth import metric_depth_spec

    config = dict(SMALL, norm="none", residual=0.0, seed=2)  # zero shifts, no norm: every closed form applies
    _, _, raw = post(server, "/api/stream?orient=columns", config)
    theory = stream_lines(raw)[1]["theory"]
    assert set(theory["curves"]) == {"rms", "mean_cosine", "pre_q", "pre_cosine", "jacobian_sq_mean"}
    assert theory["notes"] == []
    expected = initscope.run(**config)
    spec = metric_depth_spec(expected.metrics, config=expected.config)

    ours = [(init, np.array(line["values"], dtype=float)) for by_init in theory["curves"].values()
            for init, line in by_init.items()]
    report = [(t["name"].split(":")[0], np.asarray(t["y"], dtype=float)) for t in spec["data"]
              if str(t.get("name", "")).endswith(": theory")]
    assert len(ours) == len(report) == 10
    for init, y in report:  # the report stores its lines to 4 significant digits (report._common.compact)
        close = [v for i, v in ours if i == init and v.shape == y.shape and np.allclose(v, y, rtol=1e-3, atol=0)]
        assert len(close) == 1, (init, y)
    # The seed's linspace shifts: no mean-field line, and the reason given as the report gives it.
    _, _, raw = post(server, "/api/stream?orient=columns", dict(config, shift="linspace"))
    theory = stream_lines(raw)[1]["theory"]
    assert not set(theory["curves"]) & {"pre_q", "pre_cosine", "jacobian_sq_mean"}
    assert any("linspace shifts are not i.i.d." in note for note in theory["notes"]), theory["notes"]


@pytest.mark.slow
def test_a_repeated_config_is_answered_from_the_cache(server):
    config = dict(SMALL, seed=11)
    before = json.loads(call(server.url, "/api/health")[2])["cache"]
    _, _, first = post(server, "/api/run?orient=columns", config)
    _, _, second = post(server, "/api/run", config)
    assert first["timing_ms"]["cached"] is False and second["timing_ms"]["cached"] is True
    assert_answer_equals_run(second, initscope.run(**config))  # the records form of the kept run
    assert second["verdict"] == first["verdict"]
    status, _, _ = call(server.url, "/api/download?" + "&".join(
        f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in config.items()))
    after = json.loads(call(server.url, "/api/health")[2])["cache"]
    assert status == 200 and after["hits"] - before["hits"] == 2 and after["misses"] - before["misses"] == 1
    assert 0 < after["bytes"] <= 256 * 2**20 and after["runs"] >= 1


def test_run_cache_keeps_the_latest_within_its_bytes():
    from initscope.explore.jobs import RunCache, table_bytes

    runs = {seed: initscope.run(depth=2, trials=1, samples=20, seed=seed) for seed in range(3)}
    size = table_bytes(runs[0])
    assert size > 0 and all(table_bytes(r) == size for r in runs.values())
    cache = RunCache(2 * size)
    for r in runs.values():
        cache.put(r.config, r)
    assert len(cache) == 2 and cache.bytes == 2 * size
    assert cache.get(runs[0].config) is None and cache.get(runs[2].config) is runs[2]
    cache.get(runs[1].config)  # now the most recent: a new run pushes out 2, not 1
    cache.put(runs[0].config, runs[0])
    assert cache.get(runs[1].config) is runs[1] and cache.get(runs[2].config) is None
    calls = []
    make = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.derived(runs[1], "verdict", make) == 1 and cache.derived(runs[1], "verdict", make) == 1
    assert cache.derived(runs[2], "verdict", make) == 2 and cache.derived(runs[2], "verdict", make) == 3  # not held
    tiny = RunCache(size - 1)
    tiny.put(runs[0].config, runs[0])  # larger than the whole budget: not kept
    assert len(tiny) == 0 and tiny.bytes == 0


def test_a_newer_request_cancels_the_older(server):
    client = {"X-Initscope-Client": "page-1"}
    older: dict = {}

    def first():
        older["answer"] = post(server, "/api/stream?orient=columns", dict(STREAMED, depth=150), headers=client)

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.3)  # the older stream is computing its first prefix
    status, _, raw = post(server, "/api/stream?orient=columns", SMALL, headers=client)
    assert status == 200 and stream_lines(raw)[-1]["final"] is True
    thread.join(300)
    messages = stream_lines(older["answer"][2])
    assert messages[-1].get("status") == 429 and messages[-1].get("superseded") is True, messages[-1].keys()
    assert not any(m.get("final") for m in messages)


def test_depth_plan():
    seed = initscope.make_config()
    assert depth_plan(seed) == [10]
    deep = initscope.make_config(depth=200, width=256, samples=500, trials=4)
    plan = depth_plan(deep)
    assert plan[-1] == 200 and plan == sorted(set(plan)) and len(plan) <= MAX_STEPS
    assert request_size(dataclasses.replace(deep, depth=plan[0])) <= 3e6 or plan[0] == 1


@pytest.mark.slow
def test_download_is_what_initscope_run_writes(server, tmp_path):
    query = "?depth=3&trials=2&init=normal&init=orthogonal&seed=4"
    status, headers, raw = call(server.url, "/api/download" + query)
    assert status == 200 and headers["content-type"] == "application/zip"
    out = tmp_path / "cli"
    cli = subprocess.run([sys.executable, "-c", "from initscope.cli import entry; entry()", "run", "--depth", "3",
                          "--trials", "2", "--init", "normal,orthogonal", "--seed", "4", "--out", str(out),
                          "--quiet"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        names = sorted(zf.namelist())
        # The folder's marker (.initscope: the command line that wrote it) has no counterpart in a download.
        assert names == sorted(p.name for p in out.iterdir() if p.name != ".initscope")
        assert "report.html" in names
        for name in names:
            if name.endswith((".csv", ".toml")):
                assert zf.read(name) == (out / name).read_bytes(), name


def test_meta_and_page(server):
    status, _, raw = call(server.url, "/api/meta")
    meta = json.loads(raw)
    assert status == 200 and meta["fields"][:3] == ["init", "gain", "data"]
    assert "mine.csv" in meta["choices"]["data"] and "sub/../mine.csv" not in meta["choices"]["data"]
    status, headers, raw = call(server.url, "/")
    assert status == 200 and b"<html" in raw.lower()
    status, _, raw = call(server.url, "/static/plotly.min.js")
    assert status == 200 and len(raw) > 1_000_000
    assert call(server.url, "/static/..%2Fapi.py")[0] == 404
    assert call(server.url, "/static/server.py")[0] == 404


def test_only_loopback_host_names(server):
    # Another web site whose DNS name points at 127.0.0.1 (DNS rebinding) is not answered.
    assert call(server.url, "/api/meta", headers={"Host": "attacker.example"})[0] == 400
    assert call(server.url.replace("127.0.0.1", "localhost"), "/api/health")[0] == 200


@pytest.mark.slow
def test_sigint_stops_cleanly_and_frees_the_port():
    srv = Server()
    assert call(srv.url, "/api/health")[0] == 200
    assert srv.stop() == 0, srv.errors
    assert "stopped" in srv.lines[-1]
    assert port_is_free(srv.port)
    assert not [e for e in srv.errors if "Traceback" in e], srv.errors


# Long enough (tens of seconds) that it is still computing when the signal comes.
LONG = dict(STREAMED, depth=200, trials=20)


@pytest.mark.slow
def test_sigint_while_computing_stops_the_run_at_a_layer():
    srv = Server()
    thread = threading.Thread(target=lambda: call(srv.url, "/api/run", LONG, method="POST", timeout=300),
                              daemon=True)
    thread.start()
    assert wait_until(lambda: json.loads(call(srv.url, "/api/health")[2])["running"] > 0, timeout=60)
    assert srv.stop(timeout=60) == 0, srv.errors
    assert srv.lines[-1] == "initscope explore: stopped (1 run(s) stopped at a layer)", srv.lines
    assert port_is_free(srv.port)


@pytest.mark.parametrize("closing, counted", [(True, 1), (False, 0)])
def test_a_run_the_stop_ends_before_shutdown_looks_is_counted(closing, counted):
    """Under load, uvicorn's graceful timeout cancels the request, whose run then stops at its next layer before
    the CLI asks Jobs what was computing; a run ended by the stop still counts as 'stopped at a layer'."""
    import asyncio

    from initscope.explore.jobs import Cancelled, Jobs

    jobs = Jobs(slots=1, queue=0)
    jobs.closing = lambda: closing

    def stopped_at_a_layer():
        raise Cancelled

    async def go():
        with pytest.raises(Cancelled):
            await jobs.call(stopped_at_a_layer)

    asyncio.run(go())
    assert jobs.running == 0
    assert jobs.shutdown(grace=0.0) == (counted, 0)


def test_a_superseded_run_stops_computing(server):
    client = {"X-Initscope-Client": "script-7"}
    older: dict = {}
    thread = threading.Thread(target=lambda: older.update(answer=post(server, "/api/run", LONG, headers=client)))
    thread.start()
    assert wait_until(lambda: json.loads(call(server.url, "/api/health")[2])["running"] > 0, timeout=60)
    status, _, answer = post(server, "/api/run?orient=columns", SMALL, headers=client)
    assert status == 200
    thread.join(300)
    status, _, answer = older["answer"]
    # Answered 429 (stopped at a layer by initscope.run's hook), not 200 after computing all 200 layers.
    assert status == 429 and answer["superseded"] is True, (status, answer)
    assert wait_until(lambda: json.loads(call(server.url, "/api/health")[2])["running"] == 0, timeout=60)


@pytest.mark.slow
def test_host_warning_config_preload_and_bad_options(tmp_path, data_dir):
    config = tmp_path / "c.toml"
    config.write_text('depth = 17\ninit = ["orthogonal"]\ndata = "mine.csv"\n')
    srv = Server("--host", "0.0.0.0", "--config", str(config), "--data-dir", str(data_dir), "--cache-mb", "0",
                 cwd=data_dir)
    try:
        assert json.loads(call(srv.url, "/api/health")[2])["cache"] is None  # --cache-mb 0: nothing kept
        meta = json.loads(call(srv.url, "/api/meta")[2])
        assert meta["preload"]["depth"] == 17 and meta["preload"]["init"] == ["orthogonal"]
        assert meta["preload"]["data"] == "mine.csv"
    finally:
        assert srv.stop() == 0
    assert any("no authentication" in e for e in srv.errors), srv.errors
    from initscope.cli import main

    assert main(["explore", "--data-dir", str(tmp_path / "missing"), "--no-browser"]) == 2
    assert main(["explore", "--port", "70000", "--no-browser"]) == 2
    assert main(["explore", "--cache-mb", "-1", "--no-browser"]) == 2
    config.write_text("depth = 0\n")
    assert main(["explore", "--config", str(config), "--no-browser"]) == 2
    with socket.socket() as taken:  # a port in use is one line and exit 2, not a traceback
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["explore", "--port", str(taken.getsockname()[1]), "--no-browser"]) == 2


def test_explore_is_a_command():
    from initscope.cli import main

    assert main(["explore", "--help"]) == 0
    assert table_from_json({"rows": 0, "columns": ["a"], "data": {"a": []}, "constant": {}}, ["a"]).empty
