"""Task training's core: exact gradients (finite differences, torch autograd), losses, optimisers, divergence."""

import math

import numpy as np
import pytest

from initscope.core import optimizers as opt
from initscope.core.activations import ACTIVATIONS
from initscope.core.data import sample
from initscope.core.losses import accuracy, cross_entropy, mse
from initscope.core.network import NORMS, Architecture, draw_layer
from initscope.core.training import evaluate, loss_and_gradient, minibatch, train

SETTINGS = [Architecture(a, norm, res) for a in ACTIVATIONS for norm in NORMS for res in (0.0, 0.5)]


def _net(rng, *, T=2, n=10, d=3, widths=(5, 5, 5), outputs=1):
    X = np.stack([sample("ball", n, d, rng=rng) for _ in range(T)])
    rngs = [np.random.default_rng(rng.integers(2**32)) for _ in range(T)]
    params, fan_in = [], d
    for w in widths:
        W, b = draw_layer("kaiming-normal", fan_in, w, gain=math.sqrt(2), shift="normal", shift_scale=0.3, rngs=rngs)
        params.append((W.copy(), b.copy()))
        fan_in = w
    readout = rng.standard_normal((T, fan_in, outputs)) / math.sqrt(fan_in)
    return X, params, readout


def _directional(X, target, params, readout, arch, loss, v, h):
    shifted = [(W + h * dW, b + h * db) for (W, b), (dW, db) in zip(params, v[:-1])]
    return evaluate(X, target, shifted, readout + h * v[-1], arch, loss)[0]


@pytest.mark.parametrize("arch", SETTINGS, ids=lambda a: f"{a.activation}-{a.norm}-{a.residual}")
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gradient_matches_finite_differences(arch, loss, rng):
    # widths (5, 5, 5) after input 3: layer 1 has no residual (shapes differ), layers 2-3 do.
    X, params, readout = _net(rng, outputs=1 if loss == "mse" else 4)
    target = (np.cos(np.linalg.norm(X, axis=2, keepdims=True)) if loss == "mse"
              else rng.integers(0, 4, size=X.shape[:2]))
    value, _, grads, d_readout = loss_and_gradient(X, target, params, readout, arch, loss)
    np.testing.assert_array_equal(value, evaluate(X, target, params, readout, arch, loss)[0])
    v = [(rng.standard_normal(W.shape), rng.standard_normal(b.shape)) for W, b in params]
    v.append(rng.standard_normal(readout.shape))
    slope = sum(np.einsum("tij,tij->t", gW, dW) + np.einsum("ti,ti->t", gb, db)
                for (gW, gb), (dW, db) in zip(grads, v[:-1])) + np.einsum("tij,tij->t", d_readout, v[-1])
    h = 1e-6
    fd = (_directional(X, target, params, readout, arch, loss, v, h)
          - _directional(X, target, params, readout, arch, loss, v, -h)) / (2 * h)
    # Central differences: truncation O(h²) and rounding O(eps·|f|/h) ≈ 1e-10; a ReLU kink is crossed
    # with probability O(h·n·w), negligible here.
    np.testing.assert_allclose(slope, fd, rtol=1e-6, atol=1e-7)


def test_gradient_equals_torch_autograd_for_the_posts_mlp(rng):
    torch = pytest.importorskip("torch")
    T, n, d, w, L = 3, 100, 3, 40, 10
    X = np.stack([sample("ball", n, d, rng=rng) for _ in range(T)])
    y = np.cos(np.linalg.norm(X, axis=2, keepdims=True))
    params, fan_in = [], d
    for _ in range(L):
        W = rng.standard_normal((T, fan_in, w))
        W /= np.linalg.norm(W, axis=1, keepdims=True)  # sphere: each neuron's weight vector has unit norm
        params.append((W, np.broadcast_to(np.linspace(-1, 1, w), (T, w)).copy()))
        fan_in = w
    readout = 0.1 * rng.standard_normal((T, w, 1))
    value, _, grads, d_readout = loss_and_gradient(X, y, params, readout, Architecture("relu"), "mse")

    tp = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in params]
    tr = torch.tensor(readout, requires_grad=True)
    h = torch.tensor(X)
    for W, b in tp:
        h = torch.relu(torch.bmm(h, W) + b[:, None, :])
    per_trial = ((torch.bmm(h, tr) - torch.tensor(y)) ** 2).mean(dim=(1, 2))
    per_trial.sum().backward()
    np.testing.assert_allclose(value, per_trial.detach().numpy(), rtol=1e-12)
    for (gW, gb), (W, b) in zip(grads, tp):
        np.testing.assert_allclose(gW, W.grad.numpy(), rtol=0, atol=1e-10 * (1 + np.abs(gW).max()))
        np.testing.assert_allclose(gb, b.grad.numpy(), rtol=0, atol=1e-10 * (1 + np.abs(gb).max()))
    np.testing.assert_allclose(d_readout, tr.grad.numpy(), rtol=0, atol=1e-10 * (1 + np.abs(d_readout).max()))


def test_losses_against_closed_forms():
    out = np.array([[[1.0, 2.0], [0.0, 0.0]]])
    y = np.array([[[0.0, 0.0], [1.0, 1.0]]])
    value, grad = mse(out, y)
    assert value[0] == pytest.approx((1 + 4 + 1 + 1) / 4)
    np.testing.assert_allclose(grad, (out - y) / 2)
    logits = np.array([[[0.0, math.log(3.0)], [5.0, 5.0]]])
    labels = np.array([[1, 0]])
    value, grad = cross_entropy(logits, labels)
    assert value[0] == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2)
    np.testing.assert_allclose(grad[0, 0], [0.25 / 2, -0.25 / 2])
    assert accuracy(logits, labels)[0] == 1.0  # the second sample is a tie: argmax takes the first class, its label
    assert accuracy(logits, np.array([[0, 1]]))[0] == 0.0
    assert np.isfinite(cross_entropy(np.array([[[1e300, -1e300]]]), np.array([[1]]))[0]).all()


def test_optimisers_match_torch(rng):
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    for name, make_torch in [("sgd", lambda p: torch.optim.SGD(p, lr=0.1)),
                             ("momentum", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
                             ("adam", lambda p: torch.optim.Adam(p, lr=0.1))]:
        o = opt.make(name, 0.1)
        params, state = [p0.copy()], o.init([p0])
        tp = torch.tensor(p0, requires_grad=True)
        topt = make_torch([tp])
        for g in grads:
            updates, state = o.update([g], state)
            params = opt.apply_updates(params, updates)
            tp.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(params[0], tp.detach().numpy(), rtol=1e-12, err_msg=name)
    with pytest.raises(ValueError, match="'optimizer' parameter must be one of"):
        opt.make("rmsprop", 0.1)


def test_minibatches_are_distinct_samples_per_trial(rng):
    idx = minibatch(10, 3, 4, rng)
    assert idx.shape == (3, 4)
    assert all(len(set(row)) == 4 for row in idx.tolist())
    assert minibatch(10, 3, 0, rng) is None and minibatch(10, 3, 10, rng) is None


def test_training_lowers_the_loss_and_divergence_is_dated(rng):
    X, params, readout = _net(rng, T=3, n=40)
    y = np.cos(np.linalg.norm(X, axis=2, keepdims=True))
    arch = Architecture("relu")
    _, _, hist = train(X, y, params, readout, arch, loss="mse", optimizer=opt.sgd(0.05), steps=50, rng=rng,
                       test=(X, y))
    assert hist.steps.tolist() == list(range(51))
    assert (hist.loss[-1] < 0.5 * hist.loss[0]).all()
    np.testing.assert_allclose(hist.test_loss, hist.loss, rtol=1e-12)  # the same data: the same loss
    assert (hist.diverged_step == -1).all()
    # One trial blown up: it alone diverges, at the step its gradient first overflows, and keeps +inf.
    big = [(W.copy(), b.copy()) for W, b in params]
    big[0][0][1] *= 1e200
    _, _, hist = train(X, y, big, readout, arch, loss="mse", optimizer=opt.sgd(0.05), steps=5, rng=rng)
    assert hist.diverged_step.tolist()[1] in (0, 1) and hist.diverged_step[[0, 2]].tolist() == [-1, -1]
    assert np.isinf(hist.loss[hist.diverged_step[1]:, 1]).all()
    assert np.isfinite(hist.loss[:, [0, 2]]).all()


def test_trained_params_do_not_alias_the_inputs(rng):
    X, params, readout = _net(rng)
    y = np.zeros(X.shape[:2] + (1,))
    before = [W.copy() for W, _ in params]
    new, new_readout, _ = train(X, y, params, readout, Architecture("tanh"), loss="mse",
                                optimizer=opt.adam(1e-2), steps=3, batch_size=4, rng=rng, log_at=[0, 3])
    assert all(np.array_equal(W, W0) for (W, _), W0 in zip(params, before))
    assert not np.array_equal(new[0][0], params[0][0])
