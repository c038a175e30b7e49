import math

import numpy as np
import pytest
from scipy import stats

from initscope.core.initializers import ACTIVATIONS, INITIALIZERS, Initializer, default_gain, draw, recommended_gain

P_MIN = 1e-3
GAIN = 1.7
FAN_IN, FAN_OUT = 400, 500  # 200,000 entries for the moment checks
N = FAN_IN * FAN_OUT


@pytest.fixture
def rng():
    return np.random.default_rng(20240602)


# ---- the contract every registry entry keeps ------------------------------------


@pytest.mark.parametrize("init", INITIALIZERS)
def test_entry_is_named_by_its_key(init):
    entry = INITIALIZERS[init]
    assert isinstance(entry, Initializer)
    assert entry.name == init
    assert entry.rule and "\n" not in entry.rule


@pytest.mark.parametrize("init", INITIALIZERS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (3, 5), (4, 4)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shape_dtype_finite(init, shape, dtype, rng):
    w = draw(init, *shape, gain=GAIN, rng=rng, dtype=dtype)
    assert w.shape == shape
    assert w.dtype == dtype
    assert np.isfinite(w).all()
    assert np.any(w != 0)


@pytest.mark.parametrize("init", INITIALIZERS)
def test_deterministic_given_rng_state(init):
    first = draw(init, 6, 4, gain=GAIN, rng=np.random.default_rng(3))
    again = draw(init, 6, 4, gain=GAIN, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("init", INITIALIZERS)
def test_successive_draws_differ(init, rng):
    first = draw(init, 6, 4, gain=GAIN, rng=rng)
    second = draw(init, 6, 4, gain=GAIN, rng=rng)
    # Random rules differ draw to draw; deterministic ones (ZerO) must not.
    assert np.array_equal(first, second) != INITIALIZERS[init].random


def test_zero_is_identity_or_scaled_hadamard():
    """ZerO (Zhao et al. 2021): partial identity when not growing; c·Hadamard when growing."""
    np.testing.assert_array_equal(draw("zero", 5, 5, gain=1.0, rng=None), np.eye(5))
    np.testing.assert_array_equal(draw("zero", 6, 4, gain=2.0, rng=None), 2 * np.eye(6, 4))
    w = draw("zero", 3, 8, gain=1.0, rng=None)  # m = 3, c = 2^-1
    assert set(np.unique(np.abs(w))) == {0.5}
    # rows are orthogonal with equal norms: no input direction is lost or favoured
    g = w @ w.T
    np.testing.assert_allclose(g, g[0, 0] * np.eye(3))


@pytest.mark.parametrize("init", INITIALIZERS)
def test_float32_is_the_float64_draw_rounded(init):
    w64 = draw(init, 6, 4, gain=GAIN, rng=np.random.default_rng(3))
    w32 = draw(init, 6, 4, gain=GAIN, rng=np.random.default_rng(3), dtype=np.float32)
    np.testing.assert_array_equal(w32, w64.astype(np.float32))


@pytest.mark.parametrize("init", INITIALIZERS)
def test_draw_is_linear_in_gain(init):
    # "std = gain * ...": the same random state at gain g is exactly g times gain 1.
    unit = draw(init, 6, 4, gain=1.0, rng=np.random.default_rng(3))
    scaled = draw(init, 6, 4, gain=GAIN, rng=np.random.default_rng(3))
    np.testing.assert_allclose(scaled, GAIN * unit, rtol=1e-13, atol=0)


@pytest.mark.parametrize("init", INITIALIZERS)
@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (0, 0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_fans(init, shape, dtype, rng):
    w = draw(init, *shape, gain=GAIN, rng=rng, dtype=dtype)
    assert w.shape == shape
    assert w.dtype == dtype


@pytest.mark.parametrize("init", INITIALIZERS)
@pytest.mark.parametrize("gain", [0.0, -1.0, math.nan, math.inf, "1"])
def test_bad_gain_raises(init, gain, rng):
    with pytest.raises(ValueError, match="'gain' parameter"):
        draw(init, 3, 3, gain=gain, rng=rng)


@pytest.mark.parametrize("fan_in, fan_out, label", [(-1, 3, "'fan_in'"), (3, -2, "'fan_out'")])
def test_negative_fans_raise(fan_in, fan_out, label, rng):
    with pytest.raises(ValueError, match=label):
        draw("normal", fan_in, fan_out, gain=1.0, rng=rng)


def test_non_integer_fan_raises(rng):
    with pytest.raises(TypeError, match="'fan_in'"):
        draw("normal", 2.5, 3, gain=1.0, rng=rng)


def test_non_float_dtype_raises(rng):
    with pytest.raises(ValueError, match="'dtype'"):
        draw("normal", 2, 3, gain=1.0, rng=rng, dtype=np.int64)


def test_unknown_init_lists_valid_names(rng):
    with pytest.raises(ValueError, match="'init' parameter") as error:
        draw("x", 3, 3, gain=1.0, rng=rng)
    message = str(error.value)
    assert "Got 'x' instead." in message
    assert all(f"'{name}'" in message for name in INITIALIZERS)


# ---- each entry's defining distribution ------------------------------------------


def _assert_std(w, expected):
    # The sample std of N iid values has standard deviation <= expected / sqrt(2N)
    # for the normal, and less for the uniform (lighter tails).
    assert abs(w.mean()) < 5 * expected / math.sqrt(w.size)
    assert abs(w.std() - expected) < 5 * expected / math.sqrt(2 * w.size)


NORMAL_STD = {
    "normal": GAIN,
    "xavier-normal": GAIN * math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "kaiming-normal": GAIN / math.sqrt(FAN_IN),
    "lecun-normal": GAIN / math.sqrt(FAN_IN),
}

UNIFORM_BOUND = {
    "uniform": GAIN,
    "xavier-uniform": GAIN * math.sqrt(6 / (FAN_IN + FAN_OUT)),
    "kaiming-uniform": GAIN * math.sqrt(3 / FAN_IN),
    "torch-default": GAIN / math.sqrt(FAN_IN),
}


@pytest.mark.parametrize("init", NORMAL_STD)
def test_normal_family_std_and_shape(init, rng):
    w = draw(init, FAN_IN, FAN_OUT, gain=GAIN, rng=rng)
    std = NORMAL_STD[init]
    _assert_std(w, std)
    assert stats.kstest(w.ravel() / std, "norm").pvalue > P_MIN


@pytest.mark.parametrize("init", UNIFORM_BOUND)
def test_uniform_family_bounds_and_std(init, rng):
    w = draw(init, FAN_IN, FAN_OUT, gain=GAIN, rng=rng)
    bound = UNIFORM_BOUND[init]
    assert np.abs(w).max() <= bound
    # The largest of N uniforms is within bound * 20/N of the bound, except with probability e^-20.
    assert np.abs(w).max() >= bound * (1 - 20 / N)
    _assert_std(w, bound / math.sqrt(3))
    assert stats.kstest(w.ravel(), "uniform", args=(-bound, 2 * bound)).pvalue > P_MIN


def test_sphere_columns_have_norm_gain_and_uniform_direction(rng):
    fan_in, fan_out = 5, 4000
    w = draw("sphere", fan_in, fan_out, gain=GAIN, rng=rng)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), GAIN, rtol=1e-12, atol=0)
    directions = w / GAIN
    # Each coordinate of a uniform direction on S^(k-1) has mean 0, variance 1/k.
    assert np.abs(directions.mean(axis=1)).max() < 5 / math.sqrt(fan_out * fan_in)
    # (u + 1) / 2 ~ Beta((k-1)/2, (k-1)/2); the columns are independent.
    a = (fan_in - 1) / 2
    assert stats.kstest((directions[0] + 1) / 2, stats.beta(a, a).cdf).pvalue > P_MIN


def test_sphere_rows_have_norm_gain_and_uniform_direction(rng):
    fan_in, fan_out = 4000, 5
    w = draw("sphere-rows", fan_in, fan_out, gain=GAIN, rng=rng)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), GAIN, rtol=1e-12, atol=0)
    a = (fan_out - 1) / 2
    assert stats.kstest((w[:, 0] / GAIN + 1) / 2, stats.beta(a, a).cdf).pvalue > P_MIN


def test_sphere_is_columns_not_rows(rng):
    w = draw("sphere", 6, 9, gain=GAIN, rng=rng)
    assert not np.allclose(np.linalg.norm(w, axis=1), GAIN)


@pytest.mark.parametrize("shape", [(20, 50), (50, 20), (30, 30), (1, 7), (7, 1)])
def test_orthogonal_singular_values_equal_gain(shape, rng):
    w = draw("orthogonal", *shape, gain=GAIN, rng=rng)
    np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), GAIN, rtol=1e-12, atol=0)
    k = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, GAIN**2 * np.eye(k), rtol=0, atol=1e-12)


def test_orthogonal_is_haar_distributed(rng):
    # Without Mezzadri's sign correction, LAPACK's Householder QR makes W[0, 0] always < 0.
    # Under the Haar measure on O(k), W[0, 0] has mean 0 and variance 1/k.
    k, trials = 3, 2000
    corner = np.array([draw("orthogonal", k, k, gain=1.0, rng=rng)[0, 0] for _ in range(trials)])
    assert abs(corner.mean()) < 5 / math.sqrt(k * trials)
    assert abs(np.mean(corner**2) - 1 / k) < 0.05


# ---- gains ----------------------------------------------------------------------


def test_recommended_gains():
    assert recommended_gain("relu") == pytest.approx(math.sqrt(2))
    assert recommended_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert recommended_gain("tanh") == pytest.approx(5 / 3)
    assert recommended_gain("identity") == 1.0
    assert recommended_gain("gelu") == 1.0
    assert set(ACTIVATIONS) == {"relu", "leaky_relu", "tanh", "gelu", "identity"}


def test_unknown_activation_lists_valid_ones():
    with pytest.raises(ValueError, match="'activation' parameter") as error:
        recommended_gain("swish")
    assert all(f"'{name}'" in str(error.value) for name in ACTIVATIONS)
    with pytest.raises(ValueError, match="'activation' parameter"):
        default_gain("normal", "swish")


@pytest.mark.parametrize("init", INITIALIZERS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_default_gain_rules(init, activation):
    expected = recommended_gain(activation) if init.startswith("kaiming") else 1.0
    assert default_gain(init, activation) == expected


def test_default_gain_examples():
    assert default_gain("kaiming-normal", "relu") == pytest.approx(math.sqrt(2))
    assert default_gain("kaiming-uniform", "tanh") == pytest.approx(5 / 3)
    assert default_gain("xavier-normal", "relu") == 1.0
    assert default_gain("lecun-normal", "relu") == 1.0
    with pytest.raises(ValueError, match="'init' parameter"):
        default_gain("he", "relu")


# ---- against PyTorch, when it is installed ----------------------------------------


def test_matches_torch_nn_init():
    torch = pytest.importorskip("torch")
    for activation, torch_name in [("relu", "relu"), ("tanh", "tanh"), ("identity", "linear")]:
        assert recommended_gain(activation) == pytest.approx(torch.nn.init.calculate_gain(torch_name))
    assert recommended_gain("leaky_relu") == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.01))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # torch stores Linear weights as (fan_out, fan_in); ours are the transpose.
    weight = torch.empty(FAN_OUT, FAN_IN, dtype=torch.float64)
    cases = {
        "kaiming-normal": lambda t: torch.nn.init.kaiming_normal_(t, nonlinearity="relu"),
        "kaiming-uniform": lambda t: torch.nn.init.kaiming_uniform_(t, nonlinearity="relu"),
        "xavier-normal": torch.nn.init.xavier_normal_,
        "xavier-uniform": torch.nn.init.xavier_uniform_,
    }
    for init, fill in cases.items():
        theirs = fill(weight).numpy().T
        ours = draw(init, FAN_IN, FAN_OUT, gain=default_gain(init, "relu"), rng=rng)
        assert abs(ours.std() - theirs.std()) < 10 * theirs.std() / math.sqrt(2 * N), init
        assert abs(np.abs(ours).max() - np.abs(theirs).max()) < 0.5 * np.abs(theirs).max(), init

    linear = torch.nn.Linear(FAN_IN, FAN_OUT, dtype=torch.float64)
    theirs = linear.weight.detach().numpy().T
    ours = draw("torch-default", FAN_IN, FAN_OUT, gain=1.0, rng=rng)
    assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=1e-3)
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
