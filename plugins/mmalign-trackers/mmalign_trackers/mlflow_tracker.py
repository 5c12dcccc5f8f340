"""MLflow through accelerate's MLflowTracker: a local file store under <run>/mlruns by default."""
from __future__ import annotations

import os
from typing import Any, Mapping

from mmalign_core.protocols import TrackedRun

from .base import AccelerateRunTracker
from .config import MlflowConfig


class MlflowRunTracker(AccelerateRunTracker):
    """Metrics ``<stage>/<metric>`` and ``eval/<evaluator>/<metric>``; the spec as params and spec.json; the manifest
    as manifest.json and its status as the tag ``mmalign.status``."""

    config: MlflowConfig

    def tracking_uri(self, run: TrackedRun) -> str:
        return self.config.tracking_uri or (run.run_dir / "mlruns").resolve().as_uri()

    def make(self, run: TrackedRun) -> Any:
        import mlflow
        from accelerate.tracking import MLflowTracker

        uri = self.tracking_uri(run)
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store only behind this opt-in; the file store needs no server or database.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        return MLflowTracker(
            experiment_name=self.config.experiment or run.name,
            run_name=self.config.run_name or run.name,
            tags={"mmalign.spec_hash": run.spec_hash, **self.config.tags},
            description=run.spec.get("description") or None,
        )

    def record_spec(self, run: TrackedRun) -> None:
        import mlflow

        mlflow.log_dict(dict(run.spec), "spec.json")

    def record_manifest(self, manifest: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.set_tag("mmalign.status", str(manifest.get("status")))
        mlflow.log_dict(dict(manifest), "manifest.json")
