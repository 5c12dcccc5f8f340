"""References to registered components inside a component's own config.

Some components take other components as settings: an evaluator its judge, BDHS its base source and
sentence embedder, online DPO its prompt source, judge and models, a weighted-sum loss its terms. In a
spec such a setting reads like a top-level component, ``{"name": ..., "config": {...}}``, and it gets
the same treatment: subclass :class:`NestedComponent`, set ``kind`` (and optionally the capability
rules), and use the subclass as the field's type::

    class JudgeRef(NestedComponent):
        \"\"\"The judge that scores the answers.\"\"\"
        kind: ClassVar[str] = "judge"

    class MyEvaluatorConfig(ComponentConfig):
        judge: JudgeRef = Field(description="...")

On validation the name is resolved (an unknown one is an error naming the installed components, with a
did-you-mean), stored qualified (``plugin:name``), the capability rules are checked, and ``config`` is
validated by the referenced component's own config class and stored with its defaults written out, so
manifests record what actually ran. Errors name the field inside the nested config. The plugin manager
used is the one passed as ``context={"plugins": manager}`` to ``model_validate`` (``validate_spec``
does), else the process-wide one.
"""
from __future__ import annotations

import difflib
from typing import Any, ClassVar, Optional

from pydantic import Field, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from .config import ComponentConfig


#: The pydantic error type of a nested component whose own config is invalid; its ``ctx["problems"]`` lists
#: ``(location from the reference, message, plugin that owns the field)`` with the full location of each.
NESTED_ERROR = "nested_component_config"

#: Validation context key: ``False`` validates a config without resolving the components it names.
RESOLVE_KEY = "resolve_components"


def plugins_for(info: Optional[ValidationInfo]) -> Any:
    """The plugin manager a validation should resolve names with: ``context["plugins"]`` or the process-wide one."""
    context = info.context if info is not None else None
    if isinstance(context, dict) and context.get("plugins") is not None:
        return context["plugins"]
    from .manager import get_plugins

    return get_plugins()


def field_message(err: Any, config: Any) -> str:
    """One pydantic error as a message (unknown keys get a did-you-mean and the allowed fields)."""
    if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
        close = difflib.get_close_matches(str(err["loc"][0]), list(config.model_fields), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown field {err['loc'][-1]!r}.{hint} Allowed fields: {', '.join(config.model_fields)}."
    if err["type"] == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def _summary_line(err: Any, config: Any) -> str:
    """One error of a nested config, for the one-line message (the spec's report uses the full paths instead)."""
    where = ".".join(str(p) for p in err["loc"]) or "(config)"
    message = err["msg"]
    if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
        close = difflib.get_close_matches(str(err["loc"][0]), list(config.model_fields), n=1)
        message = f"unknown field{f'; did you mean {close[0]!r}?' if close else ''}"
        message += f" (allowed: {', '.join(config.model_fields)})"
    return f"config.{where}: {message}"


def nested_problems(exc: ValidationError, entry: Any) -> list[tuple[tuple[Any, ...], str, str]]:
    """The problems of ``entry``'s config as ``(location from the reference, message, owning plugin)``.

    Locations start at the reference (``("config", "hiden_size")``); a component nested deeper keeps its
    own problems, prefixed with where it sits, so a typo two levels down is reported at its field and
    blamed on the plugin whose config has the field.
    """
    found: list[tuple[tuple[Any, ...], str, str]] = []
    for err in exc.errors(include_url=False):
        loc = ("config", *err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == NESTED_ERROR and isinstance(ctx.get("problems"), list):
            found += [((*loc, *inner), message, plugin) for inner, message, plugin in ctx["problems"]]
        else:
            found.append((loc, field_message(err, entry.config), entry.plugin))
    return found


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


class NestedComponent(ComponentConfig):
    """A registered component named inside another component's config: ``{"name": ..., "config": {...}}``.

    Subclasses set the class variables:

    - ``kind``: the component kind (``"judge"``, ``"preference_source"``, ``"embedder"``, ...);
    - ``needs_any``: capabilities of which the component must have at least one (empty: any);
    - ``refuses``: capabilities it must not have;
    - ``refuses_requires``: requirements (entry ``requires``) it must not have;
    - ``usage``: how the error messages describe the place (default: "here").

    and may override :meth:`check_entry` for rules of their own (raise ``ValueError``).
    """

    kind: ClassVar[str] = ""
    needs_any: ClassVar[tuple[str, ...]] = ()
    refuses: ClassVar[tuple[str, ...]] = ()
    refuses_requires: ClassVar[tuple[str, ...]] = ()
    usage: ClassVar[str] = "here"

    name: str = Field(description="Registered component name (see `mmalign plugins`), or 'plugin:name' to pick one provider; stored qualified.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="Settings checked against the component's own config class (defaults filled in)."
    )

    @classmethod
    def label(cls) -> str:
        return cls.kind.replace("_", " ")

    @classmethod
    def check_entry(cls, entry: Any) -> None:
        """Rules on the resolved entry beyond the capability class variables (raise ``ValueError``)."""
        caps = set(entry.capabilities)
        if cls.needs_any and not caps & set(cls.needs_any):
            wanted = " or ".join(repr(c) for c in cls.needs_any)
            raise ValueError(f"{cls.label()} {entry.qualified_name!r} cannot be used {cls.usage}: it needs capability {wanted} "
                             f"(it has: {', '.join(sorted(caps)) or 'none'})")
        bad = sorted(caps & set(cls.refuses)) + sorted(set(entry.requires) & set(cls.refuses_requires))
        if bad:
            raise ValueError(f"{cls.label()} {entry.qualified_name!r} cannot be used {cls.usage}: it is or needs "
                             f"{', '.join(bad)}")

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data  # field validation reports the shape problem
        if isinstance(info.context, dict) and info.context.get(RESOLVE_KEY) is False:
            return data  # checking a config class's own defaults at registration: other plugins may not be loaded yet
        default = cls.model_fields["name"].default
        name = data.get("name", default)
        config = data.get("config", {})
        if not isinstance(name, str) or not isinstance(config, dict):
            return data
        from .errors import MmalignError

        try:
            entry = plugins_for(info).resolve(cls.kind, name)
        except (MmalignError, LookupError) as exc:
            raise ValueError(_indent(str(exc))) from None
        cls.check_entry(entry)
        try:
            validated = entry.config.model_validate(config, context=info.context)
        except ValidationError as exc:
            problems = nested_problems(exc, entry)
            summary = "; ".join(_summary_line(err, entry.config) for err in exc.errors(include_url=False))
            raise PydanticCustomError(
                NESTED_ERROR,
                "invalid config for {label} '{component}': {summary}",
                {"label": cls.label(), "component": entry.qualified_name, "summary": summary, "problems": problems},
            ) from None
        return {**data, "name": entry.qualified_name, "config": validated.model_dump(mode="json")}

    def entry(self, plugins: Any = None) -> Any:
        """The registry entry this reference names."""
        from .manager import get_plugins

        return (plugins or get_plugins()).resolve(self.kind, self.name)

    def build(self, plugins: Any = None, context: Any = None) -> Any:
        """Build the referenced component from its (validated) config; with a
        :class:`~mmalign_core.build.BuildContext`, through the manager that validated the spec."""
        if context is not None:
            return context.build(self.kind, self.name, self.config)
        return self.entry(plugins).build(self.config)


__all__ = ["NESTED_ERROR", "NestedComponent", "nested_problems", "plugins_for"]
