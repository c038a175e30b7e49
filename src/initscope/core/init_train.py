"""Initialization training: tune every layer's weights and shifts for information before use.

The objective, per trial, to be maximised over all W_l and b_l (l = 1..L):

    f = Σ_l g(C_l)/w_l − rms_penalty·Σ_l (ln rms(S_l) − ln rms(X))²

C_l = S_cᵀS_c/n is layer l's centred state covariance (w_l × w_l) over the
batch. g is either `logdet`, log det(C + ε·r²·I), or `effective_rank`, the
effective rank (Roy & Vetterli 2007) of the singular values sqrt(λ_k(C + ε·r²·I)),
with r = rms(X) over all samples, so that ε is relative to the input's scale and
the objective is smooth where C is singular. Dividing by w_l weighs layers of
different widths alike. Information alone rewards blowing the scale up
(logdet grows like w·ln(scale²)); the penalty keeps each layer's rms near the
input's, as issue 6 asks.

Two optimisers of the same f, for comparison (objective vs steps, wall time):

- `forward-gradient` (Baydin et al. 2022, "Gradients without backpropagation",
  arXiv 2202.08587): per step a random tangent v ~ N(0, I) over all parameters,
  the directional derivative f'(θ)·v by one forward-mode pass (JVP) through the
  network, and the step θ ← θ + lr·(f'(θ)·v)·v. The estimate (∇f·v)v is
  unbiased, E = ∇f, with Var((∇f·v)v_i) = ‖∇f‖² + (∂_i f)²: its noise grows with
  the number of parameters.
- `backprop`: the exact gradient by reverse mode, θ ← θ + lr·∇f.

Pure numpy; randomness only through `rng`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from initscope.core.network import Architecture, forward, layer_param_jvp, layer_param_vjp
from initscope.core.numerics import safe_eigh
from initscope.core.optimizers import sgd

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "HISTORY_COLUMNS",
    "DEFAULT_EPS",
    "DEFAULT_RMS_PENALTY",
    "objective_value",
    "objective_jvp",
    "objective_gradient",
    "forward_gradient",
    "train",
]

METHODS = ("forward-gradient", "backprop")
OBJECTIVES = ("logdet", "effective_rank")
HISTORY_COLUMNS = ("trial", "step", "objective", "seconds")
DEFAULT_EPS = 1e-3
DEFAULT_RMS_PENALTY = 1.0

Params = list[tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------
# The objective of one layer's states, its value and its gradient w.r.t. the states

def _layer_term(S: np.ndarray, ref_ms: np.ndarray, kind: str, rms_penalty: float, eps: float):
    """Value (T,) of one layer's term of f, and its gradient ∂/∂S (T, n, w).

    The spectral part g(λ(C + εr²I)) has gradient Q·diag(g'(λ))·Qᵀ w.r.t. C (a
    symmetric function of the eigenvalues), and ∂C/∂S maps it to (2/n)·S_c·G.
    """
    T, n, w = S.shape
    S_c = S - S.mean(axis=1, keepdims=True)
    C = np.matmul(S_c.transpose(0, 2, 1), S_c) / n
    C += (eps * ref_ms)[:, None, None] * np.eye(w, dtype=S.dtype)
    lam, Q = safe_eigh(C)  # overflowed states: NaN value and gradient (the step is skipped), no LinAlgError
    lam = np.maximum(lam, np.finfo(S.dtype).tiny)
    if kind == "logdet":
        value = np.log(lam).sum(axis=1)
        dlam = 1.0 / lam
    else:
        sigma = np.sqrt(lam)
        p = sigma / sigma.sum(axis=1, keepdims=True)
        H = -(p * np.log(p)).sum(axis=1)
        value = np.exp(H)
        dH_dsigma = -(np.log(p) + H[:, None]) / sigma.sum(axis=1, keepdims=True)
        dlam = value[:, None] * dH_dsigma / (2.0 * sigma)
    G = np.matmul(Q * (dlam / w)[:, None, :], Q.transpose(0, 2, 1))
    grad = (2.0 / n) * np.matmul(S_c, G)
    value = value / w
    if rms_penalty > 0:
        ms = np.einsum("tnw,tnw->t", S, S) / (n * w)
        gap = 0.5 * (np.log(ms) - np.log(ref_ms))  # ln rms(S) − ln rms(X)
        value = value - rms_penalty * gap * gap
        grad = grad - (2.0 * rms_penalty * gap / (n * w * ms))[:, None, None] * S
    return value, grad


def _reference(X: np.ndarray) -> np.ndarray:
    """The input's mean square per trial (T,): the scale that ε and the rms penalty refer to."""
    return np.einsum("tnd,tnd->t", X, X) / max(X.shape[1] * X.shape[2], 1)


def objective_value(
    X: np.ndarray,
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    arch: Architecture,
    *,
    objective: str = "logdet",
    rms_penalty: float = DEFAULT_RMS_PENALTY,
    eps: float = DEFAULT_EPS,
    ref_ms: np.ndarray | None = None,
) -> np.ndarray:
    """f per trial (T,) on the samples X (T, n, d). ref_ms: the input's mean square (default X's)."""
    ref = _reference(X) if ref_ms is None else ref_ms
    states, _ = forward(X, params, arch)
    total = np.zeros(X.shape[0])
    for S in states[1:]:
        total += _layer_term(S, ref, objective, rms_penalty, eps)[0]
    return total


def objective_jvp(
    X: np.ndarray,
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    tangents: Sequence[tuple[np.ndarray, np.ndarray]],
    arch: Architecture,
    *,
    objective: str = "logdet",
    rms_penalty: float = DEFAULT_RMS_PENALTY,
    eps: float = DEFAULT_EPS,
    ref_ms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """f and its directional derivative f'(θ)·v per trial, by one forward-mode pass.

    tangents: [(dW_l, db_l)] shaped like params. Returns (f (T,), f'·v (T,)).
    """
    ref = _reference(X) if ref_ms is None else ref_ms
    T = X.shape[0]
    value, slope = np.zeros(T), np.zeros(T)
    s, ds = X, None
    for (W, b), (dW, db) in zip(params, tangents, strict=True):
        s, ds, _ = layer_param_jvp(s, ds, W, b, dW, db, arch)
        v, grad = _layer_term(s, ref, objective, rms_penalty, eps)
        value += v
        slope += np.einsum("tnw,tnw->t", grad, ds)
    return value, slope


def objective_gradient(
    X: np.ndarray,
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    arch: Architecture,
    *,
    objective: str = "logdet",
    rms_penalty: float = DEFAULT_RMS_PENALTY,
    eps: float = DEFAULT_EPS,
    ref_ms: np.ndarray | None = None,
) -> tuple[np.ndarray, Params]:
    """f (T,) and its exact gradient [(∂f/∂W_l, ∂f/∂b_l)] by reverse mode (`network.layer_param_vjp`)."""
    params = list(params)
    ref = _reference(X) if ref_ms is None else ref_ms
    states, zs = forward(X, params, arch)
    value = np.zeros(X.shape[0])
    local = []
    for S in states[1:]:
        v, grad = _layer_term(S, ref, objective, rms_penalty, eps)
        value += v
        local.append(grad)
    grads: Params = [None] * len(params)  # type: ignore[list-item]
    ds = None
    for layer in range(len(params), 0, -1):
        W, _ = params[layer - 1]
        ds = local[layer - 1] if ds is None else ds + local[layer - 1]
        s_prev, z = states[layer - 1], zs[layer - 1]
        ds, dW, db = layer_param_vjp(ds, s_prev, W, z, arch)
        grads[layer - 1] = (dW, db)
    return value, grads


def forward_gradient(
    X: np.ndarray,
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    arch: Architecture,
    *,
    rng: np.random.Generator,
    objective: str = "logdet",
    rms_penalty: float = DEFAULT_RMS_PENALTY,
    eps: float = DEFAULT_EPS,
    ref_ms: np.ndarray | None = None,
) -> tuple[np.ndarray, Params]:
    """f (T,) and one forward-gradient estimate (f'(θ)·v)·v of ∇f, v ~ N(0, I) drawn from rng."""
    tangents = [(rng.standard_normal(W.shape).astype(W.dtype, copy=False),
                 rng.standard_normal(b.shape).astype(b.dtype, copy=False)) for W, b in params]
    value, slope = objective_jvp(X, params, tangents, arch, objective=objective, rms_penalty=rms_penalty,
                                 eps=eps, ref_ms=ref_ms)
    k = slope[:, None, None]
    return value, [(k * dW, k[:, 0] * db) for dW, db in tangents]


# ---------------------------------------------------------------------------
# The training loop

def _check(X, params, method, objective_name, steps, lr, batch, rms_penalty, eps, rng, eval_every):
    X = np.asarray(X)
    if X.ndim != 3 or X.dtype.kind != "f":
        raise ValueError(f"The 'X' parameter must be a float array (trials, samples, input_dim). "
                         f"Got shape {X.shape} and dtype {X.dtype} instead.")
    if method not in METHODS:
        raise ValueError(f"The 'method' parameter must be one of {list(METHODS)}. Got {method!r} instead.")
    if objective_name not in OBJECTIVES:
        raise ValueError(f"The 'objective' parameter must be one of {list(OBJECTIVES)}. "
                         f"Got {objective_name!r} instead.")
    for name, value, minimum in (("steps", steps, 0), ("batch", batch, 0), ("eval_every", eval_every, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"The '{name}' parameter must be an integer >= {minimum}. Got {value!r} instead.")
    for name, value, strict in (("lr", lr, True), ("rms_penalty", rms_penalty, False), ("eps", eps, True)):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0 or (strict and value == 0):
            raise ValueError(f"The '{name}' parameter must be a finite number {'>' if strict else '>='} 0. "
                             f"Got {value!r} instead.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"The 'rng' parameter must be a numpy.random.Generator. Got {type(rng).__name__} instead.")
    T, _, fan_in = X.shape
    out = []
    for layer, (W, b) in enumerate(params, start=1):
        W, b = np.asarray(W), np.asarray(b)
        if W.ndim != 3 or W.shape[:2] != (T, fan_in) or b.shape != (T, W.shape[2]):
            raise ValueError(f"The 'params' parameter must hold W ({T}, {fan_in}, w) and b ({T}, w) at layer "
                             f"{layer}. Got W {W.shape} and b {b.shape} instead.")
        out.append((np.array(W, dtype=X.dtype), np.array(b, dtype=X.dtype)))  # own, writable copies
        fan_in = W.shape[2]
    return X, out


def _minibatch(X: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """`batch` samples of X (T, n, d) drawn afresh per trial without replacement; all of X when batch is 0 or >= n."""
    T, n, _ = X.shape
    if not 0 < batch < n:
        return X
    idx = np.argsort(rng.random((T, n)), axis=1)[:, :batch]
    return np.take_along_axis(X, idx[:, :, None], axis=1)


def _ascend(params: Params, grads: Params, lr: float) -> Params:
    """One ascent step θ + lr·g per trial; a trial whose step is not finite keeps its parameters."""
    if not params:
        return params
    # A trial whose gradient overflowed (huge states, e.g. the seed's normal init) skips the
    # step rather than turning its network into NaN; the history shows it stalled.
    ok = np.ones(params[0][0].shape[0], dtype=bool)
    for gW, gb in grads:
        ok &= np.isfinite(gW).all(axis=(1, 2)) & np.isfinite(gb).all(axis=1)
    # Ascent is descent along −∇f: the task training's SGD (core.optimizers), on the finite trials only.
    flat = [-np.where(ok[:, None, None], gW, 0.0) for gW, _ in grads], [-np.where(ok[:, None], gb, 0.0) for _, gb in grads]
    # lr in the parameters' dtype, as the step always took it (float32 runs round it).
    updates, _ = sgd(params[0][0].dtype.type(lr)).update(flat[0] + flat[1], ())
    L = len(params)
    stepped = [(W + uW, b + ub)
               for (W, b), uW, ub in zip(params, updates[:L], updates[L:])]
    # A step so large that the parameters themselves overflow (lr 1e300) is skipped too.
    for W, b in stepped:
        ok &= np.isfinite(W).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)
    return [(np.where(ok[:, None, None], Wn, W), np.where(ok[:, None], bn, b))
            for (W, b), (Wn, bn) in zip(params, stepped)]


def train(
    X: np.ndarray,
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    arch: Architecture,
    *,
    method: str = "forward-gradient",
    steps: int = 100,
    lr: float = 0.01,
    batch: int = 0,
    objective: str = "logdet",
    rms_penalty: float = DEFAULT_RMS_PENALTY,
    eps: float = DEFAULT_EPS,
    rng: np.random.Generator,
    eval_every: int = 1,
) -> tuple[Params, pd.DataFrame]:
    """Optimise every layer's weights and shifts for the information objective (see the module doc).

    X: (T, n, d); params: [(W_l (T, fan_in, w), b_l (T, w))], left unchanged.
    method: 'forward-gradient' or 'backprop'; steps of gradient ascent with
    step size lr; batch: samples per step, drawn afresh per step and trial
    (0 = all). Returns (new params, history) where history has the columns
    trial, step, objective, seconds: f on all of X at step 0 and every
    eval_every steps (and the last), and the optimisation's cumulative wall
    time up to that step (the evaluation itself not counted). Trials are
    independent problems optimised side by side; a trial whose gradient is
    not finite, or whose step would make a parameter non-finite, skips that
    step. Too large a step can still make f fall or overflow: forward-gradient's noise grows with the number of parameters P
    (E‖(∇f·v)v‖² = (P + 2)‖∇f‖²), so it needs a step about P times smaller.
    """
    X, params = _check(X, params, method, objective, steps, lr, batch, rms_penalty, eps, rng, eval_every)
    T = X.shape[0]
    ref = _reference(X)
    kw = dict(objective=objective, rms_penalty=rms_penalty, eps=eps, ref_ms=ref)
    logged: list[tuple[int, np.ndarray, float]] = []  # (step, f per trial, seconds so far)
    elapsed = 0.0

    def log(step: int) -> None:
        logged.append((step, objective_value(X, params, arch, **kw), elapsed))

    with np.errstate(all="ignore"):
        log(0)
        for step in range(1, steps + 1):
            start = time.perf_counter()
            Xb = _minibatch(X, batch, rng)
            if method == "backprop":
                _, grads = objective_gradient(Xb, params, arch, **kw)
            else:
                _, grads = forward_gradient(Xb, params, arch, rng=rng, **kw)
            params = _ascend(params, grads, lr)
            elapsed += time.perf_counter() - start
            if step % eval_every == 0 or step == steps:
                log(step)
    return params, _history(logged, T)


def _history(logged: list[tuple[int, np.ndarray, float]], T: int) -> pd.DataFrame:
    """The history table (`HISTORY_COLUMNS`): one row per trial and logged step."""
    return pd.DataFrame({
        "trial": np.tile(np.arange(T), len(logged)),
        "step": np.repeat(np.array([step for step, _, _ in logged], dtype=np.int64), T),
        "objective": np.concatenate([value for _, value, _ in logged]),
        "seconds": np.repeat(np.array([seconds for _, _, seconds in logged], dtype=np.float64), T),
    })
