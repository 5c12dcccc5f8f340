"""What a part writes: figures, pass/fail checks and errors, saved to its JSON file after every step.

A part that is killed at its time budget (or crashes the interpreter) leaves everything it had measured
until then; the orchestrator reads the file whatever happened.
"""
from __future__ import annotations

import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become strings, tuples lists, unknown objects their repr."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1, sort_keys=False))
    os.replace(tmp, path)


class OutOfTime(RuntimeError):
    """A step was not started: the part's time budget would not cover it."""


class Recorder:
    """One part's results. ``step(name, fn)`` runs ``fn`` and records its result or its error, never raising."""

    def __init__(self, path: Path, part: str, deadline: float) -> None:
        self.path = path
        self.deadline = deadline
        self.t0 = time.perf_counter()
        self.data: dict[str, Any] = {"part": part, "status": "running", "seconds": 0.0, "figures": {}, "steps": {},
                                     "checks": [], "errors": []}
        self.save()

    def time_left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        self.data["seconds"] = round(time.perf_counter() - self.t0, 3)
        write_json(self.path, self.data)

    def step(self, name: str, fn: Callable[[], Any], *, need_s: float = 0.0) -> Optional[Any]:
        """Run one measurement; its return value (a JSON-able dict, usually) is stored under ``steps[name]``."""
        entry: dict[str, Any] = {"status": "running"}
        self.data["steps"][name] = entry
        if need_s and self.time_left() < need_s:
            entry.update(status="skipped", reason=f"{self.time_left():.0f}s left of the part's budget, about {need_s:.0f}s needed")
            self.save()
            return None
        self.save()
        t = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is a finding to record, never a reason to stop
            entry.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000], traceback=traceback.format_exc()[-4000:])
            self.data["errors"].append(f"{name}: {type(exc).__name__}: {str(exc)[:500]}")
            result = None
        else:
            entry.update(status="ok", result=result)
        entry["seconds"] = round(time.perf_counter() - t, 3)
        self.save()
        return result

    def check(self, name: str, ok: bool, **detail: Any) -> bool:
        """A pass/fail verdict with the numbers behind it."""
        self.data["checks"].append({"name": name, "ok": bool(ok), **detail})
        self.save()
        return bool(ok)

    def figure(self, name: str, value: Any) -> None:
        """A headline number (the summary and docs quote these)."""
        self.data["figures"][name] = value
        self.save()

    def finish(self) -> None:
        failed = [c["name"] for c in self.data["checks"] if not c["ok"]]
        skipped = [k for k, v in self.data["steps"].items() if v.get("status") == "skipped"]
        self.data["status"] = "error" if self.data["errors"] else "failed" if failed else "partial" if skipped else "ok"
        self.save()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def reset_peak(device: str) -> int:
    """Reset the peak-memory counter; returns the bytes allocated now (0 on CPU)."""
    if not device.startswith("cuda"):
        return 0
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_bytes(device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def free_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


GIB = float(1 << 30)
