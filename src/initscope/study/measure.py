"""Measuring a network layer by layer: every wanted metric, the spectrum and the 3-D projection.

For each initializer, all trials of a chunk run at once (weights
(T, fan_in, fan_out), states (T, n, w)); layers stream: each layer's metrics
are computed as soon as it exists and the state is then dropped, so memory
does not grow with depth. This module is the numpy recorder: it supplies
each layer's states, pre-activations and Jacobians; the pieces metrics share
(centred states, the Gram spectrum, its eigenvectors) are built once per
layer, only when a wanted metric reads them (`core.pieces`), and the engine
measures every wanted metric from them (`core.engine`), as it does for a
torch model's recorded states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from initscope.core import engine as E
from initscope.core import metrics as M
from initscope.core import propagation as P
from initscope.core.gradients import weight_gradient_norms
from initscope.core.network import Architecture, batch_norm_sigma, layer_forward, layer_jvp, mse_output_gradient
from initscope.core.lyapunov import advance_frame, exact_where_resolved, log_stretches, start_frame
from initscope.core.numerics import qr_triangle
from initscope.core.pieces import Pieces
from initscope.core.propagation import JACOBIAN_SAMPLES
from initscope.study.config import Config
from initscope.study.model import SUBSET_KEY, ParamSource, inputs as draw_inputs, readout_weights

__all__ = ["WEIGHT_NORM_TRIALS", "WEIGHT_NORM_LAYERS", "Chunk", "Inputs", "prepare", "simulate"]

WEIGHT_NORM_TRIALS = 10
WEIGHT_NORM_LAYERS = 10  # and the last layer: the histograms' rows, not a per-layer record of a deep net


@dataclass
class Chunk:
    values: dict[str, np.ndarray]  # metric -> (Tc, L+1)
    spectra: list[np.ndarray]  # per layer (Tc, k_l)
    projections: np.ndarray | None  # (L+1, n, 3) for trial 0 when in this chunk
    weight_norms: list[tuple[int, list[int], np.ndarray]]  # (layer, trials, norms (k, fan_out))
    overflow_layer: np.ndarray  # (Tc,) first non-finite layer, -1 if none
    collapsed: np.ndarray  # (Tc, L+1) bool
    init_info: list[tuple[int, int, str, float]]  # (trial, layer, quantity, value)
    # per layer (Tc, bins) counts of log10 normalised Jacobian singular values, when jacobian_spectrum is read
    jacobian_hist: list[np.ndarray] | None = None


def _top3(S_c: np.ndarray, G: np.ndarray, eig: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Coordinates (n, 3) of one trial's samples on its top-3 principal components.

    S_c: (n, w) centred states; G: their smaller Gram matrix (w×w or n×n);
    eig: G's full eigendecomposition (ascending values (k,), vectors (k, k))
    when linear_r2 already computed it, else only the top three eigenpairs
    are computed (LAPACK's MRRR on the tridiagonal form: cheaper than the
    spectrum itself at width 256, where a full eigh costs 2.6× eigvalsh).
    Signs are fixed (largest |coordinate| positive) so that frames do not flip.
    Components beyond the rank are 0.
    """
    n, w = S_c.shape
    out = np.zeros((n, 3))
    if n == 0 or w == 0:
        return out
    size = G.shape[0]
    k = min(3, size)
    if eig is not None:
        lam, V = eig[0][-k:].astype(np.float64), eig[1][:, -k:].astype(np.float64)
    else:
        from scipy.linalg import eigh

        lam, V = eigh(G.astype(np.float64), subset_by_index=[size - k, size - 1], check_finite=False)
    lam, top = lam[::-1], V[:, ::-1]
    if n >= w:
        coords = S_c.astype(np.float64) @ top
    else:
        coords = top * np.sqrt(np.clip(lam, 0.0, None))
    big = np.abs(coords).argmax(axis=0)
    coords *= np.where(coords[big, np.arange(k)] < 0, -1.0, 1.0)
    out[:, :k] = coords
    return out


@dataclass
class _Layer:
    """One layer's measurements for a chunk of T trials."""

    values: dict[str, np.ndarray]  # metric -> (T,), NaN where overflowed
    spectrum: np.ndarray  # (T, k) float64, NaN rows where overflowed
    projection: np.ndarray | None  # (n, 3) for trial 0 when in the chunk
    collapsed: np.ndarray  # (T,) bool
    overflow_layer: np.ndarray  # (T,) first non-finite layer so far, -1 if none
    jacobian_hist: np.ndarray | None = None  # (T, bins), see Chunk


@dataclass
class Inputs:
    """One chunk's data and the measurements of layer 0, which every initializer shares."""

    trials: list[int]
    X: np.ndarray  # (T, n, d)
    y: np.ndarray  # (T, n, 1)
    X_c: np.ndarray  # (T, n, d) centred
    ref: M.DistanceReference | None
    layer0: _Layer


def prepare(config: Config, table, trials: list[int]) -> Inputs:
    """Draw a chunk's data and measure it (layer 0) once for all initializers."""
    with np.errstate(all="ignore"):
        X, y = draw_inputs(config, table, trials)
        X_c = M.centred(X)
        ref = None
        if E.reads("distances", config.metrics):
            ref = M.distance_reference(X, rng=np.random.default_rng([config.seed, SUBSET_KEY]))
        tangent = None
        if "jacobian" in E.stages_of(config.metrics):
            tangent = _input_tangent(len(trials), min(X.shape[1], JACOBIAN_SAMPLES), X.dtype)
        # Layer 0's Jacobian is the identity: every stretch is ln 1.
        stretches = (np.zeros(tangent.shape[:2] + (1,)) if tangent is not None and
                     E.reads("jacobian_log_stretches", config.metrics) else None)
        # Layer 0 has no affine map: the pre-activation metrics read the input itself.
        layer0 = _measure(config, X, 0, np.full(len(trials), -1), X_c=X_c, ref=ref, tangent=tangent,
                          i0=trials.index(0) if 0 in trials else None, S_c=X_c, z=X, stretches=stretches)
    return Inputs(trials, X, y, X_c, ref, layer0)


def _input_tangent(T: int, m: int, dtype) -> np.ndarray:
    """Layer 0's Jacobian, the (d, d) identity, as a (T, m, 1, 1) identity (viewed with input_dim 1).

    Its rank share is 1 by definition; forming m identities of a wide input
    (50 samples × 5000² for a 5000-column CSV: 9.3 GiB) only to count that is
    what made wide data run out of memory (issue 14).
    """
    return np.broadcast_to(np.ones((1, 1), dtype=dtype), (T, m, 1, 1))


def _first_tangent(W: np.ndarray, z_rows: np.ndarray, arch: Architecture, sigma) -> np.ndarray:
    """Layer 1's per-sample Jacobians ∂s_1/∂x (T, m, d, w) of the input, without the (d, d) identity.

    ∂z_1/∂x = W for every sample, so W itself goes through the rest of the
    layer's JVP (an identity matmul: exact, as the identity's product with W
    is). A residual (d = w only) adds the identity: that case takes the
    identity path. When d > w the result is the (w, w) matrix R_W·N_i with
    W = Q·R_W: the same singular values as the (d, w) tangent, and every
    later layer's JVP is a product on the right, so it stands for the tangent
    at w/d of the memory and (w/d)² of the work (jacobian_rank reads
    input_dim for the true d).
    """
    T, d, w = W.shape
    m = z_rows.shape[1]
    if d == w and arch.residual > 0:
        return layer_jvp(np.broadcast_to(np.eye(d, dtype=W.dtype), (T, m, d, d)), W, z_rows, arch, sigma)
    eye = np.broadcast_to(np.eye(w, dtype=W.dtype), (1, w, w))
    no_skip = Architecture(arch.activation, arch.norm, 0.0)  # no residual at layer 1 when d != w

    def one(t: int) -> np.ndarray:  # (1, m, d, w): one trial at a time keeps the (d, w) tangents small
        return layer_jvp(np.broadcast_to(W[t:t + 1, None], (1, m, d, w)), eye, z_rows[t:t + 1], no_skip,
                         None if sigma is None else sigma[t:t + 1])

    if d <= w:
        return np.concatenate([one(t) for t in range(T)])
    # d > w: sample i's tangent is W·N_i (N_i (w, w): the activation's slopes and the
    # normalization, acting on the right). With W = Q·R_W, it is Q·(R_W·N_i), whose
    # singular values are those of R_W·N_i: one QR of W, then a (w, w) JVP per sample.
    R_W = qr_triangle(W)  # (T, w, w); NaN where W is not finite
    return layer_jvp(np.broadcast_to(np.eye(w, dtype=W.dtype), (T, m, w, w)), R_W, z_rows, no_skip, sigma)


def _measure(config: Config, S: np.ndarray, layer: int, overflow_layer: np.ndarray, *, X_c, ref, tangent,
             i0: int | None, S_c: np.ndarray | None = None, z: np.ndarray | None = None,
             stretches: np.ndarray | None = None) -> _Layer:
    """Every wanted metric, the spectrum and trial 0's projection of the states S (T, n, w).

    overflow_layer (T,) is the first non-finite layer so far (-1: none); a
    copy updated with this layer is returned. Non-finite states, or finite
    ones whose Gram matrix overflows, give NaN from here on. S_c: the centred
    states when the caller has them already (the input's X_c). z: the
    pre-activations (T, n, w), when a wanted metric reads them. stretches:
    (T, m, k) re-orthogonalised ln σ of the tangents (`core.lyapunov`), when read.
    """
    wanted = E.read_by(config.metrics)
    rtol = M.rank_rtol(np.dtype(config.dtype))
    finite = np.isfinite(S).all(axis=(1, 2))
    if tangent is not None:  # a Jacobian that overflows is an overflow of the layer too
        finite &= np.isfinite(tangent).all(axis=(1, 2, 3))
    S_work = S if finite.all() else np.where(finite[:, None, None], S, 0.0)
    first = Pieces({"state": S_work, **({"centred": S_c} if S_c is not None and S_work is S else {})})
    S_c, G = first["centred"], first["gram"]
    # Finite but huge states can still overflow in the Gram matrix.
    finite &= np.isfinite(G).all(axis=(1, 2))
    if not finite.all():
        S_work = np.where(finite[:, None, None], S_work, 0.0)
        S_c = np.where(finite[:, None, None], S_c, 0.0)
        G = np.where(finite[:, None, None], G, 0.0)
    supplied = {"state": S_work, "centred": S_c, "gram": G, "input": X_c, "distances": ref, "tangents": tangent,
                "input_dim": 1 if layer == 0 else X_c.shape[2], "pre": z, "rtol": rtol,
                "jacobian_log_stretches": stretches,
                "activation": config.activation}
    view = Pieces({k: v for k, v in supplied.items() if v is not None}, wanted=wanted)
    if stretches is not None:  # exact σ where float64 resolves them, the frame's stretches beyond (core.lyapunov)
        stretches = view.values["jacobian_log_stretches"] = exact_where_resolved(view["jacobian_spectrum"],
                                                                                  stretches)
    sv, eig = view["spectrum"], view.values.get("eigh")
    finite &= np.isfinite(sv).all(axis=1)
    overflow_layer = np.where((~finite) & (overflow_layer < 0), layer, overflow_layer)
    bad = overflow_layer >= 0
    col_any = M.collapsed(S_work, sv)
    col = col_any & ~bad
    spectrum = sv.astype(np.float64)
    spectrum[bad] = np.nan
    projection = None
    if i0 is not None:
        projection = np.full((S.shape[1], 3), np.nan) if bad[i0] else _top3(
            S_c[i0], G[i0], None if eig is None else (eig[0][i0], eig[1][i0]))
    jac_sv = hist = None
    if tangent is not None and stretches is not None:  # the density without float64's window
        hist = P.log_histogram(stretches, view["input_dim"], tangent.shape[3])
        hist[bad] = 0
    elif tangent is not None and "jacobian_spectrum" in wanted:
        jac_sv = view["jacobian_spectrum"]  # wide inputs' tangents are (w, w) triangles: input_dim is the true d
        hist = P.log10_histogram(jac_sv, view["input_dim"], tangent.shape[3])
        hist[bad] = 0
    values = E.layer_values(config.metrics, view, col=col_any, is_input=layer == 0)
    values = {name: np.where(bad, np.nan, value) for name, value in values.items()}
    return _Layer(values, spectrum, projection, col, overflow_layer, hist)


def simulate(config: Config, init: str, gain: float, inputs: Inputs, given=None, *, on_layer=None) -> Chunk:
    """Run one chunk of trials of one initializer through every layer.

    Overflow is expected (it is a result), so floating-point warnings are off
    here; errstate is per thread, hence set inside the worker. on_layer(init,
    layer), when given, is called after each hidden layer is measured.
    """
    with np.errstate(all="ignore"):
        return _simulate_chunk(config, init, gain, inputs, given, on_layer)


def _after_overflow_nan(per_layer: np.ndarray, overflow_layer: np.ndarray) -> np.ndarray:
    """per_layer (T, L) for layers 1..L with NaN from each trial's overflow layer on (-1: none)."""
    L = per_layer.shape[1]
    hit = overflow_layer >= 0
    per_layer[hit] = np.where(np.arange(1, L + 1)[None, :] >= overflow_layer[hit, None], np.nan, per_layer[hit])
    return per_layer


# long: one pass over the layers that draws, pushes the states, tangents and frames, and measures each layer
def _simulate_chunk(config: Config, init: str, gain: float, inputs: Inputs, given=None, on_layer=None) -> Chunk:
    want = set(config.metrics)
    arch = Architecture(config.activation, config.norm, config.residual)
    X, y, trials = inputs.X, inputs.y, inputs.trials
    T, n, d = X.shape
    L = config.depth
    gradient = E.reads("gradient", config.metrics)  # grad_norm: the backward pass
    source = ParamSource(config, init, gain, trials, given=given, remember=bool(gradient) and config.readout != "zeros")
    values = {m: np.full((T, L + 1), np.nan) for m in config.metrics}
    spectra: list[np.ndarray] = []
    weight_norms: list[tuple[int, list[int], np.ndarray]] = []
    collapsed = np.zeros((T, L + 1), dtype=bool)
    i0 = trials.index(0) if 0 in trials else None
    proj = np.zeros((L + 1, n, 3)) if i0 is not None else None
    m_jac = min(n, JACOBIAN_SAMPLES)
    jacobians = "jacobian" in E.stages_of(want)
    tangent = frame = None
    stretching = jacobians and bool(E.reads("jacobian_log_stretches", want))
    keep_pre = jacobians or bool(E.reads("pre", want))  # else φ may overwrite z in place
    hists: list[np.ndarray] | None = [] if E.reads("jacobian_spectrum", want) else None

    def record(layer: int, out: _Layer) -> None:
        for name, value in out.values.items():
            values[name][:, layer] = value
        spectra.append(out.spectrum)
        if hists is not None:
            hists.append(out.jacobian_hist)
        collapsed[:, layer] = out.collapsed
        if proj is not None:
            proj[layer] = out.projection

    record(0, inputs.layer0)
    overflow_layer = inputs.layer0.overflow_layer
    S = X
    for layer in range(1, L + 1):
        W, b = source.layer(layer, S)
        sel = [i for i, t in enumerate(trials) if t < WEIGHT_NORM_TRIALS]
        if sel and (layer <= WEIGHT_NORM_LAYERS or layer == L):
            weight_norms.append((layer, [trials[i] for i in sel], np.linalg.norm(W[sel], axis=1)))
        S, z = layer_forward(S, W, b, arch, keep_pre=keep_pre)
        if jacobians:
            sigma = batch_norm_sigma(z, arch)
            tangent = (_first_tangent(W, z[:, :m_jac], arch, sigma) if tangent is None
                       else layer_jvp(tangent, W, z[:, :m_jac], arch, sigma))
            if stretching:  # the same product, re-orthogonalised at every layer (core.lyapunov)
                frame = (start_frame(tangent, input_dim=d) if frame is None else
                         advance_frame(frame, layer_jvp(frame.rows, W, z[:, :m_jac], arch, sigma), d))
        out = _measure(config, S, layer, overflow_layer, X_c=inputs.X_c, ref=inputs.ref, tangent=tangent, i0=i0,
                       z=z, stretches=None if frame is None else log_stretches(frame))
        del z
        overflow_layer = out.overflow_layer
        record(layer, out)
        del out
        if on_layer is not None:
            on_layer(init, layer)

    tangent = frame = None  # the forward pass's Jacobians: not needed by the backward pass
    for name in gradient:
        values[name][:, 1:] = _after_overflow_nan(_grad_norms(config, init, gain, X, y, S, source, arch),
                                                  overflow_layer)
    info = [(trials[t], layer, key, value) for t, layer, key, value in source.info]
    return Chunk(values, spectra, proj, weight_norms, overflow_layer, collapsed, info, hists)


def _grad_norms(config, init, gain, X, y, S_last, source: ParamSource, arch) -> np.ndarray:
    """‖∂loss/∂W_l‖_F for l = 1..L (T, L): MSE of the readout against the target."""
    W_out = readout_weights(config, init, gain, S_last.shape[2], y.shape[2], source.rngs)
    _, ds_last = mse_output_gradient(S_last, W_out, y)
    return weight_gradient_norms(X, source.regenerate, config.depth, arch, ds_last)
