"""The curated list of known plugins (``registry.toml``).

The file informs ``mmalign plugins --known``, error messages ("provided by
plugin X, which is not installed") and ``mmalign registry check``; it never
decides what is loaded -- entry points do.

Format::

    [plugins.losses]
    distribution = "mmalign-losses"
    entry_point = "losses"
    status = "official"          # official | third-party | experimental | planned
    summary = "DPO-family preference losses."
    paper = "https://..."        # optional
    path = "plugins/mmalign-losses"  # optional, repo-relative
    components = { loss = ["dpo", "sft"] }
"""
from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .entries import KINDS
from .errors import KnownRegistryError

if TYPE_CHECKING:  # pragma: no cover
    from .entries import ComponentEntry
    from .registry import PluginInfo

REGISTRY_ENV = "MMALIGN_REGISTRY"
"""Environment variable naming a ``registry.toml`` to use instead of the default."""

KnownStatus = Literal["official", "third-party", "experimental", "planned"]

_NAME_RE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class KnownPlugin(BaseModel):
    """One ``[plugins.<name>]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: str = Field(description="Name of the Python distribution (what `pip install` takes).")
    entry_point: str = Field(description="Name of its entry point in group 'mmalign' (the plugin name).")
    components: dict[str, list[str]] = Field(default_factory=dict, description="Component kind -> names it provides.")
    status: KnownStatus = Field(description="official, third-party, experimental or planned.")
    summary: str = Field(description="One line describing the plugin.")
    paper: Optional[str] = Field(None, description="Link to the method's paper, if any.")
    path: Optional[str] = Field(None, description="Repo-relative folder of an official plugin.")

    @field_validator("components")
    @classmethod
    def _check_components(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for kind, names in value.items():
            if kind not in KINDS:
                raise ValueError(f"unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
            bad = [n for n in names if not _NAME_RE.fullmatch(n)]
            if bad:
                raise ValueError(f"{kind} names must be kebab-case: {', '.join(map(repr, bad))}")
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} lists a name twice")
        return value

    @field_validator("summary")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not value.strip() or "\n" in value:
            raise ValueError("summary must be one non-empty line")
        return value

    def provides(self, kind: str, name: str) -> bool:
        """Whether this plugin declares component ``name`` of ``kind``."""
        return name in self.components.get(kind, ())


class KnownRegistry(BaseModel):
    """The whole file: ``plugins`` maps a table name to its :class:`KnownPlugin`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plugins: dict[str, KnownPlugin] = Field(default_factory=dict, description="Known plugins by name.")

    @model_validator(mode="after")
    def _unique_entry_points(self) -> "KnownRegistry":
        seen: dict[str, str] = {}
        for table, plugin in self.plugins.items():
            other = seen.setdefault(plugin.entry_point, table)
            if other != table:
                raise ValueError(f"[plugins.{other}] and [plugins.{table}] both use entry point {plugin.entry_point!r}")
        return self

    def by_entry_point(self, entry_point: str) -> Optional[tuple[str, KnownPlugin]]:
        """The table (name, record) whose ``entry_point`` is ``entry_point``."""
        for table, plugin in self.plugins.items():
            if plugin.entry_point == entry_point:
                return table, plugin
        return None

    def providers_of(self, kind: str, name: str) -> list[tuple[str, KnownPlugin]]:
        """Tables declaring component ``name`` of ``kind``."""
        return [(t, p) for t, p in self.plugins.items() if p.provides(kind, name)]


#: The registry shipped inside the package (the repository's top-level ``registry.toml`` links to it), so an
#: installed wheel knows the plugins too, not only a checkout.
PACKAGED_REGISTRY = Path(__file__).resolve().parent / "defaults" / "registry.toml"


def default_registry_path() -> Optional[Path]:
    """``$MMALIGN_REGISTRY``, else the registry shipped with the package."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    return PACKAGED_REGISTRY if PACKAGED_REGISTRY.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as exc:
            raise KnownRegistryError("reading registry.toml on Python 3.10 needs the 'tomli' package") from exc
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except OSError as exc:
        raise KnownRegistryError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise KnownRegistryError(f"{path}: invalid TOML: {exc}") from exc


def _describe_location(loc: tuple[Any, ...]) -> str:
    """``('plugins', 'tiny', 'components', 'loss')`` -> ``[plugins.tiny] components.loss``."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "plugins":
        table = f"[plugins.{parts[1]}]"
        rest = ".".join(parts[2:])
        return f"{table} {rest}".strip()
    return ".".join(parts) or "<top level>"


def _format_validation_error(path: object, exc: ValidationError) -> str:
    lines = [f"{path}: invalid plugin registry:"]
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            owner = _describe_location(loc[:-1])
            allowed = KnownPlugin.model_fields if len(loc) == 3 else KnownRegistry.model_fields
            lines.append(f"  {owner}: unknown key {loc[-1]!r} (allowed: {', '.join(allowed)})")
        elif err["type"] == "missing":
            lines.append(f"  {_describe_location(loc[:-1])}: missing key {loc[-1]!r}")
        else:
            lines.append(f"  {_describe_location(loc)}: {err['msg']}")
    return "\n".join(lines)


def parse_known(data: dict[str, Any], source: object = "registry.toml") -> KnownRegistry:
    """Validate already-parsed TOML data; raise :class:`KnownRegistryError` with every problem."""
    try:
        return KnownRegistry.model_validate(data)
    except ValidationError as exc:
        raise KnownRegistryError(_format_validation_error(source, exc)) from None


def load_known(path: Path | str | None = None) -> KnownRegistry:
    """Load ``registry.toml`` (``path``, else :func:`default_registry_path`).

    Returns an empty registry when no path is given and none is found (an
    installed core without a checkout). Raises :class:`KnownRegistryError`
    for an unreadable or invalid file.
    """
    resolved = Path(path) if path is not None else default_registry_path()
    if resolved is None:
        return KnownRegistry()
    return parse_known(_read_toml(resolved), resolved)


@lru_cache(maxsize=None)
def _cached_known(path: Optional[str]) -> KnownRegistry:
    return load_known(path)


def known_or_empty(path: Path | str | None = None) -> KnownRegistry:
    """Like :func:`load_known` (cached), but an invalid file yields an empty registry.

    Used where the registry only enriches a message; ``mmalign registry check``
    uses :func:`load_known` so a broken file is reported.
    """
    resolved = Path(path) if path is not None else default_registry_path()
    try:
        return _cached_known(str(resolved) if resolved is not None else None)
    except KnownRegistryError:
        return KnownRegistry()


class RegistryReport(BaseModel):
    """Outcome of comparing ``registry.toml`` with what is installed.

    ``mismatches`` make ``mmalign registry check`` fail; ``notes`` are informative.
    """

    mismatches: list[str] = Field(default_factory=list, description="Disagreements that need fixing.")
    notes: list[str] = Field(default_factory=list, description="Observations that need no fix.")

    @property
    def ok(self) -> bool:
        """True when there is no mismatch."""
        return not self.mismatches


def _provided_by(entries: Iterable["ComponentEntry"], plugin: str) -> dict[str, set[str]]:
    provided: dict[str, set[str]] = {}
    for entry in entries:
        if entry.plugin == plugin:
            provided.setdefault(entry.kind, set()).add(entry.name)
    return provided


def _compare_components(table: str, record: KnownPlugin, provided: dict[str, set[str]]) -> list[str]:
    problems = []
    for kind in KINDS:
        declared = set(record.components.get(kind, ()))
        have = provided.get(kind, set())
        for name in sorted(declared - have):
            problems.append(f"[plugins.{table}] declares {kind} {name!r}, but the installed plugin does not provide it")
        for name in sorted(have - declared):
            problems.append(f"[plugins.{table}] does not declare {kind} {name!r}, which the installed plugin provides")
    return problems


def check_installed(
    known: KnownRegistry, infos: Sequence["PluginInfo"], entries: Iterable["ComponentEntry"]
) -> RegistryReport:
    """Compare the curated registry with installed plugins and their entries.

    Mismatches: an official plugin that is not installed or is broken; an
    installed plugin from another distribution than the registry says; a
    component declared but not provided, or provided but not declared.
    """
    report = RegistryReport()
    entries = list(entries)
    by_name = {info.name: info for info in infos}
    for table, record in known.plugins.items():
        info = by_name.get(record.entry_point)
        if info is None:
            if record.status == "official":
                report.mismatches.append(f"[plugins.{table}] official plugin is not installed (pip install {record.distribution})")
            continue
        if info.status == "disabled":
            report.notes.append(f"[plugins.{table}] is disabled; its components were not checked")
            continue
        if info.status == "broken":
            report.mismatches.append(f"[plugins.{table}] is installed but broken: {info.error}")
            continue
        if info.distribution and _canonical(info.distribution) != _canonical(record.distribution):
            report.mismatches.append(
                f"[plugins.{table}] entry point {record.entry_point!r} comes from {info.distribution!r}, not {record.distribution!r}"
            )
        report.mismatches += _compare_components(table, record, _provided_by(entries, info.name))
    listed = {record.entry_point for record in known.plugins.values()}
    for info in infos:
        if info.name not in listed and info.distribution and info.distribution != "mmalign":
            report.notes.append(f"plugin {info.name!r} ({info.origin}) is installed but not listed in the registry")
    return report


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()
