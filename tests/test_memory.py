"""Memory planning (issue 14, item 3): the peak is estimated before anything is allocated.

A run whose estimate exceeds the budget either runs in smaller chunks (with
exactly the same numbers) or is refused at once, exit 2, naming the
parameter that drives the estimate and both sizes.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import numpy as np
import pytest

import initscope
from initscope.cli.app import main
from initscope.study.config import make_config
from initscope.study.memory import (
    DEFAULT_SHARE,
    MemoryBudgetError,
    MemoryPlanWarning,
    available_memory,
    format_bytes,
    memory_budget,
    parse_memory,
    plan_run,
    run_estimate,
)


@pytest.mark.parametrize("text,want", [("4000", 4000), (4000, 4000), ("512MiB", 512 * 2**20), ("4 GB", 4 * 10**9),
                                       ("2G", 2 * 10**9), ("1.5GiB", int(1.5 * 2**30)), ("1e9", 10**9)])
def test_parse_memory(text, want):
    assert parse_memory(text) == want


@pytest.mark.parametrize("text", ["", "lots", "-4G", "4 parsecs", "0", "nan", True, None])
def test_parse_memory_rejects_with_the_parameter(text):
    with pytest.raises(ValueError, match="The 'memory_limit' parameter must be a size"):
        parse_memory(text)


def test_default_budget_is_a_share_of_available_memory():
    available = available_memory()
    assert available is not None and available > 0  # Linux: /proc/meminfo
    assert memory_budget() == pytest.approx(DEFAULT_SHARE * available, rel=0.2)  # memory moves meanwhile
    assert memory_budget("1GiB") == 2**30


def test_estimate_grows_with_what_the_runner_holds():
    base = make_config(width=100, depth=5, samples=50, trials=4)
    est = run_estimate(base, 4, 1)
    wider = run_estimate(make_config(width=200, depth=5, samples=50, trials=4), 4, 1)
    assert wider.parts["weights"][0] == 4 * est.parts["weights"][0]
    assert run_estimate(base, 2, 1).total < est.total  # fewer trials in flight
    assert "jacobian" not in run_estimate(make_config(width=100, metrics="rms"), 4, 1).parts
    f32 = run_estimate(make_config(width=100, depth=5, samples=50, trials=4, dtype="float32"), 4, 1)
    assert f32.parts["weights"][0] * 2 == est.parts["weights"][0]


@pytest.mark.parametrize("fields,param", [
    (dict(width=200000, depth=100), "width"),
    (dict(trials=1000000), "trials"),
    (dict(depth=2**31 - 1), "depth"),
    (dict(input_dim=10**8, width=40, samples=64, metrics="jacobian_rank"), "input_dim"),
    (dict(samples=200000, width=4000, metrics="rms"), "samples"),
])
def test_plan_refuses_naming_the_driving_parameter(fields, param):
    config = make_config(**fields)
    with pytest.raises(MemoryBudgetError, match=f"The '{param}' parameter must be smaller") as info:
        plan_run(config, 2, 8 * 2**30)
    assert "GiB" in str(info.value) and format_bytes(8 * 2**30) in str(info.value)


def test_plan_keeps_the_requested_split_when_it_fits_and_shrinks_it_otherwise():
    config = make_config(width=300, depth=3, samples=40, trials=16)
    roomy = plan_run(config, 4, 2**40)
    assert (roomy.trials_per_chunk, roomy.concurrent, roomy.chunked) == (4, 4, False)
    one = run_estimate(config, 1, 1).total
    tight = plan_run(config, 4, one + (one // 2))
    assert tight.chunked and tight.trials_per_chunk * tight.concurrent < 16
    assert tight.estimate.total <= one + one // 2


# Not layer norm: with ReLU it leaves directions whose singular values sit at 1e-16..1e-14 of the
# largest, right at matrix_rank's threshold, where the two products' rounding may count differently.
@pytest.mark.parametrize("norm,residual", [("none", 0.0), ("batch", 0.5), ("none", 1.0), ("batch", 0.0)])
def test_jacobian_triangle_gives_the_ranks_of_the_full_tangent(rng, norm, residual):
    """Wide inputs (d ≫ w): the (w, w) triangle of layer 1's tangent stands for the (d, w) tangent."""
    from initscope.core import metrics as M
    from initscope.core.network import Architecture, batch_norm_sigma, layer_forward, layer_jvp
    from initscope.core.numerics import qr_triangle

    T, n, d, w, L = 2, 12, 50, 6, 4
    arch = Architecture("relu", norm, residual)
    X = rng.standard_normal((T, n, d))
    full = np.broadcast_to(np.eye(d), (T, n, d, d)).copy()
    S, tri = X, None
    for layer in range(1, L + 1):
        W = rng.standard_normal((T, S.shape[2], w)) / np.sqrt(S.shape[2])
        if layer == 3:
            W[:, :, :2] = 0  # rank-deficient from here on: ranks below w
        S_next, z = layer_forward(S, W, np.zeros((T, w)), arch, keep_pre=True)
        sigma = batch_norm_sigma(z, arch)
        full = layer_jvp(full, W, z, arch, sigma)
        tri = qr_triangle(full) if layer == 1 else layer_jvp(tri, W, z, arch, sigma)
        np.testing.assert_array_equal(M.jacobian_rank(tri, input_dim=d), M.jacobian_rank(full))
        S = S_next
    assert M.jacobian_rank(full).max() < w / d  # the deficient layers were reached


@pytest.mark.parametrize("argv,param", [
    (["run", "--width", "200000", "--depth", "100"], "width"),
    (["run", "--trials", "1000000"], "trials"),
    (["run", "--width", "3000", "--memory-limit", "10MB"], "width"),
    (["inspect", "x.py:make", "--input-shape", "100000,100000"], "input-shape"),
])
def test_cli_refuses_before_allocating(capsys, tmp_path, argv, param):
    out = tmp_path / "out"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"'{param}'" in err and ("GiB" in err or "MiB" in err), err
    assert err.count("\n") == 1 and not out.exists()
    # Refused before allocating: the process's peak did not grow by the run's size.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_bad_memory_limit_is_exit_2(capsys, tmp_path):
    assert main(["run", "--memory-limit", "lots", "--out", str(tmp_path / "o")]) == 2
    assert "'memory_limit'" in capsys.readouterr().err


def test_chunked_run_gives_the_same_numbers():
    fields = dict(init=["normal", "lsuv"], width=60, depth=3, samples=30, trials=6, readout="init")
    roomy = initscope.run(workers=3, memory_limit="64GiB", **fields)
    config = make_config(**fields)
    tight = run_estimate(config, 1, 1).total * 2  # room for about one trial at a time
    with pytest.warns(MemoryPlanWarning, match="trial\\(s\\) per chunk"):
        chunked = initscope.run(workers=3, memory_limit=tight, **fields)
    for name in ("metrics", "spectra", "flags", "init_log", "weight_norms", "projections"):
        assert getattr(chunked, name).to_csv(index=False) == getattr(roomy, name).to_csv(index=False), name


def test_run_refuses_through_the_api_before_allocating():
    with pytest.raises(MemoryBudgetError, match="'width'"):
        initscope.run(width=100000, depth=3, samples=10, trials=1, memory_limit="1GiB")


WIDE_CSV_RUN = """
import resource, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
import initscope
path = sys.argv[1]
np.savetxt(path, np.random.default_rng(0).standard_normal((50, 5000)), delimiter=",")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = initscope.run(data=path, samples=50, trials=2, depth=3, metrics="jacobian_rank,rms", workers=1)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
print(r.metrics.query("metric == 'jacobian_rank' and layer == 1")["value"].tolist())
"""


@pytest.mark.slow
def test_wide_csv_jacobian_rank_fits_in_little_memory(tmp_path):
    """Issue 14: a 50 × 5000 CSV made jacobian_rank allocate a 9.3 GiB (1, 50, d, d) tangent."""
    est = run_estimate(make_config(data=_wide_csv(tmp_path), samples=50, trials=2, depth=3,
                                   metrics="jacobian_rank,rms"), 2, 1)
    assert est.parts["jacobian"][0] < 100 * 2**20
    proc = subprocess.run([sys.executable, "-c", WIDE_CSV_RUN, str(tmp_path / "wide.csv")], capture_output=True,
                          text=True, check=True)
    extra_mib, ranks = proc.stdout.splitlines()
    assert int(extra_mib) < 1024, proc.stdout  # the old path's tangent alone: 9.3 GiB
    # ReLU passes about half the 40 units' directions at layer 1, out of d = 5000 inputs.
    assert all(10 / 5000 < r < 30 / 5000 for r in eval(ranks))


def _wide_csv(tmp_path):
    path = tmp_path / "wide.csv"
    np.savetxt(path, np.random.default_rng(0).standard_normal((50, 5000)), delimiter=",")
    return str(path)


def test_certify_refuses_what_cannot_fit(capsys):
    assert main(["certify", "--width", "200000", "--depth", "100"]) == 2
    err = capsys.readouterr().err
    assert "'width'" in err and "certify" in err and err.count("\n") == 1, err
    # --memory-limit as in every other command: 20 trials' Jacobians need about 100 MiB.
    assert main(["certify", "--trials", "20", "--input-dim", "40", "--memory-limit", "50MB", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'samples'" in err and "47.7 MiB" in err and err.count("\n") == 1, err


# --- compare-fixes, phase --measure, sweep, explore: the same planning as run --------------------


def test_compare_fixes_checks_every_fix_before_running_any(monkeypatch):
    """A fix that cannot fit is refused before the fixes before it have run (they took minutes)."""
    import initscope.study.fixes as fixes
    from initscope.study import runner

    def ran(*args, **kwargs):
        raise AssertionError("a fix ran before every fix was checked")

    monkeypatch.setattr(runner, "run", ran)
    with pytest.raises(MemoryBudgetError, match="The 'depth' parameter must be smaller") as info:
        fixes.compare_fixes(["kaiming", "sphere"], depths=[3, 2**31 - 1], trials=2)
    assert info.value.parameter == "depth" and info.value.needed > info.value.budget


def test_compare_fixes_counts_the_certificate(monkeypatch):
    """The certificate holds every trial's network and Jacobians at once: it is checked too."""
    import initscope.study.fixes as fixes
    from initscope.study import runner
    from initscope.study.memory import certify_estimate

    config = fixes.fix_config("kaiming", depth=10, trials=20)
    run_peak, cert_peak = run_estimate(config, 1, 1).total, certify_estimate(config).total
    assert run_peak < cert_peak  # a budget between the two: the run alone would fit
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("ran a fix whose certificate cannot fit"))
    with pytest.raises(MemoryBudgetError, match="fix 'kaiming' at depth 10 .* its certificate") as info:
        fixes.compare_fixes(["kaiming"], depths=[10], trials=20, workers=1, memory_limit=(run_peak + cert_peak) // 2)
    assert info.value.parameter == "trials"


def test_compare_fixes_cli_refuses_before_its_folder(capsys, tmp_path):
    out = tmp_path / "fixes"
    assert main(["compare-fixes", "--fixes", "kaiming", "--depths", "3", "--trials", "2000", "--memory-limit",
                 "50MB", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'trials'" in err and "2000" in err and "47.7 MiB" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_phase_measure_refuses_naming_the_parameter_before_its_folder(capsys, tmp_path):
    out = tmp_path / "phase"
    assert main(["phase", "--measure", "--width", "2000", "--memory-limit", "100MB", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'width'" in err and "2000" in err and "95.4 MiB" in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("argv,param", [
    (["--sigma-w2", "0:4:10000000000"], "sigma_w2"),  # linspace alone would take 80 GB
    (["--sigma-w2", "0:4:1000000", "--sigma-b2", "0:0.3:1000000"], "sigma_w2"),  # 10^12 grid points
])
def test_phase_grid_too_large_is_exit_2(capsys, tmp_path, argv, param):
    out = tmp_path / "phase"
    assert main(["phase", *argv, "--memory-limit", "4GiB", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"'{param}'" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_phase_in_smaller_chunks_gives_the_same_numbers():
    from initscope.study.phase import PhaseConfig, phase_estimate, phase_study, plan_phase

    config = PhaseConfig(measure=True, sigma_w2=(1.5, 2.0), sigma_b2=(0.05,), measure_sigma_w2=(1.5, 2.5),
                         measure_sigma_b2=(0.05,), width=64, depth=8, networks=6, samples=8)
    roomy = phase_study(config, memory_limit="64GiB")
    tight = phase_estimate(config, 2).total  # room for two networks at a time
    assert plan_phase(config, tight) == 2 and plan_phase(config, 2**36) == 6
    with pytest.warns(MemoryPlanWarning, match="2 of the 6 networks at a time"):
        chunked = phase_study(config, memory_limit=tight)
    for name in ("theory", "measured", "decay"):
        assert getattr(chunked, name).to_csv(index=False) == getattr(roomy, name).to_csv(index=False), name
    with pytest.raises(MemoryBudgetError, match="'width'"):
        phase_study(config, memory_limit=phase_estimate(config, 1).total - 1)


def _sweep_file(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_sweep_memory_limit_refuses_naming_the_parameter(capsys, tmp_path):
    sweep_file = _sweep_file(tmp_path, "depth = 2\nwidth = [8, 3000]\nsamples = 8\ntrials = 2\n")
    store = tmp_path / "s.db"
    assert main(["sweep", str(sweep_file), "--store", str(store), "--workers", "1", "--quiet", "--no-report",
                 "--memory-limit", "10MB"]) == 2
    err = capsys.readouterr().err
    assert "'width'" in err and "3000" in err and "9.5 MiB" in err and err.count("\n") == 1, err
    assert not store.exists()
    assert main(["sweep", str(sweep_file), "--store", str(store), "--memory-limit", "lots"]) == 2
    assert "'memory_limit'" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_memory_limit_is_shared_by_the_processes_and_chunks_with_the_same_numbers(capsys, tmp_path):
    from initscope.study.executors import available_cores
    from initscope.study.store import Store
    from initscope.study.sweep import load_sweep

    sweep_file = _sweep_file(tmp_path, "depth = 2\nwidth = 300\nsamples = 20\ntrials = 6\ninit = 'normal'\n")
    config = load_sweep(sweep_file).configs[0]
    whole, one = run_estimate(config, 6, 1).total, run_estimate(config, 1, 1).total
    processes = min(2, available_cores())  # --workers 2, capped at the cores
    limit = processes * (one + (whole - one) // 4)  # per process: more than one trial, less than all six
    assert plan_run(config, 1, limit // processes).chunked
    roomy, tight = tmp_path / "roomy.db", tmp_path / "tight.db"
    assert main(["sweep", str(sweep_file), "--store", str(roomy), "--workers", "1", "--quiet", "--no-report"]) == 0
    assert "warning: memory" not in capsys.readouterr().err
    assert main(["sweep", str(sweep_file), "--store", str(tight), "--workers", "2", "--quiet", "--no-report",
                 "--memory-limit", str(limit)]) == 0
    err = capsys.readouterr().err
    assert "warning: memory: 1 of 1 configurations" in err and f"/ {processes} processes" in err, err
    with Store(roomy, create=False) as a, Store(tight, create=False) as b:
        for name in ("metrics", "spectra"):
            assert getattr(a, name)().to_csv(index=False) == getattr(b, name)().to_csv(index=False), name


def test_explore_budget_uses_the_memory_estimate():
    from initscope.explore.api import RequestError, check_budget

    config = make_config(width=3000, depth=2, samples=8, trials=1, metrics="rms")
    check_budget(config, 1e12, workers=1, memory_limit="1GiB")
    with pytest.raises(RequestError) as info:
        check_budget(config, 1e12, workers=1, memory_limit="10MB")
    details = info.value.details
    assert info.value.status == 413 and details["field"] == "width" and details["value"] == 3000
    assert details["size"] > details["budget"] == 10**7 and "'width'" in info.value.message


@pytest.mark.slow
def test_explore_server_refuses_a_request_over_memory_before_any_work():
    from conftest_explore import Server, call

    import json

    server = Server()
    try:
        # 4e6 by the size budget (fine), but its weights alone need 3 × 10^10 × 8 bytes.
        body = {"width": 100000, "depth": 2, "samples": 10, "trials": 1, "metrics": "rms"}
        status, _, raw = call(server.url, "/api/run", body, method="POST")
        answer = json.loads(raw)
        assert status == 413 and answer["field"] == "width" and "'width'" in answer["error"], answer
        assert json.loads(call(server.url, "/api/health")[2])["running"] == 0
    finally:
        assert server.stop() == 0, server.errors
