"""The output writer against a hostile or careless --out: a `.initscope` that is not initscope's marker, a
folder inside --out that links out of it, and an interrupted run leaving the previous folder as it was."""

from __future__ import annotations

import json
import os

import pytest

from initscope.cli.app import main
from initscope.study.writer import MARKER, read_marker

SMALL = ["--trials", "1", "--depth", "2", "--width", "8", "--samples", "10", "--no-report", "--quiet"]


def snapshot(folder):
    """Every entry under folder (links not followed): relpath -> bytes, 'dir' or 'link:TARGET'."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = "dir"
            else:
                with open(path, "rb") as fh:
                    out[rel] = fh.read()
    return out


@pytest.mark.parametrize("content", [b"my notes\n", b'{"files": {}}\n', b"{}"])
def test_a_users_own_initscope_file_is_foreign(capsys, tmp_path, content):
    out = tmp_path / "o"
    out.mkdir()
    (out / MARKER).write_bytes(content)
    assert read_marker(out) is None
    assert main(["run", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'.initscope'" in err or ".initscope" in err, err
    assert (out / MARKER).read_bytes() == content and sorted(p.name for p in out.iterdir()) == [MARKER]
    # --overwrite writes initscope's names, the marker's among them (what --overwrite promises).
    assert main(["run", *SMALL, "--out", str(out), "--overwrite"]) == 0
    assert read_marker(out) is not None and (out / "metrics.csv").is_file()


def test_a_folder_or_a_link_named_initscope(capsys, tmp_path):
    out = tmp_path / "o"
    (out / MARKER).mkdir(parents=True)
    (out / MARKER / "mine.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        assert main(["run", *SMALL, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert "initscope: error: The 'out' parameter" in err and "is a folder there" in err, err
    assert (out / MARKER / "mine.txt").read_text() == "keep"
    # A link named .initscope to a real marker elsewhere is not this folder's marker.
    good = tmp_path / "good"
    assert main(["run", *SMALL, "--out", str(good)]) == 0
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / MARKER).symlink_to(good / MARKER)
    assert read_marker(linked) is None
    assert main(["run", *SMALL, "--out", str(linked)]) == 2
    assert json.loads((good / MARKER).read_text())["files"]


def test_overwrite_never_writes_through_a_link_out_of_out(capsys, tmp_path):
    out, elsewhere = tmp_path / "o", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("mine")
    assert main(["run", *SMALL, "--out", str(out)]) == 0
    (out / "figures").symlink_to(elsewhere, target_is_directory=True)
    before_out, before_elsewhere = snapshot(out), snapshot(elsewhere)
    argv = ["run", "--trials", "1", "--depth", "2", "--width", "8", "--samples", "10", "--quiet", "--png",
            "--out", str(out), "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'figures' there is a link leading out of it" in err, err
    assert snapshot(elsewhere) == before_elsewhere  # nothing written outside --out
    assert snapshot(out) == before_out  # and the previous folder exactly as it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".initscope-")]
