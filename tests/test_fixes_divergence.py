"""compare-fixes: the certificate reuses the trained networks, a diverging fix is reported (depth, step),
progress over fixes × depths, and an empty --fixes is bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from initscope.cli.app import main
from initscope.study import model
from initscope.study.fixes import compare_fixes, divergence, plan_fixes


def test_init_training_runs_once_per_fix_and_depth(monkeypatch):
    calls = []
    train = model._train
    monkeypatch.setattr(model, "_train", lambda *a: calls.append(a[1]) or train(*a))
    _, outcomes = compare_fixes(["forward-gradient"], depths=(3,), trials=2, workers=1, init_train_steps=4)
    assert calls == ["kaiming-normal"]  # the run's training, reused by the certificate
    assert len(outcomes[0].certificate) and len(outcomes[0].result.train_log)


def test_a_diverging_fix_is_reported_with_its_depth():
    _, outcomes = compare_fixes(["kaiming", "kaiming+layernorm"], depths=(30,), trials=2, workers=1, gain=4.0,
                                metrics="rms")
    loud, normed = outcomes
    assert loud.diverged is not None and loud.diverged.startswith("diverged at depth 30: the last layer's rms is")
    assert normed.diverged is None  # layer norm holds the scale whatever the gain


def test_a_training_that_makes_things_worse_names_its_step():
    metrics = pd.DataFrame({"layer": [0, 5], "metric": ["rms", "rms"], "value": [1.0, 2.0]})
    log = pd.DataFrame({"step": [0, 1, 2, 3], "objective": [-10.0, -12.0, -25.0, -30.0], "trial": 0})
    result = type("R", (), {"metrics": metrics, "train_log": log})()
    words = divergence(result, 5)
    assert words == ("diverged at depth 5: the last layer's rms is 2x the input's; its init training made the "
                     "objective worse from step 2 (-10 at step 0, -30 at step 3)")
    result.train_log = log.assign(objective=[-10.0, -9.0, -8.0, -7.0])
    assert divergence(result, 5) is None


def test_progress_over_fixes_and_depths():
    seen = []
    compare_fixes(["normal", "sphere"], depths=(2, 3), trials=2, workers=1, metrics="rms",
                  progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (400, 400) and all(total == 400 for _, total in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) > 4


def test_no_fixes_is_bad_input(tmp_path, capsys):
    for given in ("", " , "):
        assert main(["compare-fixes", "--fixes", given, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "The 'fixes' parameter must name at least one fix" in err[0]
    with pytest.raises(ValueError, match="'fixes'"):
        plan_fixes([])
    assert not (tmp_path / "o").exists()
