"""Time `initscope explore`'s answers: the seed's defaults, server side, and (with --browser) the page.

    python benchmarks/bench_explore.py                 # 20 requests of the defaults, both table forms
    python benchmarks/bench_explore.py --browser       # also slider moves in headless Chromium

Server side is the Server-Timing header: from the request's arrival to its
body being ready (the study, the tables, the verdict, JSON). The target is
under 150 ms for the defaults; a slider move should redraw in under 300 ms.
Not part of the test suite; on a shared machine, read the load average printed.
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


def server_side(url: str, orient: str, n: int) -> list[float]:
    totals = []
    for _ in range(n):
        status, headers, _ = call(url, f"/api/run?orient={orient}", {}, method="POST")
        assert status == 200
        timing = {k.lower(): v for k, v in headers.items()}["server-timing"]
        totals.append(float(timing.split("dur=")[1]))
    return totals


def browser(url: str, moves: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_function("Number(document.body.dataset.updates || 0) > 0")
        for i in range(moves):
            before = page.evaluate("Number(document.body.dataset.updates)")
            page.evaluate("d => { const r = document.querySelector('input[data-for=gain]'); r.value = d;"
                          " r.dispatchEvent(new Event('input')); }", 0.8 + 0.05 * i)
            page.wait_for_function(f"Number(document.body.dataset.updates) > {before} && window.explore.last.final")
        latencies = page.evaluate("window.explore.latencies")[1:]
        draws = page.evaluate("window.explore.draws")
        print("  last redraw, ms per figure: " + ", ".join(f"{k} {v:.0f}" for k, v in draws.items()))
        chromium.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores")
    srv = Server()
    try:
        server_side(srv.url, "columns", 3)  # warm-up: imports, thread pools
        for orient in ("columns", "records"):
            t = server_side(srv.url, orient, args.n)
            print(f"defaults, orient={orient}: server side median {statistics.median(t):.1f} ms, "
                  f"best {min(t):.1f} ms over {len(t)} (target < 150 ms)")
        _, _, raw = call(srv.url, "/api/run?orient=columns", {}, method="POST")
        print(f"  last breakdown: {json.loads(raw)['timing_ms']} ms")
        if args.browser:
            t = browser(srv.url, 10)
            print(f"slider move -> views redrawn in Chromium: median {statistics.median(t):.0f} ms, "
                  f"best {min(t):.0f} ms over {len(t)} (target < 300 ms)")
    finally:
        srv.stop()
    time.sleep(0.1)


if __name__ == "__main__":
    main()
