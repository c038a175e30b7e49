"""The Python API and config validation on unusual but valid, or hostile, input (issue 14)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import initscope
from initscope.cli.app import main
from initscope.study.config import MAX_SEED, MAX_SIZE, make_config

SMALL = dict(depth=2, width=6, samples=8, trials=1, init=["normal"])


def test_numpy_integers_are_integers():
    config = make_config(**{**SMALL, "depth": np.int64(3), "width": np.int32(6), "seed": np.uint64(7)})
    assert (config.depth, config.width, config.seed) == (3, 6, 7)
    assert type(config.depth) is int and type(config.seed) is int
    result = initscope.run(**{**SMALL, "depth": np.int64(3)})
    assert result.metrics["layer"].max() == 3


def test_data_as_a_path_object(tmp_path):
    data = tmp_path / "x.csv"
    np.savetxt(data, np.random.default_rng(0).standard_normal((10, 4)), delimiter=",")
    config = make_config(**{**SMALL, "data": pathlib.Path(data)})
    assert config.data == str(data.resolve()) and config.input_dim == 4
    assert initscope.run(**{**SMALL, "data": data}).config.data == str(data.resolve())


@pytest.mark.parametrize("field", ["width", "depth", "samples", "trials", "input_dim", "init_train_steps", "steps"])
def test_huge_integers_name_their_parameter(capsys, field):
    with pytest.raises(ValueError, match=f"The '{field}' parameter must be an integer >= .* and <= {MAX_SIZE}"):
        make_config(**{field: 99999999999999999999999999})
    code = main(["run", f"--{field.replace('_', '-')}", "99999999999999999999999999"])
    err = capsys.readouterr().err
    assert code == 2 and f"'{field}'" in err and "Maximum allowed dimension" not in err


def test_one_seed_bound_everywhere():
    assert make_config(seed=MAX_SEED).seed == MAX_SEED
    with pytest.raises(ValueError, match="'seed'"):
        make_config(seed=MAX_SEED + 1)
    with pytest.raises(ValueError, match="'seed'"):
        initscope.run(seed=99999999999999999999)


def test_npz_renamed_npy_as_data(tmp_path):
    archive = tmp_path / "x.npz"
    np.savez(archive, x=np.ones((5, 3)))
    renamed = tmp_path / "x.npy"
    archive.rename(renamed)
    with pytest.raises(ValueError, match="The 'data' parameter must be a .npy array file.*npz"):
        make_config(data=str(renamed), samples=5)


def test_symlink_loop_as_data(capsys, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(ValueError, match="The 'data' parameter"):
        make_config(data=str(a))
    assert main(["run", "--data", str(a), "--out", str(tmp_path / "o")]) == 2
    assert "'data'" in capsys.readouterr().err
