"""The thread-contention warning at run start."""
from __future__ import annotations

from mmalign_core.runner.run import contention_warning


def test_warns_only_when_threads_would_compete_on_a_busy_cpu() -> None:
    assert contention_warning(2, "cpu", load=0.1, cores=2) is None  # idle machine: all cores are ours
    busy = contention_warning(2, "cpu", load=1.9, cores=2)
    assert busy is not None and '"threads"' in busy and "1.9" in busy
    assert contention_warning(1, "cpu", load=8.0, cores=2) is None  # one thread does not spin-wait
    assert contention_warning(8, "cuda:0", load=8.0, cores=2) is None  # GPU runs are not affected
    assert contention_warning(4, "cpu", load=3.0, cores=16) is None  # plenty of free cores
