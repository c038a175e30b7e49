"""Optimisers as pairs of pure functions, optax style: state in, state out.

Parameters are a list of arrays whose first axis is the trial: every trial is
its own problem, and an optimiser treats each element on its own (SGD,
momentum and Adam are all elementwise), so stepping all trials together is
exactly stepping each alone. `make(name, lr)` gives an `Optimizer`:

    state = opt.init(params)
    updates, state = opt.update(grads, state)      # the step to add to params
    params = apply_updates(params, updates)

Descent: updates point along −gradient. `init_train` (gradient ascent)
passes −∇f. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OPTIMIZERS", "Optimizer", "sgd", "momentum", "adam", "make", "apply_updates"]

OPTIMIZERS = ("sgd", "momentum", "adam")

Arrays = list[np.ndarray]


@dataclass(frozen=True)
class Optimizer:
    """init(params) -> state; update(grads, state) -> (updates, state). Both pure."""

    name: str
    init: Callable[[Sequence[np.ndarray]], Any]
    update: Callable[[Sequence[np.ndarray], Any], tuple[Arrays, Any]]


def sgd(lr: float) -> Optimizer:
    """θ ← θ − lr·g."""

    def update(grads, state):
        return [-lr * g for g in grads], state

    return Optimizer("sgd", lambda params: (), update)


def momentum(lr: float, beta: float = 0.9) -> Optimizer:
    """Heavy ball, as torch.optim.SGD(momentum=β): v ← β·v + g, θ ← θ − lr·v (v = g at the first step)."""

    def init(params):
        return (0, [np.zeros_like(p) for p in params])

    def update(grads, state):
        count, velocity = state
        velocity = [g.copy() if count == 0 else beta * v + g for v, g in zip(velocity, grads)]
        return [-lr * v for v in velocity], (count + 1, velocity)

    return Optimizer("momentum", init, update)


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba 2015) with bias correction, as torch.optim.Adam's defaults."""

    def init(params):
        return (0, [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params])

    def update(grads, state):
        count, m, v = state
        count += 1
        m = [b1 * a + (1 - b1) * g for a, g in zip(m, grads)]
        v = [b2 * a + (1 - b2) * (g * g) for a, g in zip(v, grads)]
        c1, c2 = 1 - b1 ** count, 1 - b2 ** count
        # torch's form: lr/c1 · m / (sqrt(v)/sqrt(c2) + eps)
        updates = [(-lr / c1) * a / (np.sqrt(b) / np.sqrt(c2) + eps) for a, b in zip(m, v)]
        return updates, (count, m, v)

    return Optimizer("adam", init, update)


def make(name: str, lr: float) -> Optimizer:
    """The optimiser `name` (one of OPTIMIZERS) at learning rate lr, with its usual defaults."""
    if name not in OPTIMIZERS:
        raise ValueError(f"The 'optimizer' parameter must be one of {list(OPTIMIZERS)}. Got {name!r} instead.")
    return {"sgd": sgd, "momentum": momentum, "adam": adam}[name](lr)


def apply_updates(params: Sequence[np.ndarray], updates: Sequence[np.ndarray]) -> Arrays:
    """θ + u for each array."""
    return [p + u for p, u in zip(params, updates)]
