"""The explorer's page in a real browser: Chromium from the OS through playwright, offline.

The server runs as a subprocess; every request that is not to it is aborted
and recorded (plotly.js comes from the server, never a CDN). Latencies are
measured and printed, never asserted. Like the report's browser tests, these
FAIL rather than skip without Chromium (`apt-get install -y chromium`) or the
Python driver (`pip install playwright`; never `playwright install`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pytest
from conftest_explore import Server, call

pytestmark = pytest.mark.slow  # a real Chromium: seconds per test

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
SCREENSHOT = Path(f"/tmp/initscope-explore-{os.getpid()}.png")  # several checkouts may run this at once
TIMEOUT_MS = 180_000  # software WebGL on a busy 2-core machine is slow; nothing here is a timing test
# An update is complete when the final answer's verdict is shown and no figure is left stale (figures out of
# view are redrawn once the controls rest).
UPDATED = ("n => Number(document.body.dataset.updates || 0) > n && window.explore.last.final"
           " && window.explore.stale.size === 0")


@pytest.fixture(scope="module")
def server():
    srv = Server()
    yield srv
    assert srv.stop() == 0, srv.errors


@pytest.fixture(scope="module")
def page(server):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `apt-get install -y chromium`.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The Python driver is missing: run `pip install playwright` (not `playwright install`).")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.errors, page.blocked, page.api = [], [], []
        page.on("request", lambda r: page.api.append(r.url) if "/api/" in r.url else None)
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))

        def route(r):
            if r.request.url.startswith(server.url):
                r.continue_()
            else:
                page.blocked.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.set_default_timeout(TIMEOUT_MS)
        start = time.perf_counter()
        page.goto(server.url)
        page.wait_for_function(UPDATED, arg=0)
        print(f"\nfirst view: {time.perf_counter() - start:.2f} s from navigation")
        yield page
        browser.close()


def updates(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.updates || 0)"))


def change(page, selector: str, value) -> float:
    """Set a control as a user would and wait for the views; returns seconds until they were redrawn."""
    before = updates(page)
    start = time.perf_counter()
    if isinstance(value, list):
        page.select_option(selector, value)
    else:
        page.fill(selector, str(value))
    page.wait_for_function(UPDATED, arg=before)
    return time.perf_counter() - start


def layer_view(page) -> dict:
    return page.evaluate("""() => {
        const gd = document.getElementById('fig-layers');
        return {frames: gd._transitionData._frames.length, steps: gd.layout.sliders[0].steps.length,
                names: gd.data.map(t => t.name), dataset: Number(gd.dataset.frames)};
    }""")


def test_every_config_field_is_a_named_control(page, server):
    meta = json.loads(call(server.url, "/api/meta")[2])
    missing = [f for f in meta["fields"] if page.locator(f'[name="{f}"]').count() != 1]
    assert not missing
    for f in ("init", "gain", "depth", "width", "input_dim", "samples", "activation", "shift", "shift_scale",
              "residual", "norm", "data", "trials", "seed"):
        assert f in meta["fields"]


def test_depth_and_init_controls_redraw_the_views(page):
    assert layer_view(page)["frames"] == 11  # the seed's depth 10: layers 0..10
    seconds = change(page, '[name="depth"]', 6)
    view = layer_view(page)
    assert view["frames"] == view["steps"] == view["dataset"] == 7
    assert "depth=6" in page.url
    latency = [seconds]
    seconds = change(page, '[name="init"]', ["kaiming-normal", "orthogonal"])
    latency.append(seconds)
    view = layer_view(page)
    assert view["names"] == ["kaiming-normal", "orthogonal"] and view["frames"] == 7
    depth_names = page.evaluate("Array.from(new Set(document.getElementById('fig-depth').data.map(t => t.name)"
                                ".filter(Boolean)))")
    assert depth_names == ["kaiming-normal", "orthogonal"]
    verdict = page.inner_text("#verdict")
    assert "kaiming-normal" in verdict and "orthogonal" in verdict
    # The depth slider, dragged a few steps: each step is one redraw.
    for depth in (7, 8, 9):
        before = updates(page)
        start = time.perf_counter()
        page.evaluate("d => { const r = document.querySelector('input[data-for=depth]'); r.value = d;"
                      " r.dispatchEvent(new Event('input')); }", depth)
        page.wait_for_function(UPDATED, arg=before)
        latency.append(time.perf_counter() - start)
        assert layer_view(page)["frames"] == depth + 1
    # The 3-D view's frames hold every layer's points: moving to a layer shows them and says how far they spread.
    shown = page.evaluate("""async () => {
        const gd = document.getElementById('fig-layers');
        await Plotly.animate(gd, ['3'], {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}});
        return {title: gd.layout.annotations[0].text, points: gd.data[0].x.length,
                same: gd.data[0].x.every((v, i) => v === gd._transitionData._frames[3].data[0].x[i])};
    }""")
    assert "layer 3: spread" in shown["title"] and shown["points"] == 100 and shown["same"], shown
    inner = page.evaluate("window.explore.latencies")
    last = page.evaluate("window.explore.last")
    print(f"\nupdate latency (control change -> views redrawn), seconds: "
          f"{', '.join(f'{s:.3f}' for s in latency)}; median {statistics.median(latency):.3f}; "
          f"in-page (input event -> Plotly.react done), ms: {', '.join(f'{v:.0f}' for v in inner[-5:])}; "
          f"last server timing {last['timing']} ms, drawing {last['draw']:.0f} ms")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"screenshot: {SCREENSHOT}")


def test_the_url_carries_the_config(page):
    url = page.url
    assert "depth=9" in url and "init=kaiming-normal%2Corthogonal" in url
    page.goto(url)
    page.wait_for_function(UPDATED, arg=0)
    assert page.input_value('[name="depth"]') == "9"
    assert page.evaluate("Array.from(document.querySelector('[name=init]').selectedOptions).map(o => o.value)") \
        == ["kaiming-normal", "orthogonal"]
    assert layer_view(page)["frames"] == 10
    href = page.get_attribute("#download", "href")
    assert href.startswith("/api/download?") and "depth=9" in href


def test_the_download_button_gives_the_run_files(page, tmp_path):
    import io
    import zipfile

    with page.expect_download() as info:
        page.click("#download")
    path = tmp_path / "run.zip"
    info.value.save_as(path)
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zf:
        names = set(zf.namelist())
        config = zf.read("config.toml").decode()
    assert {"metrics.csv", "spectra.csv", "projections.csv", "flags.csv", "config.toml", "report.html"} <= names
    assert "depth = 9" in config and '"kaiming-normal", "orthogonal"' in config


def test_bad_input_shows_the_message_and_marks_the_field(page):
    page.fill('[name="width"]', "0")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "The 'width' parameter must be" in page.inner_text("#status")
    assert page.locator("#field-width.invalid").count() == 1
    change(page, '[name="width"]', 12)
    assert page.locator(".field.invalid").count() == 0
    # The browser logs the refused request itself; that one is expected.
    refused = [e for e in page.errors if "status of 400" in e]
    assert len(refused) == 1
    page.errors.remove(refused[0])


def test_a_large_config_streams_its_first_layers(page, server):
    # Above the streaming size: the views show the first depth prefix while the rest compute.
    query = "?init=normal,orthogonal&depth=200&width=100&samples=200&trials=2&metrics=rms,effective_rank,dead_fraction"
    page.goto(server.url + query)
    page.wait_for_function("window.explore.partials > 0")
    partial = page.evaluate("window.explore.last")
    status = page.inner_text("#status")
    page.wait_for_function(UPDATED, arg=0)
    final = page.evaluate("window.explore.last")
    assert partial["of"] == 200 and partial["depth"] < 200, partial
    assert "so far" in status or partial["final"] is False
    assert final["depth"] == 200 and layer_view(page)["frames"] == 201
    shown = page.evaluate("window.explore.shownLog")  # [layers shown, of, ms] per update of this request
    depths = [d for d, _, _ in shown]
    assert depths == sorted(set(depths)) and depths[0] < 200 and depths[-1] == 200, shown
    plan = [int(d) for d in page.evaluate("window.explore.plan").split(",")]
    assert set(depths) <= set(plan), (depths, plan)
    print(f"\nstreamed (plan {plan}): " + ", ".join(f"layers 0-{d} at {ms} ms" for d, _, ms in shown))


def test_a_backlog_of_prefixes_skips_to_the_deepest(page):
    # Lines that arrived together while the page was drawing: only the deepest prefix's tables and what follows.
    lines = ['{"config":1,"part":"tables"}', '{"part":"verdict","depth":1}', '{"config":2,"part":"tables"}',
             '{"part":"verdict","depth":2}']
    newest = "lines => newest(lines)"
    assert page.evaluate(newest, lines) == lines[2:]
    assert page.evaluate(newest, lines[:2]) == lines[:2] and page.evaluate(newest, lines[1:2]) == lines[1:2]
    assert page.evaluate(newest, lines[1:3]) == lines[2:3]


def test_a_data_set_shows_the_sizes_it_sets(page, server):
    page.goto(server.url + "?data=iris&depth=3&trials=2")
    page.wait_for_function(UPDATED, arg=0)
    assert page.inner_text('label[for="in-samples"]') == "samples (this run: 150)"  # all of iris's rows
    assert page.inner_text('label[for="in-input_dim"]') == "input_dim (this run: 4)"
    assert page.inner_text('label[for="in-depth"]') == "depth"


def test_the_layer_slider_asks_the_server_nothing(page):
    # Moving through the layers of the 3-D view replays frames the page already holds: no request.
    page.evaluate("window.scrollTo(0, 0)")
    rail = page.locator("#fig-layers .slider-rail-rect").bounding_box()
    asked = len(page.api)
    frames = layer_view(page)["frames"]
    for fraction in (0.0, 0.5, 1.0):
        page.mouse.click(rail["x"] + 2 + fraction * (rail["width"] - 4), rail["y"] + rail["height"] / 2)
        expected = round(fraction * (frames - 1))
        page.wait_for_function(f"window.explore.layer === {expected}")
        # The frame's title (and points) follow once the animation step has run.
        page.wait_for_function("n => document.getElementById('fig-layers').layout.annotations[0].text"
                               ".includes(`layer ${n}:`)", arg=expected)
    assert page.api[asked:] == [], page.api[asked:]


def test_figures_out_of_view_are_drawn_after_those_in_view(page):
    # The depth bands lie below the first screen: a change redraws the figures in view first; the others
    # follow once the controls rest, from the same answer.
    page.evaluate("window.scrollTo(0, 0)")
    change(page, '[name="seed"]', 5)
    deferred = page.evaluate("window.explore.deferred")
    assert "depth" in deferred and "layers" not in deferred, deferred
    seeds = page.evaluate("""() => [window.explore.shown.config.seed,
        document.getElementById('fig-depth').data.length, window.explore.draws]""")
    assert seeds[0] == 5 and seeds[1] > 0, seeds
    print(f"\ndrawn after the controls rested: {deferred}; per-figure ms: "
          f"{ {k: round(v) for k, v in seeds[2].items()} }")


def test_metric_panels_draw_the_theory_lines(page, server):
    # Zero shifts and no norm: every closed form applies, and each of the five panels gets its dashed lines.
    page.goto(server.url + "?shift=zeros&depth=5&trials=3&init=kaiming-normal,orthogonal")
    page.wait_for_function(UPDATED, arg=0)
    dashed = page.evaluate("""() => document.getElementById('fig-depth').data
        .filter(t => t.line && t.line.dash === 'dash' && t.name.endsWith(': theory')).map(t => t.name)""")
    assert len(dashed) == 10 and set(dashed) == {"kaiming-normal: theory", "orthogonal: theory"}, dashed
    assert page.inner_text("#theory-notes") == ""
    # The seed's linspace shifts: no mean-field lines, and the note says why.
    change(page, '[name="shift"]', ["linspace"])
    assert "linspace shifts are not i.i.d." in page.inner_text("#theory-notes")
    assert page.evaluate("""() => document.getElementById('fig-depth').data
        .filter(t => t.name && t.name.endsWith(': theory')).length""") == 0


def test_a_dragged_slider_redraws_while_it_moves(page):
    # 25 steps of the gain slider, 20 ms apart: the answers in between are shown (each step does not cancel
    # the one before), and the last one shown is the slider's final position.
    page.evaluate("window.scrollTo(0, 0)")
    before = updates(page)
    steps = [round(0.5 + 0.05 * i, 2) for i in range(25)]
    page.evaluate("""async steps => {
        const r = document.querySelector('input[data-for=gain]');
        for (const g of steps) { r.value = g; r.dispatchEvent(new Event('input')); await new Promise(f => setTimeout(f, 20)); }
    }""", steps)
    page.wait_for_function(f"n => Number(document.body.dataset.updates) > n && window.explore.last.final"
                           f" && !window.explore.inflight && !window.explore.pending"
                           f" && window.explore.shown.config.gain === {steps[-1]}", arg=before)
    shown = updates(page) - before
    assert 2 <= shown <= len(steps), shown
    assert page.input_value('[name="gain"]') == str(steps[-1]) and f"gain={steps[-1]}" in page.url
    print(f"\na 0.5 s drag of 25 steps: {shown} answers shown along the way")


def test_offline_and_no_errors(page):
    assert not page.blocked, page.blocked
    assert not page.errors, page.errors
