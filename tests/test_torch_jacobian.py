"""initscope.torch's Jacobian and pre-activation metrics: the numpy network's definitions, on torch models."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
nn = torch.nn

from initscope.core import metrics as M  # noqa: E402
from initscope.core import propagation as P  # noqa: E402
from initscope.study.config import Config  # noqa: E402
from initscope.study.model import materialize  # noqa: E402
from initscope.study.runner import run  # noqa: E402
from initscope.torch import combine, inspect  # noqa: E402

THEORY = ("jacobian_rank", "jacobian_sq_mean", "jacobian_log_spread", "pre_q", "pre_cosine")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def as_sequential(params: list[tuple[np.ndarray, np.ndarray]], t: int = 0) -> nn.Sequential:
    """Trial t of the numpy network's [(W (T, fan_in, w), b (T, w))] as Linear + Tanh layers (float64)."""
    modules = []
    for W, b in params:
        linear = nn.Linear(W.shape[1], W.shape[2]).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W[t].T))
            linear.bias.copy_(torch.from_numpy(b[t]))
        modules += [linear, nn.Tanh()]
    return nn.Sequential(*modules)


def wide(result) -> "object":
    return result.metrics.pivot_table(index="layer", columns="metric", values="value", dropna=False)


@pytest.mark.parametrize("input_dim", [12, 40])  # d < w, and d > w (the numpy run's QR-triangle path)
def test_torch_matches_the_numpy_networks_values_for_the_same_weights(input_dim):
    """The same weights in numpy (`initscope.run`) and torch give the same theory metrics, to float64 rounding.

    Torch layers: 0 input, 2l−1 Linear l (its output is z_l, the pre-activation), 2l Tanh l (the state s_l).
    """
    depth = 5
    cfg = Config(init=("orthogonal",), activation="tanh", gain=1.05, shift="normal", shift_scale=0.2,
                 data="sphere", input_dim=input_dim, width=24, depth=depth, samples=30, trials=1,
                 metrics=THEORY)
    expected = run(cfg, workers=1).metrics.pivot_table(index="layer", columns="metric", values="value")
    X, _, params = materialize(cfg, "orthogonal")
    got = wide(inspect(as_sequential(params), torch.from_numpy(X[0]), metrics=THEORY))
    for layer in range(depth + 1):
        state, pre = 2 * layer, max(2 * layer - 1, 0)
        for metric in THEORY:
            torch_layer = pre if metric.startswith("pre_") else state
            value = expected.at[layer, metric]
            assert math.isfinite(value)
            assert got.at[torch_layer, metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (metric, layer)
    # Tanh states are not an affine map's output: no pre-activation values there.
    assert got.loc[[2 * l for l in range(1, depth + 1)], ["pre_q", "pre_cosine"]].isna().all().all()


def test_jacobian_metrics_match_a_direct_per_sample_jacobian():
    """A conv net (channels-first states): jacobian_sq_mean and jacobian_log_spread of each state from
    torch.autograd.functional.jacobian, sample by sample, flattened as (d, w), through the core's functions."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 3, 3, stride=2), nn.Tanh()).double()
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    got = wide(inspect(model, x, metrics=["jacobian_sq_mean", "jacobian_log_spread"]))
    for upto in range(1, len(model) + 1):
        head = model[:upto]
        def flat(v, head=head):
            return head(v[None]).reshape(-1)

        J = np.stack([torch.autograd.functional.jacobian(flat, xi).reshape(-1, xi.numel()).T.numpy()
                      for xi in x])[None]  # (1, m, d, w): rows ∂s/∂x_k
        assert got.at[upto, "jacobian_sq_mean"] == pytest.approx(P.jacobian_sq_mean(J)[0], rel=1e-10)
        spread = P.jacobian_log_spread(P.jacobian_singular_values(J))[0]
        assert got.at[upto, "jacobian_log_spread"] == pytest.approx(spread, rel=1e-8)
    assert got.at[0, "jacobian_sq_mean"] == 1.0 and got.at[0, "jacobian_log_spread"] == 0.0


@pytest.mark.slow
def test_kaiming_relu_mlp_has_jacobian_sq_mean_one_per_relu_layer():
    """He init, zero bias: E[χ₁] = σ_w²·P(z > 0) = 2·½ = 1 at every ReLU layer, σ_w² = 2 at every Linear one.

    Tolerance. Given layer l−1's Jacobian A (d × fan_in), layer l's per-unit gain
    is the mean over its w units of X_j = D_j·fan_in‖A W_j‖²/‖A‖_F², with D_j a
    fair coin independent of ‖A W_j‖² (W_j → −W_j flips the sign of z_j only),
    so E[X_j] = 1 and Var X_j = 1 + 4‖AᵀA‖_F²/‖A‖_F⁴ <= 5: the product over L
    layers has variance at most (1 + 5/w)^L − 1 for each sample, and so has the
    mean over samples. Over independent models it shrinks by their number; 5 sd. A Linear
    layer's gain is the mean of Y_j = fan_in‖A W_j‖²/‖A‖_F² itself: mean 2 and relative
    variance 2‖AᵀA‖_F²/‖A‖_F⁴ <= 2, after l − 1 ReLU layers.
    """
    d, width, depth, models = 16, 512, 4, 6
    rows = []
    for seed in range(models):
        torch.manual_seed(seed)
        layers = []
        for l in range(depth):
            linear = nn.Linear(d if l == 0 else width, width)
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU()]
        model = nn.Sequential(*layers)
        got = wide(inspect(model, torch.randn(64, d), metrics=["jacobian_sq_mean"], jacobian_samples=16))
        w0 = layers[0].weight.detach().double()
        # The first Linear's Jacobian is Wᵀ for every sample: exactly ‖W‖_F²/w.
        assert got.at[1, "jacobian_sq_mean"] == pytest.approx(float((w0 * w0).sum()) / width, rel=1e-5)
        rows.append(got["jacobian_sq_mean"].to_numpy())
    mean = np.mean(rows, axis=0)
    for l in range(1, depth + 1):
        tol = 5 * math.sqrt(((1 + 5 / width) ** l - 1) / models)
        assert mean[2 * l] == pytest.approx(1.0, abs=tol), f"ReLU layer {l}"
        tol_pre = 2 * 5 * math.sqrt(((1 + 5 / width) ** (l - 1) * (1 + 2 / width) - 1) / models)
        assert mean[2 * l - 1] == pytest.approx(2.0, abs=tol_pre), f"Linear layer {l}"


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)

    def forward(self, ids):
        return torch.tanh(self.proj(self.embed(ids)))


def test_integer_token_ids_get_the_not_floating_point_note():
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (10, 5))
    result = inspect(Tokens(), ids)
    note = "jacobian_rank, jacobian_sq_mean not measured: the inputs are not floating point, so not differentiable."
    assert note in result.notes
    got = wide(result)
    assert got[["jacobian_rank", "jacobian_sq_mean"]].isna().all().all()
    # ids carry no geometry: no pre-activation at layer 0; the Linear's output (layer 2) is one.
    assert math.isnan(got.at[0, "pre_q"]) and math.isnan(got.at[1, "pre_q"])
    assert got.at[2, "pre_q"] > 0 and -1 <= got.at[2, "pre_cosine"] <= 1
    assert len(result.jacobian_spectra) == 0


@pytest.mark.slow
def test_jacobian_spectra_table_report_and_png(tmp_path):
    pytest.importorskip("plotly", reason="the report needs plotly")
    import dataclasses

    from initscope.report import write_report
    from initscope.report.static import write_static
    from initscope.report.tables import as_tables

    torch.manual_seed(0)
    x = torch.randn(20, 6)
    parts = [inspect(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh()), x, label=name,
                     metrics=["rms", "jacobian_sq_mean", "jacobian_log_spread", "pre_q"]) for name in ("a", "b")]
    both = combine(*parts)
    table = both.jacobian_spectra
    assert list(table.columns) == ["init", "trial", "layer", "log10_sv", "count"]
    # every layer's counts sum to its samples × min(d, w) non-zero singular values
    counts = table[table["init"] == "a"].groupby("layer")["count"].sum()
    assert counts.to_dict() == {0: 20, 1: 20 * 6, 2: 20 * 6, 3: 20 * 6, 4: 20 * 6}
    assert set(table["init"]) == {"a", "b"}
    page = write_report(both, tmp_path / "report.html").read_text()
    assert 'id="jacobian-spectrum"' in page
    assert "a PyTorch model: its layers" in page  # why no theory line
    tables = as_tables(both)
    assert [p.name for p in write_static(dataclasses.replace(tables, projections=tables.projections.iloc[:0]),
                                         tmp_path / "figures")][-1] == "jacobian_spectrum.png"
    assert (tmp_path / "figures" / "jacobian_spectrum.png").stat().st_size > 10_000


def test_pre_metrics_on_a_linear_layer_are_the_registry_definitions_of_its_output():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU())
    x = torch.randn(9, 5, dtype=torch.float64)
    model = model.double()
    got = wide(inspect(model, x, metrics=["pre_q", "pre_cosine"]))
    z = model[0](x).detach().numpy()[None]
    assert got.at[1, "pre_q"] == pytest.approx(P.pre_q(z)[0], rel=1e-12)
    assert got.at[1, "pre_cosine"] == pytest.approx(M.mean_cosine(z)[0], rel=1e-12)
    assert got.at[0, "pre_q"] == pytest.approx(P.pre_q(x.numpy()[None])[0], rel=1e-12)
    assert math.isnan(got.at[2, "pre_q"])
