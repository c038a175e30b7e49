"""initscope.torch.initialize: registry initializers on torch layouts, with torch's fans (and #7865's fix)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
nn = torch.nn

from initscope.core.initializers import INITIALIZERS, recommended_gain  # noqa: E402
from initscope.torch import initialize, weight_fans  # noqa: E402
from initscope.torch.initializers import _to_layout  # noqa: E402

KS_ALPHA = 1e-3  # fixed seeds: each KS test's outcome is deterministic; under H0 p < 1e-3 has odds 1 in 1,000


def modules():
    """One of each layout, with groups where the layout has them."""
    return {
        "linear": nn.Linear(24, 40),
        "conv1d": nn.Conv1d(6, 10, 5),
        "conv2d": nn.Conv2d(8, 12, 3, groups=2),
        "convT2d": nn.ConvTranspose2d(8, 6, 3, groups=2),
    }


def test_fans_follow_the_documented_rule():
    torch_fans = nn.init._calculate_fan_in_and_fan_out
    m = modules()
    # Linear, Conv: torch's own rule, fan_in = size(1)·k, fan_out = size(0)·k.
    for name in ("linear", "conv1d", "conv2d"):
        fans = weight_fans(m[name])
        assert (fans.fan_in, fans.fan_out) == torch_fans(m[name].weight), name
        assert fans.units == m[name].weight.shape[0]
    assert (weight_fans(m["linear"]).fan_in, weight_fans(m["linear"]).fan_out) == (24, 40)
    assert (weight_fans(m["conv1d"]).fan_in, weight_fans(m["conv1d"]).fan_out) == (6 * 5, 10 * 5)
    assert (weight_fans(m["conv2d"]).fan_in, weight_fans(m["conv2d"]).fan_out) == (8 // 2 * 9, 12 * 9)
    # ConvTranspose (in, out/groups, *k): the fans of Conv(in, out, groups, k), each output channel's
    # incoming vector; torch's rule reads dims 1 and 0 and gets them swapped (pytorch#7865).
    t = weight_fans(m["convT2d"])
    assert (t.fan_in, t.fan_out, t.units) == (8 // 2 * 9, 6 * 9, 6)
    assert torch_fans(m["convT2d"].weight) == (6 // 2 * 9, 8 * 9)
    same_conv = weight_fans(nn.Conv2d(8, 6, 3, groups=2))
    assert (t.fan_in, t.fan_out) == (same_conv.fan_in, same_conv.fan_out)


@pytest.mark.parametrize("name", ["linear", "conv1d", "conv2d", "convT2d"])
def test_each_output_unit_reads_one_column(name):
    """The layout puts column j of W into output unit j's incoming weights, for every layout."""
    module = modules()[name]
    fans = weight_fans(module)
    W = np.arange(fans.fan_in * fans.units, dtype=np.float64).reshape(fans.fan_in, fans.units)
    weight = torch.from_numpy(_to_layout(W, tuple(module.weight.shape), fans))
    if name == "convT2d":
        per_in, per_out = module.in_channels // fans.groups, module.out_channels // fans.groups
        for unit in range(fans.units):
            gi, j = divmod(unit, per_out)
            incoming = weight[gi * per_in:(gi + 1) * per_in, j].reshape(-1)
            assert torch.equal(incoming, torch.from_numpy(W[:, unit]))
    else:
        for unit in range(fans.units):
            assert torch.equal(weight[unit].reshape(-1), torch.from_numpy(W[:, unit]))


@pytest.mark.parametrize("init", sorted(INITIALIZERS))
def test_every_initializer_fills_every_layout(init):
    model = nn.Sequential(*modules().values()).float()
    shapes = [tuple(p.shape) for p in model.parameters()]
    biases = [m.bias.detach().clone() for m in model]
    assert initialize(model, init, seed=3) is model
    assert [tuple(p.shape) for p in model.parameters()] == shapes
    for module, bias in zip(model, biases, strict=True):
        assert module.weight.dtype == torch.float32 and torch.isfinite(module.weight).all()
        assert module.weight.abs().sum() > 0
        assert torch.equal(module.bias, bias)  # bias="keep"


def test_sphere_makes_every_output_units_vector_unit_norm():
    model = nn.Sequential(*modules().values()).double()
    initialize(model, "sphere", gain=2.0)
    for module in model:
        fans = weight_fans(module)
        w = module.weight.detach()
        if fans.transposed:
            g = fans.groups
            w = w.reshape(g, w.shape[0] // g, w.shape[1], -1).transpose(1, 2)
        norms = w.reshape(fans.units, -1).norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 2.0))


def test_orthogonal_matches_torch_flattening():
    conv = nn.Conv2d(4, 8, 3).double()  # (8, 36): 8 orthonormal rows, as torch.nn.init.orthogonal_ makes
    initialize(conv, "orthogonal", gain=1.5)
    w = conv.weight.detach().reshape(8, -1)
    torch.testing.assert_close(w @ w.T, 1.5**2 * torch.eye(8, dtype=torch.float64))


def _ks(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return stats.ks_2samp(ours.detach().reshape(-1).numpy(), theirs.detach().reshape(-1).numpy()).pvalue


TORCH_RULES = {
    "kaiming-normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "kaiming-uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "lecun-normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="linear"),
    "xavier-normal": nn.init.xavier_normal_,
    "xavier-uniform": nn.init.xavier_uniform_,
    "normal": nn.init.normal_,
    "uniform": lambda w: nn.init.uniform_(w, -1.0, 1.0),
    "orthogonal": nn.init.orthogonal_,
}


@pytest.mark.parametrize("init", sorted(TORCH_RULES))
@pytest.mark.parametrize("make", [lambda: nn.Linear(96, 128), lambda: nn.Conv2d(24, 48, 3)], ids=["linear", "conv2d"])
def test_matches_torch_nn_init_where_both_define_the_rule(init, make):
    torch.manual_seed(0)
    ours, theirs = make(), make()
    initialize(ours, init, activation="relu" if init != "lecun-normal" else "identity", seed=1)
    TORCH_RULES[init](theirs.weight.data)
    assert _ks(ours.weight, theirs.weight) > KS_ALPHA


def test_torch_default_matches_a_fresh_module():
    torch.manual_seed(0)
    for make in (lambda: nn.Linear(96, 128), lambda: nn.Conv2d(24, 48, 3)):
        ours, fresh = make(), make()
        initialize(ours, "torch-default", seed=2)
        assert _ks(ours.weight, fresh.weight) > KS_ALPHA


def test_conv_transpose_uses_the_corrected_fan_and_the_test_can_tell():
    """kaiming on ConvTranspose2d(32, 8): std √2/sqrt(32·9), as for Conv2d(32, 8); torch uses √2/sqrt(8·9)."""
    torch.manual_seed(0)
    ours = nn.ConvTranspose2d(32, 8, 3)
    initialize(ours, "kaiming-normal", seed=4)
    same_conv = nn.Conv2d(32, 8, 3)
    nn.init.kaiming_normal_(same_conv.weight, nonlinearity="relu")
    torch_rule = nn.ConvTranspose2d(32, 8, 3)
    nn.init.kaiming_normal_(torch_rule.weight, nonlinearity="relu")
    assert _ks(ours.weight, same_conv.weight) > KS_ALPHA
    assert _ks(ours.weight, torch_rule.weight) < 1e-12  # twice the std: the KS test has the power to see it
    expected = recommended_gain("relu") / math.sqrt(32 * 9)
    assert float(ours.weight.detach().std()) == pytest.approx(expected, rel=0.05)


def test_xavier_uses_torchs_fan_out_for_convolutions():
    conv = nn.Conv2d(16, 32, 5).double()
    initialize(conv, "xavier-normal", seed=5)
    expected = math.sqrt(2.0 / (16 * 25 + 32 * 25))
    assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.03)


def test_seed_bias_and_tied_weights():
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    initialize(a, "kaiming-normal", seed=7)
    initialize(b, "kaiming-normal", seed=7)
    assert torch.equal(a.weight, b.weight)
    initialize(b, "kaiming-normal", seed=8)
    assert not torch.equal(a.weight, b.weight)
    initialize(a, "normal", bias="zeros")
    assert torch.equal(a.bias, torch.zeros(8))
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 4, bias=False))
    tied[2].weight = tied[0].weight
    untied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    initialize(tied, "normal", seed=1)
    initialize(untied, "normal", seed=1)
    assert torch.equal(tied[0].weight, untied[0].weight)  # drawn once, the same as the first untied layer


def test_bad_arguments_name_the_parameter():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'init' parameter must be one of .*kaiming-normal"):
        initialize(model, "he")
    with pytest.raises(ValueError, match="'bias' parameter"):
        initialize(model, "normal", bias="ones")
    with pytest.raises(ValueError, match="'gain' parameter"):
        initialize(model, "normal", gain=-1.0)
    with pytest.raises(TypeError, match="'model' parameter"):
        initialize(object(), "normal")
    with pytest.raises(ValueError, match="not materialized"):
        initialize(nn.LazyLinear(3), "normal")


# ---------------------------------------------------------------- layer-wise, data-driven initializers


def _torch_models():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import torch_models

    return torch_models


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def _outputs(model, x, types):
    got = []
    handles = [m.register_forward_hook(lambda m, a, o: got.append(o.detach())) for m in model.modules()
               if isinstance(m, types)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return got


@pytest.mark.slow
def test_lsuv_gives_every_layer_unit_variance_on_the_batch_in_execution_order():
    from initscope.core.fitted import LSUV_TOL

    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    model = initialize(_mlp(), "lsuv", inputs=x)
    for z in _outputs(model, x, nn.Linear):
        assert abs(float(z.var(unbiased=False)) - 1.0) < 2 * LSUV_TOL
    tm = _torch_models()
    torch.manual_seed(0)
    resnet = tm.tiny_resnet()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    stats = {k: v.clone() for k, v in resnet.state_dict().items() if "running" in k}
    initialize(resnet, "lsuv", inputs=images)
    assert all(torch.equal(v, resnet.state_dict()[k]) for k, v in stats.items())  # BatchNorm statistics untouched
    for z in _outputs(resnet, images, (nn.Conv2d, nn.Linear)):
        assert abs(float(z.var(unbiased=False)) - 1.0) < 2 * LSUV_TOL


def test_conv_patches_are_read_in_the_weights_order():
    """fit_rows(conv, x) @ W reproduces the convolution, so column j of the fitted W is channel j's filter."""
    from initscope.torch.fitting import fit_rows
    from initscope.torch.initializers import _to_layout

    gen = torch.Generator().manual_seed(3)
    for conv, x in ((nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), bias=False),
                     torch.randn(2, 3, 9, 8, generator=gen)),
                    (nn.Conv1d(4, 6, 3, stride=2, padding=1, bias=False), torch.randn(2, 4, 11, generator=gen))):
        fans = weight_fans(conv)
        W = np.random.default_rng(0).standard_normal((fans.fan_in, fans.units))
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(_to_layout(W, tuple(conv.weight.shape), fans)))
            direct = conv(x)
        rows = fit_rows(conv, x).double().numpy() @ W  # (n·positions, out)
        expected = direct.movedim(1, -1).reshape(-1, fans.units).double().numpy()
        np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-5)


def test_well_spaced_shifts_put_every_first_layer_unit_between_its_quantiles():
    x = torch.randn(400, 8, generator=torch.Generator().manual_seed(4))
    model = initialize(_mlp(), "well-spaced", inputs=x)
    active = (_outputs(model, x, nn.Linear)[0] > 0).double().mean(dim=0)
    assert float(active.min()) >= 0.05 - 1 / 400 and float(active.max()) <= 0.95 + 1 / 400


def test_looks_linear_makes_a_relu_net_linear_at_init():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(5))
    initialize(model, "looks-linear", inputs=x, bias="zeros")
    with torch.no_grad():
        out = model(x)
        also = model(-x)
    # relu(u) − relu(−u) = u at every layer: the pairs' difference is linear in x.
    diff = out[:, :8] - out[:, 8:]
    np.testing.assert_allclose((diff + (also[:, :8] - also[:, 8:])).numpy(), 0.0, atol=1e-5)


def test_layer_wise_errors_name_the_layers():
    tm = _torch_models()
    with pytest.raises(ValueError, match="'inputs' parameter must be a batch.*'lsuv'"):
        initialize(_mlp(), "lsuv")
    images = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"'well-spaced' is layer-wise.*conv1 \(Conv2d: no bias"):
        initialize(tm.tiny_resnet(), "well-spaced", inputs=images)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.ConvTranspose2d(4, 2, 3))
    with pytest.raises(ValueError, match=r"0 \(Conv2d: a grouped convolution.*1 \(ConvTranspose2d: a transposed"):
        initialize(grouped, "lsuv", inputs=torch.randn(2, 4, 8, 8))
    ids = torch.randint(0, tm.VOCAB, (3, 5))
    with pytest.raises(ValueError, match=r"attn.0.out_proj \(NonDynamicallyQuantizableLinear: never called"):
        initialize(tm.attention_only(depth=1, dim=8, heads=2), "lsuv", inputs=ids)
    with pytest.raises(ValueError, match=r"'looks-linear' is layer-wise.*4 \(Linear: 3 outputs"):
        initialize(nn.Sequential(*list(_mlp())[:4], nn.Linear(32, 3)), "looks-linear", inputs=torch.randn(3, 8))


class Conv1D(nn.Module):
    """HuggingFace's Conv1D as transformers defines it: y = x @ weight + bias with weight (in, out)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


@pytest.mark.parametrize("init", ["kaiming-normal", "xavier-uniform", "orthogonal", "sphere"])
def test_hf_conv1d_is_a_linear_stored_in_out(init):
    """GPT-2's projections: the same draw as a Linear of the same fans, transposed into (in, out)."""
    conv, linear = Conv1D(40, 24), nn.Linear(24, 40)
    fans = weight_fans(conv)
    assert (fans.fan_in, fans.fan_out, fans.units) == (24, 40, 40)
    initialize(conv, init, seed=3)
    initialize(linear, init, seed=3)
    assert torch.equal(conv.weight, linear.weight.T)
    x = torch.randn(5, 24)
    torch.testing.assert_close(conv(x), linear(x) - linear.bias + conv.bias)


def test_lsuv_fits_hf_conv1d_to_unit_variance():
    model = nn.Sequential(Conv1D(64, 32), nn.Tanh(), Conv1D(64, 64))
    x = torch.randn(512, 32)
    initialize(model, "lsuv", inputs=x, bias="zeros", seed=0)
    out = model(x).detach()
    assert float(out.var()) == pytest.approx(1.0, abs=0.02)  # LSUV's own tolerance on the last layer's output


class TiedLM(nn.Module):
    """An embedding whose weight the output head shares (GPT-2's wte and lm_head)."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(50, 16)
        nn.init.normal_(self.wte.weight, std=0.02)
        self.proj = Conv1D(16, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids):
        return self.head(self.norm(self.proj(self.wte(ids))))


@pytest.mark.parametrize("init", ["kaiming-normal", "lsuv"])
def test_a_weight_tied_to_an_embedding_is_kept_and_every_parameter_left_is_named(init):
    from initscope.torch.initializers import initialization_plan

    model = TiedLM()
    before = model.wte.weight.detach().clone()
    notes: list[str] = []
    initialize(model, init, inputs=torch.randint(0, 50, (8, 12)), notes=notes, seed=1)
    assert torch.equal(model.wte.weight, before)  # the embedding's std stays 0.02
    assert model.head.weight is model.wte.weight
    assert float(model.proj.weight.detach().std()) > 0.1  # the projection was drawn (kaiming: sqrt(2/16) = 0.35)
    text = " ".join(notes)
    assert "head.weight was not redrawn: tied to wte's Embedding" in text
    plan = {p.parameter: p for p in initialization_plan(model)}
    assert plan["proj.weight"].action == "drawn"
    assert plan["head.weight"].action == plan["wte.weight"].action == "left"
    left = [name for name, p in plan.items() if p.action == "left"]
    assert sorted(left) == ["head.weight", "norm.bias", "norm.weight", "proj.bias", "wte.weight"]
    assert all(name in text for name in left)
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    assert set(plan) == names


@pytest.mark.slow
def test_real_gpt2_projections_are_drawn_and_its_embedding_kept():
    transformers = pytest.importorskip("transformers", reason="the 'test' extra installs transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    wte = model.transformer.wte.weight.detach().clone()
    notes: list[str] = []
    initialize(model, "kaiming-normal", notes=notes)
    assert torch.equal(model.transformer.wte.weight, wte)
    c_attn = model.transformer.h[0].attn.c_attn.weight  # (in 64, out 192)
    # kaiming: std √2/√64 over 12,288 entries; the sample std's relative error is ~1/√(2·12288) = 0.6%
    assert float(c_attn.detach().std()) == pytest.approx(math.sqrt(2 / 64), rel=0.03)
    assert notes[0] == "--init kaiming-normal drew 8 weight(s) (8 Conv1D)."
