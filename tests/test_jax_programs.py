"""initscope.jax: JAX models as pure programs that return every state, their per-sample Jacobians and gradients."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the 'jax' extra installs jax, flax and equinox")
eqx = pytest.importorskip("equinox")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
import jax.numpy as jnp  # noqa: E402

from initscope.jax.differentiation import (  # noqa: E402
    gradient_norms,
    layer_params,
    leaves,
    loss_function,
    state_jacobians,
)
from initscope.jax.programs import mark, program  # noqa: E402

jax.config.update("jax_enable_x64", True)
pytestmark = pytest.mark.slow  # every test compiles its programs with XLA


class NNXBlock(nnx.Module):
    def __init__(self, d, rngs):
        self.norm = nnx.LayerNorm(d, rngs=rngs)
        self.fc = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x):
        return x + nnx.tanh(self.fc(self.norm(x)))


class NNXNet(nnx.Module):
    def __init__(self, rngs, d_in=3, d=6):
        self.inp = nnx.Linear(d_in, d, rngs=rngs)
        self.blocks = nnx.List([NNXBlock(d, rngs) for _ in range(2)])
        self.out = nnx.Linear(d, 2, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.inp(x))
        for block in self.blocks:
            x = block(x)
        return self.out(x)


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(6)(x))
        x = nn.LayerNorm()(x)
        return nn.Dense(2)(x)


class EqxNet(eqx.Module):
    layers: list

    def __init__(self, key):
        k = jax.random.split(key, 2)
        self.layers = [eqx.nn.Linear(3, 6, key=k[0]), eqx.nn.LayerNorm(6), eqx.nn.Linear(6, 2, key=k[1])]

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return x


def _function():
    def f(params, x):
        h = mark("hidden", jnp.tanh(x @ params["w1"]))
        return mark("out", h @ params["w2"])
    rng = np.random.default_rng(0)
    return f, {"w1": jnp.asarray(rng.standard_normal((3, 5))), "w2": jnp.asarray(rng.standard_normal((5, 2)))}


def _models():
    x = jnp.zeros((1, 3))
    linen = LinenNet()
    f, params = _function()
    return {
        "nnx": (NNXNet(nnx.Rngs(0)), None),
        "linen": ((linen, linen.init(jax.random.PRNGKey(0), x)), None),
        "equinox": (EqxNet(jax.random.PRNGKey(0)), None),
        "function": (f, params),
    }


EXPECTED_CALLS = {
    "nnx": ["inp", "blocks/0/norm", "blocks/0/fc", "blocks/0", "blocks/1/norm", "blocks/1/fc", "blocks/1", "out"],
    "linen": ["Dense_0", "LayerNorm_0", "Dense_1"],
    "equinox": ["layers[0]", "layers[1]", "layers[2]"],
    "function": ["hidden", "out"],
}


@pytest.fixture
def x():
    return jnp.asarray(np.random.default_rng(1).standard_normal((5, 3)))


@pytest.mark.parametrize("kind", list(EXPECTED_CALLS))
def test_every_call_is_recorded_in_execution_order_jitted_or_not(kind, x):
    model, params = _models()[kind]
    prog = program(model, params=params)
    out, states = jax.jit(prog.apply)(prog.params, x)
    assert prog.framework == kind
    assert [c.name for c in prog.calls] == EXPECTED_CALLS[kind]
    assert all(s.shape[0] == 5 for s in states)
    eager_out, eager_states = prog.apply(prog.params, x)
    np.testing.assert_allclose(out, eager_out, rtol=1e-12)
    for a, b in zip(states, eager_states, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    if kind != "equinox":  # its last layer's output goes through a tanh
        np.testing.assert_array_equal(states[-1], out)


def test_the_users_model_is_not_changed(x):
    model = NNXNet(nnx.Rngs(0))
    kernel = np.asarray(model.inp.kernel[...]).copy()
    prog = program(model)
    prog.apply(prog.params, x)
    assert type(model.inp) is nnx.Linear and type(model.blocks[0]) is NNXBlock
    np.testing.assert_array_equal(model.inp.kernel[...], kernel)
    eq = EqxNet(jax.random.PRNGKey(0))
    program(eq).apply(program(eq).params, x)
    assert type(eq.layers[0]) is eqx.nn.Linear


def test_mark_records_nothing_outside_a_program():
    assert mark("h", 3.0) == 3.0
    with pytest.raises(ValueError, match="'name' parameter of mark"):
        f, params = _function()
        program(lambda p, x: mark("", x), params=params).apply(params, jnp.ones((2, 3)))


def test_bad_models_say_what_they_got():
    with pytest.raises(TypeError, match="Flax NNX module, .* Got int instead"):
        program(3)
    with pytest.raises(ValueError, match="'params' parameter"):
        program(lambda p, x: x)


@pytest.mark.parametrize("kind", list(EXPECTED_CALLS))
def test_state_jacobians_are_each_samples_own(kind, x):
    """Against jax.jacfwd of one sample at a time (no sample interacts in these models)."""
    model, params = _models()[kind]
    prog = program(model, params=params)
    Js = state_jacobians(prog, x, budget=40)  # a small budget: several chunks of directions
    for i in range(x.shape[0]):
        exact = jax.jacfwd(lambda xi: prog.apply(prog.params, xi[None])[1])(x[i])
        for J, e in zip(Js, exact, strict=True):
            np.testing.assert_allclose(J[0, i], np.asarray(e).reshape(-1, 3).T, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", list(EXPECTED_CALLS))
def test_gradient_norms_by_leaf_and_kind(kind, x):
    model, params = _models()[kind]
    prog = program(model, params=params)
    loss = loss_function("mse", targets=np.ones((5, 2)))
    norms = gradient_norms(prog, x, loss)
    direct = jax.grad(lambda p: jnp.mean((prog.apply(p, x)[0] - 1.0) ** 2))(prog.params)
    expected = [float(np.linalg.norm(np.asarray(g, dtype=np.float64))) for g in jax.tree_util.tree_leaves(direct)]
    np.testing.assert_allclose(norms, expected, rtol=1e-12)
    types = {**prog.modules, **{c.name: c.module_type for c in prog.calls}}
    kinds = {(leaf.module, leaf.name): leaf.kind for leaf in leaves(prog, types)}
    if kind == "nnx":
        assert kinds[("blocks/0/norm", "scale")] == "norm_affine"
        assert kinds[("blocks/0/fc", "kernel")] == "weight" and kinds[("inp", "bias")] == "bias"
        assert layer_params(prog, "blocks/1", leaves(prog, types))[0] == "weight"
        assert [leaf.module for leaf in layer_params(prog, "blocks/1", leaves(prog, types))[1]] == ["blocks/1/fc"]
    if kind == "equinox":
        assert kinds[("layers[1]", "weight")] == "norm_affine" and kinds[("layers[0]", "weight")] == "weight"
    if kind == "linen":
        assert kinds[("LayerNorm_0", "scale")] == "norm_affine" and kinds[("Dense_1", "kernel")] == "weight"


def test_losses_name_the_parameter():
    with pytest.raises(ValueError, match="'loss' parameter must be one of"):
        loss_function("hinge")
    with pytest.raises(ValueError, match="'targets' parameter"):
        loss_function("cross-entropy")
    logits = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    ce = float(loss_function("cross-entropy", targets=np.array([0, 1]))(logits))
    expected = -np.mean([np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))), np.log(np.e / (np.e + 2))])
    assert ce == pytest.approx(expected, rel=1e-12)


def test_a_torch_mlp_and_its_nnx_twin_record_the_same_states(x):
    torch = pytest.importorskip("torch")
    model = NNXNet(nnx.Rngs(0))
    model.inp = nnx.Linear(3, 6, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU()).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(np.array(model.inp.kernel[...]).T))
        net[0].bias.copy_(torch.from_numpy(np.array(model.inp.bias[...])))
    prog = program(model)
    states = prog.apply(prog.params, x)[1]
    h = net(torch.from_numpy(np.array(x))).detach().numpy()
    np.testing.assert_allclose(np.maximum(np.asarray(states[0]), 0.0), h, rtol=1e-14, atol=1e-15)
