"""`initscope inspect` on hostile files and models (issue 14): each test reproduces a reported defect."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'initscope[torch]')")

from initscope.cli.app import main  # noqa: E402

FACTORY = """
import sys
import torch


def make():
    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def exits():
    sys.exit(0)


class Quits(torch.nn.Module):
    def forward(self, x):
        sys.exit(0)


def quits():
    return Quits()
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(FACTORY)
    return path


def inspect_cli(capsys, tmp_path, spec, *extra):
    out = tmp_path / "out"
    code = main(["inspect", spec, "--out", str(out), "--no-report", "--quiet", *extra])
    return code, capsys.readouterr().err, out


def test_raw_pickle_as_weights_is_refused_without_torch_warnings(capsys, tmp_path, factory):
    weights = tmp_path / "raw.pt"
    weights.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=4))  # warnings would be errors here too
    code, err, out = inspect_cli(capsys, tmp_path, f"{factory}:make", "--input-shape", "4,8", "--weights", str(weights))
    assert code == 2
    assert err.count("\n") == 1 and "'weights'" in err and "UserWarning" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("name,where", [("exits", "factory"), ("quits", "forward pass")])
def test_sys_exit_in_user_code_is_an_error_not_a_silent_success(capsys, tmp_path, factory, name, where):
    code, err, out = inspect_cli(capsys, tmp_path, f"{factory}:{name}", "--input-shape", "4,8")
    assert code == 2, err
    assert "sys.exit(0)" in err and where in err and err.count("\n") == 1, err
    assert not out.exists()


def test_empty_npy_file_as_input_names_the_parameter(capsys, tmp_path, factory):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    code, err, _ = inspect_cli(capsys, tmp_path, f"{factory}:make", "--input", str(empty))
    assert code == 2 and "'input'" in err and "aborted" not in err, err


def test_npz_named_npy_as_input_names_the_parameter(capsys, tmp_path, factory):
    archive = tmp_path / "x.npz"
    np.savez(archive, x=np.ones((4, 8)))
    renamed = tmp_path / "x.npy"
    archive.rename(renamed)
    code, err, _ = inspect_cli(capsys, tmp_path, f"{factory}:make", "--input", str(renamed))
    assert code == 2 and "'input'" in err and ".npz" in err, err


def test_huge_seed_names_the_parameter(capsys, tmp_path, factory):
    code, err, _ = inspect_cli(capsys, tmp_path, f"{factory}:make", "--input-shape", "4,8", "--seed", str(2**64))
    assert code == 2 and "'seed'" in err, err
