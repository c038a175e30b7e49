"""Hostile inputs: files judged before they are read (devices, FIFOs, huge or lying files), and values that
overflow or only look like numbers; each is one line naming its parameter and exit 2, or a ValueError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import initscope
from initscope.cli import main
from initscope.study import datasets
from initscope.study.config import load_config, make_config
from initscope.study.files import read_bounded, regular_file

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_config_from_a_device_a_fifo_or_a_folder_is_refused_unread(tmp_path, capsys):
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "character device"), (fifo, "FIFO"), (tmp_path, "folder")):
        with pytest.raises(ValueError, match=f"The 'config' parameter must be a regular TOML file.*{kind}"):
            load_config(path)
        assert main(["run", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
        assert main(["sweep", str(path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("initscope: error: The 'config' parameter") == 6


def test_config_over_its_limit_and_a_file_that_grows(tmp_path, monkeypatch):
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2**20) + b"\n")
    with pytest.raises(ValueError, match=r"'config' parameter must be a TOML file of at most 1 MiB"):
        load_config(big)
    # A file that reports a small size and reads longer (as under /proc) is cut off at the limit.
    assert read_bounded("/proc/self/status", parameter="x", what="file", limit=2**16)
    with pytest.raises(ValueError, match="grew past it while read"):
        read_bounded("/proc/self/status", parameter="x", what="file", limit=10)


def test_config_on_a_fifo_does_not_hang_the_command(tmp_path):
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run([sys.executable, "-c", "from initscope.cli import entry; entry()", "run", "--config",
                           str(fifo)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "FIFO" in done.stderr


def test_data_names_that_cannot_exist(tmp_path):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(tmp_path / "loop2.csv")
    (tmp_path / "loop2.csv").symlink_to(loop)
    for name in ("a\x00b.csv", "a" * 300 + ".csv", str(loop), str(tmp_path / "dev.csv")):
        with pytest.raises(ValueError, match="The 'data' parameter"):
            make_config(data=name)
    os.symlink("/dev/zero", tmp_path / "zero.csv")
    with pytest.raises(ValueError, match="The 'data' parameter.*'/dev/zero'"):
        make_config(data=str(tmp_path / "zero.csv"))
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(ValueError, match="The 'data' parameter must be a regular .csv or .npy file.*FIFO"):
        make_config(data=str(tmp_path / "fifo.csv"))


def test_an_npy_header_that_claims_more_than_the_file_holds(tmp_path):
    from numpy.lib import format as npy

    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        npy.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
        fh.write(b"\0" * 64)
    with pytest.raises(ValueError, match=r"'data' parameter: .* is truncated or corrupt: .*\(1000000000000, 3\)"):
        make_config(data=str(path))
    assert main(["run", "--data", str(path), "--out", str(tmp_path / "o")]) == 2
    good = tmp_path / "good.npy"
    np.save(good, np.arange(12.0).reshape(4, 3))
    assert make_config(data=str(good)).input_dim == 3


def test_regular_file_reports_size():
    assert regular_file(__file__, parameter="x", what="file", limit=10**9) == Path(__file__).stat().st_size


def test_values_past_float_range_or_in_other_scripts(tmp_path, capsys):
    with pytest.raises(ValueError, match="The 'gain' parameter must be a finite number"):
        make_config(gain=10**400)
    config = tmp_path / "c.toml"
    config.write_text(f"gain = {10**400}\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    for flag, value in (("--depth", "４"), ("--width", "٣"), ("--gain", "１.５"), ("--trials", "²")):
        assert main(["run", flag, value, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'gain'" in err and "'depth'" in err and "'width'" in err and "'trials'" in err
    with pytest.raises(ValueError, match="The 'depth' parameter"):
        initscope.run(depth="４")


def test_a_data_file_is_parsed_once_per_run(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.5f}" for v in row) for row in rng.normal(size=(40, 3))))
    calls = []
    parse = datasets._load_file
    monkeypatch.setattr(datasets, "_load_file", lambda *a: calls.append(a) or parse(*a))
    datasets._TABLES.clear()
    result = initscope.run(data=str(path), samples=20, depth=2, trials=2, metrics=["rms"])
    assert len(calls) == 1 and result.config.input_dim == 3
    # A changed file is read again.
    path.write_text("a,b\n1,2\n3,4\n5,6\n")
    assert make_config(data=str(path)).input_dim == 2 and len(calls) == 2
    table = datasets.load_file(path)
    with pytest.raises(ValueError, match="read-only"):
        table.x[0, 0] = 1.0  # the kept table is shared: nobody may change it


def test_certify_rtol_and_trials_name_their_parameter(tmp_path, capsys):
    for value in ("1e300", "1", "-0.1", "nan", "１e-3"):
        assert main(["certify", "--rtol", value, "--depth", "2"]) == 2
        assert "The 'rtol' parameter must be a finite number >= 0 and < 1" in capsys.readouterr().err
    assert main(["certify", "--trials", "1000000"]) == 2
    assert "The 'trials' parameter must be smaller to fit in memory" in capsys.readouterr().err


def test_input_dim_with_a_data_file_says_it_is_ignored(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n7,8,1\n1,1,1\n")
    assert main(["run", "--data", str(path), "--input-dim", "50", "--depth", "2", "--trials", "1", "--no-report",
                 "--quiet", "--out", str(tmp_path / "o")]) == 0
    assert "note: --input-dim 50 ignored: data" in capsys.readouterr().err
    assert main(["run", "--data", str(path), "--input-dim", "3", "--depth", "2", "--trials", "1", "--no-report",
                 "--quiet", "--out", str(tmp_path / "o2")]) == 0
    assert "ignored" not in capsys.readouterr().err


def test_phase_grid_keeps_tiny_and_huge_values():
    from initscope.study.phase import parse_grid

    assert parse_grid("1e-13", "sigma_w2") == (1e-13,)
    assert parse_grid("1e300", "sigma_w2") == (1e300,)
    assert parse_grid("1:4:25", "sigma_w2")[1] == 1.125
