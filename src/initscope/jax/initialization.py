"""Registry initializers on JAX models, functionally: new parameters, the user's model untouched.

initscope draws W: (fan_in, units), one output unit's incoming weights per
column (`core.initializers`). The JAX libraries store the same weights as

- Flax ``Dense`` / NNX ``Linear``: kernel (in, out), which is W itself;
- Flax ``Conv`` (NHWC): kernel (*kernel_size, in/groups, out); its reshape to
  (fan_in, out) puts each output channel's filter in one column, so W is
  reshaped back in the same order; fan_in = in/groups·k, fan_out = out·k;
- Equinox ``Linear``: weight (out, in), W transposed;
- Equinox ``Conv``: weight (out, in/groups, *kernel), torch's layout.

A weight is a parameter leaf of kind "weight" (`differentiation.leaves`) whose
module is one of those; embeddings, norms' scales, biases and everything
else are left as they are, and `initialize` names them in its notes. As in
`initscope.torch.initialize`, xavier reads fan_out apart from W's shape, so
its gain is rescaled by sqrt((fan_in + units)/(fan_in + fan_out)) on
convolutions. LSUV and the other layer-wise rules need each layer's inputs
and are not offered here yet: `initialize` names them in its error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from initscope.core.initializers import ACTIVATIONS, INITIALIZERS, LAYER_INITIALIZERS, default_gain, draw
from initscope.jax.differentiation import leaves
from initscope.jax.programs import Program, program

__all__ = ["initialize", "Fans", "weight_fans"]

_DENSE = ("Linear", "Dense", "LinearGeneral")
_CONV = ("Conv",)
_READS_FAN_OUT = frozenset({"xavier-normal", "xavier-uniform"})


@dataclass(frozen=True)
class Fans:
    """fan_in, fan_out and units (W's columns) of one JAX weight, and how W maps to its shape."""

    fan_in: int
    fan_out: int
    units: int
    layout: str  # "in-out" (Flax kernels: W reshaped), "out-in" (Equinox: Wᵀ reshaped)


def weight_fans(framework: str, module_type: str, shape: tuple[int, ...]) -> Fans | None:
    """The fans of a weight of `shape` in a module of `module_type`; None for weights no rule draws."""
    if not (module_type in _DENSE or module_type.startswith(_CONV)) or len(shape) < 2:
        return None
    if framework == "equinox":
        units, k = shape[0], math.prod(shape[2:])
        return Fans(shape[1] * k, units * k, units, "out-in")
    units, k = shape[-1], math.prod(shape[:-2])
    return Fans(shape[-2] * k, units * k, units, "in-out")


def _to_shape(W: np.ndarray, shape: tuple[int, ...], fans: Fans) -> np.ndarray:
    """W (fan_in, units) -> the weight of `shape` (see the module docstring)."""
    if fans.layout == "in-out":
        return W.reshape(shape)
    return W.T.reshape(shape)


def initialize(model, init: str, *, params=None, gain: float | None = None, activation: str = "relu",
               bias: str = "keep", seed: int = 0, inputs=None, notes: list[str] | None = None):
    """A copy of `model` whose Linear/Dense/Conv weights are drawn from the registry initializer `init`.

    model: a Flax NNX module, a (Linen module, variables) pair, an Equinox
    module, or a function f(params, x) with its `params` (whose leaves are
    named by their paths; there every two-axis leaf called "kernel" or
    "weight" is a Dense kernel). Returns the same kind: a new NNX module, a
    new (module, variables) pair, a new Equinox module, or new params. The
    given model is never changed.
    gain: the rule's factor (default: kaiming takes the activation's gain, all
    others 1, as in `initscope.torch.initialize`). bias: "keep" or "zeros".
    Weights are drawn in the flattened parameter order from one
    numpy Generator seeded with `seed`, in float64, then cast to each leaf's
    dtype. inputs: a batch the model takes, to name a Linen model's modules
    by tracing it (else their ClassName_N names are read). notes: a list
    that receives what was drawn and what was left.
    """
    import jax

    if init in LAYER_INITIALIZERS:
        raise ValueError(f"The 'init' parameter {init!r} is layer-wise (it fits each layer to the data it receives) "
                         f"and is not offered for JAX models yet. Use one of {list(INITIALIZERS)}.")
    if init not in INITIALIZERS:
        raise ValueError(f"The 'init' parameter must be one of {list(INITIALIZERS)}. Got {init!r} instead.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"The 'activation' parameter must be one of {list(ACTIVATIONS)}. Got {activation!r} instead.")
    if bias not in ("keep", "zeros"):
        raise ValueError(f"The 'bias' parameter must be one of ['keep', 'zeros']. Got {bias!r} instead.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"The 'seed' parameter must be an integer >= 0. Got {seed!r} instead.")
    prog = program(model, params=params)
    gain = default_gain(init, activation) if gain is None else float(gain)
    rng = np.random.default_rng(int(seed))
    flat, treedef = jax.tree_util.tree_flatten(prog.params)
    new = list(flat)
    drawn: list[str] = []
    left: list[str] = []
    types = _module_types(prog, inputs)
    for leaf in leaves(prog, types):
        value = flat[leaf.index]
        label = f"{leaf.module}/{leaf.name}" if prog.framework != "equinox" else f"{leaf.module}.{leaf.name}"
        kind = types.get(leaf.module, "Dense" if prog.framework == "function" else "")
        fans = weight_fans(prog.framework, kind, tuple(value.shape)) if leaf.kind == "weight" else None
        if fans is not None:
            layer_gain = gain
            if init in _READS_FAN_OUT and fans.units != fans.fan_out:
                layer_gain = gain * math.sqrt((fans.fan_in + fans.units) / (fans.fan_in + fans.fan_out))
            W = draw(init, fans.fan_in, fans.units, gain=layer_gain, rng=rng)
            new[leaf.index] = np.asarray(_to_shape(W, tuple(value.shape), fans), dtype=np.dtype(value.dtype))
            drawn.append(label)
        elif leaf.kind == "bias" and bias == "zeros":
            new[leaf.index] = np.zeros(value.shape, dtype=np.dtype(value.dtype))
        else:
            left.append(label)
    if notes is not None:
        notes.append(f"--init {init} drew {len(drawn)} weight(s)" + (f": {', '.join(drawn)}." if drawn else "."))
        if left:
            notes.append(f"--init {init} left {len(left)} parameter(s) as they were: {', '.join(left)}.")
    return _rebuilt(model, prog, jax.tree_util.tree_unflatten(treedef, [_as_array(v) for v in new]))


def _as_array(value):
    import jax.numpy as jnp

    return jnp.asarray(value) if isinstance(value, np.ndarray) else value


def _module_types(prog: Program, inputs=None) -> dict[str, str]:
    """Path -> module class of every module. Linen's modules exist only while it runs: one abstract trace on
    `inputs` (no numbers computed) names them, else Linen's own ClassName_N naming does."""
    import re

    import jax

    if prog.framework == "linen" and not prog.calls:
        if inputs is not None:
            jax.eval_shape(prog.apply, prog.params, inputs)
        else:
            return {path: m.group(1) for path in _linen_paths(prog.params)
                    if (m := re.match(r"^(?:.*/)?([A-Za-z]\w*?)_\d+$", path))}
    return {**prog.modules, **{c.name: c.module_type for c in prog.calls}}


def _linen_paths(params) -> set[str]:
    import jax

    from initscope.jax.differentiation import _key_text

    return {"/".join(_key_text(k)[0] for k in path[:-1])
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


def _rebuilt(model, prog: Program, params):
    """The model of the same kind as `model` with `params` in place of its parameters."""
    if prog.framework == "nnx":
        from flax import nnx

        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        return nnx.merge(graphdef, params, rest)
    if prog.framework == "linen":
        module, variables = model
        return module, {**variables, "params": params}
    if prog.framework == "equinox":
        import equinox as eqx

        _, static = eqx.partition(model, eqx.is_inexact_array)
        return eqx.combine(params, static)
    return params
