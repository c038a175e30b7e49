import numpy as np
import pytest


@pytest.fixture
def rng():
    """A seeded generator: every test that draws gets the same numbers each run."""
    return np.random.default_rng(20261129)
