"""Progress in non-terminal logs: one line at a bounded interval with step, steps/s, ETA and the last loss."""
from __future__ import annotations

import io

import pytest

from mmalign_core.errors import RunError
from mmalign_core.runner.progress import LogLineProgress, format_duration, make_progress_factory, progress_interval, progress_mode


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_come_at_the_interval_with_rate_eta_and_loss() -> None:
    clock, lines = FakeClock(), []
    bar = LogLineProgress(range(100), desc="sft", total=100, emit=lines.append, interval=10.0, clock=clock)
    for step in bar:
        clock.t += 0.5  # two steps per second
        if step == 9:
            bar.set_postfix(loss="0.6931")
    # 100 steps x 0.5 s = 50 s: a line after each 10 s (steps 20, 40, 60, 80, 100), never more often
    assert len(lines) == 5
    assert lines[0] == "sft: step 20/100 (20%), 2 steps/s, ETA 40s, loss 0.6931"
    assert lines[-1].startswith("sft: step 100/100 (100%), 2 steps/s, ETA 0s")


def test_no_line_for_a_loop_shorter_than_the_interval() -> None:
    clock, lines = FakeClock(), []
    for _ in LogLineProgress(range(5), desc="x", total=5, emit=lines.append, interval=30.0, clock=clock):
        clock.t += 1.0
    assert lines == []


def test_unknown_total_has_no_eta() -> None:
    clock, lines = FakeClock(), []
    for _ in LogLineProgress(iter(range(4)), desc="gen", total=None, emit=lines.append, interval=1.0, clock=clock):
        clock.t += 1.0
    assert lines[-1] == "gen: step 4, 1 steps/s"


def test_durations() -> None:
    assert [format_duration(s) for s in (7.4, 95.2, 3725)] == ["7s", "1m35s", "1h02m"]


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_mode_follows_the_terminal_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMALIGN_PROGRESS", raising=False)
    assert progress_mode(Stream(tty=False)) == "lines"
    assert progress_mode(Stream(tty=True)) == "bars"
    monkeypatch.setenv("MMALIGN_PROGRESS", "0")
    assert progress_mode(Stream(tty=False)) == "off"
    monkeypatch.setenv("MMALIGN_PROGRESS", "lines")
    lines: list[str] = []
    progress = make_progress_factory(lines.append)
    assert isinstance(progress(range(3), desc="a", total=3), LogLineProgress)


def test_a_bad_interval_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMALIGN_PROGRESS_INTERVAL", "soon")
    with pytest.raises(RunError, match="MMALIGN_PROGRESS_INTERVAL='soon'"):
        progress_interval()
    monkeypatch.setenv("MMALIGN_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
