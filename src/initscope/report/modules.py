"""The module names of an inspected model's layers, for the report's labels, hovers and axes.

An `initscope.torch.inspect` result carries each layer's module name
(`module`, e.g. `layer1.0.conv1` or `attn.3[0]`) and type in its metrics
table; a run of the core's MLP does not, and its figures keep plain layer
numbers. A deep model (more than `MAX_SHOWN` recorded layers: a ResNet-50 has
170) would draw its depth panels as a conv/BN/ReLU sawtooth, so they show a
readable selection by default, its block outputs (`block_outputs`), with a
button to show every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LayerNames", "layer_names", "block_outputs", "spaced_ticks", "shown_layers", "MAX_SHOWN"]

MAX_SHOWN = 40  # more recorded layers than this: the depth panels default to the block outputs
_TICK_CHARS = 22  # longer names are shown by their tail on axis ticks ("…output.LayerNorm")


@dataclass(frozen=True)
class LayerNames:
    """Names by layer (0 is "input"), module types, and the layers the depth panels show by default.

    selection: the layers drawn by default (every layer unless the model is
    deep), with `ticks` the tick text at each (a block's name at its output).
    """

    names: dict[int, str]
    types: dict[int, str]
    selection: tuple[int, ...]
    ticks: tuple[str, ...]
    kinds: dict[int, str] | None = None  # param_kind by layer (what grad_norm reads), where the table has it

    @property
    def deep(self) -> bool:
        return len(self.selection) < len(self.names)

    def name(self, layer: int) -> str:
        return self.names.get(int(layer), "")

    def step(self, layer: int) -> str:
        """A slider step's label: "12 layer1.0.conv1"."""
        return f"{int(layer)} {self.name(layer)}".rstrip()

    def where(self, layer: int) -> str:
        """Hover and title text: "layer 12 (layer1.0.conv1, Conv2d)"."""
        name, kind = self.name(layer), self.types.get(int(layer), "")
        if not name or int(layer) == 0:
            return f"layer {int(layer)}" + (" (input)" if name else "")
        return f"layer {int(layer)} ({name}{', ' + kind if kind else ''})"


def tick(name: str) -> str:
    """An axis tick's text: the name, or its tail when long."""
    return name if len(name) <= _TICK_CHARS else "…" + name[-(_TICK_CHARS - 1):]


def layer_names(metrics, *, most: int = MAX_SHOWN) -> LayerNames | None:
    """The names of a model's layers from its tidy metrics (`module`, `module_type` columns); None for a run."""
    if metrics is None or "module" not in getattr(metrics, "columns", ()) or not len(metrics):
        return None
    first = metrics[metrics["init"].astype(str) == str(metrics["init"].iloc[0])].drop_duplicates("layer")
    first = first.sort_values("layer")
    layers = [int(layer) for layer in first["layer"]]
    names = dict(zip(layers, (str(m) for m in first["module"]), strict=True))
    typed = first["module_type"] if "module_type" in first else [""] * len(layers)
    types = dict(zip(layers, (str(t) for t in typed), strict=True))
    kinds = dict(zip(layers, (str(k) for k in first["param_kind"]), strict=True)) if "param_kind" in first else None
    if len(layers) - 1 <= most:
        return LayerNames(names, types, tuple(layers), tuple(tick(names[layer]) for layer in layers), kinds)
    chosen = block_outputs(names, most=most)
    return LayerNames(names, types, tuple(chosen), tuple(tick(chosen[layer]) for layer in chosen), kinds)


def spaced_ticks(layers: LayerNames, share: float) -> tuple[list[int], list[str]]:
    """(positions, texts) of the selection's ticks, at least `share` of the layer span apart so that slanted
    names do not overprint (the last layer, the model's output, is always kept)."""
    gap = share * max(max(layers.names, default=0), 1)
    kept: list[int] = []
    for i, layer in enumerate(layers.selection):
        if kept and layer - layers.selection[kept[-1]] < gap:
            if i != len(layers.selection) - 1:
                continue
            kept.pop()
        kept.append(i)
    return [layers.selection[i] for i in kept], [layers.ticks[i] for i in kept]


def shown_layers(layers: LayerNames, finite) -> list[int]:
    """The layers a deep model's depth panel draws by default, of those where its metric is `finite`.

    finite: (k,) layer numbers with a finite value. The selection (block
    outputs), or, for a metric undefined at most of it (grad_norm: a block
    ends in a parameter-free ReLU), the weight layers: one kind of module.
    """
    have = {int(layer) for layer in finite}
    chosen = [layer for layer in layers.selection if layer in have]
    if 2 * len(chosen) < len(layers.selection) and layers.kinds:
        chosen = [layer for layer, kind in sorted(layers.kinds.items()) if kind == "weight" and layer in have]
    return chosen


def _module_path(name: str) -> list[str]:
    """A layer name's module path, without the tensor's path in a structured output ("attn.3[0]" -> attn, 3)."""
    return name.split("[", 1)[0].split(".")


def block_outputs(names: dict[int, str], *, most: int = MAX_SHOWN) -> dict[int, str]:
    """{layer: block name} for the last layer of each block, plus the input.

    Blocks are the modules at one level of the module tree, where the
    recorded layers fall into 2 to `most` groups: the level with the most
    numbered blocks (items of a Sequential or ModuleList: `layer1.0`,
    `encoder.layer.3`, `h.5`), else the deepest. ResNet-18: conv1, bn1, relu,
    maxpool, layer1.0 ... layer4.1, avgpool, fc. A block's output is its last
    recorded layer (after the skip). Evenly spaced layers when no level has so
    few groups (a flat nn.Sequential of 100 modules).
    """
    hidden = {layer: _module_path(name) for layer, name in names.items() if layer >= 1}
    deepest = max((len(p) for p in hidden.values()), default=1)
    best, score = None, (-1, -1)
    for depth in range(1, deepest + 1):
        last: dict[str, int] = {}
        for layer in sorted(hidden):
            last[".".join(hidden[layer][:depth])] = layer
        if len(last) > most:
            break
        numbered = sum(block.rsplit(".", 1)[-1].isdigit() for block in last)
        if len(last) >= 2 and (numbered, depth) > score:
            best, score = last, (numbered, depth)
    if best is None:
        step = max(1, math.ceil(len(hidden) / most))
        order = sorted(hidden)
        picked = order[::step] + ([order[-1]] if order and order[-1] not in order[::step] else [])
        best = {names[layer]: layer for layer in picked}
    chosen = {0: names.get(0, "input")} if 0 in names else {}
    chosen.update({layer: block for block, layer in best.items()})
    return dict(sorted(chosen.items()))
