"""A Linear's or Conv's output that a norm reads next is not judged by its scale: the norm sets it.

ResNet-50 at initialization, read with the stem conv as reference, had eleven "rms 10-19x the reference's"
lines at its blocks' first convs, each followed by a BatchNorm: false alarms for a healthy model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
from torch import nn  # noqa: E402

from initscope.study.flags import NEVER  # noqa: E402
from initscope.torch import diagnose, flag_table, inspect  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import torch_models as tm  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SCALE = "scale (rms) left [0.1, 10]× the input's"


def _loud_convs(model: nn.Module, factor: float) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(factor)
    return model


def test_a_conv_read_by_a_batchnorm_is_named_and_not_judged_by_its_scale():
    torch.manual_seed(0)
    model = _loud_convs(tm.tiny_resnet(), 30.0)  # every conv's output ~30x too large; every BN undoes it
    result = inspect(model, torch.randn(8, 3, 16, 16), metrics=["rms", "effective_rank"])
    layers = result.layers.set_index("module")
    assert layers.at["layer1.0.conv1", "normalised_by"] == "layer1.0.bn1"
    assert layers.at["layer2.0.downsample.0", "normalised_by"] == "layer2.0.downsample.1"
    assert (layers.loc[layers["module_type"] != "Conv2d", "normalised_by"] == "").all()
    rms = result.metrics.query("metric == 'rms'").set_index("module")["value"]
    assert rms["layer1.0.conv1"] > 10 * rms["conv1"] / 30  # the conv outputs really are loud
    assert flag_table(result).at[0, SCALE] == NEVER
    assert not [line for line in diagnose(result) if "rms" in line]


def test_the_same_loud_convs_without_norms_are_flagged():
    torch.manual_seed(0)
    body = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()] + [m for _ in range(4) for m in (nn.Conv2d(8, 8, 3, padding=1),
                                                                                           nn.ReLU())]
    model = _loud_convs(nn.Sequential(*body), 30.0)
    result = inspect(model, torch.randn(8, 3, 16, 16), metrics=["rms"])
    assert (result.layers["normalised_by"] == "").all()
    assert "rms" in flag_table(result).at[0, SCALE]
    assert any("rms" in line for line in diagnose(result))


def test_a_norm_reading_a_sum_or_the_residual_stream_marks_nothing():
    """BERT's LayerNorm reads dense(h) + residual, GPT-2's ln_1 the residual stream a block returned: neither
    tensor is a Linear's output, and the stream's scale is carried on by the skips, so both stay judged."""
    torch.manual_seed(0)
    for model in (tm.bert(depth=2, dim=32), tm.gpt2(depth=2, dim=32), tm.encoder(depth=2, dim=32)):
        result = inspect(model, torch.randint(0, tm.VOCAB, (4, 12)), metrics=["rms"])
        assert (result.layers["normalised_by"] == "").all(), type(model).__name__
    # A Linear straight into a LayerNorm is marked.
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
    result = inspect(model, torch.randn(20, 6), metrics=["rms"])
    assert result.layers.set_index("module").at["0", "normalised_by"] == "1"
    assert result.layers.set_index("module").at["3", "normalised_by"] == ""


def test_normalised_by_survives_layers_csv(tmp_path):
    from initscope.report.tables import load_run
    from initscope.study.flags import model_context, model_flags_table

    torch.manual_seed(0)
    result = inspect(_loud_convs(tm.tiny_resnet(), 30.0), torch.randn(8, 3, 16, 16), metrics=["rms"])
    for name in ("metrics", "layers", "flags"):
        getattr(result, name).to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "config.toml").write_text('init = ["model"]\n')
    loaded = load_run(tmp_path)
    np.testing.assert_array_equal(loaded.layers["normalised_by"].fillna("").to_numpy(),
                                  result.layers["normalised_by"].to_numpy())
    assert model_flags_table(loaded.metrics, loaded.flags, *model_context(loaded.layers)).at[0, SCALE] == NEVER
    # Without the column (a layers.csv from before it), the loud convs are judged by their scale again.
    older = model_context(loaded.layers.drop(columns="normalised_by"))
    assert "rms" in model_flags_table(loaded.metrics, loaded.flags, *older).at[0, SCALE]
