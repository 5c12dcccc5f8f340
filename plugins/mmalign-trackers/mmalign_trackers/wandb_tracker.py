"""Weights & Biases through accelerate's WandBTracker: offline by default, under <run>/wandb/."""
from __future__ import annotations

import json
from typing import Any, Mapping

from mmalign_core.protocols import TrackedRun

from .base import AccelerateRunTracker, inside_run
from .config import WandbConfig


class WandbRunTracker(AccelerateRunTracker):
    """History ``<stage>/<metric>`` and ``eval/<evaluator>/<metric>``; the spec as (nested) config; the manifest's
    status and results in the summary and manifest.json among the run's files."""

    config: WandbConfig

    def make(self, run: TrackedRun) -> Any:
        from accelerate.tracking import WandBTracker

        folder = inside_run(run.run_dir, self.config.dir, ".")
        folder.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"mode": self.config.mode, "dir": str(folder), "name": self.config.name or run.name}
        if self.config.entity:
            kwargs["entity"] = self.config.entity
        if self.config.tags:
            kwargs["tags"] = list(self.config.tags)
        if run.spec.get("description"):
            kwargs["notes"] = run.spec["description"]
        return WandBTracker(self.config.project, **kwargs)

    def hyperparameters(self, run: TrackedRun) -> dict[str, Any]:
        return {"spec_hash": run.spec_hash, "spec": dict(run.spec)}  # W&B keeps nested config as it is

    def record_manifest(self, manifest: Mapping[str, Any]) -> None:
        wb_run = self.inner.run
        summary: dict[str, Any] = {"mmalign/status": manifest.get("status")}
        for ev in manifest.get("evaluations", []):
            for key, res in ev.get("results", {}).items():
                for metric, value in res.get("metrics", {}).items():
                    summary[f"final/{ev['stage']}/{key}/{metric}"] = value
        wb_run.summary.update(summary)
        if self.run is not None:
            path = self.run.run_dir / "manifest.json"
            if not path.is_file():
                path.write_text(json.dumps(manifest, indent=2, default=str))
            wb_run.save(str(path), base_path=str(self.run.run_dir), policy="now")
