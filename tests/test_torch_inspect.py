"""initscope.torch.inspect: the core's diagnosis of any nn.Module, checked against the numpy core."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
nn = torch.nn

from initscope.core import metrics as M  # noqa: E402
from initscope.core.data import sample, target  # noqa: E402
from initscope.core.gradients import weight_gradient_norms  # noqa: E402
from initscope.core.initializers import draw  # noqa: E402
from initscope.core.network import (  # noqa: E402
    Architecture,
    layer_forward,
    layer_jvp,
    mse_output_gradient,
)
from initscope.study.records import NumericalWarning  # noqa: E402
from initscope.torch import ModelError, combine, diagnose, flag_table, inspect  # noqa: E402

CORE_METRIC_COLUMNS = ["init", "trial", "layer", "metric", "value"]
SPECTRA_COLUMNS = ["init", "trial", "layer", "k", "singular_value"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---------------------------------------------------------------- the seed post's MLP, torch vs numpy


def post_mlp(rng, *, input_dim=3, width=40, depth=10):
    """The post's MLP (normal init, linspace shifts, ReLU) as numpy weights and as an nn.Sequential (float64)."""
    Ws = [draw("normal", input_dim if l == 0 else width, width, gain=1.0, rng=rng) for l in range(depth)]
    b = np.linspace(-1.0, 1.0, width)
    W_out = draw("normal", width, 1, gain=1.0, rng=rng)  # a random readout, so gradients are not all 0
    modules = []
    for W in Ws:
        linear = nn.Linear(W.shape[0], W.shape[1]).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T))
            linear.bias.copy_(torch.from_numpy(b))
        modules += [linear, nn.ReLU()]
    readout = nn.Linear(width, 1, bias=False).double()
    with torch.no_grad():
        readout.weight.copy_(torch.from_numpy(W_out.T))
    return Ws, b, W_out, nn.Sequential(*modules, readout)


def numpy_core(X, y, Ws, b, W_out):
    """Every metric of every state (layer 0 = input, l = after ReLU l), from the core's functions."""
    arch = Architecture("relu", "none", 0.0)
    _, n, d = X.shape
    rtol = M.rank_rtol(X.dtype)
    X_c = M.centred(X)
    ref = M.distance_reference(X, rng=np.random.default_rng(0))
    m = min(n, 64)
    tangent = np.broadcast_to(np.eye(d), (1, m, d, d)).copy()
    rows, spectra = [], []
    S = X
    for layer in range(len(Ws) + 1):
        if layer:
            S, z = layer_forward(S, Ws[layer - 1][None], b[None], arch)
            tangent = layer_jvp(tangent, Ws[layer - 1][None], z[:, :m], arch)
        S_c = M.centred(S)
        sv, eig = M.gram_spectrum(M.gram(S_c), vectors=True)
        col = M.collapsed(S, sv)
        values = {
            "rms": M.rms(S), "std": M.std(S_c),
            "effective_rank": np.where(col, 0.0, M.effective_rank(sv)),
            "stable_rank": np.where(col, 0.0, M.stable_rank(sv)),
            "numerical_rank": np.where(col, 0.0, M.numerical_rank(sv, rtol)),
            "dead_fraction": M.dead_fraction(S),
            "linear_fraction": M.linear_fraction(S, "relu") if layer else np.full(1, np.nan),
            "mean_cosine": M.mean_cosine(S), "linear_r2": M.linear_r2(S_c, X_c, eig, rtol),
            "distance_corr": M.distance_corr(S, ref), "jacobian_rank": M.jacobian_rank(tangent),
        }
        rows.append({k: float(v[0]) for k, v in values.items()})
        spectra.append(sv[0])
    _, ds = mse_output_gradient(S, W_out[None], y)
    grads = weight_gradient_norms(X, lambda l, s_prev: (Ws[l - 1][None], b[None]), len(Ws), arch, ds)[0]
    for layer in range(1, len(Ws) + 1):
        rows[layer]["grad_norm"] = grads[layer - 1]
    return rows, spectra


def noise_floor(sv: np.ndarray) -> float:
    """How far apart two float64 computations of a spectrum may be, whatever the pipeline.

    The states differ in their last bits (torch's addmm vs numpy's matmul:
    ~1e-15 relative). An eigenvalue of the w×w Gram matrix is exact only to
    ~w·eps·σ_1², so a singular value near zero is exact only to
    sqrt(w·eps)·σ_1 (DESIGN.md's noise floor); twice that, for two computations.
    """
    return 2.0 * math.sqrt(len(sv) * np.finfo(np.float64).eps) * sv[0]


def test_post_mlp_matches_numpy_core_to_1e_10(rng):
    """Every metric to 1e-10 in float64, except where the noise floor of a spectrum sets a looser bound.

    The post's states are rank deficient (dead units, units active on every
    sample), so their spectra have σ_k at the noise floor. Singular values and
    effective_rank (a sum over all σ_k) then agree only to within that floor;
    on layers without such σ_k they agree to 1e-10 as well.
    """
    Ws, b, W_out, model = post_mlp(rng)
    X = sample("ball", 100, 3, rng=rng)[None]
    y = target("cos-norm", X[0]).reshape(1, -1, 1)
    expected, spectra = numpy_core(X, y, Ws, b, W_out)

    result = inspect(model, torch.from_numpy(X[0]), targets=torch.from_numpy(y[0]))
    got = result.metrics.pivot_table(index="layer", columns="metric", values="value", dropna=False)
    # Torch layers: 0 input, then Linear, ReLU, Linear, ReLU, ..., readout. The core's state l is ReLU l.
    relu_layers = result.layers.index[result.layers["module_type"] == "ReLU"].tolist()
    assert relu_layers == [2 * l for l in range(1, 11)]
    for core_layer, torch_layer in enumerate([0, *relu_layers]):
        sv = spectra[core_layer]
        floor = noise_floor(sv)
        for metric, value in expected[core_layer].items():
            if metric == "grad_norm":
                continue  # on the Linear rows, below
            tol = 1e-10 * max(abs(value), 1.0) if math.isfinite(value) else 0.0
            if metric == "effective_rank":
                # p_k = σ_k/Σσ moves by at most floor/Σσ for each σ_k at the floor; H by that times (1 + |ln p_k|).
                k = int((sv <= floor).sum())
                share = floor / sv.sum()
                tol += value * 2.0 * k * share * (1.0 + abs(math.log(share)))
            assert got.at[torch_layer, metric] == pytest.approx(value, abs=tol, nan_ok=True), (
                f"{metric} at core layer {core_layer}")
        sv_torch = result.spectra[result.spectra["layer"] == torch_layer]["singular_value"].to_numpy()
        np.testing.assert_allclose(sv_torch, sv, rtol=1e-10, atol=floor)
        resolved = sv > 100 * floor
        np.testing.assert_allclose(sv_torch[resolved], sv[resolved], rtol=1e-10)
    # grad_norm of layer l's weights sits on its Linear module's row.
    linear_layers = result.layers.index[result.layers["module_type"] == "Linear"].tolist()[:10]
    for l, torch_layer in enumerate(linear_layers, start=1):
        assert got.at[torch_layer, "grad_norm"] == pytest.approx(expected[l]["grad_norm"], rel=1e-10)
    assert got["grad_norm"].notna().sum() == 11  # ten hidden Linear layers and the readout


def test_tables_have_the_core_columns(rng):
    _, _, _, model = post_mlp(rng, depth=2, width=6)
    result = inspect(model, torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert list(result.metrics.columns[:5]) == CORE_METRIC_COLUMNS
    assert {"module", "module_type", "call", "shape", "state"} <= set(result.metrics.columns)
    assert list(result.spectra.columns) == SPECTRA_COLUMNS
    # by default, every default metric (no token states: no token metrics)
    assert set(result.metrics["metric"]) == set(M.DEFAULT_METRICS)
    assert result.metrics.groupby("metric").size().eq(len(result.layers)).all()
    assert list(result.layers["module"]) == ["input", "0", "1", "2", "3", "4"]
    assert result.config["init"] == ("model",) and result.config["dtype"] == "float64"
    assert result.projections.groupby("layer").size().eq(20).all()
    assert set(result.weight_norms["kind"]) == {"input", "internal"}


# ---------------------------------------------------------------- execution order, reuse, selection


class ResNetLike(nn.Module):
    """Registration order (stem, block, head, act) differs from execution order, and `block` runs twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.head = nn.Linear(8, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.stem(x))
        h = h + self.block(h)
        h = h + self.block(h)
        return self.head(h)


def test_reused_module_is_recorded_twice_in_execution_order():
    torch.manual_seed(0)
    model = ResNetLike()
    result = inspect(model, torch.randn(32, 4))
    layers = result.layers
    assert list(layers["module"]) == ["input", "stem", "act", "block.0", "block.1", "block.0", "block.1", "head"]
    assert list(layers["call"]) == [0, 0, 0, 0, 0, 1, 1, 0]
    # Each call is its own state: the second block.0 sees h after the first residual addition.
    rms = result.metrics[result.metrics["metric"] == "rms"].set_index("layer")["value"]
    assert rms[3] != rms[5]
    # The shared weight's gradient is its total, shown on both calls.
    g = result.metrics[result.metrics["metric"] == "grad_norm"].set_index("layer")["value"]
    assert g[3] == g[5] and g[3] > 0 and math.isnan(g[4])


def test_layers_selects_by_name_and_type():
    torch.manual_seed(0)
    model = ResNetLike()
    x = torch.randn(16, 4)
    by_type = inspect(model, x, layers=[nn.Linear], metrics=["rms"])
    assert list(by_type.layers["module"]) == ["input", "stem", "block.0", "block.0", "head"]
    by_name = inspect(model, x, layers=["block", "Tanh"], metrics=["rms"])
    assert list(by_name.layers["module"]) == ["input", "block.1", "block", "block.1", "block"]
    with pytest.raises(ValueError, match="'layers' parameter.*'nope'"):
        inspect(model, x, layers=["nope"])


# ---------------------------------------------------------------- the model is left as it was


class Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        self.bn(self.fc(x))
        raise RuntimeError("boom from the model")


def _snapshot(model):
    return (
        {name: m.training for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
        {name: b.clone() for name, b in model.named_buffers()},
    )


def _no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_hooks_gone_and_state_restored_after_success():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    model.eval()
    model[3].train()  # a mixed state must come back exactly
    model[0].weight.requires_grad_(False)
    x = torch.randn(40, 5)
    before = _snapshot(model)
    rng_before = torch.get_rng_state()
    result = inspect(model, x, mode="train")
    assert result.config["mode"] == "train"
    assert _no_hooks(model)
    after = _snapshot(model)
    assert after[0] == before[0] and after[1] == before[1]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])  # BatchNorm running stats
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng_before)
    # The frozen weight still got its gradient measured.
    g = result.metrics[(result.metrics["metric"] == "grad_norm") & (result.metrics["layer"] == 1)]["value"]
    assert float(g.iloc[0]) > 0


def test_hooks_gone_and_state_restored_after_the_model_raises():
    model = Fails()
    model.eval()
    model.fc.bias.requires_grad_(False)
    before = _snapshot(model)
    with pytest.raises(ModelError, match='RuntimeError: "boom from the model"') as info:
        inspect(model, torch.randn(8, 3), mode="train")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert _no_hooks(model)
    after = _snapshot(model)
    assert after[0] == before[0] and after[1] == before[1]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])


def test_wrong_input_shape_quotes_torch():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ModelError, match="mat1 and mat2 shapes cannot be multiplied"):
        inspect(model, torch.randn(8, 5))
    assert _no_hooks(model)


# ---------------------------------------------------------------- feature maps, gradients, hazards


def test_conv_feature_maps_fold_positions_into_samples():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    with torch.no_grad():  # channel 3 is dead after the ReLU: zero weights, negative bias
        conv.weight[3] = 0.0
        conv.bias[3] = -1.0
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    x = torch.randn(10, 2, 5, 5)
    result = inspect(model, x, targets=torch.randn(10, 3))
    layers = result.layers.set_index("layer")
    assert layers.at[2, "state"] == "samples*positions x channels"
    assert layers.at[2, "state_samples"] == 10 * 25 and layers.at[2, "units"] == 4
    assert layers.at[3, "state"] == "samples x units" and layers.at[3, "units"] == 100
    assert any("positions folded into samples" in note for note in result.notes)
    got = result.metrics[result.metrics["layer"] == 2].set_index("metric")["value"]
    assert got["dead_fraction"] == pytest.approx(0.25)  # one of four channels
    out = torch.relu(conv(x)).detach().numpy()
    assert got["rms"] == pytest.approx(float(np.sqrt((out.astype(np.float64) ** 2).mean())), rel=1e-5)
    S = np.moveaxis(out, 1, -1).reshape(1, -1, 4).astype(np.float64)
    sv = M.gram_spectrum(M.gram(M.centred(S)))[0]
    np.testing.assert_allclose(result.spectra[result.spectra["layer"] == 2]["singular_value"], sv, rtol=1e-4)
    jr = result.metrics[result.metrics["metric"] == "jacobian_rank"].set_index("layer")["value"]
    assert jr[0] == 1.0 and 0 < jr[4] <= 3 / 50  # the Linear readout: at most 3 of the 50 input directions


def test_grad_norm_default_and_custom_losses():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(12, 3, dtype=torch.float64)

    def expected(loss_fn):
        grads = torch.autograd.grad(loss_fn(model(x)), [model[0].weight, model[2].weight])
        return [float(g.norm()) for g in grads]

    def measured(**kwargs):
        g = inspect(model, x, metrics=["grad_norm"], **kwargs).metrics.set_index("layer")["value"]
        return [g[1], g[3]]

    assert measured() == pytest.approx(expected(lambda out: (out * out).sum()), rel=1e-12)
    y = torch.randn(12, 2, dtype=torch.float64)
    assert measured(targets=y) == pytest.approx(expected(lambda out: ((out - y) ** 2).mean()), rel=1e-12)
    custom = measured(loss=lambda out, t: out[:, 0].abs().sum())
    assert custom == pytest.approx(expected(lambda out: out[:, 0].abs().sum()), rel=1e-12)


def test_non_finite_states_are_flagged_not_raised():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4))
    with torch.no_grad():
        model[2].weight.fill_(1e38)
    with pytest.warns(NumericalWarning, match="layer 3"):
        result = inspect(model, torch.ones(6, 2) * 10)
    assert result.flags.query("flag == 'overflow'")["layer"].tolist() == [3]
    at3 = result.metrics[result.metrics["layer"] == 3]
    assert at3["value"].isna().all()
    assert flag_table(result).iloc[0]["overflow"].startswith("layer 3 (2, Linear)")


def test_collapse_is_flagged_and_diagnosed():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # every unit dead: an all-zero state
    result = inspect(model, torch.randn(20, 3))
    assert 2 in set(result.flags.query("flag == 'collapsed'")["layer"])
    lines = diagnose(result)
    assert any(line.startswith("model: layer 2 (1, ReLU)") and "100% dead units" in line for line in lines)


def test_bad_arguments_name_the_parameter():
    model = nn.Linear(2, 2)
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match="'model' parameter"):
        inspect("not a model", x)
    with pytest.raises(ValueError, match="'inputs' parameter must be finite"):
        inspect(model, torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="'targets' parameter must have one row per input sample"):
        inspect(model, x, targets=torch.randn(3, 2))
    with pytest.raises(ValueError, match="'metrics' parameter"):
        inspect(model, x, metrics=["nope"])
    with pytest.raises(ValueError, match="'mode' parameter"):
        inspect(model, x, mode="training")


def test_combine_and_report(tmp_path):
    pytest.importorskip("plotly", reason="the report needs plotly")
    from initscope.report import write_report

    torch.manual_seed(0)
    x = torch.randn(30, 4)
    parts = [inspect(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), x, label=name)
             for name in ("a", "b")]
    both = combine(*parts)
    assert both.config["init"] == ("a", "b")
    assert set(both.metrics["init"]) == {"a", "b"} and set(both.layers["init"]) == {"a", "b"}
    assert list(flag_table(both)["init"]) == ["a", "b"]
    with pytest.raises(ValueError, match="distinct"):
        combine(parts[0], parts[0])
    page = write_report(both, tmp_path / "report.html")
    assert page.stat().st_size > 10_000
    assert isinstance(both.metrics, pd.DataFrame)


def test_degenerate_sizes_give_numbers_not_errors():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    one = inspect(model, torch.randn(1, 3))
    assert len(one.layers) == 4 and one.metrics.query("metric == 'rms'")["value"].notna().all()
    with pytest.warns(UserWarning, match="zero-element"):  # torch's own remark on a 0-wide Linear
        empty = nn.Sequential(nn.Linear(3, 0), nn.ReLU())
    result = inspect(empty, torch.randn(5, 3))
    assert list(result.layers["units"]) == [3, 0, 0]
    assert result.metrics.query("layer == 1 and metric == 'effective_rank'")["value"].item() == 0.0


class Tokens(nn.Module):
    """Integer inputs, a channels-last sequence (n, L, E) and a tuple output."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 8)
        self.act = nn.GELU()
        self.head = nn.Linear(8, 3)

    def forward(self, t):
        h = self.act(self.fc(self.emb(t)))
        return self.head(h.mean(1)), h


def test_token_model_sequences_read_channels_last_and_tuple_outputs_take_the_first_tensor():
    torch.manual_seed(0)
    tokens = torch.randint(0, 20, (6, 5))
    model = Tokens()
    result = inspect(model, tokens)
    layers = result.layers.set_index("module")
    assert layers.at["emb", "units"] == 8 and layers.at["emb", "state_samples"] == 30
    assert layers.at["act", "units"] == 8  # an activation keeps the reading of the output before it
    assert any("not floating point" in note for note in result.notes)
    assert any("reads the model output's '[0]'" in note for note in result.notes)
    grad = result.metrics.query("metric == 'grad_norm'").set_index("module")["value"]
    expected = torch.autograd.grad(model(tokens)[0].square().sum(), [model.fc.weight])[0].norm().item()
    assert grad["fc"] == pytest.approx(expected, rel=1e-5)
    with_loss = inspect(Tokens(), tokens, loss=lambda out, _: out[0].square().sum(), metrics=["grad_norm"])
    assert (with_loss.metrics.set_index("module").loc[["emb", "fc", "head"], "value"] > 0).all()
