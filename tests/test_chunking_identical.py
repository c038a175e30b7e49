"""A run's numbers do not depend on how many trials are measured together (memory chunking, workers):
bit for bit, down to chunks of one trial."""

from __future__ import annotations

import warnings

import numpy as np

import initscope
from initscope.core.propagation import jacobian_sq_mean


def test_jacobian_sq_mean_of_one_trial_alone_equals_it_among_others(rng):
    J = rng.standard_normal((5, 6, 40, 40))
    together = jacobian_sq_mean(J)
    alone = np.concatenate([jacobian_sq_mean(J[i:i + 1]) for i in range(5)])
    np.testing.assert_array_equal(alone, together)


def test_chunks_of_one_trial_give_the_same_bytes():
    kw = dict(depth=4, trials=6, width=40, samples=100, input_dim=40)
    whole = initscope.run(**kw, workers=1).metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MemoryPlanWarning: the point of the test
        one_by_one = initscope.run(**kw, workers=1, memory_limit="10MiB").metrics
    np.testing.assert_array_equal(whole["value"].to_numpy(), one_by_one["value"].to_numpy())
