"""Real data: scikit-learn's bundled datasets and the user's own files.

Every loader returns a :class:`Table` with float64 features ``x: (N, d)``
and an optional target ``y: (N,)``. Bad files raise ``ValueError`` naming
the 'data' (or 'target') parameter, the path and the problem.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from initscope.study.files import DATA_LIMIT, regular_file

REAL = ("digits", "iris", "wine", "breast_cancer", "diabetes")

_EXTENSIONS = (".csv", ".npy")


@dataclass(frozen=True, eq=False)
class Table:
    """Features ``x: (N, d)`` float64, target ``y: (N,)`` float64 or None."""

    x: np.ndarray
    y: np.ndarray | None
    name: str
    columns: tuple[str, ...]


@functools.lru_cache(maxsize=None)  # five small tables, read-only: loaded once per process
def load_real(name: str) -> Table:
    """One of scikit-learn's bundled datasets, with standardised features.

    ``sklearn.datasets.load_<name>`` ships with scikit-learn, so nothing is
    downloaded. Each feature column is scaled to zero mean and unit variance
    (population variance); a constant column becomes all 0. ``y`` is the
    dataset's target (class label or regression value) as float64.
    """
    if name not in REAL:
        raise ValueError(f"The 'data' parameter must be one of {list(REAL)}. Got {name!r} instead.")
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    x = standardise(np.asarray(bunch.data, dtype=np.float64))
    y = np.asarray(bunch.target, dtype=np.float64)
    columns = tuple(str(c) for c in bunch.feature_names)
    x.flags.writeable = y.flags.writeable = False  # one copy shared by every run of this process
    return Table(x=x, y=y, name=name, columns=columns)


def standardise(x: np.ndarray) -> np.ndarray:
    """``x: (N, d)`` with each column at zero mean and unit variance; constant columns become 0."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    scale = centred.std(axis=0)
    # Testing max == min, not std == 0: rounding can leave a constant
    # column with a tiny non-zero std, and dividing by it would amplify noise.
    constant = x.max(axis=0, initial=-np.inf) == x.min(axis=0, initial=np.inf)
    scale[constant] = 1.0
    centred[:, constant] = 0.0
    return centred / scale


def load_file(path: str | os.PathLike, *, target_column: str | None = None) -> Table:
    """Load the user's data from a ``.npy`` or ``.csv`` file.

    - ``.npy``: a real numeric array, read without pickle; 1-D becomes
      ``(N, 1)``, 2-D is kept. Columns are named ``"0"``, ``"1"``, ...
    - ``.csv``: the first row is a header if any of its cells is not a
      number; otherwise there is no header and columns are named ``"0"``,
      ``"1"``, ... Every other cell must be a number; an empty cell counts as
      missing (NaN).

    ``target_column`` (a column name, or a column index as a string) is
    removed from ``x`` and returned as ``y``. Features are NOT standardised:
    they are the user's data, used as given.
    """
    path = Path(path)
    # What the name is and how big, before a byte is read: a FIFO, a device or a loop is refused here.
    size = regular_file(path, parameter="data", what=".csv or .npy file", limit=DATA_LIMIT)
    suffix = path.suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ValueError(
            f"The 'data' parameter must be a file ending in one of {list(_EXTENSIONS)}. "
            f"Got '{path}' (extension {path.suffix!r})."
        )
    # A run asks for its table several times (config check, sample note, the run): parsed once while
    # the file is unchanged (same inode, size and modification time).
    info = os.stat(path)
    key = (os.path.realpath(path), target_column, info.st_ino, info.st_mtime_ns, size)
    kept = _TABLES.get(key)
    if kept is not None:
        return kept
    table = _load_file(path, target_column, size)
    _TABLES.clear()  # one table kept: a sweep over files must not hold them all
    _TABLES[key] = table
    return table


_TABLES: dict[tuple, Table] = {}


def _load_file(path: Path, target_column: str | None, size: int) -> Table:
    suffix = path.suffix.lower()
    values, columns = _read_npy(path, size) if suffix == ".npy" else _read_csv(path)
    _check_finite(path, values, columns)
    y = None
    if target_column is not None:
        j = _column_index(path, columns, target_column)
        y = values[:, j].copy()
        values = np.delete(values, j, axis=1)
        columns = columns[:j] + columns[j + 1 :]
        if not columns:
            raise ValueError(f"The 'data' parameter: file '{path}' has no feature columns left once the target is removed.")
    values.flags.writeable = False  # shared by every caller of the kept table
    if y is not None:
        y.flags.writeable = False
    return Table(x=values, y=y, name=path.stem, columns=columns)


def _npy_header_fits(path: Path, size: int) -> None:
    """Refuse a .npy whose header claims more bytes than the file holds (10^12 rows in a small file),
    before numpy allocates what the header claims."""
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as fh:
            version = npy.read_magic(fh)
            reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = reader(fh, max_header_size=10_000)
            offset = fh.tell()
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"The 'data' parameter: could not read '{path}' as a .npy array ({error}).") from None
    if dtype.hasobject:
        raise ValueError(f"The 'data' parameter must be a file of real numbers. Got '{path}' with dtype {dtype} "
                         f"(Python objects, which would need pickle).")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > size - offset:
        raise ValueError(f"The 'data' parameter: '{path}' is truncated or corrupt: its header claims shape "
                         f"{shape} ({claimed} bytes of {dtype}), the file holds {size - offset} after it.")


def _read_npy(path: Path, size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    with open(path, "rb") as fh:
        is_npy = fh.read(6) == b"\x93NUMPY"  # else np.load says what it is (an .npz, or not numpy at all)
    if is_npy:
        _npy_header_fits(path, size)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"The 'data' parameter: could not read '{path}' as a .npy array ({error}).") from None
    if not isinstance(array, np.ndarray):  # np.load reads an .npz archive whatever the file is called
        names = list(array.files)
        array.close()
        raise ValueError(f"The 'data' parameter must be a .npy array file. Got '{path}', which is an .npz archive "
                         f"(arrays {names[:5]}); save one array with numpy.save instead.")
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"The 'data' parameter must be a file of real numbers. Got '{path}' with dtype {array.dtype} (not numeric)."
        )
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"The 'data' parameter must be a 1-D or 2-D array (N samples, d features). "
            f"Got '{path}' with shape {array.shape} (wrong ndim {array.ndim})."
        )
    _check_size(path, array.shape)
    return array.astype(np.float64), tuple(str(j) for j in range(array.shape[1]))


def _read_csv(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    import pandas as pd

    # Fast path: an all-numeric file without a header parses straight to float64 in C.
    # Anything else (a header, a text cell) falls to the careful path below, which also
    # says where the problem is. A 50 × 5000 CSV: 0.3 s here, 10 s cell by cell.
    try:
        values = pd.read_csv(path, header=None, dtype=np.float64, skipinitialspace=True).to_numpy()
    except (ValueError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        pass
    else:
        _check_size(path, values.shape)
        return values, tuple(str(j) for j in range(values.shape[1]))
    try:
        cells = pd.read_csv(path, header=None, dtype=str, na_filter=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"The 'data' parameter: file '{path}' is empty (no columns).") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"The 'data' parameter: could not parse '{path}' as CSV ({error}).") from None
    cells = cells.apply(lambda column: column.str.strip())
    numbers = cells.apply(pd.to_numeric, errors="coerce")
    # Empty cells are missing values; any other cell that does not parse is text.
    text = numbers.isna() & (cells != "") & (cells.apply(lambda column: column.str.lower()) != "nan")
    has_header = len(cells) > 0 and bool(text.iloc[0].any())
    if has_header:
        columns = tuple(cells.iloc[0])
        cells, numbers, text = cells.iloc[1:], numbers.iloc[1:], text.iloc[1:]
    else:
        columns = tuple(str(j) for j in range(cells.shape[1]))
    _check_size(path, (len(cells), len(columns)))
    bad_columns = np.flatnonzero(text.to_numpy().any(axis=0))
    if bad_columns.size:
        j = bad_columns[0]
        i = int(np.argmax(text.iloc[:, j].to_numpy()))
        raise ValueError(
            f"The 'data' parameter: every column of '{path}' must be numeric. "
            f"Column '{columns[j]}' is not (row {i} holds {cells.iat[i, j]!r}; rows count from 0 after any header)."
        )
    return numbers.to_numpy(dtype=np.float64), columns


def _check_size(path: Path, shape: tuple[int, int]) -> None:
    if shape[0] == 0:
        raise ValueError(f"The 'data' parameter: file '{path}' has no rows (shape {shape}).")
    if shape[1] == 0:
        raise ValueError(f"The 'data' parameter: file '{path}' has no columns (shape {shape}).")


def _check_finite(path: Path, values: np.ndarray, columns: tuple[str, ...]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        kind = "NaN or an empty cell" if np.isnan(values[i, j]) else f"{values[i, j]} (Inf)"
        raise ValueError(
            f"The 'data' parameter: file '{path}' must hold finite numbers only. It holds {kind} "
            f"first at row {i}, column '{columns[j]}' (rows count from 0 after any header)."
        )


def _column_index(path: Path, columns: tuple[str, ...], target_column: str) -> int:
    name = str(target_column)
    matches = [j for j, column in enumerate(columns) if column == name]
    if len(matches) == 1:
        return matches[0]
    if not matches and name.isdecimal() and 0 <= int(name) < len(columns):
        return int(name)
    problem = "it names more than one column" if matches else "no such column"
    raise ValueError(
        f"The 'target' parameter must be one column of '{path}': a name in {list(columns)} "
        f"or an index 0..{len(columns) - 1}. Got {name!r} instead ({problem})."
    )
