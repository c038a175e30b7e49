"""The initializer registry: every weight rule initscope knows, one entry each.

A weight matrix ``W: (fan_in, fan_out)`` maps row vectors ``s: (n, fan_in)``
to ``s @ W: (n, fan_out)``, so ``fan_in`` is the number of rows and one
neuron's weight vector is a column. ``gain`` is the factor in each rule
(std = gain * ...); :func:`default_gain` gives the value used when none is
chosen, and :func:`variance` the entries' second moment E[w²] that the theory
needs. Two kinds of entry share the registry: rules that draw from a
generator alone (``draw``) and layer-aware ones that see the layer's index or
input (``fit``: looks-linear, lsuv, well-spaced; see `fitted`).
`register_initializer` adds a user's rule, which make_config, ``--init``,
sweeps and ``initscope.torch.initialize`` then accept.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from initscope.core import fitted, rules
from initscope.core.activations import ACTIVATIONS, activation

__all__ = ["Initializer", "REGISTRY", "INITIALIZERS", "LAYER_INITIALIZERS", "ACTIVATIONS", "register_initializer",
           "initializer", "recommended_gain", "default_gain", "draw", "variance"]

Draw = Callable[[int, int, float, np.random.Generator], np.ndarray]


def _unit_gain(activation_name: str) -> float:
    return 1.0


@dataclass(frozen=True)
class Initializer:
    """One registry entry.

    ``draw(fan_in, fan_out, gain, rng)`` returns a float64 ``(fan_in, fan_out)``
    array for positive fans; use the module-level :func:`draw`, which
    validates, handles empty fans and casts. ``rule`` is one line for docs.
    ``default_gain(activation) -> gain`` is the gain used when none is given;
    ``variance(fan_in, fan_out, gain) -> E[w²]`` (None: not known).
    Layer-aware entries have ``draw = None`` and ``fit(S, fan_out, *, gain,
    rng, layer, b, tol, max_iter) -> fitted.LayerDraw`` instead, S being one
    trial's input states (n, fan_in) to the layer.
    """

    name: str
    draw: Draw | None
    rule: str
    random: bool = True  # False: the same matrix every time (ZerO)
    default_gain: Callable[[str], float] = _unit_gain
    variance: Callable[[int, int, float], float] | None = None
    fit: Callable[..., fitted.LayerDraw] | None = None
    sets_shifts: bool = False  # a fit that sets the layer's shifts too
    needs_data: bool = True  # a fit that reads the layer's input, not only its index


REGISTRY: dict[str, Initializer] = {}


class _View(Mapping):
    """A live, read-only view of the registry's entries of one kind (names in registration order)."""

    def __init__(self, layer_aware: bool):
        self._layer_aware = layer_aware

    def _keys(self) -> list[str]:
        return [k for k, v in REGISTRY.items() if (v.fit is not None) == self._layer_aware]

    def __getitem__(self, name: str) -> Initializer:
        entry = REGISTRY[name]
        if (entry.fit is not None) != self._layer_aware:
            raise KeyError(name)
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._keys()!r})"


INITIALIZERS: Mapping[str, Initializer] = _View(layer_aware=False)  # rules that draw from a generator alone
LAYER_INITIALIZERS: Mapping[str, Initializer] = _View(layer_aware=True)  # rules that see the layer


def register_initializer(name: str, fn: Draw | None = None, *, default_gain: float | Callable[[str], float] = 1.0,
                         variance: Callable[[int, int, float], float] | None = None, rule: str = "",
                         random: bool = True, fit: Callable | None = None, sets_shifts: bool = False,
                         needs_data: bool = True) -> Initializer:
    """Add an initializer under `name`; make_config, ``--init``, sweeps and torch's initialize accept it.

    fn: ``draw(fan_in, fan_out, gain, rng) -> W (fan_in, fan_out)`` (the
    contract of every built-in rule; rng a numpy Generator, the only source of
    randomness). default_gain: a number, or ``f(activation) -> gain``
    (e.g. `recommended_gain` for He-style rules). variance:
    ``f(fan_in, fan_out, gain) -> E[w²]`` for the theory overlays, or None.
    Layer-aware rules pass ``fit`` (see `Initializer`) instead of fn.
    Raises ValueError for a taken name, TypeError for a non-callable.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name:
        raise ValueError(f"The 'name' parameter must be a non-empty string without commas or surrounding spaces. "
                         f"Got {name!r} instead.")
    if name in REGISTRY:
        raise ValueError(f"The 'name' parameter must be a new initializer name; {name!r} is already registered.")
    if (fn is None) == (fit is None):
        raise TypeError(f"The 'fn' parameter must be a callable draw(fan_in, fan_out, gain, rng) (or give 'fit' "
                        f"for a layer-aware rule, not both). Got fn={fn!r}, fit={fit!r} instead.")
    for label, value in (("fn", fn), ("fit", fit), ("variance", variance)):
        if value is not None and not callable(value):
            raise TypeError(f"The '{label}' parameter must be callable. Got {value!r} instead.")
    if callable(default_gain):
        gain_rule = default_gain
    elif (not isinstance(default_gain, bool) and isinstance(default_gain, (int, float))
          and math.isfinite(default_gain) and default_gain > 0):
        value = float(default_gain)

        def gain_rule(activation_name: str, value: float = value) -> float:
            return value
    else:
        raise ValueError(f"The 'default_gain' parameter must be a finite number > 0 or a callable of the "
                         f"activation name. Got {default_gain!r} instead.")
    entry = Initializer(name, fn, rule or (getattr(fn or fit, "__doc__", None) or name).strip().splitlines()[0],
                        bool(random), gain_rule, variance, fit, bool(sets_shifts), bool(needs_data))
    REGISTRY[name] = entry
    return entry


def initializer(init: str) -> Initializer:
    """The registry entry of `init`; ValueError listing the valid names otherwise."""
    entry = REGISTRY.get(init) if isinstance(init, str) else None
    if entry is None:
        raise ValueError(f"The 'init' parameter must be one of {list(REGISTRY)}. Got {init!r} instead.")
    return entry


def recommended_gain(activation_name: str) -> float:
    """The gain that keeps the second moment through ``activation``: its registry entry's.

    The values of PyTorch's ``torch.nn.init.calculate_gain`` (He et al. 2015
    for ReLU): relu sqrt(2), leaky_relu sqrt(2 / (1 + 0.01**2)) at negative
    slope 0.01, tanh 5/3, identity 1. torch has no GELU entry; GELU gets 1.
    """
    return activation(activation_name).gain


def default_gain(init: str, activation_name: str) -> float:
    """The gain ``init`` uses when none is given: the entry's rule.

    Kaiming takes :func:`recommended_gain` of the activation; every other
    initializer takes 1, xavier included, as in ``torch.nn.init``, and the
    layer-aware ones too (orthogonal or whitened directions: 1 is isometric).
    """
    entry = initializer(init)
    activation(activation_name)  # an unknown activation is an error whatever the rule
    return float(entry.default_gain(activation_name))


def variance(init: str, fan_in: int, fan_out: int, gain: float) -> float:
    """E[w_ij²] of one entry of W (fan_in, fan_out) under ``init``; NaN where the entry does not say."""
    entry = initializer(init)
    if fan_in <= 0 or fan_out <= 0 or entry.variance is None:
        return math.nan
    return float(entry.variance(fan_in, fan_out, gain))


def draw(
    init: str,
    fan_in: int,
    fan_out: int,
    *,
    gain: float,
    rng: np.random.Generator,
    dtype=np.float64,
) -> np.ndarray:
    """Draw ``W: (fan_in, fan_out)`` of ``dtype`` from the initializer ``init``.

    The result depends only on the state of ``rng``, which it advances. A fan
    of 0 gives an empty array of that shape. Layer-aware entries need the
    layer's input and are drawn by the study's ParamSource, not here.
    """
    entry = initializer(init)
    if entry.draw is None:
        raise ValueError(f"The 'init' parameter must be one of {list(INITIALIZERS)} (a rule that draws without "
                         f"seeing the layer's input). Got {init!r} instead.")
    fan_in = _fan("fan_in", fan_in)
    fan_out = _fan("fan_out", fan_out)
    if not (isinstance(gain, (int, float, np.integer, np.floating)) and math.isfinite(gain) and gain > 0):
        raise ValueError(f"The 'gain' parameter must be a finite number > 0. Got {gain!r} instead.")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"The 'dtype' parameter must be a floating dtype such as float64 or float32. Got {dtype} instead.")
    if fan_in == 0 or fan_out == 0:
        return np.zeros((fan_in, fan_out), dtype=dtype)
    return np.asarray(entry.draw(fan_in, fan_out, float(gain), rng)).astype(dtype, copy=False)


def _fan(label: str, value) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"The '{label}' parameter must be an integer >= 0. Got {value!r} instead.") from None
    if value < 0:
        raise ValueError(f"The '{label}' parameter must be an integer >= 0. Got {value} instead.")
    return value


# Second moments E[w²]: all these rules have zero-mean entries, uncorrelated within a column.
# `sphere` puts a column on the sphere of radius gain (gain²/fan_in); `sphere-rows` a row
# (gain²/fan_out); `orthogonal` has orthonormal columns (fan_in ≥ fan_out) or rows.
_BUILTIN = (
    ("normal", rules.normal, "N(0, gain²) entries", lambda i, o, g: g * g),
    ("uniform", rules.uniform, "U(−gain, gain) entries", lambda i, o, g: g * g / 3.0),
    ("sphere", rules.sphere, "each column (one neuron's weights) uniform on the sphere of radius gain",
     lambda i, o, g: g * g / i),
    ("sphere-rows", rules.sphere_rows, "each row uniform on the sphere of radius gain", lambda i, o, g: g * g / o),
    ("xavier-normal", rules.xavier_normal, "N(0, gain²·2/(fan_in+fan_out)) (Glorot & Bengio 2010)",
     lambda i, o, g: g * g * 2.0 / (i + o)),
    ("xavier-uniform", rules.xavier_uniform, "U(±gain·sqrt(6/(fan_in+fan_out))) (Glorot & Bengio 2010)",
     lambda i, o, g: g * g * 2.0 / (i + o)),
    ("kaiming-normal", rules.kaiming_normal, "N(0, gain²/fan_in) (He et al. 2015)", lambda i, o, g: g * g / i),
    ("kaiming-uniform", rules.kaiming_uniform, "U(±gain·sqrt(3/fan_in)) (He et al. 2015)", lambda i, o, g: g * g / i),
    ("lecun-normal", rules.kaiming_normal, "N(0, gain²/fan_in) (LeCun et al. 1998)", lambda i, o, g: g * g / i),
    ("orthogonal", rules.orthogonal, "Haar (semi-)orthogonal, every singular value gain (Saxe et al. 2014)",
     lambda i, o, g: g * g / max(i, o)),
    ("torch-default", rules.torch_default, "U(±gain/sqrt(fan_in)), torch.nn.Linear's default at gain 1",
     lambda i, o, g: g * g / (3.0 * i)),
)
for _name, _fn, _rule, _var in _BUILTIN:
    register_initializer(_name, _fn, rule=_rule, variance=_var,
                         default_gain=recommended_gain if _name.startswith("kaiming") else 1.0)
register_initializer("zero", rules.zero, rule="ZerO: partial identity, or scaled Hadamard when growing (Zhao et al. 2021)",
                     random=False)
register_initializer("looks-linear", fit=fitted.looks_linear, needs_data=False,
                     rule="mirrored [V, −V] so ReLU acts linearly at init (Balduzzi et al. 2017)")
register_initializer("lsuv", fit=fitted.lsuv,
                     rule="orthogonal, then rescaled on the batch until Var(pre-activation) = 1 (Mishkin & Matas 2016)")
register_initializer("well-spaced", fit=fitted.well_spaced, sets_shifts=True,
                     rule="whitened principal directions, shifts at spread quantiles of the batch")
del _name, _fn, _rule, _var
