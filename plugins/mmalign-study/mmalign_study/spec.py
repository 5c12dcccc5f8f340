"""The study spec: shared stages per seed, arms as stage lists, evaluators run after the base and every arm.

```json
{
  "name": "shapes-study",
  "seeds": [0, 1, 2],
  "base": {"model": {...}, "stages": [prior, sft], "threads": 1},
  "evaluate": [{"name": "shapes:shapes-chair", "config": {...}}],
  "arms": {"dpo-injected": {"stages": [{"type": "align", ...}]}, "nll": {"stages": [...]}}
}
```

Anywhere in ``base`` or an arm, ``"$seed"`` becomes the seed and ``{"$seed": k}`` becomes seed + k, so
data and initialisation follow the seed without repeating the spec per seed.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SEED = "$seed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    """One arm: stages run from the base (SFT) model of each seed, then the study's evaluators."""

    description: str = Field("", description="Shown in the table's legend.")
    stages: list[dict[str, Any]] = Field(
        min_length=1, description="Run-spec stages ('sft', 'align', 'rl', ...) trained from the base model; validated like a run spec."
    )


class StudySpec(_Strict):
    """A grid: per seed, the base stages once, then every arm from the base's final model."""

    name: str = Field(pattern=NAME, description="Study name; the default output folder is studies/<name>.")
    description: str = Field("", description="Free text written at the top of the table.")
    output_dir: Optional[str] = Field(None, description="Where the study writes; default studies/<name> (relative to the working directory).")
    seeds: list[int] = Field(min_length=1, description="Seeds; each gets its own base run and arms.")
    base: dict[str, Any] = Field(
        description="A run spec without 'name' and 'seed': the model, the shared stages (e.g. text prior and SFT) and run-wide "
        "settings (device, threads, dtype, deterministic)."
    )
    base_label: str = Field("sft", pattern=NAME, description="The table row of the base model (evaluated after the base stages).")
    evaluate: list[dict[str, Any]] = Field(min_length=1, description="Evaluators run after the base stages and after every arm.")
    arms: dict[str, Arm] = Field(min_length=1, description="Arm name -> its stages.")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        if any(s < 0 or s > 2**31 - 1 for s in seeds):
            raise ValueError("seeds must be in [0, 2^31 - 1]")
        return seeds

    @field_validator("base")
    @classmethod
    def _base(cls, base: dict[str, Any]) -> dict[str, Any]:
        for key in ("name", "seed", "output_dir"):
            if key in base:
                raise ValueError(f"base must not set {key!r}: the study sets it per seed")
        if not isinstance(base.get("stages"), list) or not base["stages"]:
            raise ValueError("base needs 'stages' (the shared stages, e.g. the text prior and SFT)")
        return base

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        import re

        bad = [a for a in arms if not re.fullmatch(NAME[1:-1], a)]
        if bad:
            raise ValueError(f"arm names must be letters, digits, '.', '_' or '-': {bad}")
        return arms


def with_seed(value: Any, seed: int) -> Any:
    """``value`` with every ``"$seed"`` replaced by ``seed`` and every ``{"$seed": k}`` by ``seed + k``."""
    if value == SEED:
        return seed
    if isinstance(value, dict):
        if set(value) == {SEED}:
            offset = value[SEED]
            if not isinstance(offset, int) or isinstance(offset, bool):
                raise ValueError(f'{{"$seed": {offset!r}}}: the offset must be an integer')
            return seed + offset
        return {k: with_seed(v, seed) for k, v in value.items()}
    if isinstance(value, list):
        return [with_seed(v, seed) for v in value]
    return copy.deepcopy(value)


def _evaluate_stage(study: StudySpec, name: str) -> dict[str, Any]:
    return {"type": "evaluate", "name": name, "evaluators": copy.deepcopy(study.evaluate)}


def base_run(study: StudySpec, seed: int) -> dict[str, Any]:
    """The run spec of a seed's base: its stages, then the study's evaluators."""
    spec = with_seed(study.base, seed)
    spec.update(name=f"{study.name}-s{seed}-{study.base_label}", seed=seed)
    spec["stages"] = [*spec["stages"], _evaluate_stage(study, "eval")]
    return spec


def arm_run(study: StudySpec, arm: str, seed: int, base_model: Optional[str]) -> dict[str, Any]:
    """The run spec of one arm at one seed: the base's model loaded from ``base_model``, the arm's stages, the evaluators.

    ``base_model`` None (validation before any base exists) keeps the base's model config as written.
    """
    base = with_seed(study.base, seed)
    spec = {k: v for k, v in base.items() if k != "stages"}
    model = dict(spec["model"])
    if base_model is not None:
        model["config"] = {**dict(model.get("config") or {}), "path": base_model}
    spec["model"] = model
    spec.update(name=f"{study.name}-s{seed}-{arm}", seed=seed)
    spec["stages"] = [*with_seed(study.arms[arm].stages, seed), _evaluate_stage(study, "eval")]
    return spec
