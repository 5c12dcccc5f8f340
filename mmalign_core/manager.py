"""The plugin manager: discovery, fault isolation and a typed facade over pluggy.

Loading order: the core's default plugin (:mod:`mmalign_core.builtin`, by
module path), then every entry point of group ``mmalign``, then any explicit
plugins. Each plugin is imported, registered and asked for its entries on its
own, so one that fails -- at import, at registration, or by returning
malformed entries -- is recorded as *broken* (with distribution, version,
error and traceback) and the others keep working. Plugins named in
``MMALIGN_DISABLE_PLUGINS`` (comma-separated) are not imported at all.

Nothing outside this module calls ``pm.hook.<name>()``: the rest of the code
uses :class:`Plugins`.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata as metadata
import logging
import os
import traceback as tb
from functools import lru_cache
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import pluggy

from . import __version__, hookspecs
from .commands import ColumnSet, CommandProblem, Commands
from .entries import ENTRY_TYPES, KINDS, ComponentEntry, EntryError, validate_entry
from .errors import Problem
from .hookspecs import PROJECT, REGISTRATION_HOOKS
from .known import KnownRegistry, known_or_empty
from .registry import PluginInfo, Registry

logger = logging.getLogger("mmalign")

ENTRY_POINT_GROUP = "mmalign"
DISABLE_ENV = "MMALIGN_DISABLE_PLUGINS"
BUILTIN_NAME = "core"
BUILTIN_MODULE = "mmalign_core.builtin"

PluginLike = Union[object, ModuleType, str, tuple[str, Any]]
"""An explicit plugin: an object or module with hook implementations, a module
path to import, or a ``(name, plugin)`` pair."""

_KIND_OF_HOOK = {hook: kind for kind, hook in REGISTRATION_HOOKS.items()}


class PluginLoadFailure(Exception):
    """Internal: why one plugin could not be added (stage and original exception)."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(str(error))
        self.stage = stage
        self.error = error


def disabled_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Plugin names listed in ``MMALIGN_DISABLE_PLUGINS``."""
    raw = (environ if environ is not None else os.environ).get(DISABLE_ENV, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format_traceback(exc: BaseException) -> str:
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


def _core_version() -> str:
    try:
        return metadata.version("mmalign")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return __version__


class Plugins:
    """The loaded plugins, their entries and typed calls of every hook.

    Build one with :func:`get_plugins` (cached, discovers entry points),
    :func:`load_plugins` (uncached) or :func:`create_plugins` (isolated, from
    explicit plugin objects; for tests and the testing kit).
    """

    def __init__(self, *, disabled: Iterable[str] = (), known: Optional[KnownRegistry] = None):
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._entries: dict[str, list[ComponentEntry]] = {}
        self._disabled = frozenset(disabled)
        for name in self._disabled:
            self._pm.set_blocked(name)
        self._known = known if known is not None else KnownRegistry()
        self._registry: Optional[Registry] = None

    # ------------------------------------------------------------ inspection
    @property
    def registry(self) -> Registry:
        """The component registry over every loaded plugin's entries."""
        if self._registry is None:
            entries = [e for found in self._entries.values() for e in found]
            self._registry = Registry(entries, list(self._infos.values()), self._known)
        return self._registry

    @property
    def known(self) -> KnownRegistry:
        """The curated registry (``registry.toml``) this manager consults for messages."""
        return self._known

    def infos(self) -> list[PluginInfo]:
        """Every plugin seen, in loading order (ok, broken and disabled)."""
        return list(self._infos.values())

    def info(self, name: str) -> Optional[PluginInfo]:
        """The record of plugin ``name``."""
        return self._infos.get(name)

    def broken(self) -> list[PluginInfo]:
        """Plugins that failed to import or register."""
        return [p for p in self._infos.values() if p.status == "broken"]

    def entries(self, kind: Optional[str] = None) -> list[ComponentEntry]:
        """Entries of every loaded plugin (of one kind)."""
        return self.registry.entries(kind)

    def entries_of(self, plugin: str) -> list[ComponentEntry]:
        """The entries plugin ``plugin`` registered."""
        return list(self._entries.get(plugin, ()))

    def resolve(self, kind: str, name: str) -> ComponentEntry:
        """Shortcut for :meth:`Registry.resolve`."""
        return self.registry.resolve(kind, name)

    # ----------------------------------------------------------- registration
    def add(
        self,
        name: str,
        load: Callable[[], object],
        *,
        distribution: Optional[str] = None,
        version: Optional[str] = None,
        module: Optional[str] = None,
    ) -> PluginInfo:
        """Load, register and collect one plugin; record the outcome and return it.

        ``load`` is called only when the plugin is not disabled; any exception
        it raises marks the plugin broken at stage ``"import"``.
        """
        base = PluginInfo(name=name, distribution=distribution, version=version, module=module)
        if name in self._disabled:
            return self._record(dataclasses.replace(base, status="disabled"))
        previous = self._infos.get(name)
        if previous is not None:
            clash = ValueError(f"plugin name {name!r} is already used by {previous.origin}")
            return self._record_broken(base, PluginLoadFailure("register", clash), keep_previous=True)
        try:
            plugin = self._import(load)
            entries = self._register(name, plugin)
        except PluginLoadFailure as failure:
            return self._record_broken(base, failure)
        self._entries[name] = entries
        return self._record(base)

    def register(self, plugin: object, name: Optional[str] = None) -> PluginInfo:
        """Add an already imported plugin object (e.g. from a test)."""
        return self.add(name or _plugin_name(plugin), lambda: plugin, module=getattr(plugin, "__name__", None))

    def _import(self, load: Callable[[], object]) -> object:
        try:
            return load()
        except (Exception, SystemExit) as exc:
            raise PluginLoadFailure("import", exc) from exc

    def _register(self, name: str, plugin: object) -> list[ComponentEntry]:
        try:
            self._pm.register(plugin, name=name)
        except (Exception, SystemExit) as exc:
            raise PluginLoadFailure("register", exc) from exc
        try:
            self._check_hook_names(plugin)
            return self._collect(name, plugin)
        except PluginLoadFailure:
            self._pm.unregister(plugin)
            raise

    def _check_hook_names(self, plugin: object) -> None:
        """Reject implementations of hooks that do not exist (usually a typo)."""
        known = [h for h in dir(hookspecs) if h.startswith("mmalign_")]
        for caller in self._pm.get_hookcallers(plugin) or ():
            if caller.has_spec():
                continue
            impls = [i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook]
            if impls:
                close = difflib.get_close_matches(caller.name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                err = pluggy.PluginValidationError(plugin, f"implements unknown hook {caller.name!r}{hint}")
                raise PluginLoadFailure("register", err)

    def _collect(self, name: str, plugin: object) -> list[ComponentEntry]:
        """Call this plugin's registration hooks one by one and stamp its entries."""
        collected: list[ComponentEntry] = []
        for kind in KINDS:
            hook_name = REGISTRATION_HOOKS[kind]
            caller = getattr(self._pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin or impl.hookwrapper or impl.wrapper:
                    continue
                try:
                    result = impl.function()
                    collected += _check_entries(kind, hook_name, result, name)
                except (Exception, SystemExit) as exc:
                    raise PluginLoadFailure(f"register ({hook_name})", exc) from exc
        return collected

    def _record(self, info: PluginInfo) -> PluginInfo:
        self._infos[info.name] = info
        self._registry = None
        return info

    def _record_broken(self, base: PluginInfo, failure: PluginLoadFailure, keep_previous: bool = False) -> PluginInfo:
        error = failure.error
        info = dataclasses.replace(
            base, status="broken", stage=failure.stage, error=_describe(error), traceback=_format_traceback(error)
        )
        logger.debug("plugin %s is broken: %s", base.name, info.error)
        if keep_previous:
            # Keep the first plugin of that name working; record the clash under a distinct key.
            key = f"{base.name} ({base.origin})"
            self._infos[key] = dataclasses.replace(info, name=key)
            self._registry = None
            return self._infos[key]
        self._entries.pop(base.name, None)
        return self._record(info)

    # -------------------------------------------------------------- lifecycle
    def _call_each(
        self, hook_name: str, *, loading_order: bool = False, **kwargs: Any
    ) -> Iterator[tuple[str, Any, Optional[BaseException]]]:
        """Call each implementation of a hook on its own, in pluggy's order (or in loading order).

        Yields ``(plugin name, result, exception)``; an exception is captured,
        never raised.
        """
        caller = getattr(self._pm.hook, hook_name)
        impls = caller.get_hookimpls()
        for impl in impls if loading_order else reversed(impls):
            if impl.hookwrapper or impl.wrapper:
                continue
            try:
                result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:
                yield impl.plugin_name, None, exc
            else:
                yield impl.plugin_name, result, None

    def check_run(self, spec: Any, resolved: Mapping[str, Any], *, complete: bool = True) -> list[Problem]:
        """Problems every plugin's ``mmalign_check_run`` reports for a validated envelope.

        ``resolved`` maps JSON paths to :class:`~mmalign_core.spec.ResolvedComponent` (nested
        components included). A hook may return strings (run-wide errors) or
        :class:`~mmalign_core.errors.Problem` objects. A hook that raises, or returns something else,
        becomes a warning naming the plugin -- a faulty check must not block every run -- except
        when some component did not resolve (``complete=False``): a check may then fail for want of
        it, and the missing component is already reported.
        """
        problems: list[Problem] = []
        for plugin, result, exc in self._call_each("mmalign_check_run", spec=spec, resolved=dict(resolved)):
            if exc is not None and not complete:
                logger.debug("run check of plugin %s failed on an incomplete spec: %s", plugin, _describe(exc))
                continue
            if exc is not None:
                logger.warning("run check of plugin %s failed: %s", plugin, _describe(exc))
                message = f"the run check of this plugin failed: {_describe(exc)}"
                problems.append(Problem("", message, plugin=plugin, severity="warning"))
                continue
            problems += _as_problems(plugin, result)
        return problems

    def add_commands(self, commands: Commands) -> list[CommandProblem]:
        """Let every plugin add its subcommands; returns what was refused (a hook that raised included)."""
        caller = self._pm.hook.mmalign_add_commands
        for impl in caller.get_hookimpls():  # loading order: an earlier plugin keeps a contested name
            if impl.hookwrapper or impl.wrapper:
                continue
            commands.plugin = impl.plugin_name
            try:
                impl.function(commands=commands)
            except Exception as exc:  # noqa: BLE001 - one plugin's fault must not hide the others' commands
                logger.warning("mmalign_add_commands of plugin %s failed: %s", impl.plugin_name, _describe(exc))
                commands.refuse("", f"its mmalign_add_commands failed: {_describe(exc)}")
        commands.plugin = ""
        return list(commands.problems)

    def column_sets(self) -> tuple[dict[str, ColumnSet], list[str]]:
        """Every plugin's ``mmalign compare`` column sets by name, and problems (clashes, malformed results)."""
        found: dict[str, ColumnSet] = {}
        problems: list[str] = []
        for plugin, result, exc in self._call_each("mmalign_compare_columns", loading_order=True):
            if exc is not None:
                problems.append(f"mmalign_compare_columns of plugin {plugin} failed: {_describe(exc)}")
                continue
            for item in result or ():
                if not isinstance(item, ColumnSet):
                    problems.append(f"plugin {plugin}: mmalign_compare_columns returned {type(item).__name__}, not ColumnSet")
                elif item.name in found:
                    problems.append(f"column set {item.name!r} of plugin {plugin} ignored: plugin {found[item.name].plugin} has it")
                else:
                    found[item.name] = dataclasses.replace(item, plugin=plugin)
        return found, problems

    def _observe(self, hook_name: str, **kwargs: Any) -> list[str]:
        failures = []
        for plugin, _, exc in self._call_each(hook_name, **kwargs):
            if exc is not None:
                text = f"{hook_name} of plugin {plugin} failed: {_describe(exc)}"
                logger.warning(text)
                failures.append(text)
        return failures

    def on_metrics(self, run_dir: Any, stage: str, step: int, metrics: dict[str, float]) -> list[str]:
        """Tell observers about one metrics row; returns the failures (also logged as warnings)."""
        return self._observe("mmalign_on_metrics", run_dir=run_dir, stage=stage, step=step, metrics=metrics)

    def on_evaluation(self, run_dir: Any, stage: str, evaluator: str, metrics: dict[str, float]) -> list[str]:
        """Tell observers an evaluator finished; returns the failures (also logged as warnings)."""
        return self._observe("mmalign_on_evaluation", run_dir=run_dir, stage=stage, evaluator=evaluator, metrics=metrics)

    def on_run_end(self, run_dir: Any, manifest: dict[str, Any]) -> list[str]:
        """Tell observers the run ended; returns the failures (also logged as warnings)."""
        return self._observe("mmalign_on_run_end", run_dir=run_dir, manifest=manifest)


def _check_entries(kind: str, hook_name: str, result: Any, plugin: str) -> list[ComponentEntry]:
    """Validate what a registration hook returned and stamp the plugin name."""
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        raise EntryError(f"{hook_name} must return a list, got {type(result).__name__}")
    expected = ENTRY_TYPES[kind]
    stamped: list[ComponentEntry] = []
    seen: set[str] = set()
    for item in result:
        if not isinstance(item, expected):
            got = type(item).__name__
            raise EntryError(f"{hook_name} must return {expected.__name__} records, got {got}: {item!r:.80}")
        problems = validate_entry(item)
        if problems:
            raise EntryError(f"{kind} entry {item.name!r}: " + "; ".join(problems))
        if item.name in seen:
            raise EntryError(f"{hook_name} returns {kind} {item.name!r} twice")
        seen.add(item.name)
        stamped.append(dataclasses.replace(item, plugin=plugin))
    return stamped


def _as_problems(plugin: str, result: Any) -> list[Problem]:
    if result is None:
        return []
    if isinstance(result, (str, Problem)):
        result = [result]
    if not isinstance(result, (list, tuple)):
        return [Problem("", f"mmalign_check_run returned {type(result).__name__}, not a list", plugin, "warning")]
    problems = []
    for item in result:
        if isinstance(item, Problem):
            problems.append(item if item.plugin else dataclasses.replace(item, plugin=plugin))
        else:
            problems.append(Problem("", str(item), plugin=plugin))
    return problems


def _plugin_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _entry_point_dist(ep: metadata.EntryPoint) -> tuple[Optional[str], Optional[str]]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"] or dist.name, dist.version
    except Exception:  # pragma: no cover - odd metadata
        return getattr(dist, "name", None), getattr(dist, "version", None)


def _discover_entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _add_explicit(plugins: Plugins, item: PluginLike) -> None:
    if isinstance(item, tuple):
        name, obj = item
        if isinstance(obj, str):
            plugins.add(name, lambda: importlib.import_module(obj), module=obj)
        else:
            plugins.register(obj, name=name)
    elif isinstance(item, str):
        plugins.add(item, lambda: importlib.import_module(item), module=item)
    else:
        plugins.register(item)


def load_plugins(
    *,
    builtin: bool = True,
    entry_points: bool = True,
    extra: Sequence[PluginLike] = (),
    disabled: Optional[Iterable[str]] = None,
    known: Optional[KnownRegistry] = None,
) -> Plugins:
    """Build a fresh :class:`Plugins` (uncached).

    Args:
        builtin: register the core's default plugin (:mod:`mmalign_core.builtin`) as ``core``.
        entry_points: discover and load entry points of group ``mmalign``.
        extra: further plugins (see :data:`PluginLike`), added last.
        disabled: plugin names to block; default: ``MMALIGN_DISABLE_PLUGINS``.
        known: curated registry for messages; default: the repository's ``registry.toml`` if found.
    """
    plugins = Plugins(
        disabled=disabled_from_env() if disabled is None else disabled,
        known=known if known is not None else known_or_empty(),
    )
    if builtin:
        plugins.add(
            BUILTIN_NAME,
            lambda: importlib.import_module(BUILTIN_MODULE),
            distribution="mmalign",
            version=_core_version(),
            module=BUILTIN_MODULE,
        )
    if entry_points:
        for ep in _discover_entry_points():
            dist, version = _entry_point_dist(ep)
            plugins.add(ep.name, ep.load, distribution=dist, version=version, module=ep.value)
    for item in extra:
        _add_explicit(plugins, item)
    return plugins


def create_plugins(
    *plugins: PluginLike,
    builtin: bool = True,
    disabled: Iterable[str] = (),
    known: Optional[KnownRegistry] = None,
) -> Plugins:
    """An isolated manager from explicit plugins only: no entry points, no environment.

    ``create_plugins(("toy", ToyPlugin()), "my_pkg.plugin")`` registers an
    object under ``toy`` and imports a module by path.
    """
    return load_plugins(
        builtin=builtin,
        entry_points=False,
        extra=plugins,
        disabled=disabled,
        known=known if known is not None else KnownRegistry(),
    )


_loading = False


@lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide manager: built-ins plus installed entry points (cached)."""
    global _loading
    if _loading:
        raise RuntimeError(
            "the process-wide plugin manager was asked for while plugins are still loading (a config default that "
            "builds a nested component? give it as a dict with validate_default=True, see docs/plugin-authors.md)"
        )
    _loading = True
    try:
        return load_plugins()
    finally:
        _loading = False


def reset_plugins() -> None:
    """Forget the cached manager (the next :func:`get_plugins` rediscovers)."""
    get_plugins.cache_clear()
