"""A JAX model as one pure function that also returns every state it passes through: a `Program`.

JAX is functional, so nothing can hook a module from outside as torch's
forward hooks do. Instead each supported kind of model is turned into
``apply(params, x) -> (output, states)``, a pure function of its parameter
pytree and a batch x (n, *shape) that returns, besides the output, the
output of every submodule call in execution order (each (n, *shape_l)).
Being pure, it can be jitted, differentiated with `jax.grad` (gradients by
parameter) and pushed forward with `jax.jvp` (per-sample Jacobians), which is
all the adapter does.

- **Flax NNX** (`nnx.Module`): split into (graphdef, state); inside `apply`
  the merged copy's submodules are intercepted (below). Names are the
  module's attribute paths joined by "/" (``blocks/2/mlp``).
- **Flax Linen** (``(module, variables)``): `flax.linen.intercept_methods`
  sees every ``__call__`` with the module's own path (``layers_3/attn``).
- **Equinox** (`eqx.Module`): modules are written for one sample and run
  under `jax.vmap`; the submodules of the traced copy are intercepted inside
  the vmapped function, so the states come out batched. Names are the
  attribute paths as Python spells them (``blocks[2].mlp``).
- **Any function** ``f(params, x)``: the user marks the values to record with
  `mark("name", value)` inside f (it returns value unchanged and records
  nothing outside `Program.apply`).

Interception swaps each submodule's class, on the copy being traced, for a
subclass whose ``__call__`` records its output, and restores the class when
the call ends: the user's model object is never changed (NNX and Equinox
copies come from `nnx.merge` and the pytree being traced). Names and module
types are Python strings found while tracing; `apply` keeps them in
`Program.calls`, filled on the first trace.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Program", "Call", "program", "mark", "framework_of", "FRAMEWORKS"]

FRAMEWORKS = ("nnx", "linen", "equinox", "function")

# The (name, type, value) list of the apply call being traced; None outside one.
_ACTIVE: contextvars.ContextVar[list | None] = contextvars.ContextVar("initscope_jax_recording", default=None)


@dataclass(frozen=True)
class Call:
    """One recorded module call: its path name and module class (what layers.csv shows)."""

    name: str
    module_type: str


@dataclass
class Program:
    """apply(params, x) -> (output, tuple of states (n, *shape_l)); params: the model's parameter pytree.

    calls: one `Call` per state, in execution order, known once apply has been
    traced (`calls_known`). modules: path name -> module type of every
    submodule (for layouts and parameter grouping), found without tracing.
    """

    apply: Callable[[Any, Any], tuple[Any, tuple]]
    params: Any
    framework: str
    modules: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    per_sample: bool = False  # Equinox: apply vmaps a one-sample model


def mark(name: str, value):
    """Record `value` under `name` when called inside `Program.apply` of a plain function; returns value.

        def f(params, x):
            h = initscope.jax.mark("hidden", jnp.tanh(x @ params["w1"]))
            return h @ params["w2"]
    """
    store = _ACTIVE.get()
    if store is not None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"The 'name' parameter of mark must be a non-empty string. Got {name!r} instead.")
        store.append((name, "mark", value))
    return value


@contextmanager
def _recording():
    store: list = []
    token = _ACTIVE.set(store)
    try:
        yield store
    finally:
        _ACTIVE.reset(token)


def _note_calls(prog_calls: list[Call], store: list) -> tuple:
    """The traced values of `store`, noting their names in prog_calls on the first trace."""
    calls = [Call(name, kind) for name, kind, _ in store]
    if not prog_calls:
        prog_calls.extend(calls)
    return tuple(value for _, _, value in store)


# ---- interception by class swap (NNX, Equinox) ----------------------------------------------------------------

_RECORDING_CLASSES: dict[type, type] = {}


def _recording_class(cls: type) -> type:
    """A subclass of cls whose __call__ records (name, type, output) into the active store."""
    sub = _RECORDING_CLASSES.get(cls)
    if sub is None:
        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            store = _ACTIVE.get()
            if store is not None:
                store.append((_TAPS[id(self)], cls.__name__, out))
            return out

        sub = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                           "__qualname__": cls.__qualname__})
        _RECORDING_CLASSES[cls] = sub
    return sub


_TAPS: dict[int, str] = {}  # id(submodule being traced) -> its path name, while a call runs


@contextmanager
def _intercepted(modules: list[tuple[str, Any]]):
    """Swap each module's class for its recording subclass while the block runs (the traced copy only)."""
    swapped = []
    try:
        for name, module in modules:
            if id(module) in _TAPS:  # the same module object reached twice (shared): one name
                continue
            cls = type(module)
            if not callable(getattr(cls, "__call__", None)):
                continue
            _TAPS[id(module)] = name
            object.__setattr__(module, "__class__", _recording_class(cls))
            swapped.append((module, cls))
        yield
    finally:
        for module, cls in swapped:
            object.__setattr__(module, "__class__", cls)
            _TAPS.pop(id(module), None)


# ---- the frameworks -----------------------------------------------------------------------------------------------

def framework_of(model) -> str | None:
    """"nnx", "linen" (a (module, variables) pair), "equinox", "function" (a callable), or None."""
    try:
        from flax import nnx
    except ImportError:
        nnx = None
    if nnx is not None and isinstance(model, nnx.Module):
        return "nnx"
    if isinstance(model, tuple) and len(model) == 2:
        try:
            import flax.linen as nn
        except ImportError:
            nn = None
        if nn is not None and isinstance(model[0], nn.Module):
            return "linen"
    try:
        import equinox as eqx
    except ImportError:
        eqx = None
    if eqx is not None and isinstance(model, eqx.Module):
        return "equinox"
    if callable(model) and not isinstance(model, type):
        return "function"
    return None


def _nnx_modules(model) -> list[tuple[str, Any]]:
    """(path "a/0/b", submodule) for every NNX submodule below the root, in graph order."""
    from flax import nnx

    out = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and path:
            out.append(("/".join(str(p) for p in path), node))
    return out


def _nnx_program(model) -> Program:
    from flax import nnx

    # Only Params are differentiated; batch statistics and RNG state ride along unchanged.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    modules = {name: type(m).__name__ for name, m in _nnx_modules(model)}

    def apply(p, x):
        copy = nnx.merge(graphdef, p, rest)
        with _recording() as store, _intercepted(_nnx_modules(copy)):
            out = copy(x)
        return out, _note_calls(prog.calls, store)

    prog = Program(apply, params, "nnx", modules)
    return prog


def _linen_program(module, variables) -> Program:
    import flax.linen as nn

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        store = _ACTIVE.get()
        if store is not None and context.method_name == "__call__" and context.module.path:
            store.append(("/".join(str(p) for p in context.module.path), type(context.module).__name__, out))
        return out

    if "params" not in variables:
        raise ValueError("The 'model' parameter's variables must hold a 'params' collection (what module.init "
                         f"returns). Got collections {sorted(variables)} instead.")
    others = {k: v for k, v in variables.items() if k != "params"}  # batch_stats, ...: held fixed

    def apply(p, x):
        with _recording() as store, nn.intercept_methods(interceptor):
            out = module.apply({**others, "params": p}, x)
        return out, _note_calls(prog.calls, store)

    prog = Program(apply, variables["params"], "linen")
    return prog


def _equinox_modules(model, prefix: str = "") -> list[tuple[str, Any]]:
    """(path "blocks[2].mlp", submodule) for every Equinox submodule below `model`, depth first."""
    import dataclasses

    import equinox as eqx

    out = []

    def visit(value, path):
        if isinstance(value, eqx.Module):
            if path:
                out.append((path, value))
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name, None), f"{path}.{f.name}" if path else f.name)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}[{key!r}]")

    visit(model, prefix)
    return out


def _equinox_program(model) -> Program:
    import equinox as eqx
    import jax

    params, static = eqx.partition(model, eqx.is_inexact_array)
    modules = {name: type(m).__name__ for name, m in _equinox_modules(model)}

    def apply(p, x):
        copy = eqx.combine(p, static)

        def one(xi):
            with _recording() as store, _intercepted(_equinox_modules(copy)):
                out = copy(xi)
            return out, _note_calls(prog.calls, store)

        return jax.vmap(one)(x)

    prog = Program(apply, params, "equinox", modules, per_sample=True)
    return prog


def _function_program(f: Callable, params) -> Program:
    def apply(p, x):
        with _recording() as store:
            out = f(p, x)
        return out, _note_calls(prog.calls, store)

    prog = Program(apply, params, "function")
    return prog


def program(model, *, params=None) -> Program:
    """The `Program` of a Flax NNX module, a Flax Linen ``(module, variables)`` pair, an Equinox module, or a
    function ``f(params, x)`` with its `params` (values recorded with `mark`).

    Raises TypeError naming what it got for anything else.
    """
    kind = framework_of(model)
    if kind == "nnx":
        return _nnx_program(model)
    if kind == "linen":
        return _linen_program(*model)
    if kind == "equinox":
        return _equinox_program(model)
    if kind == "function":
        if params is None:
            raise ValueError("The 'params' parameter must be the parameter pytree of the function f(params, x) "
                             "given as the model. Got None instead.")
        return _function_program(model, params)
    raise TypeError("The 'model' parameter must be a Flax NNX module, a (Flax Linen module, variables) pair, an "
                    f"Equinox module or a function f(params, x). Got {type(model).__name__} instead.")
