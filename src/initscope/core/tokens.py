"""Token metrics: per sequence, then averaged over sequences (the registry's token_cosine, token_effective_rank).

A token state is X (T, m, P, E): per trial, m sequences of P positions ×
E features (a transformer's hidden states). Folding positions into samples
hides what happens inside a sequence: when attention makes every position
of a sequence the same vector (rank collapse, Dong et al. 2021, "Attention
is not all you need: pure attention loses rank doubly exponentially with
depth"), the folded cosine across all rows stays low as long as sequences
differ. These read each sequence alone. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

__all__ = ["token_cosine", "token_effective_rank", "sequence_cosines", "sequence_effective_ranks"]


def sequence_cosines(X: np.ndarray) -> np.ndarray:
    """Mean cosine between distinct positions of each sequence, uncentred. X: (k, P, E) -> (k,).

    `metrics.mean_cosine`'s formula, Σ_{p≠q} u_p·u_q = ‖Σ u_p‖² − P' over the
    P' nonzero positions; NaN with fewer than two.
    """
    norms = np.sqrt(np.einsum("kpe,kpe->kp", X, X))
    valid = norms > 0
    m = valid.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(valid, 1.0 / np.where(valid, norms, 1.0), 0.0)
        v = np.einsum("kp,kpe->ke", inv, X.astype(np.float64))
        out = (np.einsum("ke,ke->k", v, v) - m) / (m * (m - 1.0))
    return np.where(m >= 2, out, np.nan)


def sequence_effective_ranks(X: np.ndarray) -> np.ndarray:
    """Effective rank (Roy & Vetterli 2007) of each sequence's uncentred P × E matrix. (k, P, E) -> (k,).

    Uncentred, so that collapse reads 1 (every token the same vector), not
    the rank of a vanishing residual; 0 for an all-zero sequence. Singular
    values from the smaller Gram matrix, as `metrics.gram_spectrum`.
    """
    G = X @ X.transpose(0, 2, 1) if X.shape[1] <= X.shape[2] else X.transpose(0, 2, 1) @ X
    sv = np.sqrt(np.clip(np.linalg.eigvalsh(G), 0.0, None))
    total = sv.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(total > 0, sv / total, 0.0)
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(total[:, 0] > 0, np.exp(-plogp.sum(axis=1)), 0.0)


def _per_sequence(X: np.ndarray, fn) -> np.ndarray:
    """Mean over each trial's sequences of fn's values, NaNs left out. X: (T, m, P, E) -> (T,)."""
    T, m = X.shape[:2]
    per = fn(X.reshape(T * m, *X.shape[2:])).reshape(T, m)
    ok = np.isfinite(per)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.any(axis=1), np.where(ok, per, 0.0).sum(axis=1) / ok.sum(axis=1), np.nan)


def token_cosine(X: np.ndarray) -> np.ndarray:
    """Mean over sequences of `sequence_cosines`: 1 when every sequence has collapsed. (T, m, P, E) -> (T,)."""
    return _per_sequence(X, sequence_cosines)


def token_effective_rank(X: np.ndarray) -> np.ndarray:
    """Mean over sequences of `sequence_effective_ranks`: 1 at collapse. (T, m, P, E) -> (T,)."""
    return _per_sequence(X, sequence_effective_ranks)
