"""Helpers for component config classes."""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

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
