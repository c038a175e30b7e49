"""grad_norm of an inspected model: which loss is differentiated, and which parameters each layer's norm reads.

The loss (`loss_value`) is one of `LOSSES`, or the user's f(output, targets):

- ``output-norm``: Σ output², the squared Frobenius norm of the output;
- ``mse``: mean((output − targets)²); without targets, against zeros: the
  output-norm loss divided by the output's number of entries, so the same
  gradients up to that factor and the same flags;
- ``cross-entropy``: torch's mean cross-entropy of logits against integer
  class ids (classes on the last axis, or on axis 1 of outputs with 4 or more
  axes, torch's (N, C, d1, ...)); without targets, against class ids drawn
  uniformly with the seed (a note says so);
- ``random-projection``: Σ output ⊙ R with R a seeded standard-normal
  tensor of the output's shape: ∂loss/∂output = R, a random direction.

The default is mse with floating targets, cross-entropy with integer ones,
and output-norm without targets, unless every row of the output (its last
axis) has the same norm, as after a final LayerNorm or RMSNorm at
initialization: then Σ output² is a constant, its gradient upstream of the
norm is ~0, and the default is random-projection (a note says so; choosing
output-norm or mse there warns). A structured output (tuple, dict,
dataclass, ModelOutput) is read at its `logits`, else its
`last_hidden_state`, else its first floating tensor with the samples first.

Each recorded module's grad_norm reads one kind of parameter
(`gradient_params`), and the vanishing-gradient rule compares layers of the
same kind only (`initscope.study.flags`): ``weight`` (matrices and kernels of
Linear, Conv, attention projections such as MultiheadAttention's
in_proj_weight and out_proj.weight), ``embedding``, ``norm_affine`` (γ and β
of BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm and modules named
*Norm), ``scale`` (other one-axis weights, e.g. PReLU's slopes), ``bias``
(a module with biases only), or ``none``. A module holding several kinds (a
Transformer layer) reads its highest kind in that order.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from initscope.core.gradients import LOSSES
from initscope.torch.kernels import one_thread
from initscope.torch.loading import ModelError, _quote
from initscope.torch.outputs import tensors_of

__all__ = ["LOSSES", "PARAM_KINDS", "LossWarning", "check_loss", "loss_value", "loss_output", "normalised_rows",
           "gradient_params", "param_kind", "gradient_norms", "layer_gradient", "unreached_note"]

PARAM_KINDS = ("weight", "embedding", "norm_affine", "scale", "bias", "none")  # a module reads the first it holds
_NORMS = tuple(t for t in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None))
               if t is not None)
_PREFERRED = (".logits", ".last_hidden_state")
_EQUAL_ROWS = 1e-3  # relative spread of row norms below which the output counts as normalised


class LossWarning(UserWarning):
    """The chosen loss gives (near-)zero gradients for this model's output."""


# ---- parameter kinds ----------------------------------------------------------


def is_norm(module: nn.Module) -> bool:
    """A normalisation module: torch's norms, or a custom one (LlamaRMSNorm, T5LayerNorm)."""
    if isinstance(module, _NORMS):
        return True
    # Custom norms (LlamaRMSNorm, T5LayerNorm) hold one-axis parameters and say Norm in their name.
    return "norm" in type(module).__name__.lower() and all(p.ndim <= 1 for p in module.parameters(recurse=False))


def _kind(owner: nn.Module, name: str, p: torch.Tensor) -> str | None:
    if is_norm(owner):
        return "norm_affine"
    if isinstance(owner, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if name.endswith("weight"):  # weight, in_proj_weight, q_proj_weight, ...
        return "weight" if p.ndim >= 2 else "scale"
    if name.endswith("bias"):
        return "bias"
    return None  # other parameters (a class token, a position table) are not a layer's weights


def gradient_params(module: nn.Module) -> tuple[str, list[nn.Parameter]]:
    """(kind, parameters) whose gradient norm is the module's grad_norm: its own and its children's of the
    highest kind it holds (module docstring); ("none", []) for a module without any."""
    found: dict[str, list[nn.Parameter]] = {}
    for owner in module.modules():
        for name, p in owner.named_parameters(recurse=False):
            kind = _kind(owner, name, p)
            if kind is not None:
                found.setdefault(kind, []).append(p)
    kind = next((k for k in PARAM_KINDS if k in found), "none")
    return kind, found.get(kind, [])


def param_kind(module: nn.Module | None) -> str:
    """The kind of parameter a recorded module's grad_norm reads; "none" for the input and parameter-free modules."""
    return "none" if module is None else gradient_params(module)[0]


def gradient_norms(value: torch.Tensor, params: list[nn.Parameter]) -> dict[int, float | None]:
    """‖∂loss/∂p‖_F per parameter (by id), from one backward pass; None for parameters the loss does not
    depend on at all (not in its graph: a pooler beside the output the loss reads); all 0 for a constant loss."""
    if not value.requires_grad:
        return {id(p): 0.0 for p in params}
    try:
        grads = torch.autograd.grad(value, params, allow_unused=True)
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise ModelError(f"the backward pass raised {_quote(exc)}") from exc
    with one_thread():  # float64 copies of every gradient: with both pools spinning they cost seconds (kernels)
        return {id(p): None if g is None else float(torch.linalg.vector_norm(g.detach().to(torch.float64)))
                for p, g in zip(params, grads, strict=True)}


def layer_gradient(grads: dict[int, float | None], params: list[nn.Parameter]) -> float:
    """A layer's grad_norm: the 2-norm of its parameters' gradient norms, over those in the loss's graph;
    NaN when none is (or none was measured)."""
    got = [grads[id(p)] for p in params if grads.get(id(p)) is not None]
    return math.sqrt(sum(g * g for g in got)) if got else math.nan


def unreached_note(labels: list[str]) -> str:
    """The note for recorded modules whose parameters the loss does not depend on (grad_norm NaN there)."""
    shown = ", ".join(labels[:6]) + (f", ... ({len(labels)} in all)" if len(labels) > 6 else "")
    return (f"grad_norm not measured for {shown}: the loss does not depend on their parameters (they do not "
            "feed the output tensor it reads); pass loss=f(output, targets) to include them.")


# ---- the loss -----------------------------------------------------------------


def check_loss(loss, targets: torch.Tensor | None) -> None:
    """ValueError/TypeError for a loss that is neither a name of `LOSSES`, a callable nor None, or targets it cannot read."""
    if loss is None or callable(loss):
        return
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"The 'loss' parameter must be one of {list(LOSSES)}, a callable f(output, targets) "
                         f"returning a scalar tensor, or None. Got {loss!r} instead.")
    if targets is not None and loss in ("output-norm", "random-projection"):
        raise ValueError(f"The 'targets' parameter is not read by loss={loss!r}; give loss='mse' (floating targets) "
                         f"or 'cross-entropy' (class ids) with it. Got targets of shape {tuple(targets.shape)}.")
    if targets is not None and loss == "mse" and not targets.is_floating_point():
        raise ValueError(f"The 'targets' parameter must be floating point for loss='mse' (class ids go with "
                         f"loss='cross-entropy'). Got dtype {str(targets.dtype).removeprefix('torch.')} instead.")
    if targets is not None and loss == "cross-entropy" and (targets.is_floating_point() or targets.dtype == torch.bool):
        raise ValueError(f"The 'targets' parameter must hold integer class ids for loss='cross-entropy'. "
                         f"Got dtype {str(targets.dtype).removeprefix('torch.')} instead.")


def loss_output(output, n: int) -> tuple[str, torch.Tensor] | None:
    """(path, tensor) the named losses read (module docstring); None when the output holds no floating tensor."""
    if isinstance(output, torch.Tensor):
        return ("", output) if output.is_floating_point() and not output.is_nested else None
    found = [(path, t) for path, t in tensors_of(output)
             if t.is_floating_point() and not t.is_nested and t.ndim >= 1 and t.shape[0] == n]
    for key in _PREFERRED:
        for path, t in found:
            if path == key:
                return path, t
    return found[0] if found else None


def normalised_rows(out: torch.Tensor) -> bool:
    """True when every row of `out` (n, ..., d), d >= 2, has the same norm: Σ out² is then constant."""
    if out.ndim < 2 or out.shape[-1] < 2 or out.numel() // out.shape[-1] < 2:
        return False
    with torch.no_grad():
        sq = out.detach().reshape(-1, out.shape[-1]).to(torch.float64).square().sum(-1)
        top = float(sq.max())
        return top > 0 and float(sq.max() - sq.min()) <= _EQUAL_ROWS * top


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cross_entropy(out: torch.Tensor, targets: torch.Tensor | None, seed: int, notes: list[str]) -> torch.Tensor:
    axis = 1 if out.ndim >= 4 else out.ndim - 1
    if out.ndim < 2:
        raise ValueError(f"The 'loss' parameter 'cross-entropy' needs logits with a class axis, shape (n, classes, ...). "
                         f"Got an output of shape {tuple(out.shape)} instead.")
    classes = out.shape[axis]
    ids_shape = out.shape[:axis] + out.shape[axis + 1:]
    if targets is None:
        targets = torch.randint(0, classes, ids_shape, generator=_generator(seed)).to(out.device)
        notes.append(f"grad_norm: cross-entropy against class ids drawn uniformly from the {classes} classes "
                     f"(seeded; no targets given).")
    else:
        if tuple(targets.shape) != tuple(ids_shape):
            if targets.numel() != ids_shape.numel():
                raise ValueError(f"The 'targets' parameter must hold one class id per row of logits, shape "
                                 f"{tuple(ids_shape)} (classes on axis {axis} of the output {tuple(out.shape)}). "
                                 f"Got shape {tuple(targets.shape)} instead.")
            targets = targets.reshape(ids_shape)
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= classes:
            raise ValueError(f"The 'targets' parameter must hold class ids in [0, {classes}) for the output's "
                             f"{classes} classes. Got ids from {low} to {high} instead.")
    if axis != 1:
        out, targets = out.reshape(-1, classes), targets.reshape(-1)
    return F.cross_entropy(out, targets.long())


def _mse(out: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    if targets is None:
        return F.mse_loss(out, torch.zeros_like(out))
    if targets.shape != out.shape:
        if targets.numel() != out.numel():
            raise ValueError(f"The 'targets' parameter must have the model output's shape "
                             f"{tuple(out.shape)}. Got {tuple(targets.shape)} instead.")
        targets = targets.reshape(out.shape)
    return F.mse_loss(out, targets.to(out.dtype))


def _named_loss(name: str, out: torch.Tensor, targets, seed: int, notes: list[str]) -> torch.Tensor:
    if name == "cross-entropy":
        return _cross_entropy(out, targets, seed, notes)
    if name == "mse":
        return _mse(out, targets)
    if name == "random-projection":
        r = torch.randn(out.shape, generator=_generator(seed), dtype=torch.float64).to(out.device, out.dtype)
        return (out * r).sum()
    return (out * out).sum()


def _default(out: torch.Tensor, targets: torch.Tensor | None, where: str, notes: list[str]) -> str:
    if targets is not None:
        return "mse" if targets.is_floating_point() else "cross-entropy"
    if normalised_rows(out):
        notes.append(f"grad_norm: every row of the output{where} has the same norm (a final LayerNorm or "
                     "RMSNorm), so the squared output norm is constant and its gradient ~0; the loss is "
                     "random-projection instead (Σ output × a seeded standard-normal tensor). Choose with "
                     "loss= (CLI: --loss).")
        return "random-projection"
    return "output-norm"


def loss_value(output, targets: torch.Tensor | None, loss, *, n: int, seed: int,
               notes: list[str]) -> tuple[torch.Tensor | None, str]:
    """(scalar loss, the loss's name) for one backward pass (module docstring); (None, "") with a note when
    a named loss finds no floating tensor in the output. loss: a name of `LOSSES`, a callable or None."""
    if callable(loss):
        try:
            value = loss(output, targets)
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            raise ModelError(f"the loss raised {_quote(exc)}") from exc
        name = "custom"
    else:
        found = loss_output(output, n)
        if found is None:
            notes.append(f"grad_norm not measured: the model returns a {type(output).__name__} without a floating "
                         "tensor; pass loss=f(output, targets) returning a scalar tensor.")
            return None, ""
        path, out = found
        where = f" ({path.lstrip('.')})" if path else ""
        if path:
            notes.append(f"grad_norm: the loss reads the model output's {path.lstrip('.')!r} "
                         f"(a {type(output).__name__}; logits, else last_hidden_state, else its first tensor).")
        name = loss or _default(out, targets, where, notes)
        if loss in ("output-norm", "mse") and targets is None and normalised_rows(out):
            warnings.warn(f"initscope: every row of the model output{where} has the same norm (a final LayerNorm "
                          f"or RMSNorm), so loss={loss!r} is constant and its gradients are ~0 before the norm; "
                          "use loss='random-projection' (CLI: --loss random-projection) or give targets.",
                          LossWarning, stacklevel=4)
        value = _named_loss(name, out, targets, seed, notes)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(f"The 'loss' parameter must return a scalar tensor. Got {type(value).__name__} "
                         f"{tuple(getattr(value, 'shape', ()))} instead.")
    return value.reshape(()), name
