"""The verdict in words (study/verdict.py): sentences that follow the numbers of real runs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from initscope.study.flags import SCALE_BAND
from initscope.study.runner import run
from initscope.study.verdict import (
    LOST_DIRECTIONS, READOUT_NOTE, kept_directions, lost_direction_flags, per_layer_words, run_verdict,
)


def quiet_run(**fields):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings: the flags are the subject here
        return run(workers=1, **fields)


@pytest.fixture(scope="module")
def seed():
    return quiet_run(trials=4)


@pytest.fixture(scope="module")
def shrinking():
    """float32 sphere weights shrink the samples' spread ~0.7× a layer: directions fall under the floor."""
    return quiet_run(init=("sphere", "kaiming-normal"), depth=30, trials=3, dtype="float32", samples=60)


def verdict_of(result, **kw):
    return run_verdict(result.metrics, result.spectra, result.flags, config=result.config, gains=result.gains, **kw)


@pytest.mark.slow
def test_one_verdict_per_initializer_in_config_order_with_gain(seed):
    v = verdict_of(seed)
    assert [x.init for x in v.verdicts] == list(seed.config.init)
    assert [x.title for x in v.verdicts] == [f"{i} (gain {seed.gains[i]:.4g})" for i in seed.config.init]
    assert all(x.sentences for x in v.verdicts)


def test_scale_sentence_names_the_first_layer_outside_the_band(seed):
    normal = next(x for x in verdict_of(seed).verdicts if x.init == "normal")
    m = seed.metrics
    rms = m[(m.init == "normal") & (m.metric == "rms")].groupby("layer")["value"].median()
    ratio = rms / rms[0]
    first = int(ratio[(ratio.index >= 1) & ~ratio.between(*SCALE_BAND)].index[0])
    assert f"leaves [{SCALE_BAND[0]:g}, {SCALE_BAND[1]:g}]× the input's at layer {first}" in normal.text()
    sphere = next(x for x in verdict_of(seed).verdicts if x.init == "sphere")
    assert "stays within" in sphere.text()


def test_the_zero_readout_note_is_neutral(seed):
    v = verdict_of(seed)
    assert READOUT_NOTE in v.notes
    assert "not measured: the readout is zero, as in the post; use --readout init" in READOUT_NOTE
    with_readout = quiet_run(trials=2, depth=3, readout="init")
    assert READOUT_NOTE not in verdict_of(with_readout).notes


@pytest.mark.slow
def test_lost_directions_is_the_first_layer_whose_kept_count_falls_below_the_input(shrinking):
    flags = lost_direction_flags(shrinking.metrics, shrinking.spectra, shrinking.config)
    assert set(flags["flag"]) == {LOST_DIRECTIONS} and len(flags)
    kept = kept_directions(shrinking.spectra, shrinking.metrics, dtype="float32", samples=60,
                           width=shrinking.config.width, input_dim=shrinking.config.input_dim)
    for row in flags.itertuples():
        mine = kept[(kept.init == row.init) & (kept.trial == row.trial)].set_index("layer")["kept"]
        assert mine[row.layer] < mine[0]
        assert (mine[1:row.layer] >= mine[0]).all()  # none earlier
    sphere = next(x for x in verdict_of(shrinking).verdicts if x.init == "sphere")
    first = int(flags[flags.init == "sphere"]["layer"].min())
    assert f"From layer {first} (" in sphere.text() and "effectively lost" in sphere.text()


@pytest.mark.slow
def test_lost_derived_skips_only_work_already_done(seed, shrinking):
    # run()'s flags already carry the lost_directions rows (none for the seed, some for `shrinking`):
    # saying so gives the same verdict; flags without them (lost_derived=False) still get them derived.
    for result in (seed, shrinking):
        assert verdict_of(result, lost_derived=True) == verdict_of(result)
    bare = shrinking.flags[shrinking.flags["flag"] != LOST_DIRECTIONS]
    derived = run_verdict(shrinking.metrics, shrinking.spectra, bare, config=shrinking.config, gains=shrinking.gains)
    assert derived == verdict_of(shrinking)
    assert "effectively lost" in verdict_of(shrinking).verdicts[0].text()


def test_kept_directions_counts_against_the_absolute_floor():
    """A state whose spread is 1e-12 of its size keeps nothing above the floor, whatever its own σ_1."""
    spectra = pd.DataFrame({"init": "a", "trial": 0, "layer": [0, 0, 1, 1], "k": [1, 2, 1, 2],
                            "singular_value": [1.0, 0.5, 1e-10, 0.5e-10]})
    metrics = pd.DataFrame({"init": "a", "trial": 0, "layer": [0, 1], "metric": "rms", "value": [0.1, 1.0]})
    kept = kept_directions(spectra, metrics, dtype="float64", samples=100, width=10, input_dim=2)
    assert kept.set_index("layer")["kept"].to_dict() == {0: 2, 1: 0}
    flags = lost_direction_flags(metrics, spectra, {"samples": 100, "width": 10, "input_dim": 2, "dtype": "float64"})
    assert flags[["layer", "flag"]].values.tolist() == [[1, LOST_DIRECTIONS]]


def test_information_sentence_quotes_the_last_layer_medians(seed):
    m = seed.metrics
    depth = seed.config.depth
    for x in verdict_of(seed).verdicts:
        med = m[(m.init == x.init) & (m.layer == depth)].groupby("metric")["value"].median()
        assert f"linear_r2 {med['linear_r2']:.2f}" in x.text()
        assert f"distance_corr {med['distance_corr']:.2f}" in x.text()


def test_disagreeing_rankings_get_a_note_that_explains_them():
    metrics = pd.DataFrame({
        "init": ["a", "a", "b", "b"] * 2, "trial": [0] * 8, "layer": [0, 0, 0, 0, 5, 5, 5, 5],
        "metric": ["linear_r2", "distance_corr"] * 4, "value": [1, 1, 1, 1, 0.99, 0.5, 0.7, 0.9],
    })
    v = run_verdict(metrics)
    note = next(n for n in v.notes if n.startswith("linear_r2 and distance_corr rank"))
    assert "linear_r2: a > b; distance_corr: b > a" in note
    agreeing = metrics.assign(value=[1, 1, 1, 1, 0.99, 0.9, 0.7, 0.5])
    assert not any(n.startswith("linear_r2 and distance_corr") for n in run_verdict(agreeing).notes)


def test_certificate_sentence_when_one_was_computed(seed):
    cert = pd.DataFrame({"trial": [0, 0, 1, 1], "layer": [1, 2, 1, 2], "certified": [True, True, True, False]})
    v = verdict_of(seed, certificate={"sphere": cert})
    sphere = next(x for x in v.verdicts if x.init == "sphere")
    assert "The certificate fails in 1 of 2 trials, first at layer 2." in sphere.sentences
    normal = next(x for x in v.verdicts if x.init == "normal")
    assert not any("certificate" in s for s in normal.sentences)


@pytest.mark.parametrize(("factor", "words"), [(0.5, "halves at every layer"), (2.0, "doubles at every layer"),
                                                (0.8, "shrinks 0.8× per layer"), (4.5, "grows 4.5× per layer"),
                                                (1.01, "holds steady"), (math.nan, "")])
def test_per_layer_words(factor, words):
    assert per_layer_words(factor) == words


def test_html_escapes_every_string():
    metrics = pd.DataFrame({"init": "<b>x</b>", "trial": 0, "layer": [0, 1], "metric": "rms", "value": [1.0, 50.0]})
    page = run_verdict(metrics).to_html()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert page.startswith('<ul class="verdict">') and np.char.count(page, "<li>") == 1


def test_initscope_run_ends_with_the_verdict(capsys, tmp_path):
    from initscope.cli.app import main

    code = main(["run", "--out", str(tmp_path / "out"), "--trials", "2", "--depth", "3", "--no-report",
                 "--init", "normal,kaiming-normal"])
    out = capsys.readouterr().out
    assert code == 0
    tail = out[out.index("Verdict"):]
    assert tail.index("normal (gain 1)") < tail.index("kaiming-normal (gain 1.414)") < tail.index("note: ")
    assert "directions lost (under the noise floor): never" in out


@pytest.mark.parametrize("fields", [
    dict(init=("sphere", "kaiming-normal"), depth=30, trials=3, dtype="float32", samples=60),  # directions lost
    dict(init=("sphere",), depth=25, trials=4, dtype="float32", samples=50, metrics=("effective_rank",)),  # no rms
    dict(init=("normal", "orthogonal"), depth=12, trials=3, gain=40.0),  # overflow: no spectrum from some layer on
    dict(init=("sphere", "normal"), depth=20, trials=5, dtype="float32", samples=40, trial_ids=[4, 0, 3]),
])
@pytest.mark.slow
def test_the_run_derives_lost_directions_from_its_arrays_exactly_as_from_its_tables(fields):
    """run() adds the flag from the measured arrays (no pass over the long spectra table, for memory);
    it must be the very rows `lost_direction_flags` derives from the written tables."""
    result = quiet_run(**fields)
    mine = result.flags[result.flags["flag"] == LOST_DIRECTIONS].reset_index(drop=True)
    theirs = lost_direction_flags(result.metrics, result.spectra, result.config).reset_index(drop=True)
    assert mine[["init", "trial", "layer", "flag"]].astype(str).values.tolist() \
        == theirs.astype(str).values.tolist()
    if fields["depth"] == 30:
        assert len(mine)  # the case really exercises the flag
    rest = result.flags[result.flags["flag"] != LOST_DIRECTIONS]
    assert (result.flags.index[result.flags["flag"] == LOST_DIRECTIONS] >= len(rest)).all()  # last, as before


@pytest.mark.slow
def test_a_runs_flags_are_not_derived_again_but_a_loaded_table_is(shrinking, monkeypatch):
    """run() marks its flags complete; the summary, verdict and report then skip the derivation,
    while a table without the mark (read from CSV, or built by hand) still gets it."""
    from initscope.study import verdict as V

    calls = []
    real = V.lost_direction_flags
    monkeypatch.setattr(V, "lost_direction_flags", lambda *a, **k: calls.append(1) or real(*a, **k))
    seed_run = quiet_run(trials=3)  # no trial loses a direction: nothing in the rows says they were derived
    assert not (seed_run.flags["flag"] == LOST_DIRECTIONS).any()
    assert V.with_lost_directions(seed_run.metrics, seed_run.spectra, seed_run.flags, seed_run.config) is seed_run.flags
    run_verdict(seed_run.metrics, seed_run.spectra, seed_run.flags, config=seed_run.config)
    assert calls == []
    plain = pd.DataFrame(shrinking.flags[shrinking.flags["flag"] != LOST_DIRECTIONS].to_dict("list"))
    plain = plain if len(plain) else pd.DataFrame(columns=["init", "trial", "layer", "flag"])
    again = V.with_lost_directions(shrinking.metrics, shrinking.spectra, plain, shrinking.config)
    assert calls == [1]
    assert (again["flag"] == LOST_DIRECTIONS).sum() == (shrinking.flags["flag"] == LOST_DIRECTIONS).sum() > 0
