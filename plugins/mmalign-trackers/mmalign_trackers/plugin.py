"""Registration of the trackers (imports no tracker library; each is checked for with find_spec at validation)."""
from __future__ import annotations

from mmalign_core import TrackerEntry, hookimpl

from .config import MlflowConfig, TensorBoardConfig, WandbConfig


@hookimpl
def mmalign_trackers() -> list[TrackerEntry]:
    return [
        TrackerEntry(
            name="tensorboard",
            summary="TensorBoard event files: every metric row and evaluation as scalars, the spec as hparams and text, the manifest as text.",
            config=TensorBoardConfig,
            factory="mmalign_trackers.tensorboard_tracker:TensorBoardRunTracker",
            library="tensorboard",
            install="pip install 'mmalign-trackers[tensorboard]' (or: pip install tensorboard)",
        ),
        TrackerEntry(
            name="wandb",
            summary="A Weights & Biases run (offline by default): metrics and evaluations as history, the spec as config, the manifest as summary and file.",
            config=WandbConfig,
            factory="mmalign_trackers.wandb_tracker:WandbRunTracker",
            library="wandb",
            install="pip install 'mmalign-trackers[wandb]' (or: pip install wandb)",
        ),
        TrackerEntry(
            name="mlflow",
            summary="An MLflow run (local file store by default): metrics and evaluations, the spec as params and artifact, the manifest as artifact.",
            config=MlflowConfig,
            factory="mmalign_trackers.mlflow_tracker:MlflowRunTracker",
            library="mlflow",
            install="pip install 'mmalign-trackers[mlflow]' (or: pip install mlflow-skinny)",
        ),
    ]
