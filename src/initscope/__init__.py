"""initscope: what a neural network does to data at initialization, layer by layer.

    >>> import initscope
    >>> result = initscope.run(trials=10)          # the seed post's study
    >>> result.metrics                              # tidy: init, trial, layer, metric, value, ...
    >>> result.spectra                              # init, trial, layer, k, singular_value

Each public name loads its module on first use (PEP 562), so `import
initscope` and `initscope --help` stay light (no pandas, scipy or plotly).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "Config": ("initscope.study.config", "Config"),
    "load_config": ("initscope.study.config", "load_config"),
    "make_config": ("initscope.study.config", "make_config"),
    "INITIALIZERS": ("initscope.core.initializers", "INITIALIZERS"),
    "METRICS": ("initscope.core.metrics", "METRICS"),
    "RunResult": ("initscope.study.runner", "RunResult"),
    "materialize": ("initscope.study.runner", "materialize"),
    "run": ("initscope.study.runner", "run"),
}

__all__ = sorted(_API) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from initscope.core.initializers import INITIALIZERS
    from initscope.core.metrics import METRICS
    from initscope.study.config import Config, load_config, make_config
    from initscope.study.runner import RunResult, materialize, run


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'initscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
