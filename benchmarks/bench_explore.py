"""Time `initscope explore`'s answers against issue 15's two speed targets, and say where the time goes.

    python benchmarks/bench_explore.py                 # server side: the seed's defaults, N requests
    python benchmarks/bench_explore.py --browser -n 20 # also N gain-slider moves in headless Chromium

Targets: (1) the seed's defaults answer in under 150 ms server side; (2) a
slider move re-renders in under 300 ms in Chromium. Each is printed as median
and best over N, with the load average before and after (this is a 2-core
machine shared with other work: read the numbers with the load beside them).

(1) is the Server-Timing header of `POST /api/run` (arrival of the request to
its body being ready: the study, the tables, the verdict, JSON), measured on a
server started with `--cache-mb 0`, so every answer is computed afresh; the
time of an answer the run cache holds (a repeated config) is printed apart.

(2) is measured inside the page (performance.now(), from the slider's input
event): "views updated" when the figures in view are redrawn and the verdict is
shown (what the reader sees), "painted" one frame later, "all figures" when the
figures below the fold are redrawn too (they wait until the controls rest, 200 ms).
Each move waits for the previous one to settle. The server runs with
`--cache-mb 0` here too (the moves ask for new gains anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest_explore import Server, call  # noqa: E402

SETTLED = ("n => Number(document.body.dataset.updates || 0) > n && window.explore.last.final"
           " && window.explore.stale.size === 0 && window.explore.last.painted !== undefined")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def summary(name: str, values: list[float], target: float | None = None) -> str:
    med, best = statistics.median(values), min(values)
    verdict = "" if target is None else (f"  target < {target:.0f} ms: " + ("met" if med < target else
                                         ("median missed, best met" if best < target else "missed")))
    return f"  {name:<34} median {med:7.1f} ms   best {best:7.1f} ms   (n={len(values)}){verdict}"


def server_side(url: str, orient: str, n: int) -> tuple[list[float], list[dict]]:
    totals, timings = [], []
    for _ in range(n):
        status, headers, raw = call(url, f"/api/run?orient={orient}", {}, method="POST")
        assert status == 200, raw[:200]
        timing = {k.lower(): v for k, v in headers.items()}["server-timing"]
        totals.append(float(timing.split("dur=")[1]))
        timings.append(json.loads(raw)["timing_ms"])
    return totals, timings


def bench_server(n: int) -> None:
    print(f"\n(1) server side, POST /api/run of the seed's defaults; {load()}")
    srv = Server("--cache-mb", "0")
    try:
        server_side(srv.url, "columns", 3)  # warm-up: imports, thread pools, BLAS controller
        for orient in ("columns", "records"):
            totals, timings = server_side(srv.url, orient, n)
            print(summary(f"orient={orient} (computed afresh)", totals, 150.0))
            parts = {k: statistics.median(t[k] for t in timings) for k in ("run", "tables", "verdict")}
            print("    medians inside: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items())
                  + ", the rest: HTTP, JSON, the event loop")
    finally:
        srv.stop()
    srv = Server()
    try:
        server_side(srv.url, "columns", 1)
        totals, _ = server_side(srv.url, "columns", n)
        print(summary("repeated config, from the run cache", totals))
    finally:
        srv.stop()
    print(f"  after: {load()}")


def bench_browser(moves: int) -> None:
    from playwright.sync_api import sync_playwright

    print(f"\n(2) gain slider moves in headless Chromium (1400×1000 viewport); {load()}")
    srv = Server("--cache-mb", "0")
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            asked = []
            page.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
            page.goto(srv.url)
            page.wait_for_function(SETTLED, arg=0)
            rows = []
            for i in range(moves + 1):  # the first move warms up the page's code paths
                before = page.evaluate("Number(document.body.dataset.updates)")
                page.evaluate("g => { const r = document.querySelector('input[data-for=gain]'); r.value = g;"
                              " r.dispatchEvent(new Event('input')); }", round(0.8 + 0.05 * (i % 30), 2))
                page.wait_for_function(SETTLED, arg=before)
                page.wait_for_function("window.explore.last.settled !== undefined")
                rows.append(page.evaluate("({...window.explore.last, draws: window.explore.draws,"
                                          " deferred: window.explore.deferred})"))
            drags = [drag(page, i) for i in range(3)]
            chromium.close()
    finally:
        srv.stop()
    rows = rows[1:]
    print(summary("views updated (in view + verdict)", [r["latency"] for r in rows], 300.0))
    print(summary("painted (one frame later)", [r["painted"] for r in rows], 300.0))
    print(summary("all figures, below the fold too", [r["settled"] for r in rows]))
    marks = {k: statistics.median(r["marks"][k] for r in rows) for k in rows[0]["marks"]}
    print("    median marks from the input event, ms: " + ", ".join(f"{k} {v:.0f}" for k, v in marks.items()))
    server = {k: statistics.median(r["timing"][k] for r in rows) for k in ("run", "tables", "verdict")}
    print("    median server parts, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in server.items()))
    draws = {k: statistics.median(r["draws"].get(k, 0) for r in rows) for k in rows[-1]["draws"]}
    print("    median Plotly.react per figure, ms: " + ", ".join(f"{k} {v:.0f}" for k, v in draws.items())
          + f"; drawn after the controls rest: {rows[-1]['deferred']}")
    print(f"    requests to /api/: {len(asked)} for {moves + 1} moves and the first view")
    print("  drags of 25 steps 20 ms apart (0.5 s): answers shown during each, and from the last step to its "
          "answer shown: " + "; ".join(f"{n} answers, {ms:.0f} ms" for n, ms in drags))
    print(f"  after: {load()}")


def drag(page, i: int) -> tuple[int, float]:
    """25 gain-slider steps 20 ms apart; (answers shown, ms from the last step to its answer shown)."""
    before = page.evaluate("Number(document.body.dataset.updates)")
    steps = [round(0.45 + 0.05 * (k + i), 2) for k in range(25)]  # on the slider's 0.05 grid
    page.evaluate("""async steps => {
        const r = document.querySelector('input[data-for=gain]');
        for (const g of steps) { r.value = g; r.dispatchEvent(new Event('input')); await new Promise(f => setTimeout(f, 20)); }
    }""", steps)
    page.wait_for_function(f"Number(document.body.dataset.updates) > {before} && window.explore.last.final"
                           f" && !window.explore.inflight && !window.explore.pending"
                           f" && window.explore.shown.config.gain === {steps[-1]}")
    latency = page.evaluate("window.explore.last.latency")  # from the last step's input event
    page.wait_for_function("window.explore.stale.size === 0")
    return page.evaluate("Number(document.body.dataset.updates)") - before, latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="requests (server side) and slider moves (browser)")
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"bench_explore {started}")
    bench_server(args.n)
    if args.browser:
        bench_browser(args.n)


if __name__ == "__main__":
    main()
