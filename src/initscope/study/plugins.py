"""Plugins: a user's module that registers metrics, initializers or activations, imported by name or path.

A plugin is an ordinary Python module whose import calls
`initscope.register_metric` / `register_initializer` / `register_activation`.
`load_plugins` imports each one once per process (a module by its import name,
a file by its path). The CLI's `--plugin` option and the environment variable
INITSCOPE_PLUGINS (comma separated) both end here; worker processes of a
sweep load the same plugins before they run anything, since their registries
start empty of user entries.

A plugin cannot corrupt a run: every metric, initializer and activation it
registers is wrapped (`_guard`) so that it reads the run's arrays through
read-only views (a write raises, naming the plugin), and any exception it
raises, or an answer of the wrong shape, becomes a `PluginError` (a
ValueError: the CLI's one line and exit 2) that names the entry and the
plugin's file and line: "plugin metric 'x' (my.py:12) failed: ...". A
plugin's import that raises or calls sys.exit is a PluginError too, and its
file is judged (a regular .py file of bounded size) before it is read.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import numpy as np

from initscope.core.activations import ACTIVATIONS
from initscope.core.initializers import REGISTRY
from initscope.core.metrics import METRICS
from initscope.study.files import PLUGIN_LIMIT, read_bounded

__all__ = ["ENV_VAR", "load_plugins", "active_plugins", "PluginError"]


class PluginError(ValueError):
    """A plugin's own code failed (at import, or in an entry it registered); the message names it."""

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
    # A stable, unique module name per file: pickled references from worker processes resolve to it.
    name = f"initscope_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    # Judged and read once, bounded: a FIFO, a device, an unreadable or huge file is refused here.
    source = read_bounded(path, parameter="plugin", what=".py file", limit=PLUGIN_LIMIT)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(spec: str) -> ModuleType:
    """The plugin `spec` imported; its own failures (an exception, a SyntaxError, sys.exit) a PluginError."""
    try:
        if _is_file(spec):
            return _load_file(Path(spec))
        try:
            return importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            if exc.name is None or not spec.startswith(exc.name):
                raise  # the plugin itself imports something missing: its own error
            raise ValueError(f"The 'plugin' parameter must be an importable module or a .py file. "
                             f"Got {spec!r} instead (no module named {exc.name!r}).") from None
    except SystemExit as exc:
        raise PluginError(f"plugin {spec!r} called sys.exit({exc.code!r}) while it was imported; a plugin must "
                          f"only register its entries (an exit is an error, whatever its status).") from None
    except (ValueError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin's own code: named, exit 2
        raise PluginError(f"plugin {spec!r} failed while it was imported{_where(exc, None)}: "
                          f"{type(exc).__name__}: {exc}") from None


def load_plugins(plugins: Iterable[str] | str | None = None) -> list[ModuleType]:
    """Import each plugin once (a module name, or a path to a .py file); return the modules.

    plugins: names/paths, a comma-separated string, or None for the
    INITSCOPE_PLUGINS environment variable. Loading the same plugin again
    does nothing (its registrations happen once). Raises ValueError for a
    module that cannot be found or a file that is not a readable .py file,
    PluginError for the plugin's own failure at import.
    """
    modules = []
    for spec in _specs(plugins):
        key = str(Path(spec).expanduser().resolve()) if _is_file(spec) else spec
        module = _LOADED.get(key)
        if module is None:
            before = _registered()
            module = _import(key)
            _guard_new_entries(before)
            _LOADED[key] = module
        modules.append(module)
    return modules


def active_plugins() -> tuple[str, ...]:
    """The plugins this process has loaded (module names and resolved file paths), in load order."""
    return tuple(_LOADED)


# --- the entries a plugin registers, guarded ------------------------------------------------------


def _registries() -> dict[str, dict]:
    return {"metric": METRICS, "initializer": REGISTRY, "activation": ACTIVATIONS}


def _registered() -> dict[str, set[str]]:
    return {kind: set(registry) for kind, registry in _registries().items()}


def _guard_new_entries(before: dict[str, set[str]]) -> None:
    """Replace each entry registered since `before` by the same entry with guarded functions."""
    for kind, registry in _registries().items():
        for name in [n for n in registry if n not in before[kind]]:
            registry[name] = _guarded_entry(kind, registry[name])


# Per kind: the entry's function fields, and whether the function answers one value per trial
# ("trials"), the weights ("weights"), the shape of its first argument ("same"), or is only kept from
# raising (None); "in place" writes into its argument by contract, so it alone gets it writable.
_FUNCTIONS = {
    "metric": {"fn": "trials"},
    "initializer": {"draw": "weights", "fit": None, "variance": None},
    "activation": {"phi": "same", "dphi": "same", "correlation_map": None, "inplace": "in place"},
}


def _guarded_entry(kind: str, entry):
    changes = {field: _guard(kind, entry.name, getattr(entry, field), answer)
               for field, answer in _FUNCTIONS[kind].items() if getattr(entry, field, None) is not None}
    return dataclasses.replace(entry, **changes)


def _guard(kind: str, name: str, fn, answer: str | None):
    """fn, called with read-only views of its array arguments; its failures named (`PluginError`)."""
    where = _source(fn)

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        if answer != "in place":
            args = tuple(_read_only(a) for a in args)
            kwargs = {k: _read_only(v) for k, v in kwargs.items()}
        try:
            value = fn(*args, **kwargs)
        except (KeyboardInterrupt, PluginError):
            raise
        except Exception as exc:  # noqa: BLE001 - the plugin's own code: named, exit 2
            raise _failure(kind, name, where, exc) from None
        problem = _wrong_answer(answer, value, args)
        if problem:
            raise PluginError(f"plugin {kind} {name!r} ({where}) failed: {problem}")
        return value

    return guarded


def _read_only(value):
    if isinstance(value, np.ndarray):
        view = value.view()
        view.flags.writeable = False  # a write raises "assignment destination is read-only"
        return view
    if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
        return tuple(_read_only(v) for v in value)
    return value


def _wrong_answer(answer: str | None, value, args: tuple) -> str | None:
    """Why a plugin's answer cannot be used, or None."""
    if answer is None:
        return None
    shape = getattr(value, "shape", None) if isinstance(value, np.ndarray) else np.shape(value)
    if answer == "trials":
        first = next((a for a in args if isinstance(a, np.ndarray) and a.ndim >= 2), None)
        want = None if first is None else (first.shape[0],)
        if want is not None and shape != want:
            return f"it must return one value per trial, shape {want}. Got shape {shape} instead."
    elif answer == "weights" and len(args) >= 2:
        want = (int(args[0]), int(args[1]))
        if shape != want:
            return f"it must return the weights, shape (fan_in, fan_out) = {want}. Got shape {shape} instead."
    elif answer == "same" and args and isinstance(args[0], np.ndarray) and shape != args[0].shape:
        return f"it must return an array of its input's shape {args[0].shape}. Got shape {shape} instead."
    return None


def _source(fn) -> str:
    """'file.py:LINE' of fn's definition (or its name when it has no code object)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def _where(exc: BaseException, fallback: str | None) -> str:
    """' (file.py:LINE)' of the innermost frame of exc's traceback that is not initscope's or numpy's."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "initscope" not in Path(f.filename).parts and "numpy" not in Path(f.filename).parts]
    if frames:
        return f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"
    return f" ({fallback})" if fallback else ""


def _failure(kind: str, name: str, where: str, exc: Exception) -> PluginError:
    line = _where(exc, None).strip(" ()") or where
    if isinstance(exc, ValueError) and "read-only" in str(exc):
        return PluginError(f"plugin {kind} {name!r} ({line}) failed: it wrote into its input, which a plugin "
                           f"only reads (the run's own arrays); copy it first (x = x.copy()).")
    return PluginError(f"plugin {kind} {name!r} ({line}) failed: {type(exc).__name__}: {exc}")
