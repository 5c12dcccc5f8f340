"""Registration of the online sources and the judges (imports only config classes and entry records)."""
from __future__ import annotations

from typing import Any, Mapping

from mmalign_core import JudgeEntry, SourceEntry, hookimpl
from mmalign_core.errors import Problem

from .config import (
    MixedDPOConfig,
    OnlineDPOConfig,
    OpenAICompatibleConfig,
    RewardModelConfig,
    ShapesOracleConfig,
    VLMJudgeConfig,
)

PLUGIN_NAME = "online"
_FACTORY_PREFIX = "mmalign_online."
_ONLINE = {"online-dpo": OnlineDPOConfig, "mixed-dpo": MixedDPOConfig}


@hookimpl
def mmalign_preference_sources() -> list[SourceEntry]:
    return [
        SourceEntry(
            name="online-dpo",
            summary="Online-DPO: sample responses from the current policy each step; a judge picks chosen and rejected.",
            config=OnlineDPOConfig,
            factory="mmalign_online.source:make_online_dpo",
            capabilities={"pairs", "online"},
            requires={"generate"},
        ),
        SourceEntry(
            name="mixed-dpo",
            summary="Mixed-DPO: per example the offline pair with probability p, else a judged pair of current-policy samples.",
            config=MixedDPOConfig,
            factory="mmalign_online.source:make_mixed_dpo",
            capabilities={"pairs", "online"},
            requires={"generate"},
        ),
    ]


@hookimpl
def mmalign_judges() -> list[JudgeEntry]:
    return [
        JudgeEntry(
            name="vlm-judge",
            summary="A vision-language model (any model component, or the policy itself) compares two responses to an image question.",
            config=VLMJudgeConfig,
            factory="mmalign_online.judges:make_vlm_judge",
            capabilities={"complete", "compare"},
        ),
        JudgeEntry(
            name="reward-model",
            summary="A scalar reward head on a VLM backbone, trained with the Bradley-Terry loss on a preference source; ranks by reward.",
            config=RewardModelConfig,
            factory="mmalign_online.reward:make_reward_model_judge",
            capabilities={"complete", "compare"},
        ),
        JudgeEntry(
            name="openai-compatible",
            summary="An OpenAI-compatible chat endpoint as judge: retries with backoff, bounded concurrency, on-disk reply cache.",
            config=OpenAICompatibleConfig,
            factory="mmalign_online.openai_judge:make_openai_judge",
            capabilities={"complete", "compare"},
        ),
        JudgeEntry(
            name="shapes-oracle",
            summary="Ground-truth judge for the shapes world: the response naming fewer absent objects wins (no model).",
            config=ShapesOracleConfig,
            factory="mmalign_online.judges:make_shapes_oracle",
            capabilities={"complete", "compare"},
        ),
    ]


def _ours(entry: Any) -> bool:
    return getattr(entry, "factory", "").startswith(_FACTORY_PREFIX) and getattr(entry, "name", "") in _ONLINE


@hookimpl
def mmalign_check_run(spec: Any, resolved: Mapping[str, Any]) -> list:
    """Cross-component checks of online stages:

    - ``cache_reference`` cannot work with an online source (its pairs change every step): an error now
      rather than at the start of the stage;
    - the vLLM engine is a declared extension point without an implementation here: an error;
    - a ``shapes-oracle`` must describe the very world of the shapes prompts it judges (image ids carry
      the world's hash): an error when the two ``world`` blocks differ;
    - an ``openai-compatible`` judge whose key variable is unset: a warning (the run may happen elsewhere).
    """
    import os

    problems: list[Problem] = []
    for i, stage in enumerate(getattr(spec, "stages", None) or []):
        path = f"stages[{i}].data"
        entry = resolved.get(path)
        if entry is None or not _ours(entry):
            continue
        try:
            config = _ONLINE[entry.name].model_validate(stage.data.config)
        except Exception:  # noqa: BLE001 - reported by the config's own validation
            continue
        train = getattr(stage, "train", None)
        if train is not None and getattr(train, "cache_reference", False):
            problems.append(Problem(f"stages[{i}].train.cache_reference",
                                    f"{entry.name} makes new pairs every step, so reference log-probs cannot be cached; set it to false",
                                    plugin=PLUGIN_NAME))
        if config.engine.name == "vllm":
            from .engine import vllm_unavailable_reason

            problems.append(Problem(f"{path}.config.engine.name", vllm_unavailable_reason(), plugin=PLUGIN_NAME))
        judge = config.judge
        base = getattr(config, "prompts", None) or getattr(config, "base", None)
        if judge.name.split(":")[-1] == "shapes-oracle" and base is not None and "world" in base.config:
            if judge.config.get("world") != base.config.get("world"):
                problems.append(Problem(
                    f"{path}.config.judge.config.world",
                    f"the shapes-oracle's world differs from the world of the prompts ({base.name}); give both the same 'world' block "
                    "(the oracle reads each scene back from its image id, which carries the world's hash)",
                    plugin=PLUGIN_NAME,
                ))
        if judge.name.split(":")[-1] == "openai-compatible":
            var = judge.config.get("api_key_env")
            if var and not os.environ.get(var):
                problems.append(Problem(f"{path}.config.judge.config.api_key_env",
                                        f"environment variable {var} is not set here; requests will carry no API key",
                                        plugin=PLUGIN_NAME, severity="warning"))
    return problems
