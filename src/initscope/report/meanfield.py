"""Mean-field overlays for pre_q, pre_cosine and jacobian_sq_mean, started from the measured layer 0.

The q-map and c-map (Poole et al. 2016) and χ₁ (Schoenholz et al. 2017) for
the run's own layers: σ_w² = fan_in·E[w²] of the initializer at each layer
(the first layer's fan_in is input_dim) and σ_b² of the shifts. Layer 0's
pre_q and pre_cosine are the input's mean square and mean cosine, so

    q_1 = σ_w²(1)·pre_q(0) + σ_b²,   c_1 = (σ_w²(1)·pre_q(0)·pre_cosine(0) + σ_b²)/q_1,
    q_{l+1} = q_map(q_l),  c_{l+1} = correlation_map(c_l; q_l),
    jacobian_sq_mean(l) = ∏_{k ≤ l} σ_w²(k)·E[φ'(√q_k·z)²]  (χ₁ at each layer's q).

With inputs of unequal norms (ball data) the start c_1 is approximate: the
mean of cosines is not the cosine of mean inner products. Where the maps do
not describe the run, `overlay_reason` says why in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from initscope.core import theory
from initscope.report._common import resolved_gain

__all__ = ["OVERLAID", "overlay_reason", "mean_field_curves"]

OVERLAID = ("pre_q", "pre_cosine", "jacobian_sq_mean")


def _number(value: Any, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def overlay_reason(config: Mapping[str, Any], init: str) -> str | None:
    """None when the mean-field maps describe this run for `init`; otherwise why not, in a few words."""
    if "model" in config and "activation" not in config:  # an `initscope.torch.inspect` result
        return "a PyTorch model: its layers' σ_w², σ_b² and activations are not known to the maps"
    if str(config.get("norm", "none")) != "none":
        return f"{config.get('norm')} norm rescales every layer; the maps describe no normalization"
    if _number(config.get("residual", 0.0), 0.0) > 0:
        return "a residual branch adds the previous state; the maps describe a plain feed-forward net"
    if str(config.get("init_train", "none") or "none") != "none":
        return "the weights were trained before measuring"
    if not math.isfinite(theory.shift_sigma2(str(config.get("shift")), _number(config.get("shift_scale")))):
        return f"{config.get('shift')} shifts are not i.i.d. across units, so σ_b² is not defined"
    gain = resolved_gain(config, init)
    width, d = int(_number(config.get("width"), 0)), int(_number(config.get("input_dim"), 0))
    if not (math.isfinite(gain) and width > 0 and d > 0
            and math.isfinite(theory.weight_sigma2(init, d, width, gain))):
        return f"{init} has no fixed weight variance (data-driven or deterministic init)"
    try:
        theory.q_map(1.0, str(config.get("activation")), sigma_w2=1.0)
    except ValueError:
        return f"activation {config.get('activation')!r} has no mean-field map here"
    return None


def mean_field_curves(config: Mapping[str, Any], init: str, q0: float, c0: float) -> dict[str, np.ndarray]:
    """Theory per layer 0..depth for each of OVERLAID, from layer 0's pre_q = q0 and pre_cosine = c0.

    Returns {metric: (depth + 1,) values}; layer 0 is q0, c0 and 1 (the
    Jacobian of the input is the identity). NaN where the maps break down
    (q infinite, or no value to start from). Call only when
    `overlay_reason` is None.
    """
    activation = str(config["activation"])
    depth, width, d = int(config["depth"]), int(config["width"]), int(config["input_dim"])
    gain = resolved_gain(config, init)
    sigma_b2 = theory.shift_sigma2(str(config["shift"]), _number(config.get("shift_scale")))
    q, c, jac = (np.full(depth + 1, math.nan) for _ in range(3))
    q[0], c[0], jac[0] = q0, c0, 1.0
    for layer in range(1, depth + 1):
        fan_in = d if layer == 1 else width
        sw2 = theory.weight_sigma2(init, fan_in, width, gain)
        if layer == 1:  # the input is not passed through φ: the first pre-activation is linear in x
            q[1] = sw2 * q0 + sigma_b2
            c[1] = (sw2 * q0 * c0 + sigma_b2) / q[1] if q[1] > 0 else math.nan
        else:
            prev = q[layer - 1]
            if not (math.isfinite(prev) and prev > 0):
                break
            q[layer] = float(theory.q_map(prev, activation, sigma_w2=sw2, sigma_b2=sigma_b2))
            if math.isfinite(c[layer - 1]):
                c[layer] = float(theory.correlation_map(c[layer - 1], activation, sigma_w2=sw2, sigma_b2=sigma_b2,
                                                        q=prev))
        if not (math.isfinite(q[layer]) and q[layer] < 1e300):
            q[layer] = math.nan
            break
        jac[layer] = jac[layer - 1] * theory.chi_1(activation, sigma_w2=sw2, sigma_b2=sigma_b2, q=q[layer])
    return {"pre_q": q, "pre_cosine": c, "jacobian_sq_mean": jac}
