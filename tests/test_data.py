import numpy as np
import pytest
from scipy import stats

from initscope.core.data import SYNTHETIC, TARGETS, sample, target

# A KS p-value below this on a fixed seed means the distribution is wrong, not bad luck.
P_MIN = 1e-3


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("n, d", [(0, 3), (5, 0), (0, 0), (1, 1), (7, 1), (9, 4)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sample_shape_dtype_finite(name, n, d, dtype, rng):
    x = sample(name, n, d, rng=rng, dtype=dtype)
    assert x.shape == (n, d)
    assert x.dtype == dtype
    assert np.isfinite(x).all()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_sample_is_deterministic_and_advances_rng(name):
    first = sample(name, 20, 3, rng=np.random.default_rng(7))
    again = sample(name, 20, 3, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    rng = np.random.default_rng(7)
    assert not np.array_equal(sample(name, 20, 3, rng=rng), sample(name, 20, 3, rng=rng))


@pytest.mark.parametrize("name", ["ball", "ball-spaced"])
@pytest.mark.parametrize("d", [1, 3, 10])
def test_ball_inside_and_radial_cdf_is_r_to_the_d(name, d, rng):
    x = sample(name, 2000, d, rng=rng)
    radii = np.linalg.norm(x, axis=1)
    assert radii.max() <= 1.0 + 1e-12
    # P(r <= t) = t**d for the uniform ball, so r**d is U(0, 1).
    assert stats.kstest(radii**d, "uniform").pvalue > P_MIN


@pytest.mark.parametrize("name", ["ball", "ball-spaced"])
def test_ball_directions_are_uniform(name, rng):
    n, d = 4000, 3
    x = sample(name, n, d, rng=rng)
    directions = x / np.linalg.norm(x, axis=1, keepdims=True)
    # Each coordinate of a uniform direction has mean 0 and variance 1/d.
    assert np.abs(directions.mean(axis=0)).max() < 5 / np.sqrt(n * d)
    # ... and (u + 1) / 2 ~ Beta((d-1)/2, (d-1)/2), which is U(0, 1) for d = 3.
    assert stats.kstest((directions[:, 0] + 1) / 2, "uniform").pvalue > P_MIN


def test_sphere_norms_are_one(rng):
    x = sample("sphere", 500, 6, rng=rng)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=0, atol=1e-12)


def test_sphere_d1_is_plus_minus_one(rng):
    x = sample("sphere", 200, 1, rng=rng)
    assert set(np.unique(x)) == {-1.0, 1.0}


@pytest.mark.parametrize("name", ["box", "box-spaced"])
def test_box_marginals_are_uniform(name, rng):
    x = sample(name, 2000, 4, rng=rng)
    assert x.min() >= -1.0 and x.max() <= 1.0
    for column in x.T:
        assert stats.kstest(column, "uniform", args=(-1, 2)).pvalue > P_MIN


def test_normal_moments(rng):
    n, d = 4000, 5
    x = sample("normal", n, d, rng=rng)
    assert np.abs(x.mean(axis=0)).max() < 5 / np.sqrt(n)
    # The sample variance of N(0, 1) has standard deviation sqrt(2/n).
    assert np.abs(x.var(axis=0) - 1).max() < 5 * np.sqrt(2 / n)
    assert stats.kstest(x[:, 0], "norm").pvalue > P_MIN


@pytest.mark.parametrize("n", [1, 10, 257])
def test_box_spaced_has_one_point_per_stratum(n, rng):
    x = sample("box-spaced", n, 3, rng=rng)
    strata = np.floor((x + 1) / 2 * n).astype(int)
    for column in strata.T:
        np.testing.assert_array_equal(np.sort(column), np.arange(n))


@pytest.mark.parametrize("n, d", [(1, 2), (10, 2), (300, 3), (300, 8)])
def test_ball_spaced_radii_are_stratified(n, d, rng):
    x = sample("ball-spaced", n, d, rng=rng)
    shells = np.floor(np.linalg.norm(x, axis=1) ** d * n).astype(int)
    np.testing.assert_array_equal(np.sort(shells), np.arange(n))


def test_ball_radii_are_not_stratified(rng):
    # The test above must be able to fail: iid radii almost never hit every shell once.
    x = sample("ball", 300, 3, rng=rng)
    shells = np.floor(np.linalg.norm(x, axis=1) ** 3 * 300).astype(int)
    assert not np.array_equal(np.sort(shells), np.arange(300))


def test_targets_on_known_points():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.5, 0.0]])
    np.testing.assert_allclose(target("norm", x), [0.0, 5.0, 0.5])
    np.testing.assert_allclose(target("cos-norm", x), [1.0, np.cos(5.0), np.cos(0.5)])
    np.testing.assert_allclose(target("gaussian-bump", x), [1.0, np.exp(-25.0), np.exp(-0.25)])
    np.testing.assert_allclose(
        target("sin-sum", x), [0.0, np.sin(7 * np.pi / np.sqrt(2)), np.sin(0.5 * np.pi / np.sqrt(2))], atol=1e-15
    )


@pytest.mark.parametrize("name", TARGETS)
def test_target_shape_and_bounds(name, rng):
    x = sample("normal", 50, 3, rng=rng)
    y = target(name, x)
    assert y.shape == (50,)
    assert np.isfinite(y).all()
    if name != "norm":
        assert np.abs(y).max() <= 1.0


def test_target_zero_dimensions():
    x = np.zeros((4, 0))
    np.testing.assert_array_equal(target("sin-sum", x), np.zeros(4))
    np.testing.assert_array_equal(target("cos-norm", x), np.ones(4))


def test_unknown_data_name_lists_valid_names(rng):
    with pytest.raises(ValueError, match="'data' parameter") as error:
        sample("xyz", 3, 2, rng=rng)
    assert "'xyz'" in str(error.value)
    assert all(f"'{name}'" in str(error.value) for name in SYNTHETIC)


def test_unknown_target_name_lists_valid_names():
    with pytest.raises(ValueError, match="'target' parameter") as error:
        target("xyz", np.zeros((3, 2)))
    assert "'xyz'" in str(error.value)
    assert all(f"'{name}'" in str(error.value) for name in TARGETS)


@pytest.mark.parametrize("n, d, label", [(-1, 2, "'n'"), (3, -2, "'d'")])
def test_negative_sizes_raise(n, d, label, rng):
    with pytest.raises(ValueError, match=label):
        sample("ball", n, d, rng=rng)


def test_target_needs_two_dimensional_x():
    with pytest.raises(ValueError, match="2-D"):
        target("norm", np.zeros(3))


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("n, d", [(100, 40), (7, 1), (3, 9), (1, 5), (0, 4), (6, 0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sample_trials_is_sample_per_trial_bit_for_bit(name, n, d, dtype):
    from initscope.core.data import sample_trials, targets

    streams = lambda: [np.random.default_rng([11, t]) for t in range(5)]  # noqa: E731
    rngs = streams()
    batch = sample_trials(name, n, d, rngs=rngs, dtype=dtype)
    one_by_one = streams()
    expected = np.stack([sample(name, n, d, rng=r, dtype=dtype) for r in one_by_one])
    assert batch.dtype == expected.dtype and batch.shape == (5, n, d)
    np.testing.assert_array_equal(batch, expected)
    # ...and each generator is left where sample leaves it: later draws from it are unchanged.
    assert [r.random() for r in rngs] == [r.random() for r in one_by_one]
    for tname in TARGETS:
        np.testing.assert_array_equal(targets(tname, expected), np.stack([target(tname, x) for x in expected]))


def test_sample_trials_and_targets_bad_input():
    from initscope.core.data import sample_trials, targets

    with pytest.raises(ValueError, match="'data' parameter must be one of"):
        sample_trials("cube", 3, 2, rngs=[np.random.default_rng(0)])
    with pytest.raises(ValueError, match="'dtype' parameter must be a floating dtype"):
        sample_trials("ball", 3, 2, rngs=[np.random.default_rng(0)], dtype=np.int64)
    with pytest.raises(ValueError, match=r"'X' argument of targets must be a 3-D array \(T, n, d\). Got shape \(3, 2\)"):
        targets("norm", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="'target' parameter must be one of"):
        targets("cosine", np.zeros((1, 3, 2)))
    assert sample_trials("ball", 3, 2, rngs=[]).shape == (0, 3, 2)
