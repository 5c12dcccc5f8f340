"""The run-spec envelope (phase one of validation).

A run spec is JSON: a model, a list of stages, and run-wide settings. Each
component appears as ``{"name": ..., "config": {...}}``; its ``config`` is
checked in phase two against the component's own config class
(see :mod:`mmalign_core.spec`).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .config import reject_boolean_numbers

from .tracking import TrackerRef

SPEC_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        return reject_boolean_numbers(cls, data)


class ComponentRef(_Strict):
    """A reference to a registered component and its configuration."""

    name: str = Field(description="Registered component name, or 'plugin:name' to pick one provider.")
    config: dict[str, Any] = Field(default_factory=dict, description="Settings checked against the component's own config class.")


class LoraSettings(_Strict):
    """Low-rank adapters for the language model (applied through peft)."""

    r: int = Field(8, ge=1, le=4096, description="Adapter rank.")
    alpha: float = Field(16.0, gt=0, le=1e6, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: str = Field(
        r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$",
        description="Regex over module names that receive adapters; the default matches only the language model.",
    )


class TrainSettings(_Strict):
    """Optimisation settings of a training stage."""

    steps: Optional[int] = Field(None, ge=1, le=10**9, description="Optimizer steps; exclusive with 'epochs'.")
    epochs: Optional[float] = Field(None, gt=0, le=10**6, description="Passes over the data; exclusive with 'steps'. Default 1 when neither is set.")
    batch_size: int = Field(8, ge=1, le=2**20, description="Examples per optimizer step (the global batch, across accumulation).")
    micro_batch_size: Optional[int] = Field(None, ge=1, le=2**20, description="Examples per forward pass; batch_size must be a multiple. Default: batch_size.")
    lr: float = Field(1e-5, gt=0, le=10.0, description="Peak learning rate of the language model parameters.")
    projector_lr: Optional[float] = Field(None, gt=0, le=10.0, description="Learning rate of the multimodal projector; default: lr.")
    weight_decay: float = Field(0.0, ge=0, le=10.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1).")
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps with linear warmup.")
    max_grad_norm: Optional[float] = Field(1.0, gt=0, le=1e9, description="Gradient clipping norm; null disables clipping.")
    log_every: int = Field(10, ge=1, le=10**9, description="Write a metrics row every N optimizer steps.")
    checkpoint_every: Optional[int] = Field(None, ge=1, le=10**9, description="Save a resumable checkpoint every N steps; null: only at the end.")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="How many intermediate checkpoints to keep.")
    lora: Optional[LoraSettings] = Field(None, description="Train low-rank adapters instead of all weights.")
    freeze_vision: bool = Field(True, description="Keep the vision tower frozen.")
    max_examples: Optional[int] = Field(None, ge=1, le=10**12, description="Use only the first N examples of the data (after the source's own subsampling).")
    group_by_length: bool = Field(
        False,
        description="Form batches from examples of similar text length (within windows of 64 batches, batch order still shuffled) to cut padding.",
    )
    cache_reference: bool = Field(
        False,
        description="Compute the reference log-probs of every pair once, store them on disk keyed by the reference weights, "
        "data and processor, and train without running (or holding) the reference model; a later run with the same key reuses them.",
    )

    @model_validator(mode="after")
    def _check(self) -> "TrainSettings":
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set either 'steps' or 'epochs', not both")
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size % mb:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size ({mb})")
        return self


class SFTStage(_Strict):
    """Supervised fine-tuning on the responses of a data source."""

    type: Literal["sft"] = Field(description="Stage kind: 'sft' trains on the responses of a data source.")
    name: Optional[str] = Field(None, max_length=100, description="Stage name used in outputs; default 'sft'.")
    data: ComponentRef = Field(description="A preference source with the 'sft' capability (or whose chosen answers are used).")
    loss: ComponentRef = Field(
        default_factory=lambda: ComponentRef(name="losses:sft"),
        description="The training objective (default: the losses plugin's 'sft', qualified so another provider of 'sft' cannot change it).",
    )
    train: TrainSettings = Field(default_factory=TrainSettings, description="Optimisation settings.")


class AlignStage(_Strict):
    """Preference optimisation against a frozen reference (the model at the start of the stage)."""

    type: Literal["align"] = Field(description="Stage kind: 'align' optimises a preference loss on pairs.")
    name: Optional[str] = Field(None, max_length=100, description="Stage name used in outputs; default 'align'.")
    data: ComponentRef = Field(description="A preference source with the 'pairs' capability.")
    loss: ComponentRef = Field(
        default_factory=lambda: ComponentRef(name="losses:dpo"),
        description="The preference loss (default: the losses plugin's 'dpo', qualified so another provider of 'dpo' cannot change it).",
    )
    train: TrainSettings = Field(default_factory=TrainSettings, description="Optimisation settings.")


class RolloutSettings(_Strict):
    """How an ``rl`` stage samples from the policy each step."""

    prompts_per_step: int = Field(8, ge=1, description="Prompts drawn per RL step (in a seeded order, as training batches are).")
    samples_per_prompt: int = Field(4, ge=1, description="Responses sampled per prompt (the group size of GRPO, k of RLOO).")
    max_new_tokens: int = Field(32, ge=1, description="Token limit of a response.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold (1: off).")
    generation_batch_size: int = Field(16, ge=1, description="Prompts per generation call (each expanded to its samples).")
    log: bool = Field(True, description="Append every rollout (tokens, rewards, advantages) to <stage>/data/rl/rollouts.jsonl.")
    reuse_log: bool = Field(True, description="On resume, take logged rollouts of a step instead of sampling and scoring it again.")


class RLStage(_Strict):
    """Reinforcement learning against a reward: sample from the policy, score, update (PPO, RLOO, GRPO, ...)."""

    type: Literal["rl"] = Field(description="Stage kind: 'rl' trains the policy on its own samples scored by a reward.")
    name: Optional[str] = Field(None, max_length=100, description="Stage name used in outputs; default 'rl'.")
    data: ComponentRef = Field(description="A source of prompts and images: any preference source (its answers are unused) or an SFT source.")
    algorithm: ComponentRef = Field(description="The RL algorithm (component kind 'rl_algorithm'), e.g. 'grpo', 'rloo', 'ppo'.")
    reward: ComponentRef = Field(description="The reward (component kind 'reward'), e.g. 'shapes-oracle', 'reward-model', 'weighted-sum'.")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Optimisation settings; 'steps' counts RL steps (rollout batches).")
    rollout: RolloutSettings = Field(default_factory=RolloutSettings, description="Sampling settings.")


class EvaluateStage(_Strict):
    """Run evaluators on the current model."""

    type: Literal["evaluate"] = Field(description="Stage kind: 'evaluate' runs evaluators on the current model.")
    name: Optional[str] = Field(None, max_length=100, description="Stage name used in the report; default 'evaluate'.")
    evaluators: list[ComponentRef] = Field(min_length=1, description="Evaluators to run, in order.")


Stage = Annotated[Union[SFTStage, AlignStage, RLStage, EvaluateStage], Field(discriminator="type")]


class RunSpec(_Strict):
    """A whole run: one model and a list of stages, executed in order."""

    spec_version: Literal[1] = Field(1, description="Version of the spec format.")
    name: str = Field(description="Run name; the default output directory is runs/<name>.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = Field("", description="Free text recorded in the manifest and report.")
    output_dir: Optional[str] = Field(None, description="Where the run writes; relative paths are resolved against the current directory.")
    seed: int = Field(0, ge=0, le=2**62, description="Seed for data order, sampling and initialisation (0 to 2^62).")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype of the trained weights.")
    deterministic: bool = Field(False, description="Use deterministic torch algorithms (slower, exactly repeatable).")
    threads: Optional[int] = Field(None, ge=1, le=4096, description="CPU threads for torch; default: torch's choice.")
    model: ComponentRef = Field(description="The model to train and evaluate.")
    stages: list[Stage] = Field(min_length=1, description="Stages run in order: 'sft', 'align', 'rl', 'evaluate'.")
    trackers: list[TrackerRef] = Field(
        default_factory=list,
        description="Experiment trackers the run logs its metrics, evaluations, spec and manifest to, e.g. "
        "[{\"name\": \"tensorboard\"}] (component kind 'tracker'; see docs/tracking.md).",
    )

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        if not value.strip() or "\x00" in value or len(value) > 4096:
            raise ValueError("output_dir must be a non-empty path of at most 4096 characters without NUL bytes")
        from pathlib import Path

        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"output_dir {value[:200]!r} exists and is not a folder; name a folder for the run")
        return value

    def stage_names(self) -> list[str]:
        """Unique names per stage: the given name or '<type>', suffixed with a counter when repeated."""
        seen: dict[str, int] = {}
        names = []
        for st in self.stages:
            base = st.name or st.type
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
        return names
