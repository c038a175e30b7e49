"""Bring a user's model, data and checkpoint in, safely.

Nothing here unpickles arbitrary objects: `.pt` files are read with
``torch.load(..., weights_only=True)``, which only rebuilds tensors, plain
containers and numbers, and `.npy` files with ``allow_pickle=False``.
Importing a factory file does run that file's code: it is the user's own
model definition, named on the command line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["ModelError", "load_factory", "build_model", "load_tensor", "load_state_dict", "random_inputs",
           "ignore_torch_deprecations"]


def ignore_torch_deprecations() -> None:
    """Inside a `warnings.catch_warnings()` block: ignore torch's own deprecation notices about the
    machinery it uses for us (`torch.jit.script`, which forward-mode AD scripts its decompositions with),
    by message and by the torch module that warns, whatever the category: torch 2.13 raises a
    DeprecationWarning, 2.14 a FutureWarning. A user's own code warning the same words is not hidden."""
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* (is deprecated|is not supported)",
                            category=Warning, module=r"torch\.jit(\.|$)")

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


class ModelError(RuntimeError):
    """The user's own code (factory or forward pass) raised; the message quotes its error."""


def _quote(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit (it called sys.exit({exc.code!r}))"
    text = " ".join(str(exc).split()) or "(no message)"
    return f'{type(exc).__name__}: "{text}"'


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by 'path/to/file.py:name' or 'package.module:name'.

    Raises ValueError for a malformed spec or a missing file or name, and
    ModelError (quoting the file's own error) when importing the file raises.
    """
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rsplit(":", 1)[1]:
        raise ValueError(
            "The 'factory' parameter must be 'path/to/file.py:function' or 'package.module:function'. "
            f"Got {spec!r} instead."
        )
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"The 'factory' parameter must name an existing Python file. Got {where!r}, which does not exist.")
        module_name = f"_initscope_factory_{zlib.crc32(str(path.resolve()).encode()):08x}"
        try:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            # The file's own imports of its siblings should work as when it is run directly, and so should what
            # looks itself up in sys.modules while the file runs (dataclasses, typing.get_type_hints, pickle).
            sys.path.insert(0, str(path.resolve().parent))
            sys.modules[module_name] = module
            try:
                loader_spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.resolve().parent))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything the user's file raises is theirs to see
            sys.modules.pop(module_name, None)  # a half-run file is not left importable
            raise ModelError(f"importing {where!r} raised {_quote(exc)}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                raise ValueError(f"The 'factory' parameter must name an importable module. Got {where!r}: {exc}.") from None
            raise ModelError(f"importing {where!r} raised {_quote(exc)}") from exc
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            raise ModelError(f"importing {where!r} raised {_quote(exc)}") from exc
    factory = getattr(module, name, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ValueError(
            f"The 'factory' parameter must name a function in {where!r}. Got {name!r}, which it does not define "
            f"(it defines {public})."
        )
    if not callable(factory):
        raise TypeError(f"The 'factory' parameter must name a callable. Got {name!r}, a {type(factory).__name__}.")
    return factory


def build_model(factory: Callable[[], nn.Module], spec: str = "factory") -> nn.Module:
    """Call the factory with no arguments; it must return an nn.Module."""
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise ModelError(f"the factory {spec!r} raised {_quote(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'factory' parameter must name a function that returns a torch.nn.Module. "
            f"{spec!r} returned a {type(model).__name__} instead."
        )
    return model


def load_tensor(path: str | os.PathLike, label: str = "input") -> torch.Tensor:
    """A tensor from a .npy file (allow_pickle=False) or a .pt file (weights_only=True).

    Rejects empty arrays and floating arrays with NaN or Inf with a ValueError
    naming the parameter.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"The '{label}' parameter must be an existing .npy or .pt file. Got {str(path)!r} instead.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # EOFError: an empty file (click would say "aborted")
            raise ValueError(f"The '{label}' parameter must be a readable .npy array of numbers. Got {str(path)!r}: {exc}") from None
        if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
            array.close()
            raise ValueError(f"The '{label}' parameter must be a .npy array file. Got {str(path)!r}, an .npz archive.")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"The '{label}' parameter must hold numbers. Got dtype {array.dtype} in {str(path)!r}.")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif suffix in (".pt", ".pth"):
        loaded = _torch_load(path, label)
        if isinstance(loaded, Mapping) and len(loaded) == 1:
            loaded = next(iter(loaded.values()))
        if not isinstance(loaded, torch.Tensor):
            raise ValueError(f"The '{label}' parameter must be a file holding one tensor. Got a {type(loaded).__name__} in {str(path)!r}.")
        tensor = loaded
    else:
        raise ValueError(f"The '{label}' parameter must be a .npy or .pt file. Got {str(path)!r} instead.")
    if tensor.ndim == 0 or tensor.shape[0] == 0 or tensor.numel() == 0:
        raise ValueError(f"The '{label}' parameter must hold at least one sample (rows). Got shape {tuple(tensor.shape)} in {str(path)!r}.")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ValueError(f"The '{label}' parameter must be finite. {str(path)!r} contains NaN or Inf.")
    return tensor


def _torch_load(path: Path, label: str):
    try:
        # torch warns about a file's pickle protocol before refusing it; the refusal below says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...
        text = " ".join(str(exc).split())
        if "weights_only" in text or "Unsupported global" in text or "pickle" in text.lower():
            raise ValueError(
                f"The '{label}' parameter must be a file of plain tensors: {str(path)!r} holds other Python objects, "
                "and initscope never unpickles arbitrary objects (torch.load(weights_only=True) refused it). "
                "Save a state_dict instead: torch.save(model.state_dict(), path)."
            ) from None
        raise ValueError(f"The '{label}' parameter must be a readable torch file. Got {str(path)!r}: {text}") from None


def load_state_dict(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state_dict file into `model` (strict), with weights_only=True: never arbitrary objects.

    Accepts a plain state_dict or a checkpoint dict holding one under
    'state_dict', 'model_state_dict' or 'model'. Returns `model`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"The 'weights' parameter must be an existing state_dict file. Got {str(path)!r} instead.")
    state = _torch_load(path, "weights")
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in _STATE_DICT_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"The 'weights' parameter must be a state_dict (a mapping of names to tensors). "
            f"Got a {type(state).__name__} in {str(path)!r}. Save one with torch.save(model.state_dict(), path)."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"The 'weights' parameter must match the model: {' '.join(str(exc).split())}") from None
    return model


def random_inputs(shape: tuple[int, ...], *, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal inputs of `shape` (first axis: samples), from `seed` alone."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)
