"""A configuration's finished (or failed) trials as a worker hands them to the results store.

Numpy arrays in parallel columns, cheap to pickle between processes;
`initscope.study.store.Store.write` stores one batch in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from initscope.study.config import Config

__all__ = ["ConfigBatch", "batch_from_result", "failed_batch"]


@dataclass
class ConfigBatch:
    """One configuration's finished (or failed) trials, as a worker hands them to the store.

    metric_* arrays are parallel, one entry per (trial, metric, layer) value;
    metric_code indexes metric_names. spectra_* likewise per singular value.
    """

    config: Config
    config_id: str
    trials: list[int]
    status: str = "ok"
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    metric_names: list[str] = field(default_factory=list)
    metric_trial: np.ndarray | None = None
    metric_code: np.ndarray | None = None
    metric_layer: np.ndarray | None = None
    metric_value: np.ndarray | None = None
    spectra_trial: np.ndarray | None = None
    spectra_layer: np.ndarray | None = None
    spectra_k: np.ndarray | None = None
    spectra_value: np.ndarray | None = None
    flags: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def batch_from_result(result, cid: str, *, seconds: float, worker: str = "") -> ConfigBatch:
    """A ConfigBatch from a single-initializer run's records (numpy arrays, cheap to pickle)."""
    m = result.metrics
    names = list(dict.fromkeys(m["metric"].tolist()))
    codes = pd.Categorical(m["metric"], categories=names).codes.astype(np.int16)
    s = result.spectra
    flags = [(int(t), int(layer), str(f)) for t, layer, f in
             zip(result.flags["trial"], result.flags["layer"], result.flags["flag"])]
    return ConfigBatch(
        config=result.config, config_id=cid, trials=list(range(result.config.trials)), seconds=seconds,
        worker=worker, metric_names=names,
        metric_trial=m["trial"].to_numpy(np.int64), metric_code=codes,
        metric_layer=m["layer"].to_numpy(np.int64), metric_value=m["value"].to_numpy(np.float64),
        spectra_trial=s["trial"].to_numpy(np.int64), spectra_layer=s["layer"].to_numpy(np.int64),
        spectra_k=s["k"].to_numpy(np.int64), spectra_value=s["singular_value"].to_numpy(np.float64),
        flags=flags,
    )


def failed_batch(config: Config, cid: str, error: str, *, seconds: float = 0.0, worker: str = "") -> ConfigBatch:
    """A record of a configuration that raised: every trial 'failed' with the error."""
    return ConfigBatch(config=config, config_id=cid, trials=list(range(config.trials)), status="failed",
                       error=error, seconds=seconds, worker=worker)
