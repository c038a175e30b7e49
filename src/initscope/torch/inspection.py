"""`inspect`: the core's per-layer diagnosis of any torch.nn.Module on a batch of data.

One forward pass records every selected module's output (forward hooks, in
execution order: a module called twice is two layers) and measures it at
once with `initscope.metrics` (`recording`), so states are not kept. The same
pass gives the loss for one backward pass (weight gradients), which
recomputes repeated blocks instead of keeping their activations
(`checkpointing`); it runs without autograd when grad_norm is not asked for. jacobian_rank comes from
forward-mode AD on at most 64 samples (`jacobian`), and so do
jacobian_sq_mean and jacobian_log_spread (every metric reading per-sample
Jacobians). pre_q and pre_cosine are read where a state is the output of an
affine map (Linear, Conv; layer 0: a floating-point input), from the same
pass. Which pass measures a metric comes from the pieces it reads
(`core.pieces`), and every value from the core's engine. Afterwards the hooks are
gone and the model is as it was: training/eval flags, requires_grad flags
and buffers (BatchNorm running statistics) are restored, even when the
forward pass raises, and torch's global RNG is not advanced.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import CheckpointError

from initscope.core import engine as E
from initscope.core import metrics as M
from initscope.core.propagation import JACOBIAN_SAMPLES
from initscope.result import Result
from initscope.torch.checkpointing import checkpointed, repeated_blocks
from initscope.torch.gradients import (
    check_loss,
    gradient_norms,
    gradient_params,
    layer_gradient,
    loss_value,
    unreached_note,
)
from initscope.torch.jacobian import JACOBIAN_BUDGET, JacobianReadings, jacobian_values
from initscope.torch.kernels import one_thread
from initscope.torch.loading import ModelError, _quote
from initscope.study.recorder import LayoutWarning
from initscope.torch.layouts import LayoutRules, model_kind
from initscope.torch.measures import MAX_ROWS, MAX_SEQUENCES
from initscope.torch.providers import to_numpy
from initscope.torch.recording import HookError, Recorder, display_name, input_hint
from initscope.torch.tables import build_result

__all__ = ["inspect", "MODES"]

MODES = ("train", "eval")
# Modules whose forward does not call their children as modules (fused kernels, F.multi_head_attention_forward):
# recorded themselves by default, so that their output is never lost to a fast path.
OPAQUE = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def _as_tensor(value, label: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"The '{label}' parameter must be an array of numbers. Got dtype {value.dtype} instead.")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"The '{label}' parameter must be a torch.Tensor or numpy array. Got {type(value).__name__} instead.")
    if value.ndim == 0 or value.shape[0] == 0:
        raise ValueError(f"The '{label}' parameter must have a first axis of samples, n >= 1. "
                         f"Got shape {tuple(value.shape)} instead.")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"The '{label}' parameter must be finite. It contains NaN or Inf.")
    return value


def _metric_names(metrics) -> tuple[str, ...]:
    """The registry's default metrics and those reading token sequences, or the names given, in registry order."""
    if metrics is None:
        tokens = E.reads("tokens", M.METRICS)
        return tuple(m for m in M.METRICS if m in M.default_metrics() or m in tokens)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names or any(m not in M.METRICS for m in names):
        raise ValueError(f"The 'metrics' parameter must be a non-empty list of names from {list(M.METRICS)}. "
                         f"Got {metrics!r} instead.")
    return tuple(m for m in M.METRICS if m in names)


def _select(model: nn.Module, layers) -> list[tuple[str, nn.Module]]:
    """The modules to hook: by default leaf modules and `OPAQUE` ones (not their children); else those matching `layers`.

    A string matches a module's qualified name or its class name; a class
    matches its instances. Every entry must match something.
    """
    named = list(model.named_modules())
    if layers is None:
        inside = {id(c) for m in model.modules() if isinstance(m, nn.MultiheadAttention) for c in m.modules()
                  if c is not m}
        return [(name, m) for name, m in named if id(m) not in inside
                and (isinstance(m, OPAQUE) or next(m.children(), None) is None)]
    wanted = [layers] if isinstance(layers, (str, type)) else list(layers)
    if not wanted:
        raise ValueError("The 'layers' parameter must name at least one module or module type. Got an empty list instead.")
    chosen: set[int] = set()
    for entry in wanted:
        if isinstance(entry, str):
            hits = [m for n, m in named if n == entry or type(m).__name__ == entry]
        elif isinstance(entry, type) and issubclass(entry, nn.Module):
            hits = [m for _, m in named if isinstance(m, entry)]
        else:
            raise TypeError(f"The 'layers' parameter must hold module names or nn.Module classes. Got {entry!r} instead.")
        if not hits:
            examples = [n for n, _ in named if n][:12]
            raise ValueError(f"The 'layers' parameter must name modules of the model. Got {entry!r}, which matches "
                             f"no module name or type (names include {examples}).")
        chosen.update(id(m) for m in hits)
    return [(n, m) for n, m in named if id(m) in chosen]


def _call(model: nn.Module, x: torch.Tensor):
    try:
        return model(x)
    except HookError as exc:
        raise exc.__cause__ from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the model's own error, quoted
        raise ModelError(f"the model raised {_quote(exc)} in its forward pass") from exc


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"The '{name}' parameter must be an integer >= {low}. Got {value!r} instead.")
    return int(value)


# long: the public entry point: a docstring for its 17 parameters; the body is three calls (_checked, _hooked_pass,
# _assembled)
def inspect(
    model: nn.Module,
    inputs,
    *,
    targets=None,
    layers=None,
    loss: str | Callable | None = None,
    metrics: Sequence[str] | None = None,
    label: str = "model",
    mode: str | None = None,
    layout=None,
    reference: str | None = None,
    max_rows: int = MAX_ROWS,
    max_sequences: int = MAX_SEQUENCES,
    attention_weights: bool = False,
    jacobian_samples: int = JACOBIAN_SAMPLES,
    jacobian_budget: int = JACOBIAN_BUDGET,
    checkpoint: bool = True,
    seed: int = 0,
) -> Result:
    """Per-layer metrics and spectra of `model` on `inputs`, as tidy tables (an `initscope.Result`).

    inputs: (n, *shape), a tensor or numpy array; floating inputs are cast to
    the model's floating dtype and moved to its device; integer inputs
    (token ids) are passed as they are. Layer 0 is the input; layers 1, 2, ...
    are the recorded tensors of module calls in execution order, each tensor
    of a structured output (tuple, dict, dataclass, ModelOutput) its own
    layer, named like `attn.3[0]` (`initscope.torch.outputs`).
    layers: None records every leaf module, and MultiheadAttention and
    Transformer layers themselves (their fast paths skip their children);
    else names (qualified or class names) and nn.Module classes.
    loss: "output-norm", "mse", "cross-entropy", "random-projection", a
    callable f(output, targets) -> scalar, or None: mse with floating
    targets, cross-entropy with integer ones, else output-norm (Σ output²),
    or random-projection when the output is normalised (every row of the
    same norm, as after a final LayerNorm). Named losses read a structured
    output's `logits`, `last_hidden_state` or first floating tensor
    (`initscope.torch.gradients`). targets: for mse, floats shaped like that
    output; for cross-entropy, integer class ids (seeded random ids without).
    grad_norm of a layer is ‖∂loss/∂θ‖_F over its module's parameters of one
    kind (the `param_kind` column: weight, embedding, norm_affine (γ, β),
    scale, bias), NaN for modules without; a module called twice shows its
    total gradient on both of its layers.
    mode: "train", "eval", or None to run the model in the mode it is in.
    layout: how multi-axis states read: None infers it, a name in
    `layouts.LAYOUTS` applies to all, a mapping {module name, type, layer
    name or "input": layout} to some (`initscope.torch.layouts`).
    reference: the module whose first state the scale and rank flags compare
    with, or "input" (default: the input when it is floating point and not an
    image, else the first recorded state that varies with the data).
    max_rows, max_sequences: spectra of state matrices with more rows, and
    token metrics of more sequences, use a seeded subset of this size, with
    its standard error (`initscope.torch.measures`).
    attention_weights: also record MultiheadAttention's attention weights.
    label: the `init` column's value. jacobian_samples, jacobian_budget: at
    most that many samples, and Jacobian entries per layer (`jacobian`).
    checkpoint: recompute repeated blocks' activations in the backward pass
    instead of keeping them (`initscope.torch.checkpointing`: a ResNet-50's
    peak at 32×3×224² falls from 3.7 to 2.5 GB for one more forward pass of the blocks);
    False for a model whose blocks' forward is not a pure function of its
    inputs and parameters (it keeps state between calls).
    seed: seeds torch's RNG inside the call (dropout) and every subset.
    Errors raised by the model's forward pass, the loss or the backward pass
    become `ModelError`, quoting the original, which is chained.
    """
    call = _checked(model, inputs, targets=targets, layers=layers, loss=loss, metrics=metrics, label=label,
                    mode=mode, layout=layout, reference=reference, max_rows=max_rows, max_sequences=max_sequences,
                    attention_weights=attention_weights, jacobian_samples=jacobian_samples,
                    jacobian_budget=jacobian_budget, checkpoint=checkpoint, seed=seed)
    passed = _hooked_pass(model, call)
    _after_pass(passed.rec, call.selected, call.reference, passed.notes)
    return _assembled(model, call, passed)


@dataclass
class _Call:
    """inspect's arguments, checked: inputs and targets placed on the model's device, the modules to hook."""

    metric_names: tuple[str, ...]
    named: bool  # the metrics were named (else the defaults, token metrics dropped for a model without sequences)
    x: torch.Tensor
    y: torch.Tensor | None
    device: torch.device
    selected: list[tuple[str, nn.Module]]
    rules: LayoutRules
    loss: str | Callable | None
    label: str
    mode: str | None
    reference: str | None
    max_rows: int
    max_sequences: int
    attention_weights: bool
    jacobian_samples: int
    jacobian_budget: int
    checkpoint: bool
    seed: int

    @property
    def n(self) -> int:
        return self.x.shape[0]


def _checked(model, inputs, *, targets, layers, loss, metrics, label, mode, layout, reference, max_rows,
             max_sequences, attention_weights, jacobian_samples, jacobian_budget, checkpoint, seed) -> _Call:
    """Every argument checked in order (ValueError or TypeError naming it), before the model runs."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of inspect must be a torch.nn.Module. Got {type(model).__name__} instead.")
    metric_names = _metric_names(metrics)
    if mode is not None and mode not in MODES:
        raise ValueError(f"The 'mode' parameter must be one of {list(MODES)} or None. Got {mode!r} instead.")
    if not isinstance(label, str) or not label:
        raise ValueError(f"The 'label' parameter must be a non-empty string. Got {label!r} instead.")
    if not isinstance(checkpoint, bool):
        raise TypeError(f"The 'checkpoint' parameter must be True or False. Got {checkpoint!r} instead.")
    rules = LayoutRules(layout, model)
    _check_reference(model, reference)
    jacobian_samples = _check_int("jacobian_samples", jacobian_samples, 1)
    jacobian_budget = _check_int("jacobian_budget", jacobian_budget, 1)
    max_rows = _check_int("max_rows", max_rows, 16)
    max_sequences = _check_int("max_sequences", max_sequences, 2)
    seed = _check_int("seed", seed, 0)
    x = _as_tensor(inputs, "inputs")
    n = x.shape[0]
    y = None if targets is None else _as_tensor(targets, "targets")
    if y is not None and y.shape[0] != n:
        raise ValueError(f"The 'targets' parameter must have one row per input sample ({n}). "
                         f"Got shape {tuple(y.shape)} instead.")
    check_loss(loss, y)
    selected = _select(model, layers)
    x, y, device = _placed(model, x, y)
    return _Call(metric_names, metrics is not None, x, y, device, selected, rules, loss, label, mode, reference,
                 max_rows, max_sequences, attention_weights, jacobian_samples, jacobian_budget, checkpoint, seed)


@dataclass
class _Passed:
    """What the hooked passes gave: the recording, gradient norms by parameter, the Jacobian readings."""

    rec: Recorder
    notes: list[str]
    weights: dict[int, list]  # module id -> its parameters whose gradients grad_norm reads
    grads: dict[int, float | None] = field(default_factory=dict)
    jac: JacobianReadings = field(default_factory=JacobianReadings)
    loss_name: str = ""
    checkpointed: bool = False


# long: one hooked pass inside a try/finally that puts the model back as it was (modes, requires_grad, buffers,
# hooks, RNG), then the backward pass and the forward-mode Jacobian pass where wanted metrics read them
def _hooked_pass(model: nn.Module, call: _Call) -> _Passed:
    """The main pass (each selected module's states measured as they come), the backward pass when a wanted
    metric reads gradients, the Jacobian pass when one reads per-sample Jacobians (`core.pieces` says which)."""
    x, y, n, seed = call.x, call.y, call.n, call.seed
    notes: list[str] = []
    rec = Recorder({id(m): name for name, m in model.named_modules()}, n, want=set(call.metric_names),
                   rules=call.rules, hint=model_kind(model), reference=call.reference, notes=notes, seed=seed,
                   max_rows=call.max_rows, max_sequences=call.max_sequences, attention_weights=call.attention_weights)
    gradient = E.reading_metrics(call.metric_names, "backward")  # grad_norm: one backward pass
    jacobian = E.reading_metrics(call.metric_names, "jacobian")  # jacobian_rank, ...: the forward-mode pass
    weights = {id(m): gradient_params(m)[1] for _, m in call.selected} if gradient else {}
    passed = _Passed(rec, notes, weights)
    params = list({id(p): p for ps in weights.values() for p in ps}.values())

    training = {m: m.training for m in model.modules()}
    grad_flags = {p: p.requires_grad for p in model.parameters()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    handles = []
    device = call.device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        try:
            if call.mode is not None:
                model.train(call.mode == "train")
            for p in params:
                p.requires_grad_(True)
            rec.start(x, input_hint(m for _, m in call.selected) or model_kind(model))
            handles = [module.register_forward_hook(rec.hook, with_kwargs=True) for _, module in call.selected]
            torch.manual_seed(seed)
            blocks = repeated_blocks(model) if params and call.checkpoint else []
            passed.checkpointed = bool(blocks)
            with torch.enable_grad() if params else torch.no_grad():
                with checkpointed(blocks):
                    output = _call(model, x)
                value, passed.loss_name = loss_value(output, y, call.loss, n=n, seed=seed, notes=notes) \
                    if params else (None, "")
                del output
                rec.last = None  # the last state, held for its identity, is not needed any more
                for h in handles:  # the backward pass recomputes checkpointed blocks: nothing is recorded twice
                    h.remove()
                if value is not None:
                    passed.grads = _gradients(value, params, blocks, notes=notes, rerun=lambda: _rerun(
                        model, x, y, call.loss, n, seed, buffers))
                del value
            _restore(buffers)
            _check_recorded(rec, call.reference)
            if jacobian:
                passed.jac = jacobian_values(model, x, rec.layers, [m for _, m in call.selected], names=jacobian,
                                             samples=call.jacobian_samples, budget=call.jacobian_budget, seed=seed,
                                             notes=notes, attention_weights=call.attention_weights)
        finally:
            for h in handles:
                h.remove()
            for m, flag in training.items():
                m.training = flag
            for p, flag in grad_flags.items():
                p.requires_grad_(flag)
            _restore(buffers)
    return passed


def _assembled(model: nn.Module, call: _Call, passed: _Passed) -> Result:
    """Each layer's values (the main pass's, the Jacobian pass's, the gradients'), the context, then the result."""
    rec, notes = passed.rec, passed.notes
    metric_names = call.metric_names
    if not call.named and not any(layer.layout.kind == "tokens" for layer in rec.layers):
        tokens = E.reads("tokens", metric_names)
        metric_names = tuple(m for m in metric_names if m not in tokens)  # no sequences: no NaN columns
    jacobian = E.reading_metrics(metric_names, "jacobian")
    gradient = E.reading_metrics(metric_names, "backward")
    values, unreached = {}, []
    for layer in rec.layers:
        v = dict(layer.measured.values)
        for name in jacobian:
            v[name] = passed.jac.values.get(layer.index, {}).get(name, math.nan) if layer.measured.finite \
                else math.nan
        for name in gradient:
            ps = passed.weights.get(id(layer.module), []) if layer.module is not None else []
            v[name] = layer_gradient(passed.grads, ps)
            if passed.grads and ps and math.isnan(v[name]) and layer.label not in unreached:
                unreached.append(layer.label)
        for name in metric_names:  # a registered metric reading what torch modules do not give
            v.setdefault(name, math.nan)
        values[layer.index] = v
    if unreached:
        notes.append(unreached_note(unreached))
    x, y, n = call.x, call.y, call.n
    config = {"init": (call.label,), "model": type(model).__name__, "samples": n,
              "input_dim": rec.layers[0].layout.flat_units,
              "dtype": str(to_numpy(x[:0]).dtype) if x.is_floating_point() else str(x.dtype).removeprefix("torch."),
              "mode": call.mode or ("train" if model.training else "eval"), "seed": call.seed,
              "metrics": metric_names, "reference": rec.layers[rec.reference].label, "max_rows": call.max_rows,
              "max_sequences": call.max_sequences}
    if passed.loss_name:
        config.update(loss=passed.loss_name, checkpoint=passed.checkpointed)
    # The report colours samples by their target, or by the input's norm when there is none.
    if y is not None and y.is_floating_point():
        target = y.reshape(n, -1)[:, 0].detach().to("cpu", torch.float64).numpy()
    else:
        target = np.linalg.norm(to_numpy(x.reshape(n, -1)).astype(np.float64), axis=1)
    with one_thread():  # incoming weight norms in float64 (kernels.one_thread)
        return build_result(rec.layers, values, metric_names, label=call.label, config=config, target=target,
                            notes=notes, reference=rec.reference, histograms=passed.jac.histograms)


def _check_reference(model: nn.Module, reference) -> None:
    if reference is None:
        return
    names = {name for name, _ in model.named_modules() if name}
    if not isinstance(reference, str) or not (reference == "input" or reference.split("[", 1)[0] in names
                                              or any(reference.startswith(f"{n}.") for n in names)):
        examples = [name for name, _ in model.named_modules() if name][:8]
        raise ValueError(f"The 'reference' parameter must be 'input' or the name of a module of the model. "
                         f"Got {reference!r} instead (names include {examples}).")


def _check_recorded(rec: Recorder, reference) -> None:
    """A named reference that produced no state: raised after the main pass, before the Jacobians' (minutes on
    wide inputs) are computed for nothing."""
    if reference is not None and rec.reference is None:
        raise ValueError(f"The 'reference' parameter must name a module whose output was recorded. Got "
                         f"{reference!r}, which produced no state (pass it in layers= too, or name a recorded one).")


def _after_pass(rec: Recorder, selected, reference, notes: list[str]) -> None:
    """Notes on how states were read, and the errors that only the pass can tell."""
    _check_recorded(rec, reference)
    if rec.reference is None:  # every state constant: compare with the input
        rec.reference = 0
    kinds = {layer.layout.kind for layer in rec.layers}
    if kinds & {"channels-first", "tokens"}:
        notes.insert(0, "Feature maps and token sequences are read with positions folded into samples "
                        "(rows = samples*positions, columns = channels or features) for rms, std, spectra, ranks, "
                        "dead and linear units and cosines; linear_r2, distance_corr, the projections and "
                        "jacobian_rank use one flattened row per sample; token_cosine and token_effective_rank "
                        "read each sequence alone.")
    if rec.guessed:
        first = rec.guessed[0]
        other = "channels-first" if first.layout.kind == "tokens" else "tokens"
        key = first.label if first.module is not None else "input"
        warnings.warn(f"initscope: {len(rec.guessed)} state(s) of ambiguous shape read by guess, e.g. {first.label} "
                      f"({first.module_type}) of shape {first.layout.shape} per sample as {first.layout.kind}; "
                      f"to say otherwise pass layout={{{key!r}: {other!r}}} "
                      f"(CLI: --layout {key}={other}).", LayoutWarning, stacklevel=3)
    for reason, labels in rec.skipped.items():
        kind, why = reason.split(": ", 1)
        shown = ", ".join(labels[:4]) + (f", ... ({len(labels)} in all)" if len(labels) > 4 else "")
        notes.append(f"not recorded: {shown} ({kind}): {why}.")
    silent = [name for name, m in selected if id(m) not in rec.called]
    if silent:
        notes.append(f"{len(silent)} selected module(s) produced no state (not called as modules: inside a fused fast "
                     f"path, or not used): {', '.join(display_name(s) for s in silent[:6])}"
                     f"{', ...' if len(silent) > 6 else ''}.")


def _placed(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None):
    """Inputs and targets on the model's device; floating ones in its floating dtype."""
    reference = next(model.parameters(), None)
    if reference is None:
        reference = next(model.buffers(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)

    def place(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        if t.is_floating_point() and dtype is not None:
            t = t.to(dtype)
        return t.to(device)

    return place(x), place(y), device


def _gradients(value: torch.Tensor, params: list[nn.Parameter], blocks: list[nn.Module], *, rerun,
               notes: list[str]) -> dict[int, float | None]:
    """gradient_norms of one backward pass; when the backward pass through checkpointed blocks fails (a block's
    recomputation saves different tensors — torch's CheckpointError —, or a block modifies its own input in place,
    which the recomputation would read), the gradients of a second, plain pass, whose own error is the one raised."""
    try:
        return gradient_norms(value, params)
    except ModelError as exc:
        if not blocks:
            raise
        why = "its forward differs between calls" if isinstance(exc.__cause__, CheckpointError) else \
            f"it raised {_quote(exc.__cause__)}" if exc.__cause__ is not None else str(exc)
    notes.append(f"gradients: the backward pass could not recompute the checkpointed blocks ({why}), so they come "
                 "from a second forward+backward pass that keeps every activation; pass checkpoint=False "
                 "(--no-checkpoint) to skip the first attempt.")
    del value
    return gradient_norms(rerun(), params)


def _rerun(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, loss, n: int, seed: int,
           buffers) -> torch.Tensor:
    """The loss of a fresh forward pass, without hooks or checkpoints, from the same buffers and RNG seed."""
    _restore(buffers)
    torch.manual_seed(seed)
    value, _ = loss_value(_call(model, x), y, loss, n=n, seed=seed, notes=[])  # its notes were made by the first
    return value


def _restore(buffers) -> None:
    with torch.no_grad():
        for buffer, value in buffers:
            buffer.copy_(value)
