"""How a recorded output reads as data: its layout, inferred from the module and shape, or given.

The `Layout` itself is framework-neutral (`initscope.study.recorder`); this module infers it from torch modules.

Every recorded state of n samples has per-sample shape `shape` and one layout:

- ``units``: one row per sample, every entry a unit, (n, |shape|). Always the
  layout of a 1-D per-sample shape (n, w).
- ``channels-first``: image-like maps (n, C, *positions), PyTorch's NCHW; the
  state matrix has one row per (sample, position) and one column per channel.
- ``tokens``: sequences (n, *positions, features), features last (a
  transformer's (batch, positions, hidden)); the state matrix has one row per
  (sequence, position) and one column per feature, and the per-sequence
  token metrics read each sequence's positions × features matrix.

Inference, in order (the first that decides wins; `Layout.reason` says which):
an override (`layout=` / `--layout`), the module's type (Conv, BatchNorm and
pooling are channels-first; Embedding, MultiheadAttention and the
Transformer layers are tokens; Linear, LayerNorm and RMSNorm on a
multi-axis shape are features-last: tokens), the submodules of a container
(a block made of Conv modules is channels-first, one made of Linear or
attention modules is tokens), the previous recorded state of the same rank
(activations, dropout, additions keep the reading of what they act on), the
model's own modules when they are of one kind only, and last a guess
(channels-first for 3 or more axes, tokens for 2), which warns once per
call naming the override.

Sequence-first modules (MultiheadAttention and Transformer layers with
batch_first=False) return (positions, n, E); their outputs are transposed to
(n, positions, E) before anything reads them.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from initscope.study.recorder import LAYOUTS, STATES, Layout, LayoutWarning

__all__ = ["LayoutRules", "infer_layout", "module_kind", "contents_kind", "model_kind", "sequence_first"]

_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm, nn.LocalResponseNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd,
    nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
)
_TOKENS = (nn.Embedding, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
           nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)
_FEATURES_LAST = (nn.Linear, nn.Bilinear, nn.LayerNorm, nn.RMSNorm)


def module_kind(module: nn.Module | None, ndim: int) -> str | None:
    """The layout a module's type implies for a per-sample shape of `ndim` axes, or None."""
    if module is None or ndim < 2:
        return None
    if isinstance(module, _CHANNELS_FIRST):
        return "channels-first"
    if isinstance(module, _TOKENS + _FEATURES_LAST):
        return "tokens"
    return None


def _kinds(modules) -> set[str]:
    kinds = set()
    for m in modules:
        if isinstance(m, nn.modules.conv._ConvNd):
            kinds.add("channels-first")
        elif isinstance(m, _TOKENS + _FEATURES_LAST):
            kinds.add("tokens")
    return kinds


def contents_kind(module: nn.Module | None) -> str | None:
    """The one kind of a container's weighted submodules (Conv vs Linear/attention), or None if mixed or none."""
    if module is None:
        return None
    kinds = _kinds(m for m in module.modules() if m is not module)
    return kinds.pop() if len(kinds) == 1 else None


def model_kind(model: nn.Module) -> str | None:
    """channels-first for a model of Conv modules only, tokens for one of Linear/attention only, else None."""
    kinds = _kinds(model.modules())
    return kinds.pop() if len(kinds) == 1 else None


def sequence_first(module: nn.Module | None) -> bool:
    """True for attention and Transformer modules built with batch_first=False: outputs (positions, n, E)."""
    if isinstance(module, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return not module.batch_first if isinstance(module, nn.MultiheadAttention) else not module.self_attn.batch_first
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)) and len(module.layers):
        return not module.layers[0].self_attn.batch_first
    if isinstance(module, nn.Transformer):
        return not module.encoder.layers[0].self_attn.batch_first
    return False


class LayoutRules:
    """Overrides: one layout for every multi-axis state, or per layer, module name, module type or "input".

    layout: None, a name in LAYOUTS, or a mapping {key: layout} whose keys are
    a recorded layer's name (e.g. "attn.3[0]"), a module's qualified name, a
    module type's class name, "input" or "*" (every other state).
    """

    def __init__(self, layout, model: nn.Module):
        if layout is None:
            self.rules: dict[str, str] = {}
        elif isinstance(layout, str):
            self.rules = {"*": layout}
        elif isinstance(layout, Mapping):
            self.rules = dict(layout)
        else:
            raise TypeError(f"The 'layout' parameter must be None, one of {list(LAYOUTS)} or a mapping of module "
                            f"names or types to them. Got {type(layout).__name__} instead.")
        names = {name for name, _ in model.named_modules() if name} | {type(m).__name__ for m in model.modules()}
        for key, value in self.rules.items():
            if value not in LAYOUTS:
                raise ValueError(f"The 'layout' parameter must give layouts from {list(LAYOUTS)}. "
                                 f"Got {value!r} for {key!r} instead.")
            base = key.split("[", 1)[0]
            known = key in ("*", "input") or key in names or base in names or any(
                key.startswith(f"{name}.") for name in names)
            if not isinstance(key, str) or not known:
                examples = [name for name, _ in model.named_modules() if name][:8]
                raise ValueError(f"The 'layout' parameter must name modules of the model, module types, 'input' or "
                                 f"'*'. Got {key!r}, which matches none (names include {examples}).")

    def lookup(self, label: str, name: str, module: nn.Module | None) -> str | None:
        """The override for a layer labelled `label` from module `name` (None: the input), or None."""
        if module is None:
            return self.rules.get("input", self.rules.get("*"))
        for key in (label, name, type(module).__name__):
            if key in self.rules:
                return self.rules[key]
        return self.rules.get("*")

    def explicit(self, label: str, name: str, module: nn.Module | None) -> bool:
        """True when a rule names this layer, module or type (not the catch-all '*')."""
        keys = ("input",) if module is None else (label, name, type(module).__name__)
        return any(key in self.rules for key in keys)


def infer_layout(module: nn.Module | None, shape: tuple[int, ...], *, override: str | None,
                 previous: Layout | None, hint: str | None) -> Layout:
    """The layout of an output with per-sample `shape` (module docstring for the order of rules).

    previous: the last recorded multi-axis state; hint: the model's kind
    (`model_kind`) or, for the input (module None), the first selected module's.
    """
    ndim = len(shape)
    if ndim <= 1:
        return Layout(shape, "units", "one axis")
    if override is not None:
        return Layout(shape, override, "override")
    kind = module_kind(module, ndim)
    if kind is not None:
        return Layout(shape, kind, "module type")
    kind = contents_kind(module)
    if kind is not None:
        return Layout(shape, kind, "submodules")
    if previous is not None and len(previous.shape) == ndim and previous.kind != "units":
        return Layout(shape, previous.kind, "previous state")
    if hint is not None:
        return Layout(shape, hint, "model" if module is not None else "first module")
    return Layout(shape, "channels-first" if ndim >= 3 else "tokens", "guess")
