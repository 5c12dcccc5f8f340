"""Helpers of the RL tests: a stage built directly (no runner), on the tiny LLaVA and shapes prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmalign_core.protocols import Context, RLStageInputs
from mmalign_core.spec_models import LoraSettings, RolloutSettings, TrainSettings


def shapes_prompts(n: int = 12) -> list[Any]:
    from mmalign_shapes.config import ShapesPairsConfig
    from mmalign_shapes.sources import ShapesPairsSource

    src = ShapesPairsSource(ShapesPairsConfig(n_pairs=n, mode="partner"))
    return list(src.pairs(Context()))


def length_reward() -> Any:
    """A reward that differs between samples of a random model: closeness of the word count to 3."""
    from mmalign_rl.config import PythonFunctionConfig
    from mmalign_rl.rewards import PythonFunctionReward

    return PythonFunctionReward(PythonFunctionConfig(function="mmalign_rl.functions:response_length",
                                                     kwargs={"target_words": 3, "per_word": 1.0}))


def stage(model: Any, tmp: Path, *, prompts: Any = None, reward: Any = None, steps: int = 3, every: int | None = None,
          lora: bool = True, k: int = 4, prompts_per_step: int = 2, batch_size: int = 8, micro: int | None = None,
          max_new_tokens: int = 6, lr: float = 1e-3) -> RLStageInputs:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    return RLStageInputs(
        model=model, prompts=prompts if prompts is not None else shapes_prompts(), reward=reward or length_reward(),
        train=TrainSettings(steps=steps, batch_size=batch_size, micro_batch_size=micro, lr=lr, schedule="constant", warmup_ratio=0.0,
                            log_every=1, checkpoint_every=every, lora=LoraSettings(r=4, alpha=8, dropout=0.0) if lora else None),
        rollout=RolloutSettings(prompts_per_step=prompts_per_step, samples_per_prompt=k, max_new_tokens=max_new_tokens),
        stage_name="rl", stage_dir=tmp, metrics_path=tmp / "metrics.jsonl", seed=0,
        ctx=Context(seed=0, output_dir=data, cache_dir=tmp / "cache", log=lambda s: None), log=lambda s: None,
    )


def lora_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items() if "lora_" in k}
