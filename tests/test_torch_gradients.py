"""initscope.torch.gradients: grad_norm compares like with like, differentiates the chosen loss on the right
tensor, and never calls a structured-output model unweighted."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from initscope.study.flags import NEVER, model_flags_table  # noqa: E402
from initscope.torch import diagnose, flag_table, inspect  # noqa: E402
from initscope.torch.gradients import LOSSES, LossWarning, gradient_params, param_kind  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import torch_models as tm  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


class MyRMSNorm(nn.Module):
    """A custom norm as LLaMA-style code writes it: one-axis `weight`, not an nn.LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * self.weight


def test_parameter_kinds_of_every_module_type():
    attn = nn.MultiheadAttention(8, 2)
    kind, params = gradient_params(attn)
    assert kind == "weight" and {id(p) for p in params} == {id(attn.in_proj_weight), id(attn.out_proj.weight)}
    bn = nn.BatchNorm2d(4)
    assert gradient_params(bn) == ("norm_affine", [bn.weight, bn.bias])  # γ and β
    assert param_kind(nn.LayerNorm(4)) == param_kind(nn.GroupNorm(2, 4)) == param_kind(MyRMSNorm(4)) == "norm_affine"
    assert param_kind(nn.RMSNorm(4)) == param_kind(nn.InstanceNorm1d(4, affine=True)) == "norm_affine"
    assert param_kind(nn.Linear(3, 4)) == param_kind(nn.Conv2d(3, 4, 3)) == "weight"
    assert param_kind(nn.Embedding(5, 4)) == "embedding" and param_kind(nn.PReLU(4)) == "scale"
    assert param_kind(nn.ReLU()) == param_kind(nn.LayerNorm(4, elementwise_affine=False)) == param_kind(None) == "none"
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    kind, params = gradient_params(layer)  # a block reads its matrices, not its LayerNorms' γ
    assert kind == "weight" and all(p.ndim == 2 for p in params) and len(params) == 4


@pytest.mark.slow
def test_healthy_resnet18_has_no_batchnorm_versus_conv_gradient_flags():
    torch.manual_seed(0)
    model = tm.resnet18(num_classes=1000, width=64)
    result = inspect(model, torch.randn(4, 3, 32, 32), metrics=["grad_norm"])
    grads = result.metrics.query("metric == 'grad_norm' and param_kind != 'none'")
    kinds = grads.groupby("param_kind")["value"].max()
    assert set(kinds.index) == {"weight", "norm_affine"}
    assert set(grads.query("module_type == 'BatchNorm2d'")["param_kind"]) == {"norm_affine"}
    # The rule without kinds (every weighted layer against the largest) fires on a BatchNorm: the false alarm.
    old = model_flags_table(result.metrics.drop(columns="param_kind"), result.flags).iloc[0]["vanishing gradients"]
    assert old != NEVER and "BatchNorm2d" in old
    assert flag_table(result).iloc[0]["vanishing gradients"] == NEVER
    assert not [line for line in diagnose(result, limit=100) if "gradient" in line]
    assert result.layers.set_index("module").at["layer1.0.conv1", "param_kind"] == "weight"


def _classifier() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).double()


def _direct(model: nn.Module, loss) -> list[float]:
    weights = [model[0].weight, model[2].weight, model[4].weight]
    return [float(g.norm()) for g in torch.autograd.grad(loss, weights)]


def _measured(result) -> list[float]:
    g = result.metrics.query("metric == 'grad_norm'").set_index("layer")["value"]
    return [g[1], g[3], g[5]]


def test_every_loss_matches_a_direct_torch_computation():
    model = _classifier()
    x = torch.randn(24, 5, dtype=torch.float64)
    ids = torch.randint(0, 4, (24,))
    y = torch.randn(24, 4, dtype=torch.float64)
    cases = {
        "output-norm": (None, lambda out: out.square().sum()),
        "mse": (y, lambda out: F.mse_loss(out, y)),
        "cross-entropy": (ids, lambda out: F.cross_entropy(out, ids)),
        "random-projection": (None, None),
    }
    for name in LOSSES:
        targets, direct = cases[name]
        result = inspect(model, x, targets=targets, loss=name, metrics=["grad_norm"], seed=3)
        assert result.config["loss"] == name
        got = _measured(result)
        assert all(g > 0 and math.isfinite(g) for g in got)
        if direct is not None:
            assert got == pytest.approx(_direct(model, direct(model(x))), rel=1e-10)
    # Defaults: integer targets mean cross-entropy, floating ones mse; mse against zeros = output-norm / entries.
    assert inspect(model, x, targets=ids, metrics=["grad_norm"]).config["loss"] == "cross-entropy"
    assert inspect(model, x, targets=y, metrics=["grad_norm"]).config["loss"] == "mse"
    zeros = _measured(inspect(model, x, loss="mse", metrics=["grad_norm"]))
    norm = _measured(inspect(model, x, metrics=["grad_norm"]))
    assert np.allclose(np.array(zeros) * 24 * 4, norm, rtol=1e-10)
    # Cross-entropy without targets: seeded random class ids, said in a note, the same for the same seed.
    a = inspect(model, x, loss="cross-entropy", metrics=["grad_norm"], seed=5)
    assert any("class ids drawn uniformly" in note for note in a.notes)
    assert _measured(a) == _measured(inspect(model, x, loss="cross-entropy", metrics=["grad_norm"], seed=5))


def test_cross_entropy_with_a_targets_file_from_the_cli(tmp_path, capsys):
    from initscope.cli.inspect import main

    (tmp_path / "models.py").write_text(
        "from torch import nn\n\ndef make():\n    import torch\n    torch.manual_seed(1)\n"
        "    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))\n")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 5)).astype(np.float32)
    ids = rng.integers(0, 4, 24)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "out"
    code = main(["inspect", f"{tmp_path}/models.py:make", "--input", str(tmp_path / "x.npy"), "--loss",
                 "cross-entropy", "--targets", str(tmp_path / "ids.npy"), "--out", str(out), "--no-report", "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = pd.read_csv(out / "metrics.csv").query("metric == 'grad_norm'").set_index("layer")["value"]
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(ids))
    expected = _direct(model, loss)
    assert [metrics[1], metrics[3], metrics[5]] == pytest.approx(expected, rel=1e-5)
    assert "--loss cross-entropy" in (out / "config.toml").read_text()


def test_layernorm_ended_model_gets_a_non_degenerate_default():
    torch.manual_seed(0)
    model = tm.gpt2(depth=2, dim=32)
    ids = torch.randint(0, tm.VOCAB, (8, 12))
    default = inspect(model, ids, metrics=["grad_norm"])
    assert default.config["loss"] == "random-projection"
    assert any("same norm" in note and "--loss" in note for note in default.notes)
    with pytest.warns(LossWarning, match="random-projection"):
        flat = inspect(model, ids, metrics=["grad_norm"], loss="output-norm")
    g_default = default.metrics.query("metric == 'grad_norm'").set_index("module")["value"]
    g_flat = flat.metrics.query("metric == 'grad_norm'").set_index("module")["value"]
    # Σ LN(h)² is constant: only ln_f's own γ feels it; every matrix before it gets ~0 (rounding).
    assert g_flat["h.0.attn.c_attn"] < 1e-4 * g_flat["ln_f"]
    assert g_default["h.0.attn.c_attn"] > 0.05 * g_default["ln_f"]
    assert flag_table(default).iloc[0]["vanishing gradients"] == NEVER


def test_structured_outputs_get_gradients_on_the_right_tensor():
    torch.manual_seed(0)
    x = torch.randn(10, 6)
    model = tm.dict_output()
    result = inspect(model, x, metrics=["grad_norm"])
    got = result.metrics.query("metric == 'grad_norm'").set_index("module")["value"]
    grads = torch.autograd.grad(model(x)["logits"].square().sum(), [model.body.fc.weight, model.body.head.weight])
    assert [got["body.fc"], got["body.head"]] == pytest.approx([float(g.norm()) for g in grads], rel=1e-5)
    assert any("'logits'" in note for note in result.notes)
    model = tm.dataclass_output()
    result = inspect(model, x, metrics=["grad_norm"])
    expected = torch.autograd.grad(model(x).hidden.square().sum(), [model.fc.weight])[0].norm().item()
    assert result.metrics.query("metric == 'grad_norm' and module == 'fc'")["value"].item() == pytest.approx(expected)
    bert = tm.bert(depth=2, dim=32)
    result = inspect(bert, torch.randint(0, tm.VOCAB, (6, 9)), metrics=["grad_norm"], mode="eval")
    cell = flag_table(result).iloc[0]["vanishing gradients"]
    assert cell == NEVER and "no weighted layers" not in cell
    assert any("'last_hidden_state'" in note for note in result.notes)
    grads = result.metrics.query("metric == 'grad_norm'").set_index("module")["value"]
    assert grads["encoder.layer.0.attention.self.query"] > 0
    assert math.isnan(grads["pooler.dense"])  # the pooler does not feed last_hidden_state: not measured, not 0
    assert any("pooler.dense" in note and "does not depend" in note for note in result.notes)


def test_bad_loss_arguments_name_the_parameter():
    model = _classifier()
    x = torch.randn(8, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"The 'loss' parameter must be one of \['output-norm'.*Got 'hinge'"):
        inspect(model, x, loss="hinge")
    with pytest.raises(ValueError, match="'targets' parameter is not read by loss='output-norm'"):
        inspect(model, x, loss="output-norm", targets=torch.zeros(8, 4))
    with pytest.raises(ValueError, match="'targets' parameter must hold integer class ids"):
        inspect(model, x, loss="cross-entropy", targets=torch.zeros(8))
    with pytest.raises(ValueError, match=r"'targets' parameter must hold class ids in \[0, 4\).*from 0 to 7"):
        inspect(model, x, loss="cross-entropy", targets=torch.arange(8))
    with pytest.raises(ValueError, match="'targets' parameter must be floating point for loss='mse'"):
        inspect(model, x, loss="mse", targets=torch.zeros(8, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"'targets' parameter must have the model output's shape \(8, 4\)"):
        inspect(model, x, loss="mse", targets=torch.zeros(8, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "hinge"], "The 'loss' parameter must be one of ['output-norm', 'mse', 'cross-entropy', "
                              "'random-projection']. Got 'hinge' instead."),
        (["--loss", "output-norm", "--targets", "T"], "'targets' parameter is not read by --loss output-norm"),
        (["--loss", "cross-entropy", "--targets", "T"], "'targets' parameter must hold integer class ids"),
        (["--loss", "mse", "--targets", "IDS"], "'targets' parameter must be floating point for loss='mse'"),
    ],
)
def test_cli_loss_errors_exit_2(tmp_path, capsys, args, message):
    from initscope.cli.inspect import main

    (tmp_path / "models.py").write_text("from torch import nn\n\ndef make():\n    return nn.Linear(3, 2)\n")
    np.save(tmp_path / "t.npy", np.zeros((6, 2)))
    np.save(tmp_path / "ids.npy", np.zeros(6, dtype=np.int64))
    args = [{"T": str(tmp_path / "t.npy"), "IDS": str(tmp_path / "ids.npy")}.get(a, a) for a in args]
    code = main(["inspect", f"{tmp_path}/models.py:make", "--input-shape", "6,3", *args, "--no-report",
                 "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_cli_losses_match_the_api():
    from initscope.cli import inspect as cli_inspect
    from initscope.torch import gradients

    assert cli_inspect.LOSSES == gradients.LOSSES
