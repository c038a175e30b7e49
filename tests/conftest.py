import numpy as np
import pytest


@pytest.fixture
def rng():
    """A seeded generator: every test that draws gets the same numbers each run."""
    return np.random.default_rng(20261129)


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch at one thread for a module of small-matrix tests: no oversubscribing a shared CI machine. Restored after."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
