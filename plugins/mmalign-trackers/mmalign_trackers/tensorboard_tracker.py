"""TensorBoard: event files under <run>/tensorboard/<name>/ through accelerate's TensorBoardTracker."""
from __future__ import annotations

import json
from typing import Any, Mapping

from mmalign_core.protocols import TrackedRun

from .base import AccelerateRunTracker, inside_run
from .config import TensorBoardConfig


def _as_text(data: Any) -> str:
    # TensorBoard renders text summaries as Markdown: indent four spaces for a code block.
    return "\n".join("    " + line for line in json.dumps(data, indent=2, default=str).splitlines())


class TensorBoardRunTracker(AccelerateRunTracker):
    """Scalars ``<stage>/<metric>`` and ``eval/<evaluator>/<metric>``; the spec as hparams and text; the manifest as text."""

    config: TensorBoardConfig

    def make(self, run: TrackedRun) -> Any:
        from accelerate.tracking import TensorBoardTracker

        return TensorBoardTracker(self.config.run_name or run.name, str(inside_run(run.run_dir, self.config.log_dir, "tensorboard")))

    def record_spec(self, run: TrackedRun) -> None:
        self.inner.writer.add_text("mmalign/spec", _as_text(run.spec))
        self.inner.writer.flush()

    def record_manifest(self, manifest: Mapping[str, Any]) -> None:
        self.inner.writer.add_text("mmalign/manifest", _as_text(manifest))
        self.inner.writer.flush()
