"""Plugins: a user's module that registers metrics, initializers or activations, imported by name or path.

A plugin is an ordinary Python module whose import calls
`initscope.register_metric` / `register_initializer` / `register_activation`.
`load_plugins` imports each one once per process (a module by its import name,
a file by its path). The CLI's `--plugin` option and the environment variable
INITSCOPE_PLUGINS (comma separated) both end here; worker processes of a
sweep load the same plugins before they run anything, since their registries
start empty of user entries.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

__all__ = ["ENV_VAR", "load_plugins", "active_plugins"]

ENV_VAR = "INITSCOPE_PLUGINS"
_LOADED: dict[str, ModuleType] = {}  # spec (module name or resolved file path) -> module, in load order


def _specs(plugins: Iterable[str] | str | None) -> list[str]:
    if plugins is None:
        plugins = os.environ.get(ENV_VAR, "")
    if isinstance(plugins, str):
        plugins = plugins.split(",")
    out = []
    for spec in plugins:
        if not isinstance(spec, str):
            raise TypeError(f"The 'plugins' parameter must be module names or .py paths. Got {spec!r} instead.")
        if spec.strip():
            out.append(spec.strip())
    return out


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ValueError(f"The 'plugin' parameter must be an importable module or an existing .py file. "
                         f"Got {str(path)!r} instead.")
    # A stable, unique module name per file: pickled references from worker processes resolve to it.
    name = f"initscope_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugins(plugins: Iterable[str] | str | None = None) -> list[ModuleType]:
    """Import each plugin once (a module name, or a path to a .py file); return the modules.

    plugins: names/paths, a comma-separated string, or None for the
    INITSCOPE_PLUGINS environment variable. Loading the same plugin again
    does nothing (its registrations happen once). Raises ValueError for a
    module that cannot be found or a missing file; errors raised by the
    plugin's own code propagate.
    """
    modules = []
    for spec in _specs(plugins):
        key = str(Path(spec).expanduser().resolve()) if _is_file(spec) else spec
        module = _LOADED.get(key)
        if module is None:
            if _is_file(spec):
                module = _load_file(Path(key))
            else:
                try:
                    module = importlib.import_module(spec)
                except ModuleNotFoundError as exc:
                    if exc.name is None or not spec.startswith(exc.name):
                        raise  # the plugin itself imports something missing: its own error
                    raise ValueError(f"The 'plugin' parameter must be an importable module or a .py file. "
                                     f"Got {spec!r} instead (no module named {exc.name!r}).") from None
            _LOADED[key] = module
        modules.append(module)
    return modules


def active_plugins() -> tuple[str, ...]:
    """The plugins this process has loaded (module names and resolved file paths), in load order."""
    return tuple(_LOADED)
