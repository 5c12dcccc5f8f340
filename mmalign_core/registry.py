"""The component registry: kind -> name -> the entries that provide it.

Built by the plugin manager from the entries every loaded plugin returned.
:meth:`Registry.resolve` turns a name from a run spec into exactly one entry,
or raises an error that says what to write instead: the closest names, both
providers of a conflict, or the original error of a plugin that failed to load.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Literal, Optional, Sequence

from .entries import KIND_LABELS, KINDS, ComponentEntry
from .errors import AmbiguousComponentError, UnknownComponentError
from .known import KnownRegistry

PluginStatus = Literal["ok", "broken", "disabled"]


@dataclass(frozen=True)
class PluginInfo:
    """What the manager knows about one plugin, loaded or not.

    Attributes:
        name: plugin name (the entry-point name, or the name given at registration).
        status: ``"ok"``, ``"broken"`` (failed to import or register) or
            ``"disabled"`` (blocked through ``MMALIGN_DISABLE_PLUGINS``).
        distribution: the distribution that declares the entry point, if any.
        version: that distribution's version.
        module: what the entry point points at (``"pkg.plugin"``), or the module name.
        error: ``"ExceptionType: message"`` for a broken plugin.
        traceback: the formatted traceback of that error.
        stage: where it broke: ``"import"`` or ``"register"``.
    """

    name: str
    status: PluginStatus = "ok"
    distribution: Optional[str] = None
    version: Optional[str] = None
    module: Optional[str] = None
    error: Optional[str] = None
    traceback: Optional[str] = None
    stage: Optional[str] = None

    @property
    def origin(self) -> str:
        """``"mmalign-losses 0.1.0"``, or the module when no distribution is known."""
        if self.distribution:
            return f"{self.distribution} {self.version}" if self.version else self.distribution
        return self.module or self.name


def plural(kind: str) -> str:
    """Human plural of a kind label: ``loss`` -> ``losses``."""
    label = KIND_LABELS.get(kind, kind)
    return label + ("es" if label.endswith("s") else "s")


def with_article(label: str) -> str:
    """``"evaluator"`` -> ``"an evaluator"``; ``"loss"`` -> ``"a loss"``."""
    first = label.lstrip("'\"")[:1].lower()
    return ("an " if first and first in "aeiou" else "a ") + label


def split_name(name: str) -> tuple[Optional[str], str]:
    """``"losses:dpo"`` -> ``("losses", "dpo")``; ``"dpo"`` -> ``(None, "dpo")``."""
    plugin, sep, bare = name.partition(":")
    return (plugin, bare) if sep else (None, name)


class Registry:
    """Entries by kind and name, plus what is needed to explain a failed lookup.

    Args:
        entries: entries with their ``plugin`` field set.
        plugins: every plugin the manager saw (ok, broken, disabled).
        known: the curated registry (``registry.toml``), used only for messages.
    """

    def __init__(
        self,
        entries: Iterable[ComponentEntry],
        plugins: Sequence[PluginInfo] = (),
        known: Optional[KnownRegistry] = None,
    ):
        self._by_kind: dict[str, dict[str, list[ComponentEntry]]] = {kind: {} for kind in KINDS}
        for entry in entries:
            self._by_kind.setdefault(entry.kind, {}).setdefault(entry.name, []).append(entry)
        self.plugins: tuple[PluginInfo, ...] = tuple(plugins)
        self.known = known if known is not None else KnownRegistry()

    # ----------------------------------------------------------------- queries
    def names(self, kind: str) -> list[str]:
        """Sorted bare names of ``kind``."""
        return sorted(self._by_kind.get(kind, {}))

    def entries(self, kind: Optional[str] = None) -> list[ComponentEntry]:
        """All entries (of one kind), ordered by kind, name and plugin."""
        kinds = [kind] if kind else list(self._by_kind)
        return [e for k in kinds for n in sorted(self._by_kind.get(k, {})) for e in self._by_kind[k][n]]

    def providers(self, kind: str, name: str) -> list[ComponentEntry]:
        """Every entry of ``kind`` called ``name`` (bare), one per providing plugin."""
        return list(self._by_kind.get(kind, {}).get(name, ()))

    def conflicts(self) -> list[tuple[str, str, list[str]]]:
        """``(kind, name, [plugins])`` for every name provided by several plugins."""
        return [
            (kind, name, [e.plugin for e in found])
            for kind, names in self._by_kind.items()
            for name, found in sorted(names.items())
            if len(found) > 1
        ]

    def plugin(self, name: str) -> Optional[PluginInfo]:
        """The info record of plugin ``name``."""
        return next((p for p in self.plugins if p.name == name), None)

    def broken(self) -> list[PluginInfo]:
        """Plugins that failed to import or register."""
        return [p for p in self.plugins if p.status == "broken"]

    def get(self, kind: str, name: str) -> Optional[ComponentEntry]:
        """Like :meth:`resolve`, but ``None`` instead of an error."""
        try:
            return self.resolve(kind, name)
        except (UnknownComponentError, AmbiguousComponentError):
            return None

    # --------------------------------------------------------------- resolving
    def resolve(self, kind: str, name: str) -> ComponentEntry:
        """The one entry ``name`` (bare or ``plugin:name``) refers to.

        Raises:
            UnknownComponentError: nothing provides it; the message suggests close
                names, lists what is available and carries the original error of a
                broken plugin that provides (or might provide) it.
            AmbiguousComponentError: several plugins provide the bare name.
        """
        if kind not in self._by_kind:
            raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        plugin, bare = split_name(name)
        found = self.providers(kind, bare)
        if plugin is not None:
            found = [e for e in found if e.plugin == plugin]
            if not found:
                raise self._unknown_qualified(kind, plugin, bare)
        if len(found) == 1:
            return found[0]
        if found:
            raise self._ambiguous(kind, bare, found)
        raise self._unknown(kind, bare)

    def _ambiguous(self, kind: str, name: str, found: list[ComponentEntry]) -> AmbiguousComponentError:
        owners = [e.plugin for e in found]
        listed = ", ".join(f"{e.plugin!r} ({self._origin(e.plugin)})" for e in found)
        choices = " or ".join(f"'{p}:{name}'" for p in owners)
        message = f"{KIND_LABELS[kind].capitalize()} {name!r} is provided by several plugins: {listed}. Write {choices}."
        return AmbiguousComponentError(message, kind=kind, name=name, plugins=owners)

    def _origin(self, plugin: str) -> str:
        info = self.plugin(plugin)
        return info.origin if info else plugin

    def _unknown(self, kind: str, name: str) -> UnknownComponentError:
        label = KIND_LABELS[kind]
        lines = [f"Unknown {label} {name!r}." + self._suggestion(kind, name)]
        lines.append(self._available(kind))
        elsewhere = [k for k in KINDS if k != kind and name in self._by_kind.get(k, {})]
        if elsewhere:
            lines.append(f"{name!r} is {with_article(KIND_LABELS[elsewhere[0]])}, not {with_article(label)}.")
        explained, owners = self._why_missing(kind, name)
        lines += explained
        return UnknownComponentError("\n".join(lines), kind=kind, name=name, plugins=owners)

    def _unknown_qualified(self, kind: str, plugin: str, name: str) -> UnknownComponentError:
        label = KIND_LABELS[kind]
        info = self.plugin(plugin)
        if info is not None and info.status != "ok":
            lines = [self._status_line(info, f"{label} '{plugin}:{name}'")]
        elif info is None:
            plugins = sorted(p.name for p in self.plugins)
            hint = difflib.get_close_matches(plugin, plugins, n=1)
            lines = [f"Unknown plugin {plugin!r} in '{plugin}:{name}'." + (f" Did you mean {hint[0]!r}?" if hint else "")]
            lines.append("Loaded plugins: " + (", ".join(plugins) or "none") + ".")
        else:
            lines = [f"Plugin {plugin!r} provides no {label} {name!r}." + self._suggestion(kind, name, plugin)]
        others = [e.plugin for e in self.providers(kind, name)]
        if others:
            lines.append(f"{label.capitalize()} {name!r} is provided by: " + ", ".join(f"'{p}:{name}'" for p in others) + ".")
        elif info is None or info.status == "ok":
            lines.append(self._available(kind))
        return UnknownComponentError("\n".join(lines), kind=kind, name=f"{plugin}:{name}", plugins=[plugin])

    def _suggestion(self, kind: str, name: str, plugin: Optional[str] = None) -> str:
        names = [e.name for e in self.entries(kind) if plugin is None or e.plugin == plugin]
        close = difflib.get_close_matches(name, sorted(set(names)), n=3, cutoff=0.6)
        if not close:
            return ""
        return " Did you mean " + " or ".join(repr(c) for c in close) + "?"

    def _available(self, kind: str) -> str:
        names = self.names(kind)
        if not names:
            return f"No {KIND_LABELS[kind]} is installed."
        return f"Available {plural(kind)}: {', '.join(names)}."

    def _status_line(self, info: PluginInfo, what: str) -> str:
        if info.status == "disabled":
            return f"The {what} belongs to plugin {info.name!r} ({info.origin}), which is disabled by MMALIGN_DISABLE_PLUGINS."
        return (
            f"The {what} belongs to plugin {info.name!r} ({info.origin}), which failed to load "
            f"({info.stage or 'load'}): {info.error}"
        )

    def _known_suggestion(self, kind: str, name: str) -> list[str]:
        """A close name that only registry.toml knows (its plugin is not installed)."""
        installed = {p.name for p in self.plugins}
        candidates = {
            n: (table, record)
            for table, record in self.known.plugins.items()
            if record.entry_point not in installed
            for n in record.components.get(kind, ())
        }
        close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.75)
        if not close:
            return []
        table, record = candidates[close[0]]
        return [f"Did you mean {close[0]!r}? It is provided by plugin {table!r} ({record.distribution}), which is not installed."]

    def _why_missing(self, kind: str, name: str) -> tuple[list[str], list[str]]:
        """Lines explaining a missing name from registry.toml and broken plugins, plus the plugins named."""
        lines: list[str] = []
        owners: list[str] = []
        for table, record in self.known.providers_of(kind, name):
            info = self.plugin(record.entry_point)
            if info is not None and info.status != "ok":
                lines.append(self._status_line(info, f"{KIND_LABELS[kind]} {name!r}"))
                owners.append(info.name)
            elif info is None:
                state = "is planned but not yet released" if record.status == "planned" else "is not installed"
                hint = "" if record.status == "planned" else f" (pip install {record.distribution})"
                lines.append(f"{name!r} is provided by plugin {table!r}{hint}, which {state}.")
        if not lines:
            lines += self._known_suggestion(kind, name)
        if not owners:
            broken = self.broken()
            if broken:
                lines.append(f"{len(broken)} plugin{'s' if len(broken) != 1 else ''} failed to load and might provide it:")
                lines += [f"  {p.name} ({p.origin}): {p.error}" for p in broken]
        return lines, owners
