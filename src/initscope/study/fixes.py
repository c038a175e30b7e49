"""The comparison the post asks for: every fix on the seed's network, ranked.

The seed's network with input_dim = width = 40 (where the post saw the
variance collapse), at depths 10 and 50, under each initialization or
architectural fix, over many trials. Each fix is a set of config overrides;
`compare_fixes` runs them all and ranks them by what survives at the last
layer: effective rank, out-of-sample linear recoverability of the input,
Jacobian rank, and whether the certificate of injectivity holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from initscope.core.certify import certify
from initscope.core.network import Architecture
from initscope.study.config import Config, make_config
from initscope.study.memory import (MemoryBudgetError, certify_estimate, check_estimate, format_bytes, memory_budget,
                                    plan_run)
from initscope.study.model import networks
from initscope.study.parallel import worker_count
from initscope.study import runner  # runner.run looked up per call: tests stand in a failing run

__all__ = ["FIXES", "FixOutcome", "compare_fixes", "plan_fixes", "fix_config", "ranking", "run_fix", "outcome_label",
           "RANK_BY", "divergence", "DIVERGED_RMS_RATIO"]

# Overrides on top of the seed's config (ReLU, linspace shifts, ball data) with
# input_dim = width = 40. The residual scale 1/√depth keeps the sum of branch
# variances bounded with depth (Hanin & Rolnick 2018; "Fixup", Zhang et al. 2019).
FIXES: dict[str, dict] = {
    "normal": dict(init="normal"),
    "sphere": dict(init="sphere"),
    "kaiming": dict(init="kaiming-normal"),
    "orthogonal": dict(init="orthogonal"),
    "looks-linear": dict(init="looks-linear", shift="zeros"),
    "zero": dict(init="zero"),
    "lsuv": dict(init="lsuv"),
    "well-spaced": dict(init="well-spaced"),
    "kaiming+residual": dict(init="kaiming-normal", residual="1/sqrt(depth)"),
    "kaiming+layernorm": dict(init="kaiming-normal", norm="layer"),
    # Forward gradients are noisy (E‖g‖² = (P + 2)‖∇f‖² for P parameters), so the
    # step must be ~P times smaller than backprop's; 1e-4 is stable on this net.
    "forward-gradient": dict(init="kaiming-normal", init_train="forward-gradient", init_train_lr=1e-4, init_train_steps=300),
}
RANK_BY = ("certified_share", "jacobian_rank", "linear_r2", "effective_rank")
_SEED = dict(input_dim=40, width=40, samples=100, data="ball", activation="relu", shift="linspace")


def fix_config(name: str, *, depth: int, trials: int, seed: int = 0, **extra) -> Config:
    """The config of one fix at one depth."""
    if name not in FIXES:
        raise ValueError(f"The 'fixes' parameter must name fixes from {list(FIXES)}. Got {name!r} instead.")
    over = dict(FIXES[name])
    if over.get("residual") == "1/sqrt(depth)":
        over["residual"] = 1.0 / np.sqrt(depth)
    return make_config(**{**_SEED, **over, **extra, "depth": depth, "trials": trials, "seed": seed})


@dataclass
class FixOutcome:
    """One fix at one depth: its config, its run's tables and its certificate's per-layer table."""

    fix: str
    depth: int
    config: Config
    result: object  # the run's RunRecords
    certificate: pd.DataFrame  # per (trial, layer): certified, reason, ...
    diverged: str | None = None  # a sentence when the fix blew up (`divergence`), else None


# A last layer this many times louder than the input (median over trials) has diverged: no fix is
# meant to amplify the input a millionfold, and the seed's plain ReLU net stays within ~10x at depth 50.
DIVERGED_RMS_RATIO = 1e6


def divergence(result, depth: int) -> str | None:
    """One sentence when a fix's network diverged, naming the depth and, with init training, the step:

    the last layer's median rms over the input's above DIVERGED_RMS_RATIO (or not finite), or a training
    that ended with a worse objective than it started from (it is maximised)."""
    m = result.metrics
    rms = m[m["metric"] == "rms"].groupby("layer")["value"].median()
    ratio = rms.get(depth, np.nan) / rms.get(0, np.nan) if len(rms) else np.nan
    loud = not np.isfinite(ratio) or ratio > DIVERGED_RMS_RATIO if len(rms) else False
    log = getattr(result, "train_log", None)
    step_words = ""
    if log is not None and len(log):
        curve = log.groupby("step")["objective"].median()
        start = curve.iloc[0]
        worse = ~np.isfinite(curve) | (curve < start - abs(start))  # twice as bad as untrained, or lost
        if worse.any():
            step_words = (f"; its init training made the objective worse from step {int(worse.idxmax())} "
                          f"({start:.4g} at step 0, {curve.iloc[-1]:.4g} at step {int(curve.index[-1])})")
            loud = True
    if not loud:
        return None
    scale = "not finite" if not np.isfinite(ratio) else f"{ratio:.3g}x the input's"
    return f"diverged at depth {depth}: the last layer's rms is {scale}{step_words}"


def _certificate(config: Config, init: str) -> pd.DataFrame:
    X, params = networks(config, init)
    return certify(X, params, Architecture(config.activation, config.norm, config.residual)).layers


def run_fix(name: str, *, depth: int, trials: int, seed: int = 0, workers: int | None = None, memory_limit=None,
            progress=None, **extra) -> FixOutcome:
    """Run one fix and certify it (memory_limit: as `initscope.run`'s, checked for the certificate too).

    The certificate reads the networks the run measured: with init training, the trained ones,
    trained once (`model.trained` keeps the latest training). progress: as `initscope.run`'s."""
    config = fix_config(name, depth=depth, trials=trials, seed=seed, **extra)
    budget = memory_budget(memory_limit)
    _check_certificate(name, config, budget)
    result = runner.run(config, workers=workers, memory_limit=budget, progress=progress)
    return FixOutcome(name, depth, config, result, _certificate(config, config.init[0]), divergence(result, depth))


def _check_certificate(name: str, config: Config, budget: int | None) -> None:
    est = certify_estimate(config)
    check_estimate(est, budget, f"the certificate of fix {name!r} at depth {config.depth}",
                   getattr(config, est.largest[2]))


def _check_fix(name: str, config: Config, workers: int | None, budget: int | None) -> None:
    """The run's plan and the certificate's peak against the budget. The seed's sizes (samples,
    width, input_dim) are fixed here, so a refusal names what the user can reduce: trials or depths."""
    checks = (("its run", lambda: plan_run(config, worker_count(workers, config.trials), budget)),
              ("its certificate (every trial's network and Jacobians at once)",
               lambda: _check_certificate(name, config, budget)))
    for what, check in checks:
        try:
            check()
        except MemoryBudgetError as exc:
            if exc.parameter in ("trials", "depth"):
                raise
            raise MemoryBudgetError(
                f"The 'trials' parameter must be smaller for fix {name!r} at depth {config.depth} to fit in "
                f"memory (samples, width and input_dim are the seed's). Got {config.trials}: {what} needs an "
                f"estimated {format_bytes(exc.needed)}, over the budget of {format_bytes(exc.budget)} "
                "(--memory-limit; default 80% of available memory).",
                parameter="trials", needed=exc.needed, budget=exc.budget) from None


def plan_fixes(fixes: Iterable[str] | None = None, *, depths: Iterable[int] = (10, 50), trials: int = 20,
               seed: int = 0, workers: int | None = None, memory_limit=None, **extra) -> list[Config]:
    """Every (depth, fix) config, checked before anything runs: names, fields, and memory.

    Each run's peak (`study.memory.plan_run` with `workers` threads) and each
    certificate's (`certify_estimate`: it holds every trial's network) must
    fit the budget (memory_limit, default 80% of the memory available now);
    otherwise MemoryBudgetError names the parameter and both sizes. Returns
    the configs in the order `compare_fixes` runs them; the plans that needed
    smaller chunks warn (MemoryPlanWarning) when they run.
    """
    names = list(FIXES) if fixes is None else list(fixes)
    if not names:
        raise ValueError(f"The 'fixes' parameter must name at least one fix from {list(FIXES)}. Got none instead.")
    for name in names:
        if name not in FIXES:
            raise ValueError(f"The 'fixes' parameter must name fixes from {list(FIXES)}. Got {name!r} instead.")
    pairs = [(name, fix_config(name, depth=depth, trials=trials, seed=seed, **extra))
             for depth in depths for name in names]
    budget = memory_budget(memory_limit)
    for name, config in pairs:
        _check_fix(name, config, workers, budget)
    return [config for _, config in pairs]


def ranking(outcomes: Iterable[FixOutcome]) -> pd.DataFrame:
    """One row per (depth, fix): last-layer medians over trials and the certificate share, ranked.

    Ranked within each depth by the share of trials certified at every layer,
    then last-layer jacobian_rank, linear_r2 and effective_rank (all
    higher = more information kept). rms_ratio (last layer's rms over the
    input's) is shown, not ranked: a fix can keep information at any scale.
    """
    rows = []
    for o in outcomes:
        m = o.result.metrics
        last = m[m["layer"] == o.depth].groupby("metric")["value"].median()
        first = m[m["layer"] == 0].groupby("metric")["value"].median()
        cert = o.certificate.groupby("trial")["certified"].all()
        failing = o.certificate[~o.certificate["certified"]]
        rows.append({
            "depth": o.depth,
            "fix": o.fix,
            "certified_share": float(cert.mean()),
            # None (an empty CSV cell, pandas <NA>) when every layer of every trial is certified.
            "first_uncertified_layer": int(failing["layer"].min()) if len(failing) else None,
            "jacobian_rank": last.get("jacobian_rank", np.nan),
            "linear_r2": last.get("linear_r2", np.nan),
            "effective_rank": last.get("effective_rank", np.nan),
            "rms_ratio": last.get("rms", np.nan) / first.get("rms", np.nan),
            "overflowed_trials": int((o.result.flags["flag"] == "overflow").sum()),
        })
    table = pd.DataFrame(rows)
    table["first_uncertified_layer"] = table["first_uncertified_layer"].astype("Int64")
    keys = ["depth", *RANK_BY]
    table = table.sort_values(keys, ascending=[True] + [False] * len(RANK_BY), na_position="last", kind="stable")
    table["rank"] = table.groupby("depth").cumcount() + 1
    return table.reset_index(drop=True)


def compare_fixes(
    fixes: Iterable[str] | None = None,
    *,
    depths: Iterable[int] = (10, 50),
    trials: int = 20,
    seed: int = 0,
    workers: int | None = None,
    memory_limit=None,
    progress=None,
    **extra,
) -> tuple[pd.DataFrame, list[FixOutcome]]:
    """Run every fix at every depth; return the ranking and the outcomes.

    Every configuration is checked first (`plan_fixes`), so a fix that cannot
    fit in memory is refused before any fix runs. progress(done, total): over
    fixes × depths, each pair counting _STEPS as its run measures its layers.
    """
    depths = list(depths)
    names = list(FIXES) if fixes is None else list(fixes)
    budget = memory_budget(memory_limit)
    plan_fixes(names, depths=depths, trials=trials, seed=seed, workers=workers, memory_limit=budget, **extra)
    pairs = [(name, depth) for depth in depths for name in names]
    outcomes = []
    for i, (name, depth) in enumerate(pairs):
        outcomes.append(run_fix(name, depth=depth, trials=trials, seed=seed, workers=workers, memory_limit=budget,
                                progress=_share(progress, i, len(pairs)), **extra))
        if progress is not None:
            progress((i + 1) * _STEPS, len(pairs) * _STEPS)
    return ranking(outcomes), outcomes


_STEPS = 100  # progress units per (fix, depth)


def _share(progress, i: int, pairs: int):
    """The run's progress(done, total) as pair i's share of the whole comparison's."""
    if progress is None:
        return None
    return lambda done, total: progress(i * _STEPS + (_STEPS - 1) * done // max(total, 1), pairs * _STEPS)


def outcome_label(o: FixOutcome) -> str:
    return f"{o.fix}-depth{o.depth}"
