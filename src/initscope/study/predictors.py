"""What predicts training: how well each step-0 measurement foretells the outcome across a grid's networks.

Features of one network at step 0 (before any training), from the measuring pass's per-layer values:

- `METRIC@last`: the metric at the last layer;
- `METRIC@worst`: at its worst hidden layer: the largest |ln(value/input's)| for a scale (rms, std, pre_q,
  jacobian_sq_mean), the smallest value for what should stay high (ranks, linear_r2, distance_corr,
  linear_fraction), the largest for what should stay low (dead_fraction, mean_cosine, pre_cosine);
- the flags `overflow` and `collapsed` (1 when any layer has them, else 0).

For each feature, over the networks (rows): Spearman's ρ with the final loss, and the AUC of the feature
for "trained" (final loss below a threshold the user sets), oriented so that AUC > 0.5 means the feature is
higher for networks that trained, each with a bootstrap interval (networks resampled with replacement).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["SCALE_METRICS", "HIGH_IS_GOOD", "LOW_IS_GOOD", "PREDICTOR_COLUMNS", "network_features",
           "predictor_table", "best_predictors"]

SCALE_METRICS = ("rms", "std", "pre_q", "jacobian_sq_mean")
HIGH_IS_GOOD = ("effective_rank", "stable_rank", "numerical_rank", "linear_r2", "distance_corr", "jacobian_rank",
                "linear_fraction")
LOW_IS_GOOD = ("dead_fraction", "mean_cosine", "pre_cosine")
PREDICTOR_COLUMNS = ("feature", "n", "spearman_rho", "rho_lo", "rho_hi", "auc", "auc_lo", "auc_hi")


def network_features(values: dict[str, np.ndarray], overflow_layer: np.ndarray,
                     collapsed: np.ndarray) -> dict[str, np.ndarray]:
    """Features (name -> (T,)) of T networks from their per-layer metric values (metric -> (T, L+1)),
    first overflow layer (T,) (−1: none) and collapse flags (T, L+1)."""
    out: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for name, v in values.items():
            v = np.asarray(v, dtype=np.float64)
            out[f"{name}@last"] = v[:, -1]
            hidden = v[:, 1:]
            if hidden.shape[1] == 0 or np.isnan(hidden).all():
                continue
            if name in SCALE_METRICS:
                dev = np.abs(np.log(hidden / v[:, :1]))
                dev[np.isnan(dev)] = np.inf  # an overflowed layer is as far off as it gets
                out[f"{name}@worst"] = dev.max(axis=1)
            elif name in HIGH_IS_GOOD:
                out[f"{name}@worst"] = np.where(np.isnan(hidden), -np.inf, hidden).min(axis=1)
            elif name in LOW_IS_GOOD:
                out[f"{name}@worst"] = np.where(np.isnan(hidden), np.inf, hidden).max(axis=1)
    out["overflow"] = (np.asarray(overflow_layer) >= 0).astype(np.float64)
    out["collapsed"] = np.asarray(collapsed).any(axis=1).astype(np.float64)
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    if len(x) < 3:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann–Whitney); NaN without both."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def predictor_table(features: pd.DataFrame, loss: np.ndarray, *, threshold: float, boot: int = 200,
                    rng: np.random.Generator, level: float = 0.9) -> pd.DataFrame:
    """PREDICTOR_COLUMNS per feature (a column of `features`, one row per network), by |ρ| descending.

    loss: each network's final loss (inf: diverged, ranked worst); threshold: 'trained' means loss < it.
    Infinite feature values are ranked (±inf at the ends); NaN rows are left out per feature.
    """
    loss = np.asarray(loss, dtype=np.float64)
    trained = loss < threshold
    rows = []
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    n = len(loss)
    draws = rng.integers(0, n, size=(boot, n)) if n else np.zeros((boot, 0), dtype=int)
    for name in features.columns:
        x = features[name].to_numpy(dtype=np.float64)
        ok = ~np.isnan(x) & ~np.isnan(loss)
        if ok.sum() < 3:
            continue
        loss_ranked = np.where(np.isinf(loss), np.finfo(np.float64).max, loss)
        rho = _spearman(x[ok], loss_ranked[ok])
        auc = _auc(x[ok], trained[ok])
        rhos, aucs = [], []
        for idx in draws:
            idx = idx[ok[idx]]
            rhos.append(_spearman(x[idx], loss_ranked[idx]))
            aucs.append(_auc(x[idx], trained[idx]))
        with np.errstate(all="ignore"):
            r_lo, r_hi = (np.nanquantile(rhos, [lo_q, hi_q]) if np.isfinite(rhos).any() else (math.nan, math.nan))
            a_lo, a_hi = (np.nanquantile(aucs, [lo_q, hi_q]) if np.isfinite(aucs).any() else (math.nan, math.nan))
        rows.append((name, int(ok.sum()), rho, float(r_lo), float(r_hi), auc, float(a_lo), float(a_hi)))
    table = pd.DataFrame(rows, columns=list(PREDICTOR_COLUMNS))
    order = table["spearman_rho"].abs().fillna(-1).sort_values(ascending=False).index
    return table.loc[order].reset_index(drop=True)


def best_predictors(table: pd.DataFrame, k: int = 3) -> str:
    """One sentence naming the k features that predict the final loss best (largest |ρ| whose interval
    excludes 0), or saying that none does."""
    strong = table[(np.sign(table["rho_lo"]) == np.sign(table["rho_hi"])) & table["spearman_rho"].notna()]
    if not len(strong):
        return "No step-0 measurement predicts the final loss here (every bootstrap interval of ρ includes 0)."
    named = [f"{r.feature} (ρ {r.spearman_rho:+.2f} [{r.rho_lo:+.2f}, {r.rho_hi:+.2f}], AUC {r.auc:.2f})"
             for r in strong.head(k).itertuples()]
    return "Best step-0 predictors of the final loss: " + "; ".join(named) + "."
