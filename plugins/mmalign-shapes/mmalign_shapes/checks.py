"""Run-level checks across shapes components (light: config classes only).

A run that trains on one shapes world and evaluates on another is almost
always a mistake that no single component config can see. The checks compare
the *vocabulary* of the worlds (colours, shapes, anchor pairs), which must
agree (an error), and the yes/no answer strings and question template of the
SFT data and the log-prob POPE probe (a warning). Rendering settings (noise,
sizes, background) may differ on purpose, e.g. to test robustness, so they are
not compared.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from pydantic import BaseModel, ValidationError

from mmalign_core.errors import Problem

from .config import ShapesChairConfig, ShapesPairsConfig, ShapesPopeConfig, ShapesSFTConfig, WorldConfig

#: The entry-point name of this plugin (the prefix of qualified names such as ``shapes:shapes-pope``).
PLUGIN_NAME = "shapes"
_FACTORY_PREFIX = "mmalign_shapes."

CONFIGS: dict[str, type[BaseModel]] = {
    "shapes-sft": ShapesSFTConfig,
    "shapes-pairs": ShapesPairsConfig,
    "shapes-pope": ShapesPopeConfig,
    "shapes-chair": ShapesChairConfig,
}


def _refs(spec: Any) -> Iterator[tuple[str, Any]]:
    """(JSON path, component ref) for every data source and evaluator of a run spec."""
    for i, stage in enumerate(getattr(spec, "stages", None) or []):
        data = getattr(stage, "data", None)
        if data is not None:
            yield f"stages[{i}].data", data
        for j, ref in enumerate(getattr(stage, "evaluators", None) or []):
            yield f"stages[{i}].evaluators[{j}]", ref


def _ours(path: str, ref: Any, resolved: Mapping[str, Any]) -> str | None:
    """The shapes component name of a ref, or None when the ref is another plugin's."""
    entry = resolved.get(path)
    if entry is not None:
        factory = getattr(entry, "factory", "")
        name = getattr(entry, "name", "")
        return name if factory.startswith(_FACTORY_PREFIX) and name in CONFIGS else None
    plugin, _, name = str(getattr(ref, "name", "")).rpartition(":")
    return name if name in CONFIGS and plugin in ("", PLUGIN_NAME) else None


def _vocabulary(world: WorldConfig) -> tuple:
    return (tuple(world.colours), tuple(world.shapes), tuple(tuple(p) for p in world.anchors))


def check_run(spec: Any, resolved: Mapping[str, Any] | None = None) -> list[Problem]:
    """Problems with the shapes components of ``spec`` taken together (empty when consistent).

    ``resolved`` (JSON path -> entry, as the core passes it) identifies the
    shapes components; without it, names decide. Components whose own config
    is invalid are skipped: per-component validation reports those.
    """
    resolved = resolved or {}
    found: list[tuple[str, str, Any]] = []
    for path, ref in _refs(spec):
        name = _ours(path, ref, resolved)
        if name is None:
            continue
        try:
            cfg = CONFIGS[name].model_validate(getattr(ref, "config", None) or {})
        except ValidationError:
            continue
        found.append((path, name, cfg))
    problems: list[Problem] = []
    if not found:
        return problems
    first_path, first_name, first_cfg = found[0]
    reference = _vocabulary(first_cfg.world)
    for path, name, cfg in found[1:]:
        if _vocabulary(cfg.world) != reference:
            problems.append(
                Problem(
                    f"{path}.config.world",
                    f"{name} uses a different shapes world (colours, shapes or anchors) than {first_path} "
                    f"({first_name}); train and evaluate on the same world",
                    plugin=PLUGIN_NAME,
                )
            )
    sft = [(p, c) for p, n, c in found if n == "shapes-sft"]
    pope = [(p, c) for p, n, c in found if n == "shapes-pope" and c.decision == "logprob"]
    for sft_path, sft_cfg in sft:
        for pope_path, pope_cfg in pope:
            for field in ("yes_answer", "no_answer", "question_template"):
                trained, probed = getattr(sft_cfg, field), getattr(pope_cfg, field)
                if trained != probed:
                    problems.append(
                        Problem(
                            f"{pope_path}.config.{field}",
                            f"{probed!r} differs from the SFT data's {trained!r} ({sft_path}); "
                            "the log-prob probe should score the answers the model was trained to give",
                            plugin=PLUGIN_NAME,
                            severity="warning",
                        )
                    )
    return problems
