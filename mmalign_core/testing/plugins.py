"""Isolated plugin managers for tests: nothing installed leaks in, nothing leaks out."""
from __future__ import annotations

from typing import Optional, Sequence

from ..manager import PluginLike, Plugins, create_plugins
from .contracts import ContractError, _Findings, check_entry


class PluginRegistrationError(AssertionError):
    """A plugin given to :func:`plugins_with` failed to import or register."""


def plugins_with(
    plugin: PluginLike,
    name: Optional[str] = None,
    *,
    others: Sequence[PluginLike] = (),
    builtin: bool = True,
    strict: bool = True,
) -> Plugins:
    """A fresh, isolated :class:`~mmalign_core.manager.Plugins` holding ``plugin`` (and the core built-ins).

    No entry points are discovered and ``MMALIGN_DISABLE_PLUGINS`` is ignored,
    so the result depends only on the arguments; the process-wide manager
    (:func:`~mmalign_core.manager.get_plugins`) is untouched.

    Args:
        plugin: a module or object with ``@hookimpl`` functions, or a module path.
        name: the plugin name (what ``plugin:name`` references use); default:
            the module's ``__name__`` (or the object's class name).
        others: further plugins registered after ``plugin``.
        builtin: also register the core's default plugin as ``core``.
        strict: raise :class:`PluginRegistrationError` (with the original
            traceback) when ``plugin`` fails to load, instead of returning a
            manager that records it as broken.
    """
    first = (name, plugin) if name is not None else plugin
    plugins = create_plugins(first, *others, builtin=builtin)
    if strict:
        info = plugins.infos()[1 if builtin else 0]
        if info.status != "ok":
            raise PluginRegistrationError(
                f"plugin {info.name!r} failed to load ({info.stage}): {info.error}\n{info.traceback or ''}".rstrip()
            )
    return plugins


def check_plugin(plugin: PluginLike, name: Optional[str] = None) -> Plugins:
    """Register ``plugin`` in isolation and run :func:`check_entry` on every entry it provides.

    Returns the isolated manager. Raises :class:`PluginRegistrationError`
    when the plugin does not load, :class:`ContractError` listing the
    problems of every failing entry otherwise.
    """
    plugins = plugins_with(plugin, name)
    info = plugins.infos()[1]
    findings = _Findings(f"plugin {info.name!r}")
    for entry in plugins.entries_of(info.name):
        try:
            check_entry(entry)
        except ContractError as exc:
            findings.extend(f"{exc.subject}: {p}" for p in exc.problems)
    findings.raise_if_any()
    return plugins


__all__ = ["PluginRegistrationError", "plugins_with", "check_plugin"]
