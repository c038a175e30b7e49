"""initscope.report.modules and the report of an inspected model: module names on every layer axis, slider and
hover, the flags table naming modules, and deep models' depth panels at their block outputs with a switch."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from initscope.report.modules import MAX_SHOWN, block_outputs, layer_names

pytest.importorskip("plotly", reason="the report needs plotly")


def _resnet18_names() -> dict[int, str]:
    """The recorded layers of torchvision's ResNet-18 layout, in execution order (the ReLU of a block twice)."""
    names = ["input", "conv1", "bn1", "relu", "maxpool"]
    for stage in range(1, 5):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            down = [f"{prefix}.downsample.0", f"{prefix}.downsample.1"] if stage > 1 and block == 0 else []
            names += down + [f"{prefix}.{m}" for m in ("conv1", "bn1", "relu", "conv2", "bn2", "relu")]
    names += ["avgpool", "fc"]
    return dict(enumerate(names))


def test_block_outputs_of_a_resnet18_are_its_stem_blocks_and_head():
    names = _resnet18_names()
    assert len(names) - 1 == 60
    chosen = block_outputs(names)
    blocks = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert list(chosen.values()) == ["input", "conv1", "bn1", "relu", "maxpool", *blocks, "avgpool", "fc"]
    # a block's output is its last recorded layer: the second call of its ReLU, after the skip
    at = {block: layer for layer, block in chosen.items()}
    assert names[at["layer1.0"]] == "layer1.0.relu" and names[at["layer1.0"] - 1] == "layer1.0.bn2"


def test_block_outputs_pick_the_deepest_level_that_fits_and_space_out_flat_models():
    bert = {0: "input", 1: "embeddings.word_embeddings", 2: "embeddings.LayerNorm"}
    for i in range(12):
        for part in ("attention.self.query", "attention.self.key", "attention.output.dense", "output.dense",
                     "output.LayerNorm"):
            bert[len(bert)] = f"encoder.layer.{i}.{part}"
    chosen = block_outputs(bert)
    assert [b for b in chosen.values() if b.startswith("encoder")] == [f"encoder.layer.{i}" for i in range(12)]
    flat = {0: "input", **{i: str(i - 1) for i in range(1, 101)}}  # nn.Sequential of 100 modules
    spaced = block_outputs(flat)
    assert len(spaced) <= MAX_SHOWN + 2 and 100 in spaced and 0 in spaced
    steps = set(pd.Series(sorted(spaced)[1:-1]).diff().dropna())
    assert len(steps) == 1  # evenly spaced


def test_layer_names_of_a_run_is_none_and_of_a_small_model_every_layer():
    run = pd.DataFrame({"init": "a", "trial": 0, "layer": [0, 1], "metric": "rms", "value": 1.0})
    assert layer_names(run) is None
    model = run.assign(module=["input", "body.0"], module_type=["input", "Linear"])
    names = layer_names(model)
    assert not names.deep and names.selection == (0, 1) and names.ticks == ("input", "body.0")
    assert names.where(1) == "layer 1 (body.0, Linear)" and names.step(1) == "1 body.0"
    assert names.where(0) == "layer 0 (input)"


@pytest.fixture(scope="module")
def resnet_report(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    sys.path.insert(0, str(Path(__file__).parent))
    import torch_models as tm

    from initscope.report import write_report
    from initscope.torch import inspect

    torch.manual_seed(0)
    result = inspect(tm.tiny_resnet(), torch.randn(12, 3, 16, 16),
                     metrics=["rms", "effective_rank", "dead_fraction", "grad_norm"])
    path = write_report(result, tmp_path_factory.mktemp("modules") / "report.html")
    return result, path


@pytest.mark.slow
def test_the_report_names_modules_on_every_layer_view(resnet_report):
    from initscope.report.page import report_specs
    from initscope.report.tables import as_tables

    result, path = resnet_report
    page = path.read_text()
    assert page.count("layer1.0.conv1") >= 4
    specs = report_specs(as_tables(result))
    steps = [s["label"] for s in specs["layers-3d"]["layout"]["sliders"][0]["steps"]]
    assert steps[:3] == ["0 input", "1 conv1", "2 bn1"] and "5 layer1.0.conv1" in steps
    assert [s["label"] for s in specs["spectra"]["layout"]["sliders"][0]["steps"]] == steps
    heat = specs["spectrum-heatmap"]
    assert "5 layer1.0.conv1" in heat["data"][0]["x"] and "layer1.0" in heat["layout"]["xaxis"]["ticktext"]
    depth = specs["metrics-depth"]
    assert "layer1.0" in depth["layout"]["xaxis"]["ticktext"]
    hovers = {t for trace in depth["data"] for t in trace.get("text", [])}
    assert "layer 5 (layer1.0.conv1, Conv2d)" in hovers


def test_deep_model_depth_panels_show_block_outputs_with_a_switch(resnet_report):
    from initscope.report.page import report_specs
    from initscope.report.tables import as_tables

    result, _ = resnet_report
    depth = report_specs(as_tables(result))["metrics-depth"]
    sets = depth["layout"]["meta"]["layer_sets"]
    assert len(sets) == len(depth["data"]) and {"selection", "all"} <= set(sets)
    selection = [t for t, s in zip(depth["data"], sets) if s == "selection"]
    every = [t for t, s in zip(depth["data"], sets) if s == "all"]
    assert all(t["visible"] for t in selection) and not any(t["visible"] for t in every)
    assert len(selection[2]["x"]) == 15 and len(every[2]["x"]) == len(result.layers)  # stem, 8 blocks, head
    buttons = depth["layout"]["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == ["block outputs (15 layers)", f"all {len(result.layers)} layers"]
    assert buttons[1]["args"][0]["visible"] == [s in ("", "all") for s in sets]


def test_the_flags_table_names_modules(resnet_report, tmp_path):
    from initscope.report.page import _flags_html
    from initscope.report.tables import as_tables, load_run

    result, _ = resnet_report
    # A scale problem at a named module (a norm's output: a conv's, which bn1 rescales, is not judged by its scale).
    result.metrics.loc[(result.metrics["module"] == "layer2.0.bn1") & (result.metrics["metric"] == "rms"),
                       "value"] *= 1000
    cell = _flags_html(as_tables(result))
    assert "layer2.0.bn1, BatchNorm2d): rms" in cell and "vanishing gradients" in cell
    for name in ("metrics", "layers", "flags"):
        getattr(result, name).to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "config.toml").write_text('init = ["model"]\n')
    assert "layer2.0.bn1, BatchNorm2d): rms" in _flags_html(load_run(tmp_path))  # `initscope report DIR` too
    assert math.isfinite(result.metrics.query("metric == 'rms'")["value"].max())
