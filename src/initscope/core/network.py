"""The seed's MLP, generalised, batched over trials: forward, JVP and VJP of one layer.

Shapes: T trials, n samples, w units, d input dimensions, m Jacobian samples.
A layer maps s_prev (T, n, w_prev) with weights W (T, w_prev, w) and shifts
b (T, w) to

    z = s_prev @ W + b,   h = norm(act(z)),   s = s_prev + alpha·h  (residual, shapes match)
                                               s = h                 (otherwise)

exactly as DESIGN.md defines it. Everything here is pure numpy (scipy.special
for the Gaussian CDF of GELU): arrays in, arrays out, randomness only through
explicit generators. Activations come from `initscope.core.activations`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from initscope.core.activations import LEAKY_SLOPE, activation
from initscope.core.initializers import initializer, draw as draw_weights
from initscope.core.rules import BATCHED

__all__ = [
    "SHIFTS",
    "NORMS",
    "READOUTS",
    "LEAKY_SLOPE",
    "NORM_EPS",
    "Architecture",
    "activate",
    "activation_derivative",
    "draw_shifts",
    "draw_layer",
    "layer_forward",
    "layer_jvp",
    "layer_vjp",
    "forward",
    "layer_param_jvp",
    "pre_activation_vjp",
    "layer_param_vjp",
    "mse_output_gradient",
]

SHIFTS = ("linspace", "zeros", "normal", "uniform", "quantile")
NORMS = ("none", "layer", "batch")
READOUTS = ("zeros", "init")
NORM_EPS = 1e-5  # torch.nn.LayerNorm / BatchNorm1d default


@dataclass(frozen=True)
class Architecture:
    """What a layer does besides its weights: the non-random part of the model."""

    activation: str = "relu"
    norm: str = "none"
    residual: float = 0.0


def activate(name: str, z: np.ndarray) -> np.ndarray:
    """φ(z) elementwise, from the activation registry (`initscope.core.activations`)."""
    return activation(name).phi(z)


def activation_derivative(name: str, z: np.ndarray) -> np.ndarray:
    """φ'(z) elementwise (ReLU's derivative at 0 taken as 0, as autograd does)."""
    return activation(name).dphi(z)


def draw_shifts(kind: str, width: int, *, scale: float, rng: np.random.Generator | None, dtype=np.float64) -> np.ndarray:
    """One layer's shift vector (width,): the seed's linspace(-1, 1) or a random draw, times scale.

    `quantile` shifts depend on the layer's data and are set by the run loop
    (`init_data.quantile_shifts`); here they are zeros.
    """
    if kind == "linspace":
        b = np.linspace(-1.0, 1.0, width)
    elif kind in ("zeros", "quantile"):
        b = np.zeros(width)
    elif kind == "normal":
        b = rng.standard_normal(width)
    elif kind == "uniform":
        b = rng.uniform(-1.0, 1.0, width)
    else:
        raise ValueError(f"The 'shift' parameter must be one of {list(SHIFTS)}. Got {kind!r} instead.")
    return (scale * b).astype(dtype, copy=False)


def draw_layer(
    init: str,
    fan_in: int,
    fan_out: int,
    *,
    gain: float,
    shift: str,
    shift_scale: float,
    rngs: Sequence[np.random.Generator],
    dtype=np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (T, fan_in, fan_out) and shifts (T, fan_out) for T trials, one generator each.

    Each trial draws from its own generator, so a trial's network does not
    depend on how many other trials run beside it or in which batch.
    """
    T = len(rngs)
    W = np.empty((T, fan_in, fan_out), dtype=dtype)
    random_shift = shift in ("normal", "uniform")
    if random_shift:
        b = np.empty((T, fan_out), dtype=dtype)
    else:
        # Deterministic shifts are the same in every trial: one vector, broadcast.
        b = np.broadcast_to(draw_shifts(shift, fan_out, scale=shift_scale, rng=None, dtype=dtype), (T, fan_out))
    if T == 0:
        return W, b
    # Validate once for the layer, then call the rule directly: this loop runs once per
    # trial and layer, and per-call checks were a third of its cost at seed scale.
    W[0] = draw_weights(init, fan_in, fan_out, gain=gain, rng=rngs[0], dtype=dtype)
    if random_shift:
        b[0] = draw_shifts(shift, fan_out, scale=shift_scale, rng=rngs[0], dtype=dtype)
    rule = initializer(init).draw if fan_in and fan_out else None
    batched = BATCHED.get(rule) if T > 1 else None
    if batched is not None:
        _draw_batched(batched, W[1:], b[1:] if random_shift else None, float(gain), rngs[1:],
                      shift=shift, shift_scale=shift_scale)
        return W, b
    for t in range(1, T):
        if rule is not None:
            W[t] = rule(fan_in, fan_out, float(gain), rngs[t])
        if random_shift:
            b[t] = draw_shifts(shift, fan_out, scale=shift_scale, rng=rngs[t], dtype=dtype)
    return W, b


def _draw_batched(batched, W: np.ndarray, b: np.ndarray | None, gain: float, rngs, *, shift: str,
                  shift_scale: float) -> None:
    """A built-in rule for many trials (`rules.BATCHED`): each generator fills its trial's float64 numbers, then
    its shifts, in the rule's own order; one transform then makes them the rule's weights. W (T, fan_in, fan_out)
    and b (T, fan_out) or None are filled in place, with the numbers the rule gives trial by trial."""
    method, transform = batched
    buf = W if W.dtype == np.float64 else np.empty(W.shape)  # float32 weights are the float64 draws, rounded
    for t, rng in enumerate(rngs):
        getattr(rng, method)(out=buf[t])
        if b is not None:
            b[t] = draw_shifts(shift, W.shape[2], scale=shift_scale, rng=rng, dtype=b.dtype)
    transform(buf, gain)
    if buf is not W:
        W[...] = buf


def _normalize(h: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(h - mean)/sqrt(var + eps) along axis; returns (ŷ, σ) with σ keeping dims."""
    mu = h.mean(axis=axis, keepdims=True)
    hc = h - mu
    sigma = np.sqrt((hc * hc).mean(axis=axis, keepdims=True) + NORM_EPS)
    return hc / sigma, sigma


def _norm_axis(norm: str) -> int:
    # layer norm: per sample over units (last axis); batch norm: per unit over samples.
    return -1 if norm == "layer" else -2


def _normalize_linear(dh: np.ndarray, yhat: np.ndarray, sigma: np.ndarray, axis: int) -> np.ndarray:
    """The normalization's Jacobian applied to dh. It is symmetric, so JVP and VJP share it:
    (dh - mean(dh) - ŷ·mean(dh·ŷ)) / σ along the normalised axis (Ioffe & Szegedy 2015)."""
    return (dh - dh.mean(axis=axis, keepdims=True) - yhat * (dh * yhat).mean(axis=axis, keepdims=True)) / sigma


def _residual_applies(arch: Architecture, s_prev: np.ndarray, width: int) -> bool:
    return arch.residual > 0 and s_prev.shape[-1] == width


def layer_forward(
    s_prev: np.ndarray, W: np.ndarray, b: np.ndarray, arch: Architecture, *, keep_pre: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """One layer for all trials. s_prev (T, n, w_prev), W (T, w_prev, w), b (T, w).

    Returns (s, z): the state (T, n, w) and the pre-activation z (T, n, w),
    which the Jacobian and gradient passes need. keep_pre=False returns
    z = None and lets activations with an in-place form (ReLU, tanh, identity)
    work in z's buffer (one array less per layer).
    """
    z = np.matmul(s_prev, W)
    z += b[:, None, :]
    act = activation(arch.activation)
    if not keep_pre and act.inplace is not None:
        h = act.inplace(z)
        z = None
    else:
        h = act.phi(z)
        if h is z:  # identity: the residual update below must not write into the returned z
            h = z.copy()
    if arch.norm != "none":
        h, _ = _normalize(h, _norm_axis(arch.norm))
    if _residual_applies(arch, s_prev, W.shape[-1]):
        if arch.residual != 1.0:
            h *= arch.residual
        h += s_prev
    return h, z


def layer_jvp(
    tangent: np.ndarray, W: np.ndarray, z_rows: np.ndarray, arch: Architecture, batch_sigma: np.ndarray | None = None
) -> np.ndarray:
    """Push per-sample input tangents through one layer (forward-mode, exact).

    tangent: (T, m, d, w_prev), rows ∂s_prev[i]/∂x_i for m samples.
    z_rows: (T, m, w) those samples' pre-activations. batch_sigma (T, 1, w):
    batch norm's per-unit σ, held fixed — the per-sample map that a model
    applies to one input; the batch statistics' own dependence on x_i couples
    all samples and is left out (documented in DESIGN's jacobian_rank).
    Returns (T, m, d, w).
    """
    T, m, d, w_prev = tangent.shape
    w = W.shape[-1]
    dz = np.matmul(tangent.reshape(T, m * d, w_prev), W).reshape(T, m, d, w)
    dz *= activation_derivative(arch.activation, z_rows)[:, :, None, :]
    if arch.norm == "layer":
        h = activate(arch.activation, z_rows)
        yhat, sigma = _normalize(h, -1)
        dz = _normalize_linear(dz, yhat[:, :, None, :], sigma[:, :, None, :], -1)
    elif arch.norm == "batch":
        dz /= batch_sigma[:, :, None, :]
    if arch.residual > 0 and w_prev == w:
        dz *= arch.residual
        dz += tangent
    return dz


def batch_norm_sigma(z: np.ndarray, arch: Architecture) -> np.ndarray | None:
    """Batch norm's per-unit σ (T, 1, w) of a layer, or None when batch norm is off."""
    if arch.norm != "batch":
        return None
    return _normalize(activate(arch.activation, z), -2)[1]


def layer_vjp(
    ds: np.ndarray, s_prev: np.ndarray, W: np.ndarray, z: np.ndarray, arch: Architecture
) -> tuple[np.ndarray, np.ndarray]:
    """Backpropagate ∂loss/∂s (T, n, w) through one layer (reverse-mode, exact).

    Batch norm is differentiated in training mode (its statistics depend on
    every sample), layer norm per sample. Returns (∂loss/∂s_prev (T, n, w_prev),
    ∂loss/∂W (T, w_prev, w)).
    """
    dz = pre_activation_vjp(ds, s_prev, W, z, arch)
    dW = np.matmul(s_prev.transpose(0, 2, 1), dz)
    ds_prev = np.matmul(dz, W.transpose(0, 2, 1))
    if _residual_applies(arch, s_prev, W.shape[-1]):
        ds_prev += ds
    return ds_prev, dW


def pre_activation_vjp(
    ds: np.ndarray, s_prev: np.ndarray, W: np.ndarray, z: np.ndarray, arch: Architecture
) -> np.ndarray:
    """∂loss/∂z (T, n, w) from ∂loss/∂s (T, n, w): back through the residual branch, the norm and φ.

    The shared first half of `layer_vjp` and `layer_param_vjp`; ∂loss/∂b is its sum over samples.
    """
    dh = ds * arch.residual if _residual_applies(arch, s_prev, W.shape[-1]) else ds
    if arch.norm != "none":
        axis = _norm_axis(arch.norm)
        yhat, sigma = _normalize(activate(arch.activation, z), axis)
        dh = _normalize_linear(dh, yhat, sigma, axis)
    return dh * activation_derivative(arch.activation, z)


def layer_param_vjp(
    ds: np.ndarray, s_prev: np.ndarray, W: np.ndarray, z: np.ndarray, arch: Architecture
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`layer_vjp` with the shifts' gradient too: (∂loss/∂s_prev (T, n, w_prev), ∂loss/∂W (T, w_prev, w),
    ∂loss/∂b (T, w)). The adjoint of `layer_param_jvp`'s tangent map."""
    dz = pre_activation_vjp(ds, s_prev, W, z, arch)
    dW = np.matmul(s_prev.transpose(0, 2, 1), dz)
    ds_prev = np.matmul(dz, W.transpose(0, 2, 1))
    if _residual_applies(arch, s_prev, W.shape[-1]):
        ds_prev += ds
    return ds_prev, dW, dz.sum(axis=1)


def forward(
    X: np.ndarray, params: Sequence[tuple[np.ndarray, np.ndarray]], arch: Architecture
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every layer of the network on X (T, n, d) with params [(W_l (T, w_{l-1}, w_l), b_l (T, w_l))].

    Returns the states [S_0 = X, S_1, …, S_L] and pre-activations [z_1, …, z_L],
    as `layer_forward` computes them (all kept: for a reverse pass).
    """
    states, zs = [X], []
    for W, b in params:
        s, z = layer_forward(states[-1], W, b, arch)
        states.append(s)
        zs.append(z)
    return states, zs


def layer_param_jvp(
    s_prev: np.ndarray,
    ds_prev: np.ndarray | None,
    W: np.ndarray,
    b: np.ndarray,
    dW: np.ndarray,
    db: np.ndarray,
    arch: Architecture,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer and its directional derivative along (ds_prev, dW, db), all trials and samples at once.

    s_prev, ds_prev (T, n, w_prev) (ds_prev None: the input X is fixed),
    W, dW (T, w_prev, w), b, db (T, w). z = s_prev·W + b, so
    dz = ds_prev·W + s_prev·dW + db; then φ', the normalization's linear map
    (batch norm in training mode, as `layer_vjp`: its statistics move with
    the parameters) and the residual branch. Unlike `layer_jvp` (per-sample
    input tangents) this is the tangent of the whole batch's forward pass.
    Returns (s, ds, z), each (T, n, w); s is `layer_forward`'s state.
    """
    z = np.matmul(s_prev, W) + b[:, None, :]
    dz = np.matmul(s_prev, dW) + db[:, None, :]
    if ds_prev is not None:
        dz += np.matmul(ds_prev, W)
    h = activate(arch.activation, z)
    dh = activation_derivative(arch.activation, z) * dz
    if arch.norm != "none":
        axis = _norm_axis(arch.norm)
        h, sigma = _normalize(h, axis)
        dh = _normalize_linear(dh, h, sigma, axis)
    if _residual_applies(arch, s_prev, W.shape[-1]):
        h = s_prev + arch.residual * h
        dh = arch.residual * dh + (ds_prev if ds_prev is not None else 0.0)
    return h, dh, z


def mse_output_gradient(s_last: np.ndarray, W_out: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss and ∂loss/∂s_L for the readout out = s_L @ W_out and mean squared error.

    s_last (T, n, w), W_out (T, w, o), y (T, n, o). loss = mean over samples
    and outputs of (out − y)². Returns (loss (T,), ∂loss/∂s_L (T, n, w)).
    """
    out = np.matmul(s_last, W_out)
    r = out - y
    n, o = y.shape[1], y.shape[2]
    loss = (r * r).mean(axis=(1, 2))
    ds = np.matmul(r, W_out.transpose(0, 2, 1)) * (2.0 / (n * o))
    return loss, ds
