"""Generate the reference tables in docs/spec.md and docs/components.md.

The tables come from the pydantic models themselves: the run-spec envelope
(:mod:`mmalign_core.spec_models`) and the config classes of the official
plugins' entries (official = ``status = "official"`` in ``registry.toml``,
loaded through their installed entry points). Only the text between the
``<!-- BEGIN GENERATED: ... -->`` and ``<!-- END GENERATED: ... -->`` markers
is replaced; the prose around it is written by hand.

Usage::

    python docs/gen_reference.py            # rewrite both files
    python docs/gen_reference.py --check    # exit 1 if a file is out of date
    python docs/gen_reference.py --only spec

``tests/docs/test_reference_docs.py`` runs the same comparison.
"""
from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

DOCS = Path(__file__).resolve().parent
MISSING_PLUGIN = "official plugin {name!r} ({dist}) is not installed; install it to regenerate the components reference"


# ------------------------------------------------------------------- rendering types
def _escape(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(title: str) -> str:
    """The GitHub anchor of a heading."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return slug.replace(" ", "-")


def type_name(tp: Any, link: Callable[[type[BaseModel]], str]) -> str:
    """A JSON-flavoured name of a field annotation (``integer``, ``list of string``, ``"a" or "b"``)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return link(tp)
    simple = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "list"}
    if tp in simple:
        return simple[tp]
    if origin is typing.Annotated:
        return type_name(args[0], link)
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a, link) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + " or null" if type(None) in args else text
    if origin is list:
        return f"list of {type_name(args[0], link)}" if args else "list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0], link)}"
        return "[" + ", ".join(type_name(a, link) for a in args) + "]"
    if origin is dict:
        return f"object of {type_name(args[1], link)}" if args and args[1] is not Any else "object"
    return getattr(tp, "__name__", str(tp))


def constraints(field: FieldInfo) -> list[str]:
    """Human-readable constraints from a field's metadata (``≥ 1``, ``< 1``, pattern ...)."""
    out = []
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    for meta in field.metadata:
        for attr, symbol in symbols.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
        unit = "characters" if field.annotation is str else "items"
        for attr, label in (("min_length", "at least {} "), ("max_length", "at most {} ")):
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(label.format(value) + unit)
        pattern = getattr(meta, "pattern", None)
        if pattern:
            out.append(f"matches `{pattern}`")
    return out


def default_text(field: FieldInfo, documented: set[type[BaseModel]], link: Callable[[type[BaseModel]], str]) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        try:
            all_defaults = dumped == type(value)().model_dump(mode="json")
        except ValueError:  # the model has required fields
            all_defaults = False
        if type(value) in documented and all_defaults:
            return f"defaults of {link(type(value))}"
        value = dumped
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def nested_models(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(tp):
        found += nested_models(arg)
    return found


def model_table(model: type[BaseModel], documented: set[type[BaseModel]], link: Callable[[type[BaseModel]], str]) -> list[str]:
    lines = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = type_name(field.annotation, link)
        extra = constraints(field)
        if extra:
            kind += " (" + ", ".join(extra) + ")"
        desc = field.description or ""
        if not desc and typing.get_origin(field.annotation) is Literal and len(typing.get_args(field.annotation)) == 1:
            desc = f"Discriminator: always `{json.dumps(typing.get_args(field.annotation)[0])}`."
        lines.append(f"| `{name}` | {_escape(kind)} | {_escape(default_text(field, documented, link))} | {_escape(desc)} |")
    return lines


def _doc(cls: type) -> str:
    return inspect.cleandoc(cls.__doc__ or "").strip()


def collect_models(roots: Iterable[type[BaseModel]]) -> list[type[BaseModel]]:
    """``roots`` and every model they reference, roots first, then in discovery order."""
    order: list[type[BaseModel]] = []
    queue = list(roots)
    while queue:
        model = queue.pop(0)
        if model in order:
            continue
        order.append(model)
        for field in model.model_fields.values():
            queue += [m for m in nested_models(field.annotation) if m not in order]
    return order


# -------------------------------------------------------------------------- spec.md
def spec_reference() -> str:
    from mmalign_core.spec_models import AlignStage, ComponentRef, EvaluateStage, LoraSettings, RunSpec, SFTStage, TrainSettings

    models = collect_models([RunSpec, SFTStage, AlignStage, EvaluateStage, ComponentRef, TrainSettings, LoraSettings])
    documented = set(models)

    def link(model: type[BaseModel]) -> str:
        return f"[{model.__name__}](#{_anchor(model.__name__)})" if model in documented else model.__name__

    lines: list[str] = []
    for model in models:
        lines += [f"### {model.__name__}", ""]
        if _doc(model):
            lines += [_doc(model), ""]
        lines += model_table(model, documented, link) + [""]
    return "\n".join(lines).rstrip() + "\n"


# -------------------------------------------------------------------- components.md
def official_entries() -> list[tuple[str, Any, list[Any]]]:
    """``(plugin name, known record, entries)`` for each official plugin, in registry order.

    Raises ``LookupError`` when an official plugin is not installed or broken.
    """
    from mmalign_core.known import load_known
    from mmalign_core.manager import load_plugins

    known = load_known()
    plugins = load_plugins(disabled=())
    out = []
    for record in known.plugins.values():
        if record.status != "official":
            continue
        info = plugins.info(record.entry_point)
        if info is None or info.status != "ok":
            raise LookupError(MISSING_PLUGIN.format(name=record.entry_point, dist=record.distribution))
        out.append((record.entry_point, record, plugins.entries_of(record.entry_point)))
    return out


def components_reference() -> str:
    from mmalign_core.entries import KIND_LABELS, KINDS

    found = official_entries()
    roots = [e.config for _, _, entries in found for e in entries]
    all_models = collect_models(roots)
    # Models embedded in several configs are documented once, in their own section.
    users: dict[type[BaseModel], set[type[BaseModel]]] = {}
    for model in all_models:
        for field in model.model_fields.values():
            for nested in nested_models(field.annotation):
                users.setdefault(nested, set()).add(model)
    shared = [m for m in all_models if m not in roots]
    documented = set(all_models)

    def link(model: type[BaseModel]) -> str:
        return f"[{model.__name__}](#{_anchor(model.__name__)})"

    lines: list[str] = []
    for plugin, record, entries in found:
        lines += [f"## Plugin `{plugin}` ({record.distribution})", "", record.summary, ""]
        if record.path:
            lines += [f"Source: `{record.path}`" + (f"; paper: <{record.paper}>" if record.paper else "") + ".", ""]
        order = {k: i for i, k in enumerate(KINDS)}
        for entry in sorted(entries, key=lambda e: (order[e.kind], e.name)):
            lines += [f"### {entry.name}", ""]
            lines += [f"*{KIND_LABELS[entry.kind]}* -- {entry.summary}", ""]
            facts = [f"- config class: `{entry.config.__name__}`; factory: `{entry.factory}`"]
            if entry.capabilities:
                facts.append("- capabilities: " + ", ".join(f"`{c}`" for c in sorted(entry.capabilities)))
            if entry.requires:
                facts.append("- requires: " + ", ".join(f"`{r}`" for r in sorted(entry.requires)))
            metrics = getattr(entry, "metrics", ())
            if metrics:
                label = "metrics logged" if entry.kind == "loss" else "metrics reported"
                facts.append(f"- {label}: " + ", ".join(f"`{m}`" for m in metrics))
            lines += facts + [""]
            if _doc(entry.config):
                lines += [_doc(entry.config), ""]
            if entry.config.model_fields:
                lines += model_table(entry.config, documented, link) + [""]
            else:
                lines += ["No settings.", ""]
    if shared:
        lines += ["## Shared config blocks", ""]
        for model in shared:
            used_by = sorted(m.__name__ for m in users.get(model, ()))
            lines += [f"### {model.__name__}", ""]
            if _doc(model):
                lines += [_doc(model), ""]
            if used_by:
                lines += ["Used by: " + ", ".join(f"`{u}`" for u in used_by) + ".", ""]
            lines += model_table(model, documented, link) + [""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- files
TARGETS: dict[str, tuple[str, Callable[[], str]]] = {
    "spec": ("spec.md", spec_reference),
    "components": ("components.md", components_reference),
}


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED: {key} (python docs/gen_reference.py) -->", f"<!-- END GENERATED: {key} -->"


def render(key: str, current: str) -> str:
    """``current`` with the generated region of ``key`` replaced by a fresh rendering."""
    begin, end = _markers(key)
    if begin not in current or end not in current:
        raise ValueError(f"docs/{TARGETS[key][0]} lacks the markers {begin!r} ... {end!r}")
    head, rest = current.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n\n{TARGETS[key][1]()}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files instead of writing them")
    parser.add_argument("--only", choices=sorted(TARGETS), action="append", help="limit to one target (repeatable)")
    args = parser.parse_args(argv)
    stale = []
    for key in args.only or list(TARGETS):
        path = DOCS / TARGETS[key][0]
        current = path.read_text(encoding="utf-8")
        fresh = render(key, current)
        if fresh == current:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(fresh, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python docs/gen_reference.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
