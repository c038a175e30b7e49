"""The progress bar of long runs: shown only after its delay, on a terminal, never under --quiet."""

from __future__ import annotations

import io

from rich.console import Console

from initscope.cli.progress import DelayedProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=80), out


def test_a_run_that_ends_within_the_delay_shows_nothing():
    clock, (console, out) = Clock(), terminal()
    with DelayedProgress(enabled=True, delay=2.0, clock=clock, console=console) as bar:
        for done in range(1, 11):
            clock.now += 0.15
            bar(done, 10)
        assert not bar.shown
    assert out.getvalue() == ""


def test_a_long_run_shows_a_bar_after_the_delay_and_clears_it():
    clock, (console, out) = Clock(), terminal()
    with DelayedProgress("trials", enabled=True, delay=2.0, clock=clock, console=console) as bar:
        clock.now = 1.0
        bar(1, 20)
        assert not bar.shown
        clock.now = 2.5
        bar(5, 20)
        assert bar.shown
        assert bar.bar.tasks[0].completed == 5 and bar.bar.tasks[0].total == 20
        bar(20, 20)
    assert not bar.shown
    assert "trials" in out.getvalue()


def test_off_when_not_a_terminal_or_disabled():
    clock, (console, out) = Clock(), terminal()
    bar = DelayedProgress(enabled=False, delay=0.0, clock=clock, console=console)
    clock.now = 10.0
    bar(1, 2)
    assert not bar.shown and out.getvalue() == ""
    # Under pytest, stderr is captured: not a terminal, so the default is off.
    assert DelayedProgress().enabled is False


def test_run_reports_every_layer_of_every_chunk_once():
    from initscope.study.runner import run

    seen = []
    run(trials=4, depth=3, samples=20, width=8, workers=2, init=("normal", "sphere"),
        progress=lambda done, total: seen.append((done, total)))
    total = 2 * 2 * 3  # initializers × chunks × depth
    assert sorted(seen) == [(i, total) for i in range(1, total + 1)]


def test_a_run_on_a_terminal_shows_the_bar_when_slow(monkeypatch, tmp_path):
    """Through the CLI: a pseudo-terminal stderr and a zero delay draw the bar; --quiet never does."""
    import initscope.cli.progress as progress
    from initscope.cli.app import main

    drawn = []
    real_open = progress.DelayedProgress._open

    def spy(self):
        drawn.append(self.description)
        real_open(self)

    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setattr(progress.DelayedProgress, "_open", spy)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    args = ["run", "--trials", "2", "--depth", "3", "--no-report"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert drawn == ["measuring layers"]
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert drawn == ["measuring layers"]  # not again under --quiet


def test_the_sweep_draws_the_same_bar_at_once_with_its_rate_and_failures():
    """One progress bar: the sweep's is DelayedProgress with no delay, kept on screen, counting by advance."""
    from initscope.cli.sweep import _SweepProgress

    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)
    progress = _SweepProgress(quiet=False)
    progress.bar.console = console
    with progress:
        progress.start(total=8, done=0)
        progress.advance(2, None)
        assert progress.bar.shown and progress.bar.bar.tasks[0].completed == 2
        failed = type("Batch", (), {"ok": False, "config_id": "c7", "config": type("C", (), {"init": ("lsuv",)}),
                                    "error": "ValueError: boom"})()
        progress.advance(2, failed)
        assert progress.bar.bar.tasks[0].completed == 4 and progress.failed == 1
    text = console.file.getvalue()
    assert "failed c7 (lsuv): ValueError: boom" in text and "trials/s" in text
    quiet = _SweepProgress(quiet=True)
    quiet.start(total=8, done=0)
    quiet.advance(8, failed)
    assert not quiet.bar.shown and quiet.failed == 1
