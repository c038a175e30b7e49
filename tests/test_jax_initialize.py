"""initscope.jax.initialize: registry initializers on Flax and Equinox weights, with torch's fans, functionally."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the 'jax' extra installs jax, flax and equinox")
eqx = pytest.importorskip("equinox")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
import jax.numpy as jnp  # noqa: E402

from initscope.core.initializers import draw  # noqa: E402
from initscope.jax.initialization import initialize, weight_fans  # noqa: E402
from initscope.jax.programs import program  # noqa: E402

jax.config.update("jax_enable_x64", True)
pytestmark = pytest.mark.slow  # XLA compiles


class Net(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 8, kernel_size=(3, 3), rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.fc = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.norm(self.conv(x)).mean(axis=(1, 2)))


def test_fans_follow_torchs_rule_in_each_layout():
    assert weight_fans("nnx", "Linear", (24, 40)) == weight_fans("linen", "Dense", (24, 40))
    f = weight_fans("nnx", "Conv", (3, 3, 8, 16))  # (kh, kw, in, out)
    assert (f.fan_in, f.fan_out, f.units) == (72, 144, 16)
    e = weight_fans("equinox", "Conv2d", (16, 8, 3, 3))  # (out, in, kh, kw)
    assert (e.fan_in, e.fan_out, e.units) == (72, 144, 16)
    assert weight_fans("nnx", "LayerNorm", (8,)) is None and weight_fans("nnx", "Embed", (100, 8)) is None


def test_nnx_weights_are_the_registry_draws_and_the_model_is_unchanged():
    model = Net(nnx.Rngs(0))
    before = np.array(model.conv.kernel[...])
    notes: list[str] = []
    new = initialize(model, "orthogonal", seed=4, notes=notes)
    np.testing.assert_array_equal(model.conv.kernel[...], before)
    rng = np.random.default_rng(4)
    conv = draw("orthogonal", 27, 8, gain=1.0, rng=rng)  # the flattened parameter order: conv, then fc
    fc = draw("orthogonal", 8, 4, gain=1.0, rng=rng)
    np.testing.assert_allclose(np.asarray(new.conv.kernel[...]).reshape(27, 8), conv, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.fc.kernel[...]), fc, rtol=1e-6)
    np.testing.assert_array_equal(new.norm.scale[...], model.norm.scale[...])
    assert notes[0] == "--init orthogonal drew 2 weight(s): conv/kernel, fc/kernel."
    assert "norm/scale" in notes[1] and "conv/bias" in notes[1]


def test_kaiming_keeps_the_second_moment_of_a_deep_linen_relu_stack():
    class Deep(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(20):
                x = nn.relu(nn.Dense(256, use_bias=False)(x))
            return x

    x = jnp.asarray(np.random.default_rng(0).standard_normal((512, 256)))
    module = Deep()
    variables = module.init(jax.random.PRNGKey(0), x)
    module, variables = initialize((module, variables), "kaiming-normal", seed=1)
    prog = program((module, variables))
    states = prog.apply(prog.params, x)[1]  # the 20 Dense outputs (pre-activations)
    ms = np.array([float(jnp.mean(jax.nn.relu(s) ** 2)) for s in states])
    # He et al.: under gain √2 a ReLU layer keeps E[s²]. For one draw, each layer's ratio ms_l/ms_(l-1) is
    # about χ²/w over the ~w/2 active units: log-sd ≈ sqrt(4/256) = 0.125; the mean of 19 log ratios has
    # sd 0.029, so 0.1 is 3.4 sd. Unit-variance kernels (the Flax default, lecun) would give log(1/2) = -0.69.
    assert abs(np.mean(np.diff(np.log(ms)))) < 0.1


def test_equinox_weights_are_drawn_in_torchs_layout():
    key = jax.random.PRNGKey(0)
    model = eqx.nn.Sequential([eqx.nn.Linear(5, 7, key=key), eqx.nn.Lambda(jax.nn.relu),
                               eqx.nn.Linear(7, 3, key=key)])
    new = initialize(model, "sphere", seed=2)
    W = np.asarray(new.layers[0].weight)  # (out 7, in 5): each row an output unit's incoming vector
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, rtol=1e-12)
    assert not np.array_equal(W, np.asarray(model.layers[0].weight))


def test_bad_arguments_name_the_parameter():
    model = Net(nnx.Rngs(0))
    with pytest.raises(ValueError, match="'init' parameter 'lsuv' is layer-wise"):
        initialize(model, "lsuv")
    with pytest.raises(ValueError, match="'init' parameter must be one of"):
        initialize(model, "he")
    with pytest.raises(ValueError, match="'bias' parameter"):
        initialize(model, "normal", bias="ones")
    with pytest.raises(TypeError, match="Got str instead"):
        initialize("model", "normal")
    assert math.isfinite(float(initialize(model, "normal", bias="zeros").fc.bias[...].sum()))
