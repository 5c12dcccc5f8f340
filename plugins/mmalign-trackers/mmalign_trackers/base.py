"""The shared part of the trackers: an mmalign run logged through one of accelerate's trackers.

accelerate's ``GeneralTracker`` classes (``start``, ``store_init_configuration``, ``log``, ``finish``)
hold each library's API; a subclass here says how to build its accelerate tracker for a run and how to
keep the spec and manifest, which accelerate's interface has no place for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from mmalign_core.protocols import TrackedRun
from mmalign_core.tracking import flatten


def inside_run(run_dir: Path, path: Optional[str], default: str) -> Path:
    """``path`` resolved against the run folder (absolute paths stay), or ``<run>/<default>``."""
    p = Path(path) if path else Path(default)
    return p if p.is_absolute() else run_dir / p


class AccelerateRunTracker:
    """Logs an mmalign run through an ``accelerate.tracking.GeneralTracker`` made by :meth:`make`."""

    def __init__(self, config: Any):
        self.config = config
        self.inner: Any = None
        self.run: Optional[TrackedRun] = None

    # --- what a subclass provides
    def make(self, run: TrackedRun) -> Any:
        """The accelerate tracker for ``run`` (not started)."""
        raise NotImplementedError

    def hyperparameters(self, run: TrackedRun) -> dict[str, Any]:
        """What ``store_init_configuration`` receives: the resolved spec, flattened, and its hash."""
        return {"spec_hash": run.spec_hash, **flatten(run.spec)}

    def record_spec(self, run: TrackedRun) -> None:
        """Keep the whole resolved spec (default: nothing beyond the hyperparameters)."""

    def record_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Keep the final manifest."""

    # --- mmalign_core.protocols.Tracker
    def start(self, run: TrackedRun) -> None:
        self.run = run
        self.inner = self.make(run)
        self.inner.start()
        self.inner.store_init_configuration(self.hyperparameters(run))
        self.record_spec(run)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if metrics:
            self.inner.log(dict(metrics), step=step)

    def finish(self, manifest: Mapping[str, Any]) -> None:
        try:
            self.record_manifest(manifest)
        finally:
            self.inner.finish()
