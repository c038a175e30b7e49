"""What the JAX adapter differentiates: per-sample Jacobians of every recorded state, and gradients by parameter.

**Jacobians** (`state_jacobians`), as the torch adapter forms them: each
forward-mode pass (`jax.jvp`) perturbs every sample's input along the same
direction e_k, so a state's tangent row i is ∂s_i/∂x_i·e_k; the d directions
run at once under `jax.vmap`, in chunks that keep the tangents within a
budget. Models whose samples interact (batch statistics) add the same
cross-sample terms torch's pass does. The result per state is (1, m, d, |s|):
each sample's Jacobian of its flattened state with respect to its flattened
input, what the core's Jacobian metrics read.

**Gradients** (`gradient_norms`, `layer_params`): one `jax.grad` of the loss
with respect to the parameter pytree. Every floating leaf has a path
(``blocks/0/fc`` + ``kernel``; ``layers[2]`` + ``weight``) and a kind, the
same kinds torch's adapter uses (`PARAM_KINDS`): a norm's scale and bias are
``norm_affine``, an embedding table ``embedding``, a kernel or weight of two
or more axes ``weight``, a one-axis weight or scale ``scale``, a bias
``bias``. A layer's grad_norm reads its module's parameters (and its
children's) of the highest kind it holds.

Losses (`LOSSES`, torch's names): ``output-norm`` Σ output²; ``mse`` mean
(output − targets)²; ``cross-entropy`` with integer class ids on the last
axis; ``random-projection`` Σ output ⊙ R with R seeded standard normal
(numpy's generator: not torch's draws). Pure functions of arrays; the
adapter's entry point turns their results into tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from initscope.jax.programs import Program

__all__ = ["LOSSES", "PARAM_KINDS", "Leaf", "leaves", "layer_params", "loss_function", "gradient_norms",
           "state_jacobians", "JACOBIAN_BUDGET"]

LOSSES = ("output-norm", "mse", "cross-entropy", "random-projection")
PARAM_KINDS = ("weight", "embedding", "norm_affine", "scale", "bias")
JACOBIAN_BUDGET = 2**24  # tangent entries (m·d·Σ|s|) computed at once: 128 MiB in float64
_NORM = re.compile(r"norm", re.IGNORECASE)
_EMBED = re.compile(r"^embed", re.IGNORECASE)


@dataclass(frozen=True)
class Leaf:
    """One floating parameter: the module path that owns it, its own name, its kind, and its index in the
    flattened parameter pytree."""

    module: str
    name: str
    kind: str | None
    index: int


def _key_text(key) -> tuple[str, str]:
    """(text, separator style) of one tree path key: dict keys and attributes, or sequence indices."""
    import jax

    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key), "dict"
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name, "attr"
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx), "index"
    return str(key), "dict"


def _split_path(prog: Program, path) -> tuple[str, str]:
    """(module path, leaf name) of a parameter's tree path, in the program's naming style."""
    parts = [_key_text(k) for k in path]
    if prog.framework == "nnx" and parts and parts[-1] == ("value", "attr"):
        parts = parts[:-1]  # a Variable's payload
    if prog.framework == "equinox":
        text = ""
        for name, style in parts[:-1]:
            text += f"[{name}]" if style == "index" else (f".{name}" if text else name)
        return text, parts[-1][0]
    return "/".join(name for name, _ in parts[:-1]), parts[-1][0]


def _kind(module_type: str, name: str, ndim: int) -> str | None:
    if _NORM.search(module_type):
        return "norm_affine"
    if _EMBED.search(module_type):
        return "embedding"
    if name in ("kernel", "weight") or name.endswith("_weight"):
        return "weight" if ndim >= 2 else "scale"
    if name == "embedding":
        return "embedding"
    if name == "scale":
        return "scale"
    if name.endswith("bias"):
        return "bias"
    return None  # a class token, a position table: not a layer's weights


def leaves(prog: Program, module_types: dict[str, str]) -> list[Leaf]:
    """Every floating parameter leaf of prog.params with its module path and kind.

    module_types: path -> class name (prog.modules, and the recorded calls for Linen, whose submodules
    exist only while it runs).
    """
    import jax

    out = []
    flat, _ = jax.tree_util.tree_flatten_with_path(prog.params)
    for index, (path, leaf) in enumerate(flat):
        if not (hasattr(leaf, "dtype") and np.issubdtype(np.dtype(leaf.dtype), np.inexact)):
            continue
        module, name = _split_path(prog, path)
        out.append(Leaf(module, name, _kind(module_types.get(module, ""), name, np.ndim(leaf)), index))
    return out


def _inside(module: str, owner: str, framework: str) -> bool:
    if not owner:
        return True
    if module == owner:
        return True
    sep = "/" if framework in ("nnx", "linen") else ""
    return module.startswith(owner + sep) if sep else (module.startswith(owner + ".") or
                                                        module.startswith(owner + "["))


def layer_params(prog: Program, owner: str, all_leaves: list[Leaf]) -> tuple[str, list[Leaf]]:
    """(kind, leaves) a recorded module's grad_norm reads: its own and its children's of the highest kind."""
    found: dict[str, list[Leaf]] = {}
    for leaf in all_leaves:
        if leaf.kind is not None and _inside(leaf.module, owner, prog.framework):
            found.setdefault(leaf.kind, []).append(leaf)
    kind = next((k for k in PARAM_KINDS if k in found), "none")
    return kind, found.get(kind, [])


def loss_function(name: str, *, targets=None, seed: int = 0) -> Callable:
    """loss(output) -> scalar for a name of `LOSSES`; output is the model's first floating output array."""
    import jax
    import jax.numpy as jnp

    if name not in LOSSES:
        raise ValueError(f"The 'loss' parameter must be one of {list(LOSSES)}. Got {name!r} instead.")
    if name == "output-norm":
        return lambda out: jnp.sum(out * out)
    if name == "mse":
        def mse(out):
            y = jnp.zeros_like(out) if targets is None else jnp.asarray(targets, out.dtype).reshape(out.shape)
            return jnp.mean((out - y) ** 2)
        return mse
    if name == "cross-entropy":
        if targets is None:
            raise ValueError("The 'targets' parameter must be integer class ids for loss 'cross-entropy'. "
                             "Got None instead.")

        def cross_entropy(out):
            logp = jax.nn.log_softmax(out, axis=-1)
            ids = jnp.asarray(targets).reshape(out.shape[:-1])
            return -jnp.mean(jnp.take_along_axis(logp, ids[..., None], axis=-1))
        return cross_entropy

    def random_projection(out):
        R = np.random.default_rng(seed).standard_normal(out.shape)
        return jnp.sum(out * jnp.asarray(R, out.dtype))
    return random_projection


def output_array(output):
    """The array a loss reads: the output itself, or a structure's `logits`, else its first floating leaf."""
    import jax

    for key in ("logits", "last_hidden_state"):
        value = output.get(key) if isinstance(output, dict) else getattr(output, key, None)
        if value is not None:
            return value
    for leaf in jax.tree_util.tree_leaves(output):
        if hasattr(leaf, "dtype") and np.issubdtype(np.dtype(leaf.dtype), np.floating):
            return leaf
    raise ValueError("The model's output holds no floating array for the loss to read.")


def gradient_norms(prog: Program, x, loss: Callable, *, jit: bool = True) -> list[float]:
    """‖∂loss/∂p‖_F (float64) for each leaf of the flattened parameter pytree (0 for integer leaves)."""
    import jax

    def value(params):
        return loss(output_array(prog.apply(params, x)[0]))

    grad = jax.jit(jax.grad(value)) if jit else jax.grad(value)
    flat = jax.tree_util.tree_leaves(grad(prog.params))
    return [math.sqrt(float(np.sum(np.asarray(g, dtype=np.float64) ** 2))) if hasattr(g, "dtype") else 0.0
            for g in flat]


def state_jacobians(prog: Program, x, *, budget: int = JACOBIAN_BUDGET, jit: bool = True) -> list[np.ndarray]:
    """Per-sample Jacobians (1, m, d, |s_l|) of every recorded state of prog on the m samples of x (m, *shape).

    d = |x_i|: one tangent direction per input entry, all samples moved together (module docstring).
    """
    import jax
    import jax.numpy as jnp

    m = x.shape[0]
    d = int(np.prod(x.shape[1:]))

    def states(inputs):
        return prog.apply(prog.params, inputs)[1]

    def push(direction):  # (d,) -> every state's tangent (m, *shape_l)
        tangent = jnp.broadcast_to(direction.reshape(x.shape[1:]), x.shape).astype(x.dtype)
        return jax.jvp(states, (x,), (tangent,))[1]

    shapes = [s.shape for s in jax.eval_shape(states, x)]
    per_direction = m * sum(int(np.prod(s[1:])) for s in shapes)
    chunk = max(1, min(d, budget // max(per_direction, 1)))
    many = jax.vmap(push)
    if jit:
        many = jax.jit(many)
    eye = jnp.eye(d, dtype=x.dtype)
    parts: list[list[np.ndarray]] = [[] for _ in shapes]
    for start in range(0, d, chunk):
        for l, t in enumerate(many(eye[start:start + chunk])):  # (c, m, *shape_l)
            parts[l].append(np.asarray(t).reshape(t.shape[0], m, -1))
    # (d, m, |s|) -> (1, m, d, |s|)
    return [np.concatenate(p, axis=0).transpose(1, 0, 2)[None] for p in parts]
