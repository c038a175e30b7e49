"""Task training in the study: step 0 is the untrained run, tables gain a step, the verdict and report say it."""

import numpy as np
import pandas as pd
import pytest

import initscope
from initscope.cli.app import main
from initscope.report.page import write_page
from initscope.report.tables import load_run
from initscope.study.train_summary import summary

SMALL = dict(depth=3, width=8, samples=24, trials=3, metrics="rms,effective_rank,grad_norm,linear_r2")


def test_step_zero_is_the_untrained_run_bit_for_bit():
    plain = initscope.run(**SMALL)
    trained = initscope.run(**SMALL, steps=4)
    assert len(plain.training) == 0 and plain.stepped == {}
    assert "step" not in plain.metrics.columns and "steps" not in plain.metrics.columns
    for name in ("metrics", "spectra", "flags"):
        table = trained.stepped[name]
        assert list(table.columns[:2]) == ["init", "step"]
        at0 = table[table["step"] == 0].drop(columns="step").reset_index(drop=True)
        ours = getattr(plain, name)
        common = [c for c in ours.columns if c in at0.columns]
        assert common == [c for c in ours.columns if c not in ("steps",)]
        pd.testing.assert_frame_equal(at0[common], ours[common], check_exact=True)
    # The step-0 tables of the result itself are the untrained ones (the verdict and flags read them).
    np.testing.assert_array_equal(trained.metrics["value"], plain.metrics["value"])
    assert sorted(trained.stepped["metrics"]["step"].unique()) == [0, 1, 2, 4]


def test_training_table_and_grad_norm_with_the_trained_readout():
    result = initscope.run(**SMALL, steps=5, init="sphere")
    t = result.training
    assert list(t.columns) == ["init", "trial", "step", "loss", "test_loss"]
    assert len(t) == 3 * 6 and t["step"].max() == 5
    assert np.isfinite(t["test_loss"]).all() and not np.array_equal(t["loss"], t["test_loss"])
    m = result.stepped["metrics"]
    grads = m[(m["metric"] == "grad_norm") & (m["layer"] >= 1)]
    # The post's zero readout: no gradient reaches the hidden layers at step 0; after a step it does.
    assert (grads[grads["step"] == 0]["value"] == 0).all()
    assert (grads[grads["step"] == 5]["value"] > 0).all()


@pytest.mark.slow
def test_the_posts_defaults_normal_fails_and_sphere_trains():
    result = initscope.run(steps=300, trials=4, metrics="rms")
    by = {s.init: s for s in summary(result.training)}
    assert by["normal"].diverged == 4 or by["normal"].factor < 2  # fails: diverges, or its loss barely falls
    assert by["sphere"].diverged == 0 and by["sphere"].factor >= 10
    assert by["sphere"].trained and not by["normal"].trained


def test_classification_on_a_dataset_has_accuracy_and_a_held_out_split():
    result = initscope.run(data="iris", target="dataset", depth=2, width=16, trials=2, steps=60, lr=0.1,
                           optimizer="adam", metrics="rms", init="kaiming-normal")
    t = result.training
    assert {"accuracy", "test_accuracy"} <= set(t.columns)
    last = t[t["step"] == 60]
    assert (last["accuracy"] > 0.8).all() and (last["test_accuracy"] > 0.6).all()
    assert (last["loss"] < t[t["step"] == 0]["loss"].to_numpy()).all()


def test_bad_training_input_names_the_field_and_exits_2(capsys, tmp_path):
    for flags, name in ((["--lr", "-1"], "lr"), (["--steps", "-3"], "steps"), (["--batch-size", "x"], "batch_size"),
                        (["--optimizer", "lbfgs"], "optimizer")):
        assert main(["run", "--out", str(tmp_path / "o"), *flags]) == 2
        assert f"'{name}' parameter must be" in capsys.readouterr().err
    csv = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    np.savetxt(csv, np.c_[rng.standard_normal((20, 3)), rng.standard_normal(20)], delimiter=",", header="a,b,c,y",
               comments="")
    code = main(["run", "--out", str(tmp_path / "o"), "--data", str(csv), "--target", "column:y", "--steps", "5",
                 "--task", "classification"])
    err = capsys.readouterr().err
    assert code == 2 and "'task'" in err and "is continuous" in err


def test_cli_run_with_steps_writes_training_and_a_report(capsys, tmp_path):
    out = tmp_path / "run"
    code = main(["run", "--out", str(out), "--depth", "3", "--width", "8", "--samples", "20", "--trials", "2",
                 "--metrics", "rms,effective_rank", "--steps", "6", "--optimizer", "momentum", "--lr", "0.02",
                 "--batch-size", "10", "--measure-at", "3", "--train-steps", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "--train-steps is deprecated: it is renamed --init-train-steps" in captured.err
    assert "Training (6 steps, momentum, lr 0.02, batch 10):" in captured.out
    assert "median loss" in captured.out
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics["step"].unique()) == [0, 3, 6]
    assert (pd.read_csv(out / "training.csv")["step"].unique() == np.arange(7)).all()
    tables = load_run(out)
    assert "step" not in tables.metrics.columns and len(tables.training) == 2 * 2 * 7
    write_page(tables, out / "again.html")
    page = (out / "again.html").read_text()
    assert 'id="training"' in page and "Trained 6 steps on the task" in page


def test_training_that_cannot_fit_is_refused_before_it_starts(capsys, tmp_path):
    code = main(["run", "--out", str(tmp_path / "o"), "--steps", "5", "--depth", "400", "--width", "400",
                 "--samples", "2000", "--memory-limit", "2GiB"])
    err = capsys.readouterr().err
    assert code == 2 and "parameter must be smaller to fit in memory" in err and "training (5 steps)" in err
    assert not (tmp_path / "o").exists()
