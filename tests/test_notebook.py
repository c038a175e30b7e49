"""initscope in a real notebook: executed by nbclient on an ipykernel, outputs checked.

The rich reprs (RunResult, InspectResult), `res.show()` (the full report,
inline, offline), and a figure function called with the run's Config.
"""

from __future__ import annotations

import html
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    "import initscope\nres = initscope.run(trials=3, depth=4, init=('normal', 'sphere', 'kaiming-normal'))",
    "res",
    "res.show(height=700)",
    "from initscope.report import layer_projection_figure\n"
    "fig = layer_projection_figure(res.projections, config=res.config)\n"
    "print(len(fig.frames), [a.text for a in fig.layout.annotations][:3])",
    "import torch, initscope.torch as it\n"
    "torch.manual_seed(0)\n"
    "model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))\n"
    "inspected = it.inspect(model, torch.randn(32, 3))\n"
    "inspected",
    "print(repr(res))",
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    work = tmp_path_factory.mktemp("notebook")
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}},
                            allow_errors=False)
    client.execute(env=dict(os.environ))  # PYTHONPATH and all: the kernel imports the initscope under test
    return notebook.cells


def outputs(cell, kind: str) -> list[dict]:
    return [o for o in cell.outputs if o.get("output_type") == kind]


@pytest.mark.slow
def test_a_run_shows_its_verdict_and_a_compact_table(executed):
    (result,) = outputs(executed[1], "execute_result")
    page = result["data"]["text/html"]
    assert '<ul class="verdict">' in page
    for init, gain in (("normal", "1"), ("sphere", "1"), ("kaiming-normal", "1.414")):
        assert f"<strong>{init} (gain {gain})</strong>" in page
    assert page.count("<tr>") == 1 + 3  # header and one row per initializer
    assert len(page) < 20_000  # a summary, not a dump of every table
    assert result["data"]["text/plain"].startswith("RunResult: normal, sphere, kaiming-normal × 3 trials")


def test_show_displays_the_whole_report_inline_and_offline(executed):
    (shown,) = outputs(executed[2], "display_data")
    frame = shown["data"]["text/html"]
    assert frame.startswith('<iframe class="initscope-report" srcdoc="') and "height: 700px" in frame
    page = html.unescape(re.search(r'srcdoc="(.*?)" style=', frame, re.S).group(1))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("Plotly.newPlot(") == 5 and '<section id="verdict">' in page
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js inline: nothing fetched
    assert page.count("<script") == 1 + 5  # plotly.js once, then one script per figure


def test_figure_functions_take_the_runs_config(executed):
    (printed,) = outputs(executed[3], "stream")
    assert printed["text"].startswith("5 [")  # one frame per layer 0..4
    assert "normal" in printed["text"]


def test_an_inspection_shows_its_diagnosis_and_layers(executed):
    (result,) = outputs(executed[4], "execute_result")
    page = result["data"]["text/html"]
    assert "<strong>initscope inspect</strong>: Sequential, 4 layers" in page
    assert "<th>module_type</th>" in page and "<td>Linear</td>" in page


def test_the_plain_repr_is_one_line(executed):
    (printed,) = outputs(executed[5], "stream")
    assert printed["text"].count("\n") == 1 and printed["text"].startswith("RunResult: ")
