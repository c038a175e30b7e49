"""Task losses per trial and their gradients w.r.t. the network's output.

Shapes: T trials, n samples, o outputs (classes for cross-entropy). Each
function returns the loss per trial (T,), averaged over samples, and its
gradient (T, n, o) w.r.t. the output, so that ∂(Σ_t loss_t)/∂out_t is each
trial's own gradient. Pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOSSES", "mse", "cross_entropy", "accuracy", "loss_value"]

LOSSES = ("mse", "cross_entropy")


def mse(out: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over samples and outputs of (out − y)²: (loss (T,), ∂loss/∂out (T, n, o)). y (T, n, o)."""
    r = out - y
    n, o = r.shape[1], r.shape[2]
    return np.einsum("tno,tno->t", r, r) / (n * o), r * (2.0 / (n * o))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    # Shifting by the row's maximum keeps exp() finite; a non-finite logit stays non-finite (divergence).
    shifted = logits - logits.max(axis=2, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over samples of −log softmax(logits)[label]: (loss (T,), ∂loss/∂logits (T, n, o)).

    labels (T, n) integers in [0, o).
    """
    n = logits.shape[1]
    logp = _log_softmax(logits)
    picked = np.take_along_axis(logp, labels[:, :, None], axis=2)[:, :, 0]
    grad = np.exp(logp)
    np.put_along_axis(grad, labels[:, :, None], np.take_along_axis(grad, labels[:, :, None], axis=2) - 1.0, axis=2)
    return -picked.mean(axis=1), grad / n


def accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of samples whose largest logit is the label's, per trial (T,). A non-finite row counts as wrong."""
    finite = np.isfinite(logits).all(axis=2)
    return ((logits.argmax(axis=2) == labels) & finite).mean(axis=1)


def loss_value(kind: str, out: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(loss (T,), gradient (T, n, o)) of `kind` ('mse' or 'cross_entropy')."""
    if kind == "mse":
        return mse(out, target)
    if kind == "cross_entropy":
        return cross_entropy(out, target)
    raise ValueError(f"The 'loss' parameter must be one of {list(LOSSES)}. Got {kind!r} instead.")
