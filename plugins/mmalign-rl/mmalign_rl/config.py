"""Typed configs of the rewards and RL algorithms (pydantic, no torch)."""
from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmalign_core.config import ComponentConfig
from mmalign_core.refs import NestedComponent


# ------------------------------------------------------------------------------------ references
class RewardRef(NestedComponent):
    """A reward component: ``{"name": ..., "config": {...}}``."""

    kind: ClassVar[str] = "reward"
    usage: ClassVar[str] = "as a term of a weighted sum"


class JudgeRef(NestedComponent):
    """A judge component: ``{"name": ..., "config": {...}}`` (any judge offering ``complete``)."""

    kind: ClassVar[str] = "judge"
    needs_any: ClassVar[tuple[str, ...]] = ("complete",)
    usage: ClassVar[str] = "to score responses"


# ---------------------------------------------------------------------------------------- rewards
class ShapesOracleRewardConfig(ComponentConfig):
    """Ground truth of the shapes world as a scalar: penalties for hallucinated and missed objects."""

    world: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="The shapes world config (the `world` block of the shapes source; identical, since image ids carry the world's hash). "
        "Checked against mmalign-shapes' WorldConfig; defaults filled in.",
    )
    hallucinated_weight: float = Field(1.0, ge=0, description="Penalty per distinct named object that is not in the image.")
    missed_weight: float = Field(0.5, ge=0, description="Penalty per object in the image that the response does not name.")
    correct_weight: float = Field(0.0, ge=0, description="Bonus per distinct correctly named object.")
    yes_no_correct: float = Field(1.0, description="Reward of a correct answer to a yes/no question ('Is there a ...?'); a wrong one gets 0.")

    @field_validator("world")
    @classmethod
    def _world(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            from mmalign_shapes.config import WorldConfig
        except ImportError:  # pragma: no cover - depends on the installation
            raise ValueError("shapes-oracle needs the mmalign-shapes plugin (pip install mmalign-shapes)") from None
        return WorldConfig.model_validate(value).model_dump(mode="json")


DEFAULT_RUBRIC = (
    "Rate how well the response answers the question about the image, from 0 (wrong or mostly hallucinated) to 6 "
    "(fully correct, informative, nothing hallucinated). Reply with the number first.\n\n"
    "Question: {question}\nResponse: {response}\nRating:"
)


class JudgeScoreConfig(ComponentConfig):
    """Any judge component scoring a response on a rubric (e.g. MMHal-style 0-6); the number in its reply is the reward."""

    judge: JudgeRef = Field(description="The judge (e.g. 'openai-compatible', 'vlm-judge', 'scripted-judge'); it gets the rubric prompt with the image.")
    rubric: str = Field(DEFAULT_RUBRIC, description="Prompt template with {question} and {response}.")
    pattern: str = Field(r"-?\d+(?:\.\d+)?", description="Regular expression; its first match in the reply is the score.")
    min_score: float = Field(0.0, description="Scores are clipped to [min_score, max_score].")
    max_score: float = Field(6.0, description="Upper end of the rubric's scale.")
    unparsable_score: Optional[float] = Field(
        None, description="Reward of a reply without a number; null: min_score. Counted as reward/<name>/unparsable."
    )

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, value: str) -> str:
        for key in ("{question}", "{response}"):
            if key not in value:
                raise ValueError(f"the rubric must contain {key}")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _range(self) -> "JudgeScoreConfig":
        if self.max_score <= self.min_score:
            raise ValueError("max_score must be above min_score")
        return self


class PythonFunctionConfig(ComponentConfig):
    """A reward written in Python, in the package of an installed mmalign plugin."""

    function: str = Field(
        description="'package.module:function' inside the package of an installed mmalign plugin (entry point group 'mmalign'); "
        "called as function(prompts, images, responses, **kwargs) -> list[float]. Other modules are refused.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments (JSON values) passed to the function.")

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", value):
            raise ValueError("write 'package.module:function' (a dotted module, a colon, a function name)")
        from .functions import plugin_packages

        top = value.split(".")[0].split(":")[0]
        packages = plugin_packages()
        if top not in packages:
            raise ValueError(f"module {value.split(':')[0]!r} is not in an installed mmalign plugin's package "
                             f"(packages: {', '.join(sorted(packages))}); put the function in a registered plugin")
        return value


class WeightedTerm(BaseModel):
    """One term of a weighted sum of rewards."""

    model_config = ConfigDict(extra="forbid")

    reward: RewardRef = Field(description="The reward.")
    weight: float = Field(1.0, description="Its weight.")
    label: Optional[str] = Field(None, description="Name in the metrics (reward/<label>); default: the reward's name, numbered if repeated.")


class WeightedSumRewardConfig(ComponentConfig):
    """A weighted sum of rewards; each term is logged on its own."""

    terms: list[WeightedTerm] = Field(min_length=1, description="The rewards and their weights.")


# ---------------------------------------------------------------------------- normalisation
class RewardNormalization(BaseModel):
    """How raw rewards are standardised before the algorithm sees them."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "running", "fixed", "base-policy"] = Field(
        "none",
        description="'none'; 'running': mean/std of every reward seen so far (Welford, checkpointed); 'fixed': the given mean/std; "
        "'base-policy': mean/std of one sample of the stage-start policy per prompt on the first 'n_prompts' prompts (the paper's RLOO).",
    )
    mean: float = Field(0.0, description="Mean for mode 'fixed'.")
    std: float = Field(1.0, gt=0, description="Standard deviation for mode 'fixed'.")
    n_prompts: int = Field(64, ge=2, description="Prompts sampled once each for mode 'base-policy'.")
    clip: Optional[float] = Field(None, gt=0, description="Clip normalised rewards to [-clip, clip]; null: no clipping.")


# ------------------------------------------------------------------------------- algorithms
class RLLoopConfig(ComponentConfig):
    """Settings of the shared RL loop (every algorithm has them)."""

    epochs: int = Field(1, ge=1, description="Passes over each step's rollouts (PPO epochs, GRPO inner iterations); each pass "
                        "is split into minibatches of train.batch_size rollouts, one optimizer step each.")
    normalization: RewardNormalization = Field(default_factory=RewardNormalization, description="Reward normalisation.")
    track_kl: bool = Field(True, description="Score the reference to log the KL even when the loss has no KL term.")
    pairs_log: bool = Field(True, description="Write each group's best and worst response (distinct rewards) to pairs.jsonl, canonical pair format.")


class GRPOConfig(RLLoopConfig):
    """Group-relative policy optimisation (GRPO and its now-standard variants)."""

    beta: float = Field(0.0, ge=0, description="KL coefficient in the loss (0, as peers now default to: no reference needed for the loss).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="Per-token KL estimator of the loss term.")
    scale_rewards: bool = Field(True, description="Divide group-centred rewards by the group's std; false: the no-std (Dr-GRPO) variant.")
    clip_low: float = Field(0.2, ge=0, lt=1, description="Lower clip of the ratio: 1 - clip_low.")
    clip_high: float = Field(0.2, ge=0, description="Upper clip of the ratio: 1 + clip_high (DAPO's clip-higher: 0.28).")
    loss_aggregation: Literal["sequence", "token", "token-sum", "constant"] = Field(
        "token-sum",
        description="'sequence': mean per response then over responses (GRPO); 'token': per micro-batch token mean; "
        "'token-sum': token sum / the minibatch's tokens (DAPO); 'constant': token sum / (responses x max_new_tokens) (Dr-GRPO).",
    )
    kl_ratio_correction: bool = Field(
        False, description="Multiply the per-token KL by the policy ratio pi/pi_old (an unbiased KL gradient off-policy; "
        "TRL's use_bias_correction_kl, on by default there)."
    )
    importance_sampling_cap: Optional[float] = Field(
        None, gt=0, description="Truncated importance correction min(pi_trainer/pi_sampler, cap) when the sampler reports its own "
        "log-probs; null: off. The built-in sampler is the policy itself, so the weights are 1 there.",
    )


class RLOOConfig(RLLoopConfig):
    """REINFORCE leave-one-out (the paper's RLOO, TRL's legacy RLOOTrainer form)."""

    beta: float = Field(0.4, ge=0, description="Sequence-level KL penalty subtracted from the reward (the paper: 0.4).")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator summed over the response.")
    clip: float = Field(0.2, ge=0, lt=1, description="Clip of the sequence-level ratio (matters only with epochs > 1).")
    normalize_advantages: bool = Field(False, description="Z-normalise the leave-one-out advantages over the step.")


class PPOConfig(RLLoopConfig):
    """PPO with a value head and GAE (the paper's: TRL legacy defaults)."""

    epochs: int = Field(4, ge=1, description="PPO epochs over each step's rollouts (TRL legacy: 4).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    clip: float = Field(0.2, ge=0, lt=1, description="Policy ratio clip.")
    value_clip: float = Field(0.2, gt=0, description="Value clip around the rollout-time values.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator of the reward's KL penalty.")
    kl_coef: float = Field(0.2, ge=0, description="Initial KL coefficient (TRL legacy: 0.2).")
    adaptive_kl: bool = Field(True, description="Adapt the KL coefficient towards 'target_kl' (TRL legacy); false: fixed.")
    target_kl: float = Field(6.0, gt=0, description="Target KL of the adaptive controller (TRL legacy: 6).")
    kl_horizon: float = Field(10000.0, gt=0, description="Horizon of the adaptive controller (TRL legacy: 10000).")
    whiten_advantages: bool = Field(True, description="Standardise the advantages over the step's tokens.")
    value_lr: Optional[float] = Field(None, gt=0, description="Learning rate of the value head; default: train.lr.")


__all__ = [
    "DEFAULT_RUBRIC", "GRPOConfig", "JudgeRef", "JudgeScoreConfig", "PPOConfig", "PythonFunctionConfig", "RLLoopConfig",
    "RLOOConfig", "RewardNormalization", "RewardRef", "ShapesOracleRewardConfig", "WeightedSumRewardConfig", "WeightedTerm",
]
