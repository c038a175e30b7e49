import numpy as np
import pytest

from initscope.study.datasets import REAL, Table, load_file, load_real, standardise

SHAPES = {
    "digits": (1797, 64),
    "iris": (150, 4),
    "wine": (178, 13),
    "breast_cancer": (569, 30),
    "diabetes": (442, 10),
}


@pytest.fixture
def rng():
    return np.random.default_rng(20240603)


# ---- bundled datasets ---------------------------------------------------------------


def test_every_real_dataset_has_a_known_shape():
    assert set(REAL) == set(SHAPES)


@pytest.mark.parametrize("name", REAL)
def test_real_dataset_loads_standardised(name):
    table = load_real(name)
    n, d = SHAPES[name]
    assert isinstance(table, Table)
    assert table.name == name
    assert table.x.shape == (n, d) and table.x.dtype == np.float64
    assert table.y.shape == (n,) and table.y.dtype == np.float64
    assert len(table.columns) == d and all(isinstance(c, str) for c in table.columns)
    assert np.isfinite(table.x).all() and np.isfinite(table.y).all()
    np.testing.assert_allclose(table.x.mean(axis=0), 0.0, atol=1e-12)
    std = table.x.std(axis=0)
    constant = std < 0.5
    np.testing.assert_allclose(std[~constant], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(table.x[:, constant], 0.0)


def test_digits_constant_pixels_become_zero():
    # Pixel (0, 0) is blank in every digit image: its column must be 0, not NaN.
    table = load_real("digits")
    j = table.columns.index("pixel_0_0")
    np.testing.assert_array_equal(table.x[:, j], 0.0)


def test_iris_target_is_the_class():
    np.testing.assert_array_equal(np.unique(load_real("iris").y), [0.0, 1.0, 2.0])


def test_unknown_real_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="'data' parameter") as error:
        load_real("mnist")
    assert "'mnist'" in str(error.value)
    assert all(f"'{name}'" in str(error.value) for name in REAL)


def test_standardise_constant_column_with_rounding(rng):
    # 0.1 * 3 rounds, so a naive std of this constant column is tiny but not 0.
    x = np.column_stack([np.full(7, 0.1 + 0.2), rng.normal(3.0, 2.0, 7)])
    z = standardise(x)
    np.testing.assert_array_equal(z[:, 0], 0.0)
    np.testing.assert_allclose(z[:, 1].std(), 1.0, rtol=1e-12)


# ---- user files: reading ------------------------------------------------------------


def test_load_npy_2d_kept_as_is(tmp_path, rng):
    data = rng.normal(size=(12, 3))
    np.save(tmp_path / "x.npy", data)
    table = load_file(tmp_path / "x.npy")
    np.testing.assert_array_equal(table.x, data)  # not standardised
    assert table.x.dtype == np.float64
    assert table.y is None
    assert table.columns == ("0", "1", "2")
    assert table.name == "x"


def test_load_npy_1d_becomes_a_column(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(5))
    table = load_file(str(tmp_path / "x.npy"))
    assert table.x.shape == (5, 1) and table.x.dtype == np.float64
    np.testing.assert_array_equal(table.x[:, 0], np.arange(5.0))


def test_load_npy_target_by_index(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    table = load_file(tmp_path / "x.npy", target_column="1")
    np.testing.assert_array_equal(table.y, [1.0, 4.0, 7.0, 10.0])
    np.testing.assert_array_equal(table.x, np.arange(12.0).reshape(4, 3)[:, [0, 2]])
    assert table.columns == ("0", "2")


def test_load_csv_with_header(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,c\n1,2,3\n4,5.5,-6e1\n")
    table = load_file(tmp_path / "d.csv")
    assert table.columns == ("a", "b", "c")
    np.testing.assert_array_equal(table.x, [[1, 2, 3], [4, 5.5, -60]])
    assert table.y is None


def test_load_csv_without_header(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,3\n4,5,6\n7,8,9\n")
    table = load_file(tmp_path / "d.csv")
    assert table.columns == ("0", "1", "2")
    np.testing.assert_array_equal(table.x, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])


def test_load_csv_target_by_name(tmp_path):
    (tmp_path / "d.csv").write_text("a, label ,c\n1,0,3\n4,1,6\n")
    table = load_file(tmp_path / "d.csv", target_column="label")
    assert table.columns == ("a", "c")
    np.testing.assert_array_equal(table.x, [[1, 3], [4, 6]])
    np.testing.assert_array_equal(table.y, [0.0, 1.0])
    assert table.y.dtype == np.float64


def test_load_csv_target_by_index(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    table = load_file(tmp_path / "d.csv", target_column="2")
    assert table.columns == ("a", "b")
    np.testing.assert_array_equal(table.y, [3.0, 6.0])
    np.testing.assert_array_equal(table.x, [[1, 2], [4, 5]])


def test_load_csv_headerless_target_by_index(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,3\n4,5,6\n")
    table = load_file(tmp_path / "d.csv", target_column="0")
    np.testing.assert_array_equal(table.y, [1.0, 4.0])
    np.testing.assert_array_equal(table.x, [[2, 3], [5, 6]])


def test_load_csv_extension_is_case_insensitive(tmp_path):
    (tmp_path / "d.CSV").write_text("1,2\n3,4\n")
    assert load_file(tmp_path / "d.CSV").x.shape == (2, 2)


# ---- user files: every error names the parameter and the problem -------------------


def _error(path, **kwargs) -> str:
    with pytest.raises(ValueError) as error:
        load_file(path, **kwargs)
    message = str(error.value)
    assert message.startswith("The 'data' parameter") or message.startswith("The 'target' parameter")
    return message


def test_missing_file(tmp_path):
    message = _error(tmp_path / "nope.csv")
    assert message.startswith("The 'data' parameter")
    assert "nope.csv" in message and "not found" in message


def test_unsupported_extension(tmp_path):
    (tmp_path / "d.txt").write_text("1,2\n")
    message = _error(tmp_path / "d.txt")
    assert "d.txt" in message and "'.csv'" in message and "'.npy'" in message and "'.txt'" in message


def test_csv_empty_file_has_no_columns(tmp_path):
    (tmp_path / "d.csv").write_text("")
    assert "no columns" in _error(tmp_path / "d.csv")


def test_csv_header_only_has_no_rows(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n")
    message = _error(tmp_path / "d.csv")
    assert "no rows" in message and "d.csv" in message


def test_csv_non_numeric_column_is_named(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,species\n1,2,setosa\n3,4,virginica\n")
    message = _error(tmp_path / "d.csv")
    assert "numeric" in message and "'species'" in message and "'setosa'" in message


@pytest.mark.parametrize(
    "text, where, kind",
    [
        ("a,b,c\n1,2,3\n4,,6\n", "row 1, column 'b'", "NaN"),
        ("a,b,c\n1,2,nan\n4,5,6\n", "row 0, column 'c'", "NaN"),
        ("1,2\n3,inf\n", "row 1, column '1'", "Inf"),
        ("1,2\n3,4,5\n", None, "parse"),
    ],
)
def test_csv_non_finite_or_ragged(tmp_path, text, where, kind):
    (tmp_path / "d.csv").write_text(text)
    message = _error(tmp_path / "d.csv")
    assert message.startswith("The 'data' parameter") and "d.csv" in message and kind in message
    if where:
        assert where in message


def test_csv_short_row_is_missing_value(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,3\n4,5\n")
    assert "row 1, column '2'" in _error(tmp_path / "d.csv")


def test_npy_nan_position(tmp_path):
    data = np.ones((4, 3))
    data[2, 1] = np.nan
    data[3, 0] = np.inf
    np.save(tmp_path / "x.npy", data)
    message = _error(tmp_path / "x.npy")
    assert "row 2, column '1'" in message and "NaN" in message


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
def test_npy_wrong_ndim(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.ones(shape))
    message = _error(tmp_path / "x.npy")
    assert "ndim" in message and str(len(shape)) in message and "x.npy" in message


@pytest.mark.parametrize("shape, problem", [((0, 3), "no rows"), ((0,), "no rows"), ((4, 0), "no columns")])
def test_npy_empty(tmp_path, shape, problem):
    np.save(tmp_path / "x.npy", np.ones(shape))
    assert problem in _error(tmp_path / "x.npy")


@pytest.mark.parametrize("array", [np.array(["a", "b"]), np.array([1 + 2j, 3j]), np.array([{}, 1], dtype=object)])
def test_npy_not_real_numbers(tmp_path, array):
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    message = _error(tmp_path / "x.npy")
    assert message.startswith("The 'data' parameter") and "x.npy" in message


def test_npy_corrupt_file(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not an array")
    assert "x.npy" in _error(tmp_path / "x.npy")


@pytest.mark.parametrize("target_column", ["label", "3", "-1"])
def test_unknown_target_column_lists_columns(tmp_path, target_column):
    (tmp_path / "d.csv").write_text("a,b,c\n1,2,3\n")
    message = _error(tmp_path / "d.csv", target_column=target_column)
    assert message.startswith("The 'target' parameter")
    assert f"'{target_column}'" in message and "['a', 'b', 'c']" in message


def test_target_as_only_column_leaves_no_features(tmp_path):
    (tmp_path / "d.csv").write_text("y\n1\n2\n")
    assert "no feature columns" in _error(tmp_path / "d.csv", target_column="y")
