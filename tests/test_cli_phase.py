"""`initscope phase`, through main([...]) and as a subprocess."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from initscope.cli.app import main

SMALL = ["--sigma-w2", "1.2,1.8,3", "--sigma-b2", "0.05,0.2"]


def test_phase_writes_theory_tables_and_report(tmp_path, capsys):
    out = tmp_path / "phase"
    assert main(["phase", *SMALL, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"phase_theory.csv", "phase_critical.csv", "phase.toml", "report.html",
                                               ".initscope"}  # the marker of the one output writer
    theory = pd.read_csv(out / "phase_theory.csv")
    assert len(theory) == 6 and theory["phase"].tolist()[:3] == ["ordered", "chaotic", "chaotic"]
    critical = pd.read_csv(out / "phase_critical.csv")
    assert critical["sigma_w2_critical"].iloc[0] == pytest.approx(1.761, abs=1e-3)
    page = (out / "report.html").read_text()
    assert 'id="fig-phase"' in page and 'id="fig-measured"' not in page and "initscope phase --activation tanh" in page
    printed = capsys.readouterr().out
    assert "σ_b² = 0.05: χ₁ = 1 at σ_w² = 1.7610" in printed


def test_phase_measure_writes_measured_tables(tmp_path):
    out = tmp_path / "phase"
    args = ["phase", *SMALL, "--measure", "--measure-sigma-w2", "1.2", "--measure-sigma-b2", "0.3",
            "--width", "64", "--depth", "8", "--networks", "2", "--samples", "8", "--out", str(out)]
    assert main(args) == 0
    measured = pd.read_csv(out / "phase_measured.csv")
    assert len(measured) == 1 and measured["xi_c_theory"].iloc[0] == pytest.approx(2.217, abs=1e-3)
    decay = pd.read_csv(out / "phase_decay.csv")
    assert len(decay) == 3 * 2 * 8 and set(decay["group"]) == {"A", "B", "C"}
    assert measured["xi_q_theory"].iloc[0] == pytest.approx(0.833, abs=1e-3)
    page = (out / "report.html").read_text()
    assert 'id="fig-measured"' in page and 'id="fig-decay"' in page and 'id="fig-length-decay"' in page


@pytest.mark.parametrize("args, name", [(["--sigma-w2", "a"], "sigma_w2"), (["--nodes", "0"], "nodes"),
                                        (["--width", "wide"], "width"), (["--activation", "swish"], "activation"),
                                        (["--measure", "--samples", "1"], "samples")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, name):
    assert main(["phase", *SMALL, *args, "--out", str(tmp_path / "x"), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"'{name}'" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_phase_as_a_subprocess(tmp_path):
    out = tmp_path / "phase"
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", "from initscope.cli import entry; entry()", "phase",
                           "--sigma-w2", "1.5", "--sigma-b2", "0.1", "--no-report", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "phase_theory.csv").is_file() and not (out / "report.html").exists()
