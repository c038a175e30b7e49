"""A trained run in a few numbers and words: per initializer, how far its loss fell and which trials diverged.

Reads training.csv's table (init, trial, step, loss, test_loss[, accuracy, test_accuracy]), where a diverged
trial's loss is +inf from the step it diverged (`core.training`). Used by the terminal summary, the verdict
and the report; pandas and numpy only, so the verdict can import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["TRAINED_FACTOR", "Summary", "summary", "training_sentence", "summary_lines"]

TRAINED_FACTOR = 10.0  # a median loss that falls this many times counts as trained (the "≥ 10×")


@dataclass
class Summary:
    """One initializer's training in numbers: the median loss at step 0 and at the last step (over trials,
    diverged ones at +inf), the trials that diverged and the first and median step they did."""

    init: str
    steps: int
    trials: int
    loss_first: float
    loss_last: float
    diverged: int
    diverged_first: int | None
    diverged_median: float | None
    accuracy_last: float | None = None
    test_loss_last: float = float("nan")
    diverged_steps: list[int] = field(default_factory=list)

    @property
    def factor(self) -> float:
        """How many times the median loss fell (inf: to 0; < 1: it rose; NaN: it diverged)."""
        if not np.isfinite(self.loss_last):
            return float("nan")
        return self.loss_first / self.loss_last if self.loss_last > 0 else float("inf")

    @property
    def trained(self) -> bool:
        """The verdict's 'trains': the median loss fell at least TRAINED_FACTOR times (and is finite)."""
        return bool(np.isfinite(self.loss_last) and self.factor >= TRAINED_FACTOR)


def summary(training: pd.DataFrame) -> list[Summary]:
    """A `Summary` per initializer of a training table (training.csv), in the table's order."""
    out = []
    for init, rows in training.groupby("init", sort=False):
        last_step = int(rows["step"].max())
        first = rows[rows["step"] == 0]
        last = rows[rows["step"] == last_step]
        gone = rows[np.isinf(rows["loss"].to_numpy(dtype=np.float64))].groupby("trial")["step"].min()
        accuracy = None
        if "accuracy" in rows and last["accuracy"].notna().any():
            accuracy = float(np.nanmedian(last["accuracy"].to_numpy(dtype=np.float64)))
        out.append(Summary(
            init=str(init), steps=last_step, trials=int(rows["trial"].nunique()),
            loss_first=float(np.median(first["loss"])), loss_last=float(np.median(last["loss"])),
            diverged=len(gone), diverged_first=int(gone.min()) if len(gone) else None,
            diverged_median=float(np.median(gone)) if len(gone) else None, accuracy_last=accuracy,
            test_loss_last=float(np.median(last["test_loss"])), diverged_steps=sorted(int(s) for s in gone)))
    return out


def _num(v: float) -> str:
    return f"{v:.3g}"


def training_sentence(s: Summary) -> str:
    """One sentence: did this initializer train on the task, how far, or when did it fail."""
    head = f"trained {s.steps} steps on the task: "
    if s.diverged * 2 > s.trials:
        return (head + f"it fails: {s.diverged} of {s.trials} trials diverge (loss inf/NaN), the first at step "
                f"{s.diverged_first}, half of them by step {s.diverged_median:.0f}.")
    falls = s.factor
    gone = f" ({s.diverged} of {s.trials} trials diverge, the first at step {s.diverged_first})" if s.diverged else ""
    acc = f", accuracy {s.accuracy_last:.0%}" if s.accuracy_last is not None else ""
    if s.trained:
        return (head + f"it trains: the median loss falls {falls:.0f}× from {_num(s.loss_first)} to "
                f"{_num(s.loss_last)} (held out {_num(s.test_loss_last)}{acc}){gone}.")
    if math.isfinite(falls) and falls >= 1:
        return (head + f"it barely trains: the median loss falls only {falls:.2g}× from {_num(s.loss_first)} to "
                f"{_num(s.loss_last)}{acc}{gone}.")
    return (head + f"it fails: the median loss does not fall ({_num(s.loss_first)} to {_num(s.loss_last)}{acc})"
            f"{gone}.")


def summary_lines(training: pd.DataFrame) -> list[str]:
    """The terminal's training summary: one line per initializer."""
    lines = []
    for s in summary(training):
        gone = (f"diverged {s.diverged}/{s.trials} (first at step {s.diverged_first}, median step "
                f"{s.diverged_median:.0f})" if s.diverged else f"diverged 0/{s.trials}")
        acc = f", accuracy {s.accuracy_last:.0%}" if s.accuracy_last is not None else ""
        lines.append(f"{s.init}: median loss {_num(s.loss_first)} at step 0 -> {_num(s.loss_last)} at step {s.steps}"
                     f" (test {_num(s.test_loss_last)}{acc}); {gone}")
    return lines
