"""Config classes of the trackers (light: no tracker library is imported)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from mmalign_core.config import ComponentConfig


class TensorBoardConfig(ComponentConfig):
    """Event files for TensorBoard (``tensorboard --logdir <run>/tensorboard``)."""

    log_dir: Optional[str] = Field(None, description="Folder of the event files; relative paths are inside the run folder. Default: <run>/tensorboard.")
    run_name: Optional[str] = Field(None, description="Subfolder (TensorBoard's run) under log_dir; default: the spec's name.")


class WandbConfig(ComponentConfig):
    """A Weights & Biases run, offline by default (``wandb sync <run>/wandb/offline-run-*`` uploads it later)."""

    mode: Literal["offline", "online", "disabled"] = Field("offline", description="'offline' writes locally and needs no account; 'online' logs to the W&B server (needs WANDB_API_KEY).")
    project: str = Field("mmalign", description="W&B project.")
    entity: Optional[str] = Field(None, description="W&B entity (user or team); default: the account's.")
    name: Optional[str] = Field(None, description="Name of the W&B run; default: the spec's name.")
    dir: Optional[str] = Field(None, description="Folder wandb writes to (it adds wandb/); relative paths are inside the run folder. Default: the run folder.")
    tags: list[str] = Field(default_factory=list, description="Tags of the W&B run.")


class MlflowConfig(ComponentConfig):
    """An MLflow run in a local file store by default (``mlflow ui --backend-store-uri <run>/mlruns``)."""

    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (a server, 'sqlite:///...', or 'file:...'); default: file:<run>/mlruns.")
    experiment: Optional[str] = Field(None, description="Experiment name; default: the spec's name.")
    run_name: Optional[str] = Field(None, description="Name of the MLflow run; default: the spec's name.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags set on the MLflow run.")
