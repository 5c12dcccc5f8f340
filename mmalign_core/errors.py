"""Exceptions the core raises for problems a user can fix.

Every error here derives from :class:`MmalignError`. The CLI prints such an
error as a message (no traceback) and exits with its ``exit_code``; anything
else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

Severity = Literal["error", "warning"]


class MmalignError(Exception):
    """Base class of user-facing errors. ``exit_code`` is what the CLI returns."""

    exit_code: int = 2


class ResolveError(MmalignError, LookupError):
    """A component name could not be resolved to exactly one entry.

    Attributes:
        kind: the component kind that was looked up.
        name: the name as written (bare or ``plugin:name``).
        plugins: plugins the error is about (a broken provider, both sides of
            a conflict), so a problem report can name its owner.
    """

    def __init__(self, message: str, *, kind: str, name: str, plugins: Sequence[str] = ()):
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.plugins = tuple(plugins)


class UnknownComponentError(ResolveError):
    """No installed plugin provides the name."""


class AmbiguousComponentError(ResolveError):
    """Several plugins provide the bare name; ``plugin:name`` must pick one."""


class KnownRegistryError(MmalignError):
    """``registry.toml`` is missing, unreadable or does not match its model."""


class SpecLoadError(MmalignError):
    """A spec file cannot be read or is not valid JSON."""


@dataclass(frozen=True)
class Problem:
    """One finding about a run spec.

    Attributes:
        path: JSON path of the offending value, e.g. ``stages[1].loss.config.beta``
            (empty for the whole run).
        message: what is wrong, in one or a few lines.
        plugin: the plugin that owns the component, when known.
        severity: ``"error"`` blocks the run, ``"warning"`` is only shown.
    """

    path: str
    message: str
    plugin: str | None = None
    severity: Severity = "error"

    def format(self) -> str:
        """One human-readable line (continuation lines indented)."""
        where = self.path or "<run>"
        owner = f" [plugin {self.plugin}]" if self.plugin else ""
        text = self.message.replace("\n", "\n    ")
        return f"{where}: {text}{owner}"


class SpecValidationError(MmalignError):
    """A run spec has one or more errors; ``problems`` holds all of them."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        errors = [p for p in self.problems if p.severity == "error"]
        head = f"{source}: " if source else ""
        lines = [f"{head}{len(errors)} problem{'s' if len(errors) != 1 else ''} in the run spec:"]
        lines += ["  " + p.format() for p in self.problems]
        super().__init__("\n".join(lines))


class RunError(MmalignError):
    """A run cannot start or continue (existing output, changed spec, missing device, failing component)."""

    # The spec was valid but the run failed: 1, distinct from 2 (invalid spec or usage).
    exit_code = 1
