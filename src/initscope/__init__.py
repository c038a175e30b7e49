"""initscope: what a neural network does to data at initialization, layer by layer.

    >>> import initscope
    >>> result = initscope.run(trials=10)          # the seed post's study: an initscope.Result
    >>> result.metrics                              # tidy: init, trial, layer, metric, value, ...
    >>> result.spectra                              # init, trial, layer, k, singular_value
    >>> result.write("out/")                        # the folder `initscope run --out out/` writes

Each public name loads its module on first use (PEP 562), so `import
initscope` and `initscope --help` stay light (no pandas, scipy or plotly).
Subpackages: `initscope.core` (numpy/scipy only), `initscope.study`,
`initscope.report`, `initscope.cli`, `initscope.torch`; `initscope.result`
holds the one result type of runs and inspections.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute). No public name is also a submodule's name.
_API = {
    "run": ("initscope.result", "run"),
    "Result": ("initscope.result", "Result"),
    "InspectContext": ("initscope.result", "InspectContext"),
    "make_config": ("initscope.study.config", "make_config"),
    "load_config": ("initscope.study.config", "load_config"),
    "Config": ("initscope.study.config", "Config"),
    "materialize": ("initscope.study.model", "materialize"),
    "register_metric": ("initscope.core.metrics", "register_metric"),
    "register_initializer": ("initscope.core.initializers", "register_initializer"),
    "register_activation": ("initscope.core.activations", "register_activation"),
    "METRICS": ("initscope.core.metrics", "METRICS"),
    "INITIALIZERS": ("initscope.core.initializers", "REGISTRY"),
    "ACTIVATIONS": ("initscope.core.activations", "ACTIVATIONS"),
    "load_plugins": ("initscope.study.plugins", "load_plugins"),
}

__all__ = sorted(_API) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from initscope.core.activations import ACTIVATIONS, register_activation
    from initscope.core.initializers import REGISTRY as INITIALIZERS, register_initializer
    from initscope.core.metrics import METRICS, register_metric
    from initscope.study.plugins import load_plugins
    from initscope.study.config import Config, load_config, make_config
    from initscope.study.model import materialize
    from initscope.result import InspectContext, Result, run


def __getattr__(name: str) -> Any:
    if name == "RunResult":  # deprecated for one release: each use warns, so it is not cached
        result = importlib.import_module("initscope.result")
        import warnings

        warnings.warn(result.deprecation(name), DeprecationWarning, stacklevel=2)
        return result.DEPRECATED[name]
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'initscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
