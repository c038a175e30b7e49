"""The recorder protocol: what a framework adapter supplies to the measuring engine, and nothing else.

An adapter (`initscope.torch` today; a JAX one next) runs a user's model and
hands the engine (`core.engine`) three things. It measures nothing itself:
every value comes from the metric registry's functions or a backend's
registered forms, on the pieces of `core.pieces`.

1. **Recorded states**, in execution order, each measured as it comes (none
   is kept): the array (n, *shape) with n samples first, its `Layout` (how its axes read:
   units, channels-first maps or token sequences; an adapter infers it from
   its module types or takes the user's), the module's qualified name and
   type, which call of the module it is, the tensor's path in a structured
   output, and whether it is an affine map's output (a pre-activation z,
   which pre_q and pre_cosine read). Layer 0 is the input. The adapter
   supplies each state's pieces to a `core.pieces.Pieces` view: the state
   itself as "state" (numpy (1, rows, units) in float32 or float64), the
   comparison state as "input" and "distances", "pre" on an affine map's
   output, "tokens" for token layouts; or it registers providers of those
   pieces that read its own arrays natively (`register_provider(backend,
   piece, fn)`, as `initscope.torch.providers` does with torch tensors).
2. **Per-sample Jacobian products**, where its framework has forward-mode
   autodiff: for each layer, J (1, m, d, w) of the first m samples' flat
   outputs with respect to their flat inputs ("tangents", with "input_dim"
   d). Only metrics whose pieces need the "jacobian" pass
   (`core.engine.reading_metrics(names, "jacobian")`) ask for it. An adapter
   that cannot supply them leaves those metrics NaN, with a note.
3. **Gradients by parameter kind**: ‖∂loss/∂θ‖_F per layer over its module's
   parameters of one kind ("weight", "embedding", "norm_affine", "scale",
   "bias"; the "gradient" piece), for metrics needing the "backward" pass.

What stays in an adapter: hooks, autodiff, loading a model, checkpointing
and initialization. What it does not do: choose metrics by name, compute a
metric, plan memory or build tables; those live below it (`core.engine`,
`study.memory`) or above it (the result and the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LAYOUTS", "STATES", "Layout", "LayoutWarning"]

LAYOUTS = ("units", "channels-first", "tokens")
STATES = {
    "units": "samples x units",
    "channels-first": "samples*positions x channels",
    "tokens": "sequences*positions x features",
}


class LayoutWarning(UserWarning):
    """A state's layout was guessed from its shape alone."""


@dataclass(frozen=True)
class Layout:
    """The reading of one recorded output. shape: per sample; kind: one of `LAYOUTS`; reason: what decided it.

    units: one row per sample, every entry a unit. channels-first: maps
    (n, C, *positions); the state matrix has a row per (sample, position) and
    a column per channel. tokens: sequences (n, *positions, features); a row
    per (sequence, position), a column per feature.
    """

    shape: tuple[int, ...]
    kind: str
    reason: str

    @property
    def state(self) -> str:
        return STATES[self.kind]

    @property
    def flat_units(self) -> int:
        return math.prod(self.shape)

    @property
    def units(self) -> int:
        """Columns of the state matrix: units, channels of a map, or features of a token."""
        if self.kind == "units":
            return self.flat_units
        return self.shape[0] if self.kind == "channels-first" else self.shape[-1]

    @property
    def positions(self) -> int:
        """Rows of the state matrix per sample: 1 for units, else the positions of a map or sequence."""
        if self.kind == "units":
            return 1
        return math.prod(self.shape[1:]) if self.kind == "channels-first" else math.prod(self.shape[:-1])
