"""Registration of the rewards and RL algorithms (imports only config classes and entry records)."""
from __future__ import annotations

from typing import Any, Mapping

from mmalign_core import RewardEntry, RLAlgorithmEntry, hookimpl
from mmalign_core.errors import Problem

from .config import GRPOConfig, JudgeScoreConfig, PPOConfig, PythonFunctionConfig, RLOOConfig, ShapesOracleRewardConfig, WeightedSumRewardConfig

PLUGIN_NAME = "rl"
_KINDS = {"data": "preference_source", "reward": "reward", "algorithm": "rl_algorithm"}


def _reward_model_config() -> Any:
    from mmalign_online.config import RewardModelConfig

    return RewardModelConfig


@hookimpl
def mmalign_rewards() -> list[RewardEntry]:
    return [
        RewardEntry(name="shapes-oracle", summary="Shapes-world ground truth as a scalar: penalties for hallucinated and missed objects (no model).",
                    config=ShapesOracleRewardConfig, factory="mmalign_rl.rewards:make_shapes_oracle",
                    metrics=("hallucinated", "missed")),
        RewardEntry(name="reward-model", summary="The Bradley-Terry reward model (the online plugin's reward-model judge artefact) as a scalar reward.",
                    config=_reward_model_config(), factory="mmalign_rl.rewards:make_reward_model"),
        RewardEntry(name="judge-score", summary="Any judge rates each response on a rubric (e.g. MMHal-style 0-6); the number in its reply is the reward.",
                    config=JudgeScoreConfig, factory="mmalign_rl.rewards:make_judge_score", metrics=("unparsable",)),
        RewardEntry(name="python-function", summary="A Python function in an installed mmalign plugin's package, f(prompts, images, responses, **kwargs).",
                    config=PythonFunctionConfig, factory="mmalign_rl.rewards:make_python_function"),
        RewardEntry(name="weighted-sum", summary="A weighted sum of rewards; each term is logged on its own.",
                    config=WeightedSumRewardConfig, factory="mmalign_rl.rewards:make_weighted_sum"),
    ]


_COMMON = ("loss", "clip_fraction", "grad_norm", "reward/mean", "reward/std", "kl", "entropy", "response_length")


@hookimpl
def mmalign_rl_algorithms() -> list[RLAlgorithmEntry]:
    return [
        RLAlgorithmEntry(name="grpo", summary="GRPO: group-normalised advantages (or no-std), clipped ratio, KL k1/k2/k3 with beta, four loss aggregations.",
                         config=GRPOConfig, factory="mmalign_rl.algorithms:make_grpo", metrics=_COMMON + ("kl_term",)),
        RLAlgorithmEntry(name="rloo", summary="RLOO: k samples per prompt, leave-one-out baseline, sequence-level KL penalty in the reward.",
                         config=RLOOConfig, factory="mmalign_rl.algorithms:make_rloo", metrics=_COMMON + ("rloo/reward_with_kl",)),
        RLAlgorithmEntry(name="ppo", summary="PPO: value head, GAE, clipped policy and value losses, adaptive or fixed KL penalty, several epochs per batch.",
                         config=PPOConfig, factory="mmalign_rl.algorithms:make_ppo",
                         metrics=_COMMON + ("policy_loss", "value_loss", "value_clip_fraction", "kl_coef")),
    ]


@hookimpl
def mmalign_check_run(spec: Any, resolved: Mapping[str, Any]) -> list:
    """The components of ``rl`` stages: resolved and their configs validated (the core's spec validation does not see
    them yet), the prompt source's capabilities, and a shapes-oracle reward's world against the shapes source's."""
    from pydantic import ValidationError

    from mmalign_core.errors import MmalignError
    from mmalign_core.manager import get_plugins

    problems: list[Problem] = []
    stages = [(i, s) for i, s in enumerate(getattr(spec, "stages", None) or []) if getattr(s, "type", None) == "rl"]
    if not stages:
        return problems
    plugins = get_plugins()
    for i, stage in stages:
        found: dict[str, Any] = {}
        for field, kind in _KINDS.items():
            ref = getattr(stage, field)
            path = f"stages[{i}].{field}"
            try:
                entry = plugins.resolve(kind, ref.name)
            except (MmalignError, LookupError) as exc:
                problems.append(Problem(f"{path}.name", str(exc), plugin=PLUGIN_NAME))
                continue
            try:
                entry.config.model_validate(ref.config, context={"plugins": plugins})
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    where = ".".join(str(p) for p in err["loc"])
                    problems.append(Problem(f"{path}.config{'.' + where if where else ''}", err["msg"], plugin=entry.plugin or PLUGIN_NAME))
                continue
            found[field] = entry
        data = found.get("data")
        if data is not None:
            if "online" in data.capabilities:
                problems.append(Problem(f"stages[{i}].data", f"{data.name!r} is an online source; an rl stage samples its own responses: "
                                        "give a static preference or SFT source of prompts", plugin=PLUGIN_NAME))
            elif not data.capabilities & {"pairs", "sft"}:
                problems.append(Problem(f"stages[{i}].data", f"source {data.name!r} gives neither pairs nor SFT examples", plugin=PLUGIN_NAME))
        reward = found.get("reward")
        shapes_data = data is not None and data.plugin == "shapes"
        if reward is not None and reward.name == "shapes-oracle" and shapes_data:
            from .config import ShapesOracleRewardConfig

            mine = ShapesOracleRewardConfig.model_validate(stage.reward.config).world
            theirs = ShapesOracleRewardConfig.model_validate({"world": stage.data.config.get("world", {})}).world
            if mine != theirs:
                problems.append(Problem(f"stages[{i}].reward.config.world", "the shapes-oracle's world differs from the prompts' world; "
                                        "give both the same 'world' block (image ids carry the world's hash)", plugin=PLUGIN_NAME))
        if stage.rollout.samples_per_prompt < 2 and reward is not None and found.get("algorithm") is not None \
                and found["algorithm"].name in ("grpo", "rloo"):
            problems.append(Problem(f"stages[{i}].rollout.samples_per_prompt",
                                    f"{found['algorithm'].name} compares the responses to one prompt; sample at least 2", plugin=PLUGIN_NAME))
    return problems
