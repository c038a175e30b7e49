"""The report in a real browser: headless Chromium from the OS, no network.

CI installs Chromium (`apt-get install -y chromium`) and the Python driver
(`pip install playwright`; never `playwright install`, which downloads a
browser). Without them these tests FAIL rather than skip: a report nobody has
opened is not tested.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest_report import FIGURE_SECTIONS, large_tables, small_run

pytestmark = pytest.mark.slow  # a real Chromium: seconds per test

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
MARKER = f"--initscope-test={os.getpid()}"  # an inert switch that finds this browser's processes
SCREENSHOT = Path("/tmp/initscope-report.png")
DEPTH = 6
INITS = ("normal", "sphere", "kaiming-normal")
RENDERED = """() => Array.from(document.querySelectorAll('.plotly-graph-div'))
    .every(gd => gd._fullLayout && gd.querySelector('.main-svg'))"""


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `apt-get install -y chromium`.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The Python driver is missing: run `pip install playwright` (not `playwright install`).")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, MARKER])
        yield chromium
        chromium.close()


class Opened:
    """A page opened from disk with every non-file request aborted and every error kept."""

    def __init__(self, browser, path: Path, *, timeout_ms: int = 30_000):
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.route("**/*", self._route)
        start = time.perf_counter()
        self.page.goto(path.resolve().as_uri(), wait_until="load", timeout=timeout_ms)
        self.page.wait_for_function(RENDERED, timeout=timeout_ms)
        self.seconds = time.perf_counter() - start

    def _route(self, route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)


@pytest.fixture(scope="module")
def opened(browser, tmp_path_factory):
    from initscope.report import write_report

    result = small_run(depth=DEPTH, samples=60, shift="zeros", init=INITS)
    path = write_report(result, tmp_path_factory.mktemp("browser") / "report.html")
    page = Opened(browser, path)
    yield page
    page.page.close()


def _figure_data(opened, fig_id: str, trace: int = 0) -> list[float]:
    return opened.js(
        "([id, i]) => Array.from(document.getElementById(id)._fullData[i].x, Number).slice(0, 20)",
        [fig_id, trace],
    )


def test_page_opens_offline_without_errors(opened):
    assert opened.errors == []
    assert opened.blocked == []
    assert opened.dialogs == []


def test_the_verdict_is_the_first_section_and_names_every_initializer(opened):
    first = opened.js("""() => {
        const s = document.querySelector('section');
        return {id: s.id, heading: s.querySelector('h2').textContent,
                items: Array.from(s.querySelectorAll('ul.verdict > li'), li => li.innerText),
                visible: s.getBoundingClientRect().height > 0};
    }""")
    assert first["id"] == "verdict" and first["heading"] == "Verdict" and first["visible"]
    assert len(first["items"]) == len(INITS)
    for item, init in zip(first["items"], INITS):
        assert item.startswith(f"{init} (gain ")  # one paragraph per initializer, in the run's order
        assert "layer" in item  # sentences with numbers, not a bare name
    top = opened.js("() => document.getElementById('verdict').getBoundingClientRect().top + window.scrollY")
    assert top < opened.js("() => document.getElementById('flags').getBoundingClientRect().top + window.scrollY")


def test_every_figure_rendered(opened):
    found = opened.js("""() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => ({
        id: gd.id,
        svg: gd.querySelectorAll('.main-svg').length,
        canvas: gd.querySelectorAll('canvas').length,
        traces: gd._fullData.length,
        height: gd.getBoundingClientRect().height,
    }))""")
    assert [f["id"] for f in found] == [f"fig-{s}" for s in FIGURE_SECTIONS]
    for figure in found:
        assert figure["svg"] >= 1 and figure["traces"] >= 1 and figure["height"] > 150, figure
    scenes = next(f for f in found if f["id"] == "fig-layers-3d")
    assert scenes["canvas"] >= 3  # a WebGL view per initializer


def test_layer_slider_moves_the_3d_points(opened):
    gd = "fig-layers-3d"
    before = _figure_data(opened, gd)
    touch = opened.page.locator(f"#{gd} .slider-rail-touch-rect")
    touch.scroll_into_view_if_needed()
    rail = touch.bounding_box()
    opened.page.mouse.click(rail["x"] + rail["width"] - 3, rail["y"] + rail["height"] / 2)
    opened.page.wait_for_function(
        "([id, last]) => document.getElementById(id)._fullLayout.sliders[0].active === last", arg=[gd, DEPTH])
    opened.page.wait_for_function(
        "([id, x0]) => Number(document.getElementById(id)._fullData[0].x[0]) !== x0", arg=[gd, before[0]])
    after = _figure_data(opened, gd)
    assert after != before
    hover = opened.js("id => document.getElementById(id)._fullData[0].hovertemplate", gd)
    assert f"layer {DEPTH}" in hover
    title = opened.js("id => document.getElementById(id)._fullLayout.annotations[0].text", gd)
    assert f"layer {DEPTH}" in title

    opened.js("""id => Plotly.animate(id, ['0'], {mode: 'immediate', frame: {duration: 0, redraw: true},
                                                  transition: {duration: 0}})""", gd)
    assert _figure_data(opened, gd) == before
    assert opened.errors == []


def test_axis_buttons_fix_one_range_across_layers(opened):
    gd = "fig-layers-3d"
    opened.page.locator(f"#{gd} .updatemenu-button", has_text="one range for all layers").click()
    opened.page.wait_for_function("id => document.getElementById(id)._fullLayout.scene.xaxis.autorange === false",
                                  arg=gd)
    fixed = opened.js("id => document.getElementById(id)._fullLayout.scene.xaxis.range", gd)
    opened.js("""id => Plotly.animate(id, ['3'], {mode: 'immediate', frame: {duration: 0, redraw: true},
                                                  transition: {duration: 0}})""", gd)
    assert opened.js("id => document.getElementById(id)._fullLayout.scene.xaxis.range", gd) == fixed
    opened.page.locator(f"#{gd} .updatemenu-button", has_text="fit each layer").click()
    opened.page.wait_for_function("id => document.getElementById(id)._fullLayout.scene.xaxis.autorange === true",
                                  arg=gd)
    assert opened.errors == []


def test_spectrum_frames_leave_no_old_series(opened):
    gd = "fig-spectra"
    n = opened.js("id => document.getElementById(id).data.length", gd)
    before = opened.js("id => Array.from(document.getElementById(id)._fullData[0].y, Number)", gd)
    for layer in (DEPTH, 2):
        opened.js("""([id, name]) => Plotly.animate(id, [name], {mode: 'immediate',
                      frame: {duration: 0, redraw: true}, transition: {duration: 0}})""", [gd, str(layer)])
    after = opened.js("id => Array.from(document.getElementById(id)._fullData[0].y, Number)", gd)
    assert after != before
    assert opened.js("id => document.getElementById(id).data.length", gd) == n
    drawn = opened.js("id => document.getElementById(id).querySelectorAll('.scatterlayer .trace').length", gd)
    assert drawn == n


def test_screenshot(opened, tmp_path):
    opened.js("() => Plotly.animate('fig-layers-3d', ['0'], {mode: 'immediate', frame: {duration: 0, redraw: true}})")
    opened.js("() => Plotly.animate('fig-spectra', ['1'], {mode: 'immediate', frame: {duration: 0, redraw: true}})")
    shot = tmp_path / "report.png"
    opened.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    shutil.copyfile(shot, SCREENSHOT)


def test_hostile_labels_render_as_text(browser, tmp_path):
    from initscope.report import write_report
    from initscope.report.tables import TABLE_COLUMNS, as_tables

    evil = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
    tables = as_tables(small_run(depth=2, samples=20))
    swapped = {name: getattr(tables, name).replace({"init": {"normal": evil}}) for name in TABLE_COLUMNS}
    config = dict(tables.config, init=(evil, "sphere"), data=evil)
    path = write_report(dict(swapped, config=config), tmp_path / "report.html")
    opened = Opened(browser, path)
    try:
        assert opened.js("() => window.__pwned === undefined")
        assert opened.dialogs == [] and opened.errors == [] and opened.blocked == []
        cells = opened.js("() => Array.from(document.querySelectorAll('table.config td'), td => td.textContent)")
        assert any(evil in cell for cell in cells)
        title = opened.js("() => document.getElementById('fig-layers-3d')._fullLayout.annotations[0].text")
        assert "&lt;script&gt;" in title  # plotly shows it as text
    finally:
        opened.page.close()


def _cpu_seconds(marker: str) -> float:
    """CPU seconds used so far by the Chromium launched with `marker` and all its child processes.

    Linux /proc only. CPU time hardly moves when other jobs share the machine,
    unlike wall time, so it measures the page rather than the neighbours.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu, roots = {}, {}, set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(f) for f in fields[11:15]) / tick  # utime, stime, cutime, cstime
        if marker.encode() in cmdline:
            roots.add(pid)
    tree, grew = set(roots), True
    while grew:
        children = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(cpu[pid] for pid in tree)


def test_large_run_page_size_and_load_time(browser, tmp_path):
    """5 initializers × 50 layers × 1000 samples: < 30 MB, and every figure draws without errors.

    "Open" is navigation until every figure is drawn. The time it took (wall:
    ~4 s on 2 idle cores, software WebGL; browser CPU ~7 s) is printed, not
    asserted: the project has no timed assertions in tests, and on a shared
    machine both clocks measure the neighbours (14.6 s CPU was seen with eight
    test runs in parallel).
    """
    from initscope.report import write_report

    path = write_report(large_tables(), tmp_path / "report.html")
    size_mb = path.stat().st_size / 1e6
    assert size_mb < 30

    def measure() -> tuple[float, float]:
        before = _cpu_seconds(MARKER)
        opened = Opened(browser, path, timeout_ms=120_000)
        try:
            assert opened.errors == [] and opened.blocked == []
            points = opened.js("() => document.getElementById('fig-layers-3d')._fullData[0].x.length")
            assert points == 1000
        finally:
            opened.page.close()
        return opened.seconds, _cpu_seconds(MARKER) - before

    wall, cpu = measure()
    print(f"large page: {size_mb:.1f} MB; open (every figure drawn) in {wall:.1f} s wall, "
          f"{cpu:.1f} s browser CPU")


# ---- an inspected model's report: module names on the page, block outputs with a switch ------------------


@pytest.fixture(scope="module")
def model_page(browser, tmp_path_factory):
    """The report of a ResNet-18-layout model (60 recorded layers: deep, so block outputs by default)."""
    import sys

    import torch

    from initscope.report import write_report
    from initscope.torch import inspect

    sys.path.insert(0, str(Path(__file__).parent))
    import torch_models as tm

    torch.manual_seed(0)
    result = inspect(tm.tiny_resnet(), torch.randn(12, 3, 16, 16),
                     metrics=["rms", "effective_rank", "dead_fraction", "grad_norm"])
    path = write_report(result, tmp_path_factory.mktemp("model") / "report.html")
    page = Opened(browser, path)
    yield page, list(result.layers["module"])
    page.page.close()


def _texts(opened, selector: str) -> list[str]:
    return opened.js("s => Array.from(document.querySelectorAll(s), e => e.textContent)", selector)


def _points(opened, gd: str) -> int:
    """Markers drawn in the first depth panel (rms): the points of its visible median line."""
    return opened.js("""id => document.getElementById(id).querySelector('.subplot.xy .scatterlayer')
                              .querySelectorAll('.trace .points path').length""", gd)


def test_model_report_names_modules_in_the_browser(model_page):
    opened, modules = model_page
    assert opened.errors == [] and opened.blocked == []
    # the 3-D view's slider: moved to layer 5, its current value and the view's title name the module
    gd = "fig-layers-3d"
    assert "10 layer1.0.relu" in _texts(opened, f"#{gd} .slider-labels .slider-label")  # plotly.js: every k-th step
    touch = opened.page.locator(f"#{gd} .slider-rail-touch-rect")
    touch.scroll_into_view_if_needed()
    rail = touch.bounding_box()
    opened.page.mouse.click(rail["x"] + rail["width"] * 0.1, rail["y"] + rail["height"] / 2)
    opened.page.wait_for_function("id => document.getElementById(id)._fullLayout.sliders[0].active > 0", arg=gd)
    step = opened.js("id => document.getElementById(id)._fullLayout.sliders[0].active", gd)
    name = opened.js("([id, k]) => document.getElementById(id)._fullLayout.sliders[0].steps[k].label", [gd, step])
    assert name == f"{step} {modules[step]}"
    assert _texts(opened, f"#{gd} .slider-group > text.slider-label") == [f"layer {name}"]  # the current value
    module = name.split(" ", 1)[1]
    opened.page.wait_for_function("([id, m]) => document.getElementById(id)._fullLayout.annotations[0].text"
                                  ".includes(`(${m}, `)", arg=[gd, module])
    opened.js("""id => Plotly.animate(id, ['5'], {mode: 'immediate', frame: {duration: 0, redraw: true},
                                                  transition: {duration: 0}})""", gd)
    opened.page.wait_for_function("id => document.getElementById(id)._fullLayout.sliders[0].active === 5", arg=gd)
    assert _texts(opened, f"#{gd} .slider-group > text.slider-label") == ["layer 5 layer1.0.conv1"]
    assert "layer 5 (layer1.0.conv1, Conv2d)" in opened.js(
        "id => document.getElementById(id)._fullData[0].hovertemplate", gd)
    # the heat map's and the depth panels' layer axes: block names as tick text
    assert {"conv1", "layer1.0", "layer4.1", "fc"} <= set(_texts(opened, "#fig-spectrum-heatmap .xtick text"))
    assert {"layer1.0", "layer2.1", "fc"} <= set(_texts(opened, "#fig-metrics-depth .xtick text"))
    assert "vanishing gradients" in opened.page.locator("#flags").inner_text()
    assert opened.errors == []


def test_model_report_switches_the_depth_panels_to_all_layers(model_page, tmp_path):
    opened, modules = model_page
    layers = len(modules)
    gd = "fig-metrics-depth"
    opened.page.locator(f"#{gd}").scroll_into_view_if_needed()
    assert _points(opened, gd) == 15  # input, the stem's four, eight blocks, avgpool, fc
    opened.page.locator(f"#{gd} .updatemenu-button", has_text=f"all {layers} layers").click()
    opened.page.wait_for_function(f"id => document.getElementById(id).querySelector('.subplot.xy .scatterlayer')"
                                  f".querySelectorAll('.trace .points path').length === {layers}", arg=gd)
    shot = tmp_path / "depth.png"
    opened.page.locator(f"#{gd}").screenshot(path=str(shot))
    shutil.copyfile(shot, SCREENSHOT.with_name("initscope-report-model-depth.png"))
    opened.page.locator(f"#{gd} .updatemenu-button", has_text="block outputs").click()
    opened.page.wait_for_function(f"id => document.getElementById(id).querySelector('.subplot.xy .scatterlayer')"
                                  f".querySelectorAll('.trace .points path').length === 15", arg=gd)
    opened.page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    shutil.copyfile(tmp_path / "page.png", SCREENSHOT.with_name("initscope-report-model.png"))
    assert opened.errors == []
