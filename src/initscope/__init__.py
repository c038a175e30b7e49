"""initscope: what a neural network does to data at initialization, layer by layer.

    >>> import initscope
    >>> result = initscope.run(trials=10)          # the seed post's study
    >>> result.metrics                              # tidy: init, trial, layer, metric, value, ...
    >>> result.spectra                              # init, trial, layer, k, singular_value
"""

__version__ = "0.1.0"

from initscope.study.config import Config, load_config, make_config
from initscope.core.initializers import INITIALIZERS
from initscope.core.metrics import METRICS
from initscope.study.runner import RunResult, materialize, run

__all__ = ["Config", "INITIALIZERS", "METRICS", "RunResult", "load_config", "make_config", "materialize", "run", "__version__"]
