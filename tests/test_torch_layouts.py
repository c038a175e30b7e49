"""State layouts (units, channels-first, tokens) and outputs of any structure, on real-model layouts."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")
nn = torch.nn

sys.path.insert(0, str(Path(__file__).parent))
import torch_models as tm  # noqa: E402

from initscope.torch import inspect  # noqa: E402
from initscope.study.recorder import LayoutWarning  # noqa: E402
from initscope.torch.layouts import infer_layout, sequence_first  # noqa: E402
from initscope.torch.outputs import recordable, tensors_of  # noqa: E402


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tokens(n=6, length=10, seed=0):
    return torch.randint(0, tm.VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def layers_of(result):
    return result.layers.set_index("module")


# ---------------------------------------------------------------- inference, per module type


@pytest.mark.parametrize("module, shape, kind", [
    (nn.Conv2d(3, 4, 3), (4, 8, 8), "channels-first"),
    (nn.Conv1d(3, 4, 3), (4, 8), "channels-first"),
    (nn.BatchNorm2d(4), (4, 8, 8), "channels-first"),
    (nn.MaxPool2d(2), (4, 4, 4), "channels-first"),
    (nn.Embedding(10, 8), (5, 8), "tokens"),
    (nn.MultiheadAttention(8, 2, batch_first=True), (5, 8), "tokens"),
    (nn.TransformerEncoderLayer(8, 2, batch_first=True), (5, 8), "tokens"),
    (nn.Linear(8, 8), (5, 8), "tokens"),  # Linear on 3-D input: features last
    (nn.LayerNorm(8), (5, 8), "tokens"),
    (nn.Linear(8, 8), (8,), "units"),
    (nn.Conv2d(3, 4, 3), (4,), "units"),
])
def test_module_types_decide(module, shape, kind):
    layout = infer_layout(module, shape, override=None, previous=None, hint=None)
    assert layout.kind == kind
    assert layout.reason == ("one axis" if len(shape) == 1 else "module type")


def test_containers_previous_states_and_guesses():
    block = tm.GPT2Block(16, 2)
    assert infer_layout(block, (5, 16), override=None, previous=None, hint=None).kind == "tokens"
    basic = tm.BasicBlock(4, 4)
    assert infer_layout(basic, (4, 8, 8), override=None, previous=None, hint=None).kind == "channels-first"
    prev = infer_layout(nn.Linear(4, 4), (5, 4), override=None, previous=None, hint=None)
    relu = infer_layout(nn.ReLU(), (5, 4), override=None, previous=prev, hint="channels-first")
    assert (relu.kind, relu.reason) == ("tokens", "previous state")
    guess = infer_layout(nn.ReLU(), (5, 4), override=None, previous=None, hint=None)
    assert (guess.kind, guess.reason) == ("tokens", "guess")
    assert infer_layout(nn.ReLU(), (5, 4), override="units", previous=None, hint=None).kind == "units"
    assert sequence_first(nn.MultiheadAttention(8, 2)) and not sequence_first(nn.MultiheadAttention(8, 2, batch_first=True))
    assert sequence_first(nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 1, enable_nested_tensor=False))


def test_gpt2_blocks_read_as_tokens_whatever_the_selection():
    """The issue's case: --layers GPT2Block read 64 positions as channels; with a LayerNorm in it, 256 features."""
    torch.manual_seed(0)
    model = tm.gpt2(depth=2, dim=32, heads=2)
    x = tokens(n=4, length=12)
    blocks = inspect(model, x, layers=["GPT2Block"], metrics=["rms", "effective_rank"])
    with_norm = inspect(model, x, layers=["GPT2Block", "ln_f"], metrics=["rms", "effective_rank"])
    for result in (blocks, with_norm):
        rows = result.layers[result.layers["module_type"] == "GPT2Block"]
        assert list(rows["layout"]) == ["tokens", "tokens"] and list(rows["units"]) == [32, 32]
        assert list(rows["state_samples"]) == [4 * 12] * 2
    assert layers_of(with_norm).at["ln_f", "layout"] == "tokens"


def test_resnet_layout_and_block_selection():
    torch.manual_seed(0)
    model = tm.tiny_resnet()
    result = inspect(model, torch.randn(4, 3, 32, 32), metrics=["rms"])
    layers = layers_of(result)
    assert layers.at["input", "layout"] == "channels-first" and layers.at["input", "units"] == 3
    assert layers.at["layer1.0.conv1", "layout"] == "channels-first" and layers.at["layer1.0.conv1", "units"] == 8
    assert layers.at["fc", "layout"] == "units" and layers.at["fc", "units"] == 10
    # relu is called twice per block; both calls keep the channels-first reading of what they act on.
    relu = result.layers[result.layers["module"] == "layer2.1.relu"]
    assert list(relu["layout"]) == ["channels-first"] * 2 and list(relu["call"]) == [0, 1]
    blocks = inspect(model, torch.randn(4, 3, 32, 32), layers=["BasicBlock"], metrics=["rms"])
    assert set(blocks.layers["layout"][1:]) == {"channels-first"}
    assert set(blocks.layers["layout_reason"][1:]) == {"submodules"}


# ---------------------------------------------------------------- overrides and the ambiguity warning


class Opaque(nn.Module):
    """A module of no known kind that returns a 3-D state: its layout can only be guessed."""

    def forward(self, x):
        return torch.tanh(x)


class Fold(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], 5, 4)


def test_ambiguous_shapes_warn_once_naming_the_override():
    x = torch.randn(6, 5, 4)
    model = nn.Sequential(nn.Linear(4, 4), Opaque())
    with pytest.warns(LayoutWarning, match=r"1 state\(s\) of ambiguous shape.*e.g. 0 \(Fold\).*as tokens.*"
                                           r"layout=\{'0': 'channels-first'\}.*--layout 0=channels-first") as caught:
        result = inspect(nn.Sequential(Fold(), Opaque()), torch.randn(6, 20), metrics=["rms"])
    assert len([w for w in caught if issubclass(w.category, LayoutWarning)]) == 1
    assert list(result.layers["layout_reason"]) == ["one axis", "guess", "previous state"]
    with pytest.warns(LayoutWarning, match=r"e.g. input \(input\).*layout=\{'input': 'channels-first'\}"):
        inspect(nn.Sequential(Opaque()), x, metrics=["rms"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = inspect(model, x, metrics=["rms"])  # a Linear in the model: everything reads as tokens
        forced = inspect(nn.Sequential(Opaque(), Opaque()), x, metrics=["rms"],
                         layout={"input": "tokens", "0": "channels-first", "Opaque": "units"})
    assert list(quiet.layers["layout"]) == ["tokens"] * 3
    assert list(forced.layers["layout"]) == ["tokens", "channels-first", "units"]
    assert list(forced.layers["units"]) == [4, 5, 20]
    everywhere = inspect(nn.Sequential(Opaque()), x, metrics=["rms"], layout="channels-first")
    assert list(everywhere.layers["layout"]) == ["channels-first", "channels-first"]


def test_bad_layouts_name_the_parameter():
    model = nn.Sequential(nn.Linear(4, 4))
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="'layout' parameter must give layouts from"):
        inspect(model, x, layout="rows")
    with pytest.raises(ValueError, match="'layout' parameter must name modules.*'nope'"):
        inspect(model, x, layout={"nope": "tokens"})
    with pytest.raises(ValueError, match="'layout' parameter gives 'tokens' for 0.*only 'units' fits"):
        inspect(model, x, layout={"0": "tokens"})
    with pytest.raises(TypeError, match="'layout' parameter"):
        inspect(model, x, layout=3)


# ---------------------------------------------------------------- outputs of any structure


def test_tensors_of_names_every_structure():
    t = torch.zeros(2, 3)
    out = {"a": (t, [t, None]), "b": tm.Pair(hidden=t, extras=(t,)), "c": 3}
    assert [path for path, _ in tensors_of(out)] == [".a[0]", ".a[1][0]", ".b.hidden", ".b.extras[0]"]
    model_output = tm.ModelOutput(last_hidden_state=t, pooler_output=t[:, 0])
    assert [path for path, _ in tensors_of(model_output)] == [".last_hidden_state", ".pooler_output"]


def test_attention_only_stack_records_every_layer_and_skips_weights_with_a_note():
    torch.manual_seed(0)
    model = tm.attention_only(depth=4, dim=16, heads=2)
    result = inspect(model, tokens(), metrics=["rms", "token_cosine"])
    assert list(result.layers["module"]) == ["input", "emb", "attn.0[0]", "attn.1[0]", "attn.2[0]", "attn.3[0]"]
    assert set(result.layers["layout"][1:]) == {"tokens"}
    assert any("not recorded: attn.0[1], attn.1[1], attn.2[1], attn.3[1] (MultiheadAttention): attention weights" in note for note in result.notes)
    weights = inspect(model, tokens(), metrics=["rms"], attention_weights=True)
    assert "attn.0[1]" in set(weights.layers["module"])


def test_sequence_first_attention_is_transposed():
    torch.manual_seed(0)

    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(tm.VOCAB, 8)
            self.attn = nn.MultiheadAttention(8, 2)  # batch_first=False: (L, n, E)

        def forward(self, t):
            h = self.emb(t).transpose(0, 1)
            return self.attn(h, h, h)[0]

    result = inspect(SeqFirst(), tokens(n=6, length=6), metrics=["rms", "token_cosine"])
    row = layers_of(result).loc["attn[0]"]
    assert row["layout"] == "tokens" and row["state_samples"] == 36 and row["shape"] == "6x8"


class Masked(nn.Module):
    """An encoder given a padding mask: in eval mode without autograd, torch runs it on nested tensors."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(tm.VOCAB, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 64, 0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)

    def forward(self, t):
        mask = torch.zeros(t.shape, dtype=torch.bool)
        mask[:3, -2:] = True  # three sequences end in two padding positions
        return self.encoder(self.emb(t), src_key_padding_mask=mask)


def test_transformer_layers_record_their_own_output_and_nested_tensors_read_padded():
    """Transformer layers are recorded themselves (older torch runs a fused kernel that skips their children)."""
    torch.manual_seed(0)
    model = tm.encoder(depth=2, dim=16, heads=2).eval()
    result = inspect(model, tokens(), metrics=["rms", "token_cosine"])
    names = list(result.layers["module"])
    assert names.index("encoder.layers.0.norm2") < names.index("encoder.layers.0") < names.index("encoder.layers.1")
    row = layers_of(result).loc["encoder.layers.1"]
    assert row["layout"] == "tokens" and row["layout_reason"] == "module type"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage", category=UserWarning)
        masked = inspect(Masked().eval(), tokens(n=6, length=10), metrics=["rms", "token_cosine"])
    rows = layers_of(masked)
    assert rows.at["encoder.layers.0", "shape"] == "10x16" and rows.at["encoder.layers.0", "state_samples"] == 60
    assert any("returned nested tensors" in note for note in masked.notes)


def test_dict_dataclass_and_model_outputs_are_recorded_by_name():
    torch.manual_seed(0)
    x = torch.randn(10, 6)
    result = inspect(tm.dict_output(), x, layers=["body"], metrics=["rms"])
    assert list(result.layers["module"]) == ["input", "body.features", "body.logits"]
    assert any("not recorded: body.ids (Body): a int64 tensor" in note for note in result.notes)
    result = inspect(tm.dataclass_output(), x, layers=[tm.DataclassOutput], metrics=["rms"])
    assert list(result.layers["module"]) == ["input", "(model).hidden", "(model).extras[0]", "(model).extras[1][0]"]
    model = tm.bert(depth=1, dim=16, heads=2)
    result = inspect(model, tokens(), layers=["Bert"], metrics=["rms"])
    assert list(result.layers["module"]) == ["input", "(model).last_hidden_state", "(model).pooler_output"]
    assert list(result.layers["layout"]) == ["units", "tokens", "units"]


def test_recordable_reasons():
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    out = mha(torch.randn(3, 5, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4))
    states, skipped = recordable(mha, out, 3)
    assert [p for p, _ in states] == ["[0]"] and skipped[0][0] == "[1]"
    states, skipped = recordable(nn.Identity(), (torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)), 3)
    assert states == [] and [p for p, _ in skipped] == ["[0]", "[1]"]
