"""Experiment trackers of a run: the spec's ``trackers`` list and the runner's fan-out to them.

A spec names trackers like any component::

    "trackers": [{"name": "tensorboard"}, {"name": "mlflow", "config": {"experiment": "shapes"}}]

Validation resolves each name to a :class:`~mmalign_core.entries.TrackerEntry` (kind ``tracker``),
validates its config and checks that the library the tracker needs is installed -- without importing
it -- so a missing one is a validation error that gives the pip command. The runner then builds the
trackers on the main process, starts them before the first stage and feeds them what the observer
hooks see (metrics rows, evaluations, the final manifest) on one run-wide step axis.

Imports no torch and no tracker library.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from .errors import RunError
from .protocols import TrackedRun
from .refs import NestedComponent


class TrackerRef(NestedComponent):
    """A tracker the run logs to: ``{"name": "tensorboard", "config": {...}}`` (see ``mmalign plugins``)."""

    kind: ClassVar[str] = "tracker"
    usage: ClassVar[str] = "as a tracker"

    @classmethod
    def check_entry(cls, entry: Any) -> None:
        super().check_entry(entry)
        library = getattr(entry, "library", "")
        if library and not library_installed(library):
            command = getattr(entry, "install", "") or f"pip install {library}"
            raise ValueError(
                f"tracker {entry.qualified_name!r} needs the Python package {library!r}, which is not installed; "
                f"install it with: {command}"
            )


def library_installed(module: str) -> bool:
    """Whether ``module`` (``"tensorboard"``, ``"mlflow"``) can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def stage_offsets(stages: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Run step at which each stage starts: the optimizer steps of the training stages before it."""
    offsets: dict[str, int] = {}
    total = 0
    for st in stages:
        offsets[st["name"]] = total
        total += int(st.get("steps") or 0)
    return offsets


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TrackerSet:
    """The run's built trackers, called with the observer hooks' arguments.

    A tracker that fails while logging is reported once and switched off for the rest of the run
    (a tracker outage must not cost a training run); one that fails to start stops the run before any
    stage, with the spec path of the tracker in the message.
    """

    def __init__(self, trackers: Sequence[tuple[str, Any]], stages: Callable[[], Sequence[Mapping[str, Any]]],
                 log: Callable[[str], None]):
        self._trackers = list(trackers)
        self._stages = stages
        self._log = log
        self._finished = False

    @classmethod
    def build(cls, refs: Sequence[TrackerRef], plugins: Any, stages: Callable[[], Sequence[Mapping[str, Any]]],
              log: Callable[[str], None]) -> "TrackerSet":
        built = []
        for j, ref in enumerate(refs):
            path = f"trackers[{j}]"
            try:
                built.append((f"{path} ({ref.name})", ref.build(plugins)))
            except Exception as exc:  # a tracker's own failure: name it
                raise RunError(f"{path}: building tracker '{ref.name}' failed: {type(exc).__name__}: {exc}") from exc
        return cls(built, stages, log)

    def __len__(self) -> int:
        return len(self._trackers)

    def start(self, run: TrackedRun) -> None:
        started: list[tuple[str, Any]] = []
        for label, tracker in self._trackers:
            try:
                tracker.start(run)
            except Exception as exc:
                self._trackers = started  # only those that started are finished when the run stops
                raise RunError(f"{label}: the tracker failed to start: {type(exc).__name__}: {exc}") from exc
            started.append((label, tracker))
        if self._trackers:
            self._log("tracking to " + ", ".join(label for label, _ in self._trackers))

    def _each(self, action: str, call: Callable[[Any], None]) -> None:
        kept = []
        for label, tracker in self._trackers:
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - reported, then this tracker is off
                self._log(f"warning: {label}: {action} failed ({type(exc).__name__}: {exc}); this tracker is off for the rest of the run")
                continue
            kept.append((label, tracker))
        self._trackers = kept

    def _offset(self, stage: str) -> int:
        return stage_offsets(self._stages()).get(stage, 0)

    # The observer hooks' signatures (see mmalign_core.hookspecs).
    def on_metrics(self, run_dir: Path, stage: str, step: int, metrics: Mapping[str, Any]) -> None:
        values = {f"{stage}/{k}": v for k, v in _numbers(metrics).items()}
        at = self._offset(stage) + int(step)
        self._each("logging metrics", lambda t: t.log_metrics(values, at))

    def on_evaluation(self, run_dir: Path, stage: str, evaluator: str, metrics: Mapping[str, Any]) -> None:
        values = {f"eval/{evaluator}/{k}": v for k, v in _numbers(metrics).items()}
        at = self._offset(stage)
        self._each("logging an evaluation", lambda t: t.log_metrics(values, at))

    def on_run_end(self, run_dir: Path, manifest: Mapping[str, Any]) -> None:
        if self._finished:
            return
        self._finished = True
        self._each("finishing", lambda t: t.finish(manifest))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON as ``{"stages.0.train.lr": 1e-05, ...}`` with str/int/float/bool leaves (lists by index;
    ``None`` as ``"null"``), the shape trackers take hyperparameters in."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(data)]
    else:
        return {prefix or "value": "null" if data is None else data}
    if not items and prefix:
        out[prefix] = "[]" if isinstance(data, (list, tuple)) else "{}"
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, (Mapping, list, tuple)):
            out.update(flatten(value, name))
        else:
            out[name] = "null" if value is None else value
    return out


__all__ = ["TrackerRef", "TrackerSet", "TrackedRun", "flatten", "library_installed", "stage_offsets"]
