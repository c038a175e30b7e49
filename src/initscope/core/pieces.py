"""Pieces: what a metric reads, each registered once with how it is built, what it costs and which pass makes it.

A metric (`metrics.Metric`) names the pieces it reads (`needs`); a piece is
one array (or value) per layer: the state, its centred copy, its Gram
spectrum, the input it is compared with, per-sample Jacobians, ... Each
`Piece` says

- how the numpy backend builds it from the pieces it depends on (`needs`,
  `build`), or that a recorder supplies it (`build` None: the state, the
  input, tangents, pre-activations, token views, gradients);
- which pass supplies it (`stage`): "" the forward pass, "jacobian" a
  per-sample Jacobian pass, "backward" a gradient pass. A metric needs a
  pass when any piece it reads, or any piece those are built from, does;
- what it costs at a run's peak (`cost`: bytes and the parameter that drives
  them, from the run's shapes), which the memory plan adds up (`plan_costs`);
- whether it compares samples (`per_sample`: read on one row per sample even
  where a backend folds positions into rows) and whether it is a plain value
  rather than an array per trial (`scalar`).

Backends register providers of the same pieces (`register_provider`):
torch's blocked row statistics, syrk Gram matrices and subsampled spectra
with jackknife errors are torch providers, registered from `initscope.torch`.
A provider is a function of a `Pieces` view; it returns the piece's value,
or a `Joint` of several pieces computed together (a spectrum and the Gram
eigenvectors from one `eigh`), or a `Sampled` value (one computed from a
subset, with its size and, where estimated, jackknife replicates).

`Pieces` is the lazy view one layer's metrics read: supplied pieces, and the
others built on first use by the backend's provider or the numpy build.
`core.engine` evaluates metrics on it. Pure; no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from initscope.core.numerics import centred, gram, gram_spectrum
from initscope.core.propagation import jacobian_singular_values

__all__ = ["Piece", "PIECES", "Joint", "Sampled", "Pieces", "register_piece", "register_provider", "provider",
           "depends_on", "stages", "plan_costs"]


@dataclass(frozen=True)
class Piece:
    """One registry entry; see the module docstring. cost(shapes) -> (bytes, parameter), or None (free)."""

    name: str
    description: str
    needs: tuple[str, ...] = ()
    build: Callable[[Pieces], object] | None = None
    stage: str = ""
    cost: Callable[[Mapping[str, object]], tuple[int, str]] | None = None
    part: str = ""  # the memory plan's name for its cost (default: the piece's name)
    per_sample: bool = False
    scalar: bool = False
    user: bool = True  # a registered metric may read it


@dataclass(frozen=True)
class Joint:
    """Several pieces computed together: name -> value."""

    values: dict[str, object]


@dataclass(frozen=True)
class Sampled:
    """A value computed from `size` rows (or sequences) of more; `replicates` (g, ...) for a jackknife over
    g groups; `error` a standard error already known (token metrics' sd/√m)."""

    value: object
    size: int | None = None
    replicates: object | None = None
    error: float | None = None


PIECES: dict[str, Piece] = {}
_PROVIDERS: dict[tuple[str, str], tuple[Callable[[Pieces], object], object, Callable[[Pieces], bool] | None]] = {}


def register_piece(entry: Piece) -> Piece:
    """Add a piece (a backend's own pieces too: torch registers its row statistics). Raises ValueError for a
    taken name."""
    if entry.name in PIECES:
        raise ValueError(f"The 'name' parameter must be a new piece name; {entry.name!r} is already registered.")
    PIECES[entry.name] = entry
    return entry


def register_provider(backend: str, piece: str, fn: Callable[[Pieces], object], *,
                      native: bool | Callable[[Pieces], bool] = True,
                      available: Callable[[Pieces], bool] | None = None) -> None:
    """Build `piece` with fn(view) on `backend` instead of the numpy build.

    native=False (or a function of the view saying so): a fallback that
    copies or converts (torch's numpy copy of a state): a metric form reading
    only native pieces is preferred to it. available(view): whether this
    view has the piece at all (token views only for token states); default
    always.
    """
    if piece not in PIECES:
        raise ValueError(f"The 'piece' parameter must be a registered piece from {list(PIECES)}. Got {piece!r} instead.")
    _PROVIDERS[(backend, piece)] = (fn, native, available)


def provider(backend: str, piece: str):
    """(fn, native, available) of a backend's provider of `piece`, else None."""
    return _PROVIDERS.get((backend, piece))


def depends_on(needs: Iterable[str]) -> set[str]:
    """The pieces `needs` names and, transitively, the pieces they are built from."""
    return set(_closure(tuple(sorted(set(needs))), len(PIECES)))


@functools.lru_cache(maxsize=4096)
def _closure(needs: tuple[str, ...], _registered: int) -> frozenset[str]:
    """depends_on, remembered per registry size (pieces are only ever added: a new one starts afresh)."""
    out: set[str] = set()
    todo = list(needs)
    while todo:
        name = todo.pop()
        if name in out or name not in PIECES:
            continue
        out.add(name)
        todo.extend(PIECES[name].needs)
    return frozenset(out)


def stages(needs: Iterable[str]) -> set[str]:
    """The passes ("jacobian", "backward") that supply some piece of `needs` or what those are built from."""
    return {PIECES[p].stage for p in depends_on(needs)} - {""}


def plan_costs(needs: Iterable[str], shapes: Mapping[str, object]) -> dict[str, tuple[int, str]]:
    """part -> (bytes, parameter) of every piece in `needs` (and what it is built from) that has a cost."""
    out: dict[str, tuple[int, str]] = {}
    for name in sorted(depends_on(needs)):
        entry = PIECES[name]
        if entry.cost is not None:
            size, driver = entry.cost(shapes)
            if size:
                out[entry.part or name] = (int(size), driver)
    return out


class Pieces(Mapping):
    """One layer's pieces: `supplied` ones, the rest built on first use (see the module docstring).

    backend: whose providers build pieces ("numpy": the pieces' own builds).
    wanted: the pieces the wanted metrics read (and what those are built
    from): a joint provider computes a companion piece only when it is wanted
    (the Gram eigenvectors with the spectrum). samples: the view with one row
    per sample, where it differs from this one (torch's feature maps and
    token states); per-sample pieces are read there. context: what a
    backend's providers read besides pieces (a recorded tensor, a seeded
    generator, a row budget).
    """

    def __init__(self, supplied: Mapping[str, object] | None = None, *, backend: str = "numpy",
                 wanted: Iterable[str] = (), samples: Pieces | None = None, context: object = None):
        self.values: dict[str, object] = dict(supplied or {})
        self.supplied = frozenset(self.values)
        self.backend, self.wanted, self.samples, self.context = backend, frozenset(wanted), samples, context
        self.sizes: dict[str, int] = {}
        self.replicates: dict[str, object] = {}
        self.errors: dict[str, float] = {}
        self._building: set[str] = set()
        # What this view has does not change while its metrics are measured: remember the answers.
        self._native: dict[str, bool] = {}
        self._can: dict[str, bool] = {}
        self._builders: dict[str, tuple | None] = {}

    def _builder(self, name: str):
        """(fn, native, available) of whatever builds `name` here: the backend's provider where it has the
        piece, else the numpy build (native on numpy only), else None."""
        if name not in self._builders:
            self._builders[name] = self._find_builder(name)
        return self._builders[name]

    def _find_builder(self, name: str):
        found = provider(self.backend, name)
        if found is not None and (found[2] is None or found[2](self)):
            return found
        entry = PIECES.get(name)
        if entry is None or entry.build is None:
            return None
        return entry.build, self.backend == "numpy", None

    def native(self, name: str) -> bool:
        """True when `name` is supplied or built without a copy or conversion on this backend."""
        got = self._native.get(name)
        if got is None:
            got = self._native[name] = self._is_native(name)
        return got

    def _is_native(self, name: str) -> bool:
        if name in self.supplied:
            return True
        found = self._builder(name)
        if found is None or not self._buildable(name):
            return False
        return bool(found[1](self)) if callable(found[1]) else bool(found[1])

    def _buildable(self, name: str) -> bool:
        if name in self.values:
            return True
        got = self._can.get(name)
        if got is None:
            got = self._can[name] = self._can_build(name)
        return got

    def _can_build(self, name: str) -> bool:
        entry = PIECES.get(name)
        found = self._builder(name)
        if found is None:
            return False
        if entry is None or found[0] is not entry.build:  # a provider reads what it needs itself
            return True
        return all(self._buildable(n) for n in entry.needs)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self._buildable(name)

    def __getitem__(self, name: str):
        if name in self.values:
            return self.values[name]
        found = self._builder(name) if name not in self._building else None
        if found is None or not self._buildable(name):
            raise KeyError(name)
        self._building.add(name)
        try:
            got = found[0](self)
        finally:
            self._building.discard(name)
        for key, value in (got.values if isinstance(got, Joint) else {name: got}).items():
            if isinstance(value, Sampled):
                if value.size is not None:
                    self.sizes[key] = value.size
                if value.replicates is not None:
                    self.replicates[key] = value.replicates
                value = value.value
            self.values.setdefault(key, value)
        return self.values[name]

    def __iter__(self):
        return iter(k for k in PIECES if k in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# ---- the core's pieces and their numpy builds -------------------------------------------------------


def _spectra(view: Pieces) -> Joint:
    """The spectrum from the Gram matrix, with the eigenvectors from the same `eigh` when they are wanted."""
    if "eigh" in view.wanted:
        sv, eig = gram_spectrum(view["gram"], vectors=True)
        return Joint({"spectrum": sv, "eigh": eig})
    return Joint({"spectrum": gram_spectrum(view["gram"])})


def _centred(view: Pieces):
    return centred(view["state"])


def _gram(view: Pieces):
    return gram(view["centred"])


def _jacobian_spectrum(view: Pieces):
    return jacobian_singular_values(view["tangents"], input_dim=view["input_dim"])


for _entry in (
    Piece("state", "S (T, n, w): the layer's states (trials × samples × units)"),
    Piece("centred", "S_c (T, n, w): the states minus their per-unit mean over samples", ("state",), _centred),
    Piece("gram", "G (T, k, k): S_c's smaller Gram matrix (`metrics.gram`)", ("centred",), _gram, user=False),
    Piece("spectrum", "sv (T, k): the singular values of S_c, descending, k = min(n, w)", ("gram",), _spectra),
    Piece("input", "X_c (T, n, d): the centred input (layer 0's states)", per_sample=True),
    Piece("tangents", "J (T, m, d, w): per-sample Jacobians ∂s/∂x of the first m samples; when d > w, the (w, w) "
          "triangle R of J = QR, which has J's singular values (see `input_dim`)", stage="jacobian",
          # Tangents old and new (wide inputs: (w, w) matrices with the same singular values), jacobian_rank's
          # float64 and scaled copies, and W's QR (d > w).
          cost=lambda s: ((4 * s["m"] * min(s["d"], s["w"]) * s["w"] + 2 * s["d"] * s["w"]) * s["Tc"] * 8,
                          "input_dim" if s["d"] >= s["w"] else "width"), part="jacobian"),
    Piece("input_dim", "d (int): the input dimension, which `tangents` may no longer show (layer 0, whose Jacobian "
          "is the identity, gets a (T, m, 1, 1) identity and input_dim 1)", stage="jacobian", scalar=True),
    Piece("jacobian_spectrum", "(T, m, min(d, w)): singular values of those Jacobians, 0 at or below matrix_rank's "
          "threshold (`propagation.jacobian_singular_values`)", ("tangents", "input_dim"), _jacobian_spectrum),
    Piece("jacobian_log_stretches", "(T, m, min(d, w)): ln σ of those Jacobians from re-orthogonalised layer "
          "products (`core.lyapunov`: no float64 window at depth), NaN where a direction was lost; supplied by a "
          "recorder that pushes an orthonormal frame through its layers (the numpy study)", stage="jacobian",
          cost=lambda s: (3 * s["m"] * min(s["d"], s["w"]) * s["w"] * s["Tc"] * 8, "width"), part="jacobian"),
    Piece("pre", "z (T, n, w): the layer's pre-activations s_prev @ W + b; at layer 0 (no affine map) the input itself"),
    Piece("eigh", "(lam (T, k) ascending, V (T, k, k)): eigendecomposition of S_c's smaller Gram matrix", ("gram",),
          _spectra, per_sample=True,
          # The eigenvectors and linear_r2's products with them.
          cost=lambda s: (3 * s["Tc"] * s["n"] * s["k"] * 8, s["states_driver"]), part="eigenvectors"),
    Piece("distances", "the input's pairwise distances (a DistanceReference)", per_sample=True, scalar=True,
          cost=lambda s: (s["T"] * s["md"] ** 2 * 8 + 3 * s["concurrent"] * s["md"] ** 2 * 8, "samples"),
          part="distance"),
    Piece("rtol", "numerical_rank's relative threshold for the run's dtype (float)", scalar=True),
    Piece("activation", "the activation's name (str)", scalar=True),
    Piece("gradient", "‖∂loss/∂W_l‖ from the backward pass (grad_norm only: not available to registered metrics)",
          stage="backward", user=False,
          # Checkpoints and one block of layers (inputs, pre-activations, weights) in the backward pass.
          cost=lambda s: (0 if s["readout"] == "zeros" else
                          12 * s["Tc"] * s["n"] * s["w"] * s["b"] + 4 * s["Tc"] * s["fan"] * s["w"] * s["b"],
                          s["states_driver"]), part="gradients"),
    Piece("tokens", "X (T, m, P, E): m sequences of P positions × E features (token states of torch models only)"),
):
    register_piece(_entry)
del _entry
