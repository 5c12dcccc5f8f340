"""Loading and validating run specs.

Validation has two phases and reports every problem at once:

1. the envelope (:class:`~mmalign_core.spec_models.RunSpec`, ``extra="forbid"``);
2. each component reference -- ``model``, each stage's ``data`` and ``loss``,
   every evaluator -- resolved through the registry and its ``config``
   validated against the entry's own config class. Phase 2 also runs for the
   references of an envelope that failed elsewhere.

Then capabilities and requirements are checked (an ``align`` stage needs a
source with ``pairs``; an evaluator requiring ``generate`` needs a model that
has it; ...) and, when everything resolved, every plugin's
``mmalign_check_run`` is asked. Each problem carries its JSON path
(``stages[1].loss.config.beta``), a message and the owning plugin.
"""
from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Sequence

from pydantic import BaseModel, ValidationError

from .entries import KIND_LABELS, ComponentEntry
from .errors import Problem, ResolveError, SpecLoadError, SpecValidationError
from .refs import NESTED_ERROR
from .registry import with_article
from .spec_models import AlignStage, ComponentRef, RunSpec, SFTStage

if TYPE_CHECKING:  # pragma: no cover
    from .manager import Plugins

__all__ = [
    "RunSpec",
    "ResolvedComponent",
    "ValidatedSpec",
    "load_spec",
    "check_spec",
    "validate_spec",
    "validate_spec_file",
    "format_path",
]

# Capabilities a stage itself offers to the components that run in it.
STAGE_PROVIDES: dict[str, frozenset[str]] = {
    # "corrupted_image": the runner scores answers under a loss's corrupted images (protocols.CorruptedImageLoss).
    "align": frozenset({"reference", "rejected", "corrupted_image"}),
    "sft": frozenset(),
    "evaluate": frozenset(),
}
# What the data of a training stage must offer (any one of them).
DATA_NEEDS: dict[str, tuple[str, ...]] = {"align": ("pairs",), "sft": ("sft", "pairs")}

_REQUIREMENT_HINTS = {
    "generate": "the model must have capability 'generate'",
    "reference": "a frozen reference model exists only in 'align' stages",
    "rejected": "rejected answers exist only in 'align' stages",
}
_MISSING = object()
_UNION_ORIGINS = (typing.Union, types.UnionType)


# --------------------------------------------------------------------------- loading
def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_spec(path: Path | str) -> dict[str, Any]:
    """Read a run spec file (JSON) into a dict.

    Raises:
        SpecLoadError: the file is missing or unreadable, is not valid JSON
            (the message names the file, line and column), repeats a key, or
            is not a JSON object.
    """
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecLoadError(f"{path}: {path.stat().st_size >> 20} MB is larger than a run spec may be ({MAX_SPEC_BYTES >> 20} MB)")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecLoadError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecLoadError(f"{path}: cannot read the file: {exc}") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SpecLoadError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise SpecLoadError(f"{path}: nested more than {MAX_DEPTH} levels deep; not a run spec") from None
    except ValueError as exc:
        raise SpecLoadError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SpecLoadError(f"{path}: a run spec must be a JSON object, not a JSON {type(data).__name__}")
    problem = _shape_problem(data)
    if problem:
        raise SpecLoadError(f"{path}: {problem}")
    return data


#: Limits on what a spec file may be: far above any real spec, low enough that validation stays fast.
MAX_SPEC_BYTES = 16 << 20
MAX_DEPTH = 64


def _shape_problem(data: Any) -> str:
    """Nesting deeper than :data:`MAX_DEPTH`, or a string that cannot be written as UTF-8 (a lone surrogate)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep at {format_path(loc[:8])}...; not a run spec"
        if isinstance(node, str) or (isinstance(node, dict) and any(not _utf8(k) for k in node)):
            if isinstance(node, str) and not _utf8(node):
                return f"{format_path(loc) or 'the spec'}: the text holds a lone surrogate (\\ud800-\\udfff) that is not valid Unicode"
            if isinstance(node, dict):
                return f"{format_path(loc) or 'the spec'}: a key holds a lone surrogate (\\ud800-\\udfff) that is not valid Unicode"
        if isinstance(node, dict):
            stack += [(v, (*loc, k)) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, (*loc, i)) for i, v in enumerate(node)]
    return ""


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- paths
def format_path(loc: Iterable[Any]) -> str:
    """``('stages', 1, 'loss', 'config', 'beta')`` -> ``stages[1].loss.config.beta``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def _display_loc(loc: Sequence[Any], raw: Any) -> tuple[Any, ...]:
    """Drop what pydantic adds to a location that is not in the JSON.

    A discriminated union inserts its tag (``stages, 1, 'align', 'loss'``), a
    plain union the member's label after a scalar (``x, 'int'``); walking the
    raw input tells those apart from real keys.
    """
    out: list[Any] = []
    node = raw
    for part in loc:
        if isinstance(node, dict):
            if isinstance(part, str) and part not in node and part in {v for v in node.values() if isinstance(v, str)}:
                continue
            out.append(part)
            node = node.get(part, _MISSING) if isinstance(part, str) else _MISSING
        elif isinstance(node, list):
            out.append(part)
            node = node[part] if isinstance(part, int) and -len(node) <= part < len(node) else _MISSING
        elif node is _MISSING:
            out.append(part)
        else:
            break
    return tuple(out)


# ----------------------------------------------------------- field lookup for hints
def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    return [_unwrap(a) for a in args if a is not type(None)]


def _member_for_tag(members: list[Any], tag: Any) -> Any:
    for member in members:
        if isinstance(member, type) and issubclass(member, BaseModel):
            for info in member.model_fields.values():
                if typing.get_origin(info.annotation) is typing.Literal and tag in typing.get_args(info.annotation):
                    return member
    return None


def _step(tp: Any, part: Any) -> tuple[Any, bool]:
    """Follow one location element through a type; returns (type, element consumed)."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _UNION_ORIGINS:
        members = _union_members(tp)
        tagged = _member_for_tag(members, part)
        if tagged is not None:
            return tagged, True
        return (members[0] if len(members) == 1 else None), False
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(part) if isinstance(part, str) else None
        return (info.annotation if info else None), True
    if origin in (list, set, frozenset):
        return (args[0] if args else None), True
    if origin is tuple and isinstance(part, int):
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0], True
        return (args[part] if part < len(args) else None), True
    if origin is dict:
        return (args[1] if args else None), True
    return None, True


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> Optional[list[str]]:
    """Field names of the model reached by following ``loc`` from ``model``."""
    tp: Any = model
    parts = list(loc)
    while parts:
        tp, consumed = _step(tp, parts[0])
        if tp is None:
            return None
        if consumed:
            parts.pop(0)
    tp = _unwrap(tp)
    if typing.get_origin(tp) is not None:
        members = _union_members(tp)
        tp = members[0] if len(members) == 1 else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return None


# ------------------------------------------------------------------- error messages
def _shown_input(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return ""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    return f" (got {text[:60]})"


def _message(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        import difflib

        key = loc[-1]
        allowed = _fields_at(model, loc[:-1]) or []
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = f" Allowed fields: {', '.join(allowed)}." if allowed else ""
        return f"unknown field {key!r}.{hint}{listing}"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_not_found":
        return f"missing the discriminator field {err['ctx']['discriminator']}"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    return msg + _shown_input(err.get("input"))


def _validation_problems(
    exc: ValidationError, model: type[BaseModel], raw: Any, prefix: Sequence[Any] = (), plugin: Optional[str] = None
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == NESTED_ERROR and isinstance(ctx.get("problems"), list):
            # A component named inside this config: each of its problems at its own field, owned by its plugin.
            base = (*prefix, *_display_loc(loc, raw))
            for inner, message, owner in ctx["problems"]:
                path = format_path((*base, *inner))
                if (path, message) not in seen:
                    seen.add((path, message))
                    problems.append(Problem(path, message, plugin=owner or None))
            continue
        path = format_path((*prefix, *_display_loc(loc, raw)))
        message = _message(err, model)
        if (path, message) not in seen:
            seen.add((path, message))
            problems.append(Problem(path, message, plugin=plugin))
    return problems


# ------------------------------------------------------------------ validated spec
@dataclass(frozen=True)
class ResolvedComponent:
    """One component of a validated spec.

    Attributes:
        path: its JSON path (``model``, ``stages[0].data``, ``stages[2].evaluators[1]``).
        loc: the same path as a tuple of keys and indices.
        kind: the component kind.
        entry: the registry entry it resolved to.
        config: an instance of ``entry.config`` with defaults filled in.
    """

    path: str
    loc: tuple[Any, ...]
    kind: str
    entry: ComponentEntry
    config: BaseModel

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as ``entry, config = component``."""
        return iter((self.entry, self.config))

    def __getattr__(self, name: str) -> Any:
        # Run checks written when ``resolved`` mapped paths to entries (``resolved[p].name``) keep working.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.entry, name)

    @property
    def stage(self) -> Optional[int]:
        """The index of the stage this component belongs to (``None`` for the model)."""
        return self.loc[1] if len(self.loc) > 1 and self.loc[0] == "stages" and isinstance(self.loc[1], int) else None

    @property
    def nested(self) -> bool:
        """Whether it is named inside another component's config (``stages[1].data.config.base``)."""
        return "config" in self.loc

    def build(self, context: Any = None) -> Any:
        """Import the factory and build the component (this may import torch); ``context`` is a
        :class:`~mmalign_core.build.BuildContext` for factories that take one."""
        return self.entry.build(self.config, context=context)

    def as_json(self) -> dict[str, Any]:
        """``{"name": "plugin:name", "config": {...}}`` with every default written out."""
        return {"name": self.entry.qualified_name, "config": self.config.model_dump(mode="json")}


@dataclass(frozen=True)
class ValidatedSpec:
    """A run spec that passed validation, with every component resolved.

    Attributes:
        spec: the envelope.
        components: JSON path -> :class:`ResolvedComponent`.
        warnings: problems of severity ``"warning"`` (shown, not blocking).
        source: the file it came from, if any.
    """

    spec: RunSpec
    components: Mapping[str, ResolvedComponent]
    warnings: tuple[Problem, ...] = ()
    source: Optional[str] = None

    @property
    def entries(self) -> dict[str, ComponentEntry]:
        """JSON path -> entry (what ``mmalign_check_run`` receives as ``resolved``)."""
        return {path: c.entry for path, c in self.components.items()}

    @property
    def resolved(self) -> dict[str, Any]:
        """The resolved spec as JSON data (see :meth:`resolved_spec`); what a run records as ``spec.json``."""
        return self.resolved_spec()

    def resolved_config(self, path: str) -> dict[str, Any]:
        """The config at a JSON path as JSON data, every default written out."""
        return self.component(path).config.model_dump(mode="json")

    def component(self, path: str) -> ResolvedComponent:
        """The component at a JSON path (unpacks as ``entry, config``); ``KeyError`` listing the paths otherwise."""
        try:
            return self.components[path]
        except KeyError:
            raise KeyError(f"no component at {path!r}; paths: {', '.join(self.components)}") from None

    def entry(self, path: str) -> ComponentEntry:
        """The entry at a JSON path."""
        return self.component(path).entry

    def config(self, path: str) -> BaseModel:
        """The validated config instance at a JSON path."""
        return self.component(path).config

    @property
    def model(self) -> ResolvedComponent:
        """The model component."""
        return self.component("model")

    def data(self, stage: int) -> ResolvedComponent:
        """The data source of training stage ``stage``."""
        return self.component(f"stages[{stage}].data")

    def loss(self, stage: int) -> ResolvedComponent:
        """The loss of training stage ``stage``."""
        return self.component(f"stages[{stage}].loss")

    def evaluators(self, stage: int) -> list[ResolvedComponent]:
        """The evaluators of evaluate stage ``stage``, in order."""
        prefix = f"stages[{stage}].evaluators["
        return [c for p, c in self.components.items() if p.startswith(prefix)]

    def resolved_spec(self) -> dict[str, Any]:
        """The spec as JSON data with qualified names and every config default filled in."""
        data = self.spec.model_dump(mode="json")
        for comp in self.components.values():
            node: Any = data
            for key in comp.loc[:-1]:
                node = node[key]
            node[comp.loc[-1]] = comp.as_json()
        return data

    def canonical_json(self) -> str:
        """:meth:`resolved_spec` as canonical JSON (sorted keys, no spaces)."""
        return json.dumps(self.resolved_spec(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @cached_property
    def spec_hash(self) -> str:
        """sha256 (hex) of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


# --------------------------------------------------------------------- phase two
@dataclass
class _Ref:
    loc: tuple[Any, ...]
    kind: str
    stage: Optional[int]
    stage_type: Optional[str]
    raw: Any

    @property
    def path(self) -> str:
        return format_path(self.loc)


def _default_loss(stage_type: str, plugins: "Plugins") -> dict[str, Any]:
    """The stage type's default loss, qualified (``losses:dpo``) so that another provider of the bare name cannot
    change what an existing spec means; without the plugin it names, the bare name (its only provider)."""
    model = AlignStage if stage_type == "align" else SFTStage
    ref: dict[str, Any] = model.model_fields["loss"].get_default(call_default_factory=True).model_dump()
    plugin, _, bare = ref["name"].partition(":")
    if bare and plugins.info(plugin) is None:
        ref["name"] = bare
    return ref


def _component_refs(data: Any, plugins: "Plugins") -> list[_Ref]:
    """Every component reference in raw spec data, tolerating a broken envelope."""
    if not isinstance(data, dict):
        return []
    refs = []
    if "model" in data:
        refs.append(_Ref(("model",), "model", None, None, data["model"]))
    stages = data.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        if not isinstance(stage, dict):
            continue
        kind = stage.get("type")
        if not isinstance(kind, str):
            continue  # the envelope reports the bad type
        if kind in DATA_NEEDS:
            if "data" in stage:
                refs.append(_Ref(("stages", i, "data"), "preference_source", i, kind, stage["data"]))
            refs.append(_Ref(("stages", i, "loss"), "loss", i, kind, stage.get("loss", _default_loss(kind, plugins))))
        elif kind == "evaluate" and isinstance(stage.get("evaluators"), list):
            for j, ev in enumerate(stage["evaluators"]):
                refs.append(_Ref(("stages", i, "evaluators", j), "evaluator", i, kind, ev))
    return refs


def _resolve_ref(ref: _Ref, plugins: "Plugins", spec_dir: Optional[Path] = None) -> tuple[Optional[ResolvedComponent], list[Problem]]:
    try:
        parsed = ComponentRef.model_validate(ref.raw)
    except ValidationError:
        return None, []  # the envelope already reports it
    try:
        entry = plugins.resolve(ref.kind, parsed.name)
    except ResolveError as exc:
        owner = exc.plugins[0] if len(exc.plugins) == 1 else None
        return None, [Problem(format_path((*ref.loc, "name")), str(exc), plugin=owner)]
    try:
        # Components named inside this config (mmalign_core.refs.NestedComponent) resolve with this manager.
        config = entry.config.model_validate(parsed.config, context=_context(plugins, spec_dir))
    except ValidationError as exc:
        owner = entry.plugin or None
        return None, _validation_problems(exc, entry.config, parsed.config, (*ref.loc, "config"), owner)
    return ResolvedComponent(ref.path, ref.loc, ref.kind, entry, config), []


def _context(plugins: "Plugins", spec_dir: Optional[Path]) -> dict[str, Any]:
    """The validation context of component configs: the manager nested names resolve with, and the spec's folder
    (relative :data:`~mmalign_core.config.SpecPath` values resolve against it)."""
    from .config import SPEC_DIR_KEY

    return {"plugins": plugins, SPEC_DIR_KEY: str(spec_dir) if spec_dir is not None else None}


def _nested_components(parents: Iterable[ResolvedComponent], plugins: "Plugins") -> dict[str, ResolvedComponent]:
    """Components named inside validated configs (:class:`~mmalign_core.refs.NestedComponent` fields), at any depth."""
    from .refs import NestedComponent

    found: dict[str, ResolvedComponent] = {}

    def walk(value: Any, loc: tuple[Any, ...]) -> None:
        if isinstance(value, NestedComponent):
            try:
                entry = plugins.resolve(value.kind, value.name)
                config = entry.config.model_validate(value.config, context={"plugins": plugins})
            except (ResolveError, ValidationError, LookupError):
                return  # already reported where the reference was validated
            comp = ResolvedComponent(format_path(loc), loc, value.kind, entry, config)
            found[comp.path] = comp
            walk(config, (*loc, "config"))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), (*loc, name))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, (*loc, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*loc, key))

    for parent in parents:
        walk(parent.config, (*parent.loc, "config"))
    return found


def _describe_entry(entry: ComponentEntry) -> str:
    return f"{KIND_LABELS[entry.kind]} {entry.name!r}"


def _data_problem(ref: _Ref, entry: ComponentEntry) -> Optional[Problem]:
    """A training stage's source must offer what the stage type reads."""
    needs = DATA_NEEDS.get(ref.stage_type or "")
    if ref.kind != "preference_source" or not needs or entry.capabilities & set(needs):
        return None
    has = ", ".join(sorted(entry.capabilities)) or "none"
    wanted = " or ".join(repr(n) for n in needs)
    message = f"source {entry.name!r} cannot feed {with_article(repr(ref.stage_type))} stage: it needs capability {wanted} (it has: {has})"
    return Problem(ref.path, message, plugin=entry.plugin or None)


def _requirement_problem(
    entry: ComponentEntry, path: str, provided: frozenset[str], scope: str, model: Optional[ResolvedComponent]
) -> Optional[Problem]:
    """One problem listing every requirement of ``entry`` that ``provided`` lacks."""
    missing = sorted(entry.requires - provided)
    if not missing:
        return None
    hints = []
    for need in missing:
        if need == "generate" and model is not None:
            hints.append(f"model {model.entry.name!r} lacks capability 'generate'")
        elif need in _REQUIREMENT_HINTS:
            hints.append(_REQUIREMENT_HINTS[need])
    needs = " and ".join(repr(n) for n in missing)
    message = f"{_describe_entry(entry)} requires {needs}, which nothing in {scope} provides"
    return Problem(path, message + (f" ({'; '.join(hints)})" if hints else ""), plugin=entry.plugin or None)


def _capability_problems(refs: list[_Ref], found: Mapping[str, ResolvedComponent]) -> list[Problem]:
    """Data capabilities per stage type, and every entry's ``requires``.

    Requirements are checked only where everything they could be met by
    resolved (the model and the stage's own components), so an unknown
    model does not also produce a "requires 'generate'" error.
    """
    problems: list[Problem] = []
    model = found.get("model")
    complete = all(ref.path in found for ref in refs)
    everything = frozenset().union(*(c.entry.capabilities for c in found.values()))
    stages: dict[int, list[_Ref]] = {}
    for ref in refs:
        if ref.stage is not None:
            stages.setdefault(ref.stage, []).append(ref)
    # Per stage once (not per component: a stage with thousands of evaluators stays linear).
    stage_ready = {i: model is not None and all(p.path in found for p in peers) for i, peers in stages.items()}
    stage_provides = {
        i: STAGE_PROVIDES.get(peers[0].stage_type or "", frozenset()).union(
            model.entry.capabilities if model else (), *(found[p.path].entry.capabilities for p in peers if p.path in found)
        )
        for i, peers in stages.items()
    }
    for ref in refs:
        comp = found.get(ref.path)
        if comp is None:
            continue
        data_problem = _data_problem(ref, comp.entry)
        if data_problem is not None:
            problems.append(data_problem)
        if ref.stage is None:
            scope, provided, ready = "the run", everything, complete
        else:
            ready, provided, scope = stage_ready[ref.stage], stage_provides[ref.stage], "this stage"
        requirement = _requirement_problem(comp.entry, ref.path, provided, scope, model) if ready else None
        if requirement is not None:
            problems.append(requirement)
    return problems


_TOP_LEVEL_ORDER = {name: i for i, name in enumerate(RunSpec.model_fields)}


def _document_order(problem: Problem) -> tuple[int, int]:
    """Sort key: top-level field in declaration order, then stage index (stable within)."""
    head = problem.path.split(".")[0].split("[")[0]
    if not head:
        return (len(_TOP_LEVEL_ORDER) + 1, 0)
    index = problem.path[len(head) + 1 :].split("]")[0] if problem.path[len(head) : len(head) + 1] == "[" else ""
    return (_TOP_LEVEL_ORDER.get(head, len(_TOP_LEVEL_ORDER)), int(index) if index.isdigit() else -1)


# ------------------------------------------------------------------- entry points
def check_spec(
    data: Any, plugins: Optional["Plugins"] = None, *, source: Optional[str] = None, spec_dir: Optional[Path] = None
) -> tuple[Optional[ValidatedSpec], list[Problem]]:
    """Validate without raising: ``(validated spec or None, every problem)``.

    The spec is ``None`` when any problem has severity ``"error"``; warnings
    are returned either way (and also kept on the :class:`ValidatedSpec`).
    Relative paths in component configs resolve against ``spec_dir`` -- by
    default the folder of ``source`` when that is a file -- and are kept as
    written when there is none (data built in Python).
    """
    if spec_dir is None and source is not None and Path(source).is_file():
        spec_dir = Path(source).resolve().parent
    if plugins is None:
        from .manager import get_plugins

        plugins = get_plugins()
    problems: list[Problem] = []
    spec: Optional[RunSpec] = None
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as exc:
        problems += _validation_problems(exc, RunSpec, data)
    refs = _component_refs(data, plugins)
    found: dict[str, ResolvedComponent] = {}
    unresolved = False
    for ref in refs:
        comp, found_problems = _resolve_ref(ref, plugins, spec_dir)
        problems += found_problems
        if comp is not None:
            found[comp.path] = comp
        else:
            unresolved = True
    problems += _capability_problems(refs, found)
    if spec is not None:
        # Every problem at once: the cross-component checks run even when some component failed (they see
        # the components that resolved, nested ones included, each with its validated config and JSON path).
        everything = {**found, **_nested_components(found.values(), plugins)}
        problems += plugins.check_run(spec, everything, complete=not unresolved)
    problems.sort(key=_document_order)
    errors = [p for p in problems if p.severity == "error"]
    if errors or spec is None:
        return None, problems
    warnings = tuple(p for p in problems if p.severity == "warning")
    return ValidatedSpec(spec=spec, components=found, warnings=warnings, source=source), problems


def validate_spec(data: Any, plugins: Optional["Plugins"] = None, *, source: Optional[str] = None) -> ValidatedSpec:
    """Validate spec data in both phases; raise :class:`SpecValidationError` listing every problem.

    Args:
        data: the parsed JSON (see :func:`load_spec`).
        plugins: the manager to resolve components with; default :func:`~mmalign_core.manager.get_plugins`.
        source: file name used in messages and kept on the result.
    """
    validated, problems = check_spec(data, plugins, source=source)
    if validated is None:
        raise SpecValidationError(problems, source=source)
    return validated


def validate_spec_file(path: Path | str, plugins: Optional["Plugins"] = None) -> ValidatedSpec:
    """:func:`load_spec` then :func:`validate_spec`."""
    return validate_spec(load_spec(path), plugins, source=str(path))
