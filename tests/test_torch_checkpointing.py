"""initscope.torch.checkpointing: inspect's backward pass recomputes repeated blocks instead of keeping their
activations, with the same gradients, the same recorded states, and the model left as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
from torch import nn  # noqa: E402

from initscope.cli.app import main  # noqa: E402
from initscope.torch import inspect  # noqa: E402
from initscope.torch.checkpointing import checkpointed, repeated_blocks  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import torch_models as tm  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _names(model: nn.Module, modules) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(m)] for m in modules]


def _blocks(model: nn.Module) -> list[str]:
    return _names(model, repeated_blocks(model))


def test_repeated_blocks_are_the_outermost_repeated_modules():
    assert _blocks(tm.tiny_resnet()) == [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)]
    assert _blocks(tm.bert(depth=3, dim=32)) == [f"encoder.layer.{i}" for i in range(3)]
    assert _blocks(tm.encoder(depth=2, dim=16)) == ["encoder.layers.0", "encoder.layers.1"]
    assert _blocks(tm.attention_only(depth=3, dim=16)) == ["attn.0", "attn.1", "attn.2"]
    # An MLP's layers are leaves: nothing to recompute. A stage of two blocks is checkpointed as a whole, once.
    assert repeated_blocks(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())) == []
    stage = lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Sequential(nn.Linear(4, 4)))  # noqa: E731
    nested = nn.Sequential(stage(), stage())
    assert _names(nested, repeated_blocks(nested)) == ["0", "1"]
    # One shared block called twice is one block; a lone block with no sibling of its class is none.
    shared = nn.Sequential(nn.Linear(4, 4))
    assert repeated_blocks(nn.ModuleList([shared, shared])) == []  # children() yields a shared module once
    assert repeated_blocks(nn.Sequential(nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 4))) == []


def _saved_bytes(model: nn.Module, x: torch.Tensor, blocks) -> int:
    """Bytes autograd keeps for the backward pass of model(x) (pack hooks see every saved tensor)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), checkpointed(blocks):
        out = model(x)
    out.square().sum().backward()
    return total


def test_checkpointing_keeps_far_fewer_activations_and_restores_forward():
    torch.manual_seed(0)
    model = tm.tiny_resnet()
    x = torch.randn(4, 3, 32, 32)
    blocks = repeated_blocks(model)
    plain, kept = _saved_bytes(model, x, []), _saved_bytes(model, x, blocks)
    # A basic block saves ~8 of its interior tensors; checkpointed, only its input (inside torch's checkpoint).
    assert kept < 0.35 * plain, (kept, plain)
    assert all("forward" not in b.__dict__ for b in blocks)
    own = lambda *a: a[0]  # noqa: E731  a user's instance-level forward is put back too
    blocks[0].forward = own
    with checkpointed(blocks):
        assert blocks[0].forward is not own
    assert blocks[0].forward is own


def _grad_norms(result) -> np.ndarray:
    m = result.metrics
    return m[m.metric == "grad_norm"].sort_values("layer").value.to_numpy()


@pytest.mark.parametrize("build, shape", [
    (lambda: tm.tiny_resnet().double(), (6, 3, 32, 32)),
    (lambda: tm.bert(depth=3, dim=32), (4, 10)),          # train mode: dropout replays the first pass's RNG
    (lambda: tm.gpt2(depth=2, dim=32), (4, 12)),
    (lambda: tm.encoder(depth=2, dim=32), (4, 9)),
])
@pytest.mark.slow
def test_gradients_and_states_match_the_uncheckpointed_pass(build, shape):
    torch.manual_seed(1)
    model = build()
    x = torch.randn(shape, dtype=torch.float64) if len(shape) == 4 else torch.randint(0, tm.VOCAB, shape)
    buffers = [b.clone() for b in model.buffers()]
    on = inspect(model, x, metrics=["rms", "effective_rank", "grad_norm"], mode="train", checkpoint=True)
    off = inspect(model, x, metrics=["rms", "effective_rank", "grad_norm"], mode="train", checkpoint=False)
    assert on.config["checkpoint"] is True and off.config["checkpoint"] is False
    g_on, g_off = _grad_norms(on), _grad_norms(off)
    assert np.isfinite(g_on).sum() >= 5
    # Recomputation replays the same kernels on the same inputs; float32 reductions may reorder in the last bits.
    tol = 1e-12 if x.is_floating_point() else 1e-5
    np.testing.assert_allclose(g_on, g_off, rtol=tol, atol=0)
    keys = ["layer", "metric"]
    a = on.metrics[on.metrics.metric != "grad_norm"].sort_values(keys).value.to_numpy()
    b = off.metrics[off.metrics.metric != "grad_norm"].sort_values(keys).value.to_numpy()
    np.testing.assert_array_equal(a, b)  # nothing recorded twice during the recomputation, nothing lost
    assert len(on.layers) == len(off.layers)
    for before, after in zip(buffers, model.buffers(), strict=True):  # BatchNorm statistics moved twice: restored
        assert torch.equal(before, after)


class Stateful(nn.Module):
    """A block whose second call saves different tensors (a doubled batch), as a cache-filling forward can: the
    recomputation's metadata differs and torch raises CheckpointError in the backward pass."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls % 2 == 0:
            return self.lin(torch.cat([x, x]))[: len(x)].relu()
        return self.lin(x).relu()


def test_a_block_that_cannot_be_recomputed_falls_back_to_a_plain_pass_with_a_note():
    torch.manual_seed(2)
    model = nn.Sequential(Stateful(), Stateful(), nn.Linear(8, 1))
    x = torch.randn(16, 8)
    result = inspect(model, x, metrics=["rms", "grad_norm"])
    assert any("could not recompute the checkpointed blocks (its forward differs" in note for note in result.notes)
    reference = nn.Sequential(Stateful(), Stateful(), nn.Linear(8, 1))
    reference.load_state_dict(model.state_dict())
    loss = reference(x).square().sum()
    grads = torch.autograd.grad(loss, [reference[0].lin.weight, reference[1].lin.weight, reference[2].weight])
    expected = [float(torch.linalg.vector_norm(g)) for g in grads]
    got = result.metrics[(result.metrics.metric == "grad_norm") & (result.metrics.param_kind == "weight")]
    np.testing.assert_allclose(got.sort_values("layer").value.to_numpy(), expected, rtol=1e-5)
    clean = inspect(model, x, metrics=["rms", "grad_norm"], checkpoint=False)
    assert not any("checkpointed" in note for note in clean.notes)


class InPlaceInput(nn.Module):
    """A block that rectifies its own input in place: legal in a plain backward pass, but the checkpoint keeps
    that input for the recomputation, and torch refuses the modified version in the backward pass."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(torch.relu_(x))


def test_a_block_that_modifies_its_input_in_place_gets_the_plain_gradients():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 8), nn.Sequential(InPlaceInput(), InPlaceInput(), InPlaceInput()))
    x = torch.randn(16, 8)
    on = inspect(model, x, metrics=["grad_norm"])
    assert any("modified by an inplace operation" in note and "--no-checkpoint" in note for note in on.notes)
    off = inspect(model, x, metrics=["grad_norm"], checkpoint=False)
    np.testing.assert_array_equal(_grad_norms(on), _grad_norms(off))
    assert np.isfinite(_grad_norms(on)).sum() == 4


def test_checkpoint_parameter_and_flag():
    with pytest.raises(TypeError, match=r"'checkpoint' parameter must be True or False. Got 'yes'"):
        inspect(nn.Linear(3, 3), torch.randn(4, 3), checkpoint="yes")
    # Without gradients there is no backward pass to checkpoint, and the config says nothing about it.
    assert "checkpoint" not in inspect(tm.tiny_resnet(), torch.randn(2, 3, 16, 16), metrics=["rms"]).config


def test_cli_no_checkpoint_is_passed_and_in_the_rerun_command(tmp_path):
    factory = Path(__file__).parent / "torch_models.py"
    for flag, expected in (("--checkpoint", True), ("--no-checkpoint", False)):
        out = tmp_path / flag
        code = main(["inspect", f"{factory}:tiny_resnet", "--input-shape", "4,3,16,16", "--metrics", "rms,grad_norm",
                     "--no-report", "--quiet", "--out", str(out), flag])
        assert code == 0
        config = (out / "config.toml").read_text()
        assert f"checkpoint = {str(expected).lower()}" in config
        assert ("--no-checkpoint" in config) is (not expected)
