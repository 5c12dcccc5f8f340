"""Progress of long loops: tqdm bars on a terminal, periodic lines in a log.

A cluster job, ``nohup`` or CI captures stdout in a file, where a tqdm bar
shows nothing useful (tqdm turns itself off without a terminal). There a loop
prints one line at most every ``interval`` seconds instead::

    [mmalign] sft: step 40/120 (33%), 0.82 steps/s, ETA 1m38s, loss 0.6931

Choice (``MMALIGN_PROGRESS``): unset -- bars when stdout is a terminal, lines
otherwise; ``0`` -- nothing; ``1`` -- bars; ``lines`` -- lines. The interval is
``MMALIGN_PROGRESS_INTERVAL`` seconds (default 30).
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sized
from typing import Any, Callable, Iterable, Iterator

DEFAULT_INTERVAL_S = 30.0
ENV_MODE = "MMALIGN_PROGRESS"
ENV_INTERVAL = "MMALIGN_PROGRESS_INTERVAL"


def format_duration(seconds: float) -> str:
    """``95.2`` -> ``1m35s``; ``3725`` -> ``1h02m``; ``7.4`` -> ``7s``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class LogLineProgress:
    """Iterates ``iterable`` and emits a progress line at most every ``interval`` seconds.

    Has tqdm's ``set_postfix(**values)``: the training loop reports the last
    logged loss through it, and the next line shows those values.
    """

    def __init__(self, iterable: Iterable[Any], *, desc: str, total: int | None, emit: Callable[[str], None],
                 interval: float, clock: Callable[[], float] = time.monotonic):
        self._iterable = iterable
        self.desc = desc
        self.total = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else None)
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self.postfix: dict[str, Any] = {}
        self.n = 0

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line (e.g. ``loss="0.6931"``)."""
        self.postfix.update(values)

    def __len__(self) -> int:
        return self.total or 0

    def __iter__(self) -> Iterator[Any]:
        start = self._clock()
        last_line = start
        for item in self._iterable:
            yield item
            self.n += 1
            now = self._clock()
            if now - last_line >= self._interval:
                self._emit(self.line(now - start))
                last_line = now

    def line(self, elapsed: float) -> str:
        """The progress line after ``elapsed`` seconds with ``self.n`` items done."""
        rate = self.n / elapsed if elapsed > 0 else float("nan")
        parts = [f"{self.desc}: step {self.n}" + (f"/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts.append(f"{rate:.3g} steps/s" if math.isfinite(rate) else "? steps/s")
        if self.total and math.isfinite(rate) and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return ", ".join(parts)


def progress_interval() -> float:
    """Seconds between progress lines: ``MMALIGN_PROGRESS_INTERVAL`` or the default; a bad value is an error."""
    raw = os.environ.get(ENV_INTERVAL)
    if raw is None or raw.strip() == "":
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        from ..errors import RunError

        raise RunError(f"{ENV_INTERVAL}={raw!r}: give a positive number of seconds between progress lines (e.g. 30)")
    return value


def progress_mode(stdout: Any = None) -> str:
    """``"bars"``, ``"lines"`` or ``"off"`` from ``MMALIGN_PROGRESS`` and whether stdout is a terminal."""
    flag = os.environ.get(ENV_MODE)
    if flag == "0":
        return "off"
    if flag == "1":
        return "bars"
    if flag == "lines":
        return "lines"
    stream = stdout if stdout is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "bars" if callable(isatty) and isatty() else "lines"


def _silent(iterable: Iterable[Any], desc: str = "", total: int | None = None) -> Iterable[Any]:
    return iterable


def make_progress_factory(emit: Callable[[str], None]) -> Callable[..., Iterable[Any]]:
    """``progress(iterable, desc=..., total=...)`` in the mode chosen by the environment; lines go to ``emit``."""
    mode = progress_mode()
    if mode == "off":
        return _silent
    if mode == "lines":
        interval = progress_interval()

        def lines(iterable: Iterable[Any], desc: str = "", total: int | None = None) -> Iterable[Any]:
            return LogLineProgress(iterable, desc=desc or "progress", total=total, emit=emit, interval=interval)

        return lines
    from tqdm.auto import tqdm

    def bars(iterable: Iterable[Any], desc: str = "", total: int | None = None) -> Iterable[Any]:
        bar: Iterable[Any] = tqdm(iterable, desc=desc, total=total, disable=False, mininterval=1.0, dynamic_ncols=True, leave=False)
        return bar

    return bars
