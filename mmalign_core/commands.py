"""Plugin-provided CLI commands and ``mmalign compare`` column sets.

A plugin adds a subcommand with the ``mmalign_add_commands`` hook::

    @hookimpl
    def mmalign_add_commands(commands):
        parser = commands.add("hello", say_hello, help="greet", description="Print a greeting.")
        parser.add_argument("--name", default="world")

    def say_hello(args) -> int:
        print(f"hello {args.name}")
        return 0

A handler takes the parsed :class:`argparse.Namespace` and returns the exit
code. The plugin's module stays light (no torch at import): ``mmalign --help``
loads every plugin to list its commands.

Commands never break each other: a name already taken (by the core or by an
earlier plugin) is refused and recorded as a problem naming both owners; a
plugin whose hook raises loses its own commands only. ``mmalign plugins``
lists the problems.

Column sets (``mmalign_compare_columns``) name a fixed layout of ``mmalign
compare`` columns, e.g. the paper's Table 2 provided by mmalign-evals:
``mmalign compare --columns paper RUN...``.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

Handler = Callable[[argparse.Namespace], int]

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


@dataclass(frozen=True)
class CommandProblem:
    """A command that could not be added: who tried, which name, why."""

    plugin: str
    command: str
    reason: str

    def format(self) -> str:
        name = f"'{self.command}' " if self.command else ""
        return f"plugin {self.plugin}: command {name}not added: {self.reason}"


class Commands:
    """What a ``mmalign_add_commands`` implementation receives: add subcommands to ``mmalign``.

    ``plugin`` is set by the manager to the plugin whose hook is being called,
    so that a clash names both owners.
    """

    def __init__(self, subparsers: Any, taken: Optional[dict[str, str]] = None):
        self._sub = subparsers
        self.owners: dict[str, str] = dict(taken or {})
        self.problems: list[CommandProblem] = []
        self.plugin = ""

    def add(self, name: str, handler: Handler, *, help: str, description: str = "") -> argparse.ArgumentParser:
        """Add ``mmalign NAME``; returns its parser (add arguments and sub-parsers to it).

        A name that is taken or malformed, a handler that is not callable or a
        missing help line is recorded as a problem; the returned parser is then
        a detached one, so the plugin's further calls still work and its other
        commands are still added.
        """
        reason = self._refusal(name, handler, help)
        if reason:
            self.refuse(str(name), reason)
            return argparse.ArgumentParser(prog=f"mmalign {name}", add_help=False)
        parser: argparse.ArgumentParser = self._sub.add_parser(name, help=help, description=description or help)
        parser.set_defaults(func=handler, command_owner=self.plugin or "core")
        self.owners[name] = f"plugin {self.plugin}" if self.plugin else "the core"
        return parser

    def _refusal(self, name: Any, handler: Any, help: Any) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return f"{name!r} is not a lower-case, dash-separated command name"
        if name in self.owners:
            return f"the name is already taken by {self.owners[name]}"
        if not callable(handler):
            return "the handler is not callable"
        if not isinstance(help, str) or not help.strip() or "\n" in help:
            return "help must be one non-empty line"
        return ""

    def refuse(self, command: str, reason: str) -> None:
        """Record a problem for the current plugin."""
        self.problems.append(CommandProblem(self.plugin, command, reason))


@dataclass(frozen=True)
class CompareColumn:
    """One column of a column set: its label, the evaluator and metric it reads, and a scale to the set's units."""

    label: str
    evaluator: str
    metric: str
    scale: float = 1.0
    higher_is_better: Optional[bool] = None


@dataclass(frozen=True)
class ColumnSet:
    """A named layout of ``mmalign compare`` columns (``--columns NAME``)."""

    name: str
    summary: str
    columns: tuple[CompareColumn, ...] = field(default_factory=tuple)
    plugin: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name or ""):
            raise ValueError(f"column set name {self.name!r} must be lower-case and dash-separated")
        if not self.columns or not all(isinstance(c, CompareColumn) for c in self.columns):
            raise ValueError(f"column set {self.name!r}: columns must be a non-empty tuple of CompareColumn")
