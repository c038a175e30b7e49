"""Token metrics per sequence, the reference state, constant inputs, and the subsampled path for big states."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
nn = torch.nn

sys.path.insert(0, str(Path(__file__).parent))
import torch_models as tm  # noqa: E402

from initscope.core import metrics as M  # noqa: E402
from initscope.torch import diagnose, flag_table, inspect  # noqa: E402
from initscope.study.recorder import Layout  # noqa: E402
from initscope.torch.measures import Comparison, measure_state  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tokens(n=8, length=12, seed=0):
    return torch.randint(0, tm.VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def series(result, metric):
    rows = result.metrics[result.metrics["metric"] == metric]
    return rows.set_index("module")["value"]


def test_pure_attention_collapses_while_an_encoder_with_skips_and_norms_does_not():
    """Dong et al. 2021: without skips and norms, every sequence's tokens become one vector within a few layers."""
    torch.manual_seed(0)
    x = tokens(n=8, length=16)
    pure = series(inspect(tm.attention_only(depth=6, dim=32, heads=2), x, metrics=["token_cosine"]), "token_cosine")
    assert pure["emb"] < 0.2
    assert pure["attn.2[0]"] > 0.99 and pure["attn.5[0]"] > 0.999
    torch.manual_seed(0)
    enc = inspect(tm.encoder(depth=6, dim=32, heads=2), x, metrics=["token_cosine", "mean_cosine"])
    cos = series(enc, "token_cosine")
    layer_outputs = [f"encoder.layers.{i}" for i in range(6)]
    assert (cos[layer_outputs] < 0.8).all()
    # Folding positions into samples hides the collapse: the folded cosine of the pure stack stays low
    # across sequences only where sequences differ; per sequence it is the one that reads 1.
    assert series(inspect(tm.attention_only(depth=6, dim=32, heads=2), x, metrics=["mean_cosine"]),
                  "mean_cosine")["emb"] < 0.2


def _captured(model, x, name):
    out = {}
    module = dict(model.named_modules())[name]
    handle = module.register_forward_hook(lambda m, a, o: out.setdefault("state", (o[0] if isinstance(o, tuple) else o)
                                                                          .detach().double()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["state"]


def test_token_and_folded_readings_match_a_direct_torch_computation():
    torch.manual_seed(1)
    model = tm.gpt2(depth=2, dim=32, heads=2).double()
    x = tokens(n=6, length=10)
    result = inspect(model, x, metrics=["token_cosine", "token_effective_rank", "mean_cosine", "effective_rank",
                                        "rms"])
    state = _captured(model, x, "h.1.ln_2")  # (6, 10, 32)
    unit = state / state.norm(dim=-1, keepdim=True)
    cos = unit @ unit.transpose(1, 2)
    off = ~torch.eye(10, dtype=torch.bool)
    per_seq_cos = torch.stack([c[off].mean() for c in cos])
    sv = torch.linalg.svdvals(state)
    p = sv / sv.sum(dim=1, keepdim=True)
    per_seq_er = torch.exp(-(p * p.clamp_min(1e-300).log()).sum(dim=1))
    rows = result.metrics[result.metrics["module"] == "h.1.ln_2"].set_index("metric")
    assert rows.at["token_cosine", "value"] == pytest.approx(float(per_seq_cos.mean()), rel=1e-9)
    assert rows.at["token_effective_rank", "value"] == pytest.approx(float(per_seq_er.mean()), rel=1e-9)
    assert rows.at["token_cosine", "sample_size"] == 6
    assert rows.at["token_cosine", "std_error"] == pytest.approx(float(per_seq_cos.std() / math.sqrt(6)), rel=1e-9)
    folded = state.reshape(60, 32)
    u = folded / folded.norm(dim=1, keepdim=True)
    c = u @ u.T
    assert rows.at["mean_cosine", "value"] == pytest.approx(float(c[~torch.eye(60, dtype=torch.bool)].mean()), rel=1e-9)
    svf = torch.linalg.svdvals(folded - folded.mean(0))
    q = svf / svf.sum()
    # LayerNorm's rows sum to 0, so one σ is at the Gram matrix's noise floor (√eps·σ_1): agreement to ~1e-7.
    assert rows.at["effective_rank", "value"] == pytest.approx(float(torch.exp(-(q * q.log()).sum())), rel=1e-6)
    assert rows.at["rms", "value"] == pytest.approx(float(folded.square().mean().sqrt()), rel=1e-12)
    assert np.isnan(rows.at["rms", "std_error"])  # exact: every row used


def test_token_metrics_use_a_seeded_subset_of_sequences():
    torch.manual_seed(0)
    model = tm.attention_only(depth=1, dim=16, heads=2)
    x = tokens(n=40, length=6)
    a = inspect(model, x, metrics=["token_cosine"], max_sequences=10)
    b = inspect(model, x, metrics=["token_cosine"], max_sequences=10)
    full = inspect(model, x, metrics=["token_cosine"])
    row = a.metrics.set_index("module").loc["emb"]
    assert row["sample_size"] == 10 and row["std_error"] > 0
    assert row["value"] == b.metrics.set_index("module").loc["emb", "value"]
    assert abs(row["value"] - full.metrics.set_index("module").loc["emb", "value"]) < 5 * row["std_error"]
    assert "token_cosine" not in set(inspect(nn.Sequential(nn.Linear(3, 3)), torch.randn(5, 3)).metrics["metric"])


# ---------------------------------------------------------------- the reference state and constant inputs


def test_token_ids_are_never_the_reference_and_a_healthy_transformer_gets_no_scale_flags():
    torch.manual_seed(0)
    model = tm.bert(depth=2, dim=32, heads=2)
    result = inspect(model, tokens(n=8, length=16))
    layers = result.layers.set_index("module")
    assert layers["reference"].sum() == 1 and layers.at["embeddings.word_embeddings", "reference"]
    assert result.config["reference"] == "embeddings.word_embeddings"
    flags = result.flags.set_index("layer")["flag"]
    token_type = int(layers.at["embeddings.token_type_embeddings", "layer"])
    assert flags[token_type] == "constant input" and "collapsed" not in set(flags)
    table = flag_table(result).iloc[0]
    assert table["scale (rms) left [0.1, 10]× the input's"] == "never"
    assert table["collapse"] == "never"
    assert not any("rms" in line for line in diagnose(result))
    # linear_r2 compares with the embedding's output, not with the ids (NaN before the reference).
    r2 = series(result, "linear_r2")
    assert math.isnan(r2["input"]) and math.isfinite(r2["embeddings.LayerNorm"])
    dc = series(result, "distance_corr")
    assert math.isnan(dc["input"]) and dc["embeddings.word_embeddings"] == pytest.approx(1.0)


@pytest.mark.slow
def test_images_compare_with_the_first_layer_and_reference_can_be_named():
    torch.manual_seed(0)
    model = tm.tiny_resnet()
    x = torch.randn(6, 3, 32, 32)
    result = inspect(model, x, metrics=["rms", "effective_rank", "linear_r2"])
    # The stem conv's output is read by bn1, which sets its scale: bn1's output is the reference.
    assert result.config["reference"] == "bn1"
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    assert inspect(plain, x, metrics=["rms"]).config["reference"] == "0"  # no norm: the first layer itself
    named = inspect(model, x, metrics=["rms"], reference="layer1.0.conv1")
    assert named.config["reference"] == "layer1.0.conv1"
    assert inspect(model, x, metrics=["rms"], reference="input").config["reference"] == "input"
    with pytest.raises(ValueError, match="'reference' parameter must be 'input' or the name of a module.*'nope'"):
        inspect(model, x, reference="nope")
    with pytest.raises(ValueError, match="'reference' parameter must name a module whose output was recorded"):
        inspect(model, x, layers=["fc"], reference="layer1")


# ---------------------------------------------------------------- the subsampled path


def test_subsampled_rows_agree_with_all_rows_within_their_standard_error():
    """A 6×8×24×24 map (3,456 rows): one-pass metrics are exact on every row, spectra come from 800 rows."""
    gen = torch.Generator().manual_seed(3)
    mix = torch.randn(8, 8, generator=gen)
    x = torch.relu(torch.einsum("nchw,cd->ndhw", torch.randn(6, 8, 24, 24, generator=gen), mix) + 0.3)
    layout = Layout((8, 24, 24), "channels-first", "module type")
    want = {"rms", "std", "dead_fraction", "linear_fraction", "mean_cosine", "effective_rank", "stable_rank",
            "numerical_rank", "linear_r2", "distance_corr"}
    flat = x.reshape(6, -1).double().numpy()[None]
    comparison = Comparison(M.centred(flat), M.distance_reference(flat, rng=np.random.default_rng(0)))

    def run(max_rows):
        return measure_state(x, layout, want=want, activation="relu", comparison=comparison, first=False,
                             max_rows=max_rows, rng=np.random.default_rng(0))

    exact, sub = run(10_000), run(800)
    for k in ("rms", "std", "dead_fraction", "linear_fraction", "mean_cosine"):
        assert sub.values[k] == pytest.approx(exact.values[k], rel=1e-5, nan_ok=True), k
        assert k not in sub.sizes
    for k in ("effective_rank", "stable_rank"):
        assert sub.sizes[k] == 800 and sub.errors[k] > 0
        assert abs(sub.values[k] - exact.values[k]) < 5 * sub.errors[k] + 0.02 * exact.values[k], k
    assert sub.values["linear_r2"] == pytest.approx(exact.values["linear_r2"], rel=1e-6)
    assert sub.values["distance_corr"] == pytest.approx(exact.values["distance_corr"], rel=1e-6)
    np.testing.assert_allclose(sub.spectrum[:3], exact.spectrum[:3], rtol=0.15)
    # The distance correlation from the Gram matrix is the core's, which it replaces for wide states.
    core = M.distance_corr(flat.astype(np.float32), comparison.ref)[0]
    assert exact.values["distance_corr"] == pytest.approx(core, rel=1e-5)


def test_torch_token_metrics_are_the_core_registry_definitions():
    torch.manual_seed(2)
    model = tm.gpt2(depth=1, dim=16, heads=2).double()
    x = tokens(n=5, length=7)
    result = inspect(model, x, metrics=["token_cosine", "token_effective_rank"])
    state = _captured(model, x, "h.0.ln_2").numpy()[None]
    rows = result.metrics[result.metrics["module"] == "h.0.ln_2"].set_index("metric")["value"]
    assert rows["token_cosine"] == pytest.approx(M.token_cosine(state)[0], rel=1e-10)
    assert rows["token_effective_rank"] == pytest.approx(M.token_effective_rank(state)[0], rel=1e-10)
