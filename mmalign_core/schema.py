"""JSON Schema of the run spec, assembled from the installed plugins.

The envelope's own schema (pydantic) is kept, and each component reference is
replaced by a per-kind definition: a ``oneOf`` with one alternative per
installed component, whose ``name`` is constrained to that component's names
(bare and ``plugin:name``) and whose ``config`` is the component's config
schema. Editors can then complete names and settings. Imports no torch.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel

from .entries import KINDS, ComponentEntry
from .registry import plural
from .spec_models import AlignStage, RunSpec, SFTStage

if TYPE_CHECKING:  # pragma: no cover
    from .manager import Plugins

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Where the envelope holds component references: (definition, property) -> kind.
# A property whose value is a list (``evaluators``) constrains its items.
COMPONENT_FIELDS: dict[tuple[str, str], str] = {
    ("RunSpec", "model"): "model",
    ("SFTStage", "data"): "preference_source",
    ("SFTStage", "loss"): "loss",
    ("AlignStage", "data"): "preference_source",
    ("AlignStage", "loss"): "loss",
    ("EvaluateStage", "evaluators"): "evaluator",
    ("RLStage", "data"): "preference_source",
    ("RLStage", "algorithm"): "rl_algorithm",
    ("RLStage", "reward"): "reward",
}
_DEFAULTS: dict[tuple[str, str], type[BaseModel]] = {("SFTStage", "loss"): SFTStage, ("AlignStage", "loss"): AlignStage}


def ref_def_name(kind: str) -> str:
    """Name of the ``$defs`` entry for references of ``kind`` (``loss`` -> ``LossRef``)."""
    return "".join(part.capitalize() for part in kind.split("_")) + "Ref"


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    """Copy of ``node`` with every local ``$ref`` renamed through ``renames``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = "#/$defs/" + renames.get(value[len("#/$defs/") :], value[len("#/$defs/") :])
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def _config_schema(entry: ComponentEntry, defs: dict[str, Any]) -> dict[str, Any]:
    """Add the entry's config schema (and its nested definitions) to ``defs``; return a ``$ref`` to it."""
    key = f"{entry.kind}.{entry.plugin or 'unknown'}.{entry.name}"
    try:
        schema = entry.config.model_json_schema()
    except Exception as exc:  # a config type pydantic cannot describe
        defs[key] = {"type": "object", "description": f"schema unavailable: {type(exc).__name__}: {exc}"}
        return {"$ref": f"#/$defs/{key}"}
    nested = schema.pop("$defs", {})
    renames = {name: f"{key}.{name}" for name in nested}
    for name, sub in nested.items():
        defs[renames[name]] = _rewrite_refs(sub, renames)
    defs[key] = _rewrite_refs(schema, renames)
    return {"$ref": f"#/$defs/{key}"}


def _alternative(entry: ComponentEntry, names: list[str], defs: dict[str, Any]) -> dict[str, Any]:
    owner = f" (plugin {entry.plugin})" if entry.plugin else ""
    return {
        "title": entry.qualified_name,
        "description": entry.summary + owner,
        "type": "object",
        "properties": {
            "name": {"enum": names, "description": "Component name."},
            "config": _config_schema(entry, defs),
        },
        "required": ["name"],
        "additionalProperties": False,
    }


def _kind_schema(kind: str, plugins: "Plugins", defs: dict[str, Any]) -> dict[str, Any]:
    registry = plugins.registry
    alternatives = []
    for entry in registry.entries(kind):
        unique = len(registry.providers(kind, entry.name)) == 1
        names = ([entry.name] if unique else []) + ([f"{entry.plugin}:{entry.name}"] if entry.plugin else [])
        alternatives.append(_alternative(entry, names, defs))
    if not alternatives:
        return {"description": f"No {kind.replace('_', ' ')} is installed.", "not": {}}
    return {"description": f"One of the installed {plural(kind)}.", "oneOf": alternatives}


def _constrain(envelope: dict[str, Any]) -> None:
    """Point each component property of the envelope at its per-kind definition."""
    defs = envelope["$defs"]
    for (owner, prop), kind in COMPONENT_FIELDS.items():
        holder = envelope if owner == "RunSpec" else defs.get(owner)
        if not holder or prop not in holder.get("properties", {}):
            continue
        target = holder["properties"][prop]
        ref = {"$ref": f"#/$defs/{ref_def_name(kind)}"}
        if target.get("type") == "array":
            target["items"] = ref
        else:
            keep = {k: v for k, v in target.items() if k != "$ref"}
            holder["properties"][prop] = {**ref, **keep}
        model = _DEFAULTS.get((owner, prop))
        if model is not None:
            default = model.model_fields[prop].get_default(call_default_factory=True)
            holder["properties"][prop]["default"] = default.model_dump(mode="json")


def build_schema(plugins: Optional["Plugins"] = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a run spec for the installed plugins."""
    if plugins is None:
        from .manager import get_plugins

        plugins = get_plugins()
    envelope = copy.deepcopy(RunSpec.model_json_schema())
    defs = envelope.setdefault("$defs", {})
    _constrain(envelope)
    defs.pop("ComponentRef", None)
    config_defs: dict[str, Any] = {}
    for kind in KINDS:
        if kind in COMPONENT_FIELDS.values():
            defs[ref_def_name(kind)] = _kind_schema(kind, plugins, config_defs)
    defs.update(config_defs)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "mmalign run spec",
        **{k: v for k, v in envelope.items() if k != "title"},
    }
