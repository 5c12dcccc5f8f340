"""Helpers for component config classes."""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, model_validator

_UNIONS = (typing.Union, types.UnionType)


def _numeric_only(annotation: Any) -> bool:
    """Whether a field takes numbers and not booleans (``int``, ``float``, ``Optional[int]``, ``Annotated[...]``)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in _UNIONS:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(members) and all(_numeric_only(a) for a in members)
    return annotation in (int, float)


def reject_boolean_numbers(model: type[BaseModel], data: Any) -> Any:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read ``"steps": true`` as 1)."""
    if not isinstance(data, dict):
        return data
    for name, field in model.model_fields.items():
        key = field.alias or name
        if isinstance(data.get(key), bool) and _numeric_only(field.annotation):
            raise ValueError(f"{key}: expected a number, got a boolean ({str(data[key]).lower()})")
    return data


class ComponentConfig(BaseModel):
    """Base class for component configs: unknown keys are errors, values are validated on assignment,
    booleans are not numbers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        return reject_boolean_numbers(cls, data)


#: Validation context key: the folder of the spec file being validated (relative paths resolve against it).
SPEC_DIR_KEY = "spec_dir"


def _spec_dir(info: ValidationInfo) -> Path | None:
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get(SPEC_DIR_KEY)
    return Path(base) if base else None


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    base = _spec_dir(info)
    if not isinstance(value, str) or base is None or not value.strip():
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_path_or_id(value: Any, info: ValidationInfo) -> Any:
    base = _spec_dir(info)
    if not isinstance(value, str) or base is None or not value.strip():
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = (base / path).resolve()
    return str(candidate) if candidate.exists() else value


SpecPath = Annotated[str, AfterValidator(_resolve_path)]
"""A file or folder named in a spec: a relative path resolves against the spec file's folder (not the working
directory), so a spec works from any folder; the recorded ``spec.json`` holds the resolved path. Outside a
spec file (a config built in Python), the value is kept as written."""

SpecPathOrId = Annotated[str, AfterValidator(_resolve_path_or_id)]
"""A local folder or a hub id (``llava-hf/llava-1.5-7b-hf``): a relative value resolves against the spec's folder
when something exists there, and is kept as written (an id) otherwise."""
