"""The `mmalign data` command group, added through the ``mmalign_add_commands`` hook (imports no torch).

Commands (SRC is a run spec, or a data file/folder in a published layout):

- ``data check SRC``: index every data source of every stage of a spec (or
  the one at a path) and decode every image; print skips by reason with file
  and row examples. Exit 0 when clean, 1 when rows would be skipped or images
  fail to decode, 2 for unreadable input.
- ``data inspect SRC``: statistics (pairs, word lengths, images per pair,
  skips) and an HTML page with a few pairs, chosen and rejected side by side.
- ``data convert SRC --to canonical|trl OUT``: write the pairs in the
  canonical format or TRL's vision preference format (.parquet, .jsonl; .arrow
  for canonical).

For a path, the loader is inferred from the layout or given with
``--format``; ``--config`` adds loader settings as JSON. The work is done by
the ``mmalign-datasets`` plugin, imported only when a command runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from mmalign_core.commands import Commands
from mmalign_core.errors import MmalignError, SpecValidationError
from mmalign_core.paths import cache_root

_SPEC_MAX_BYTES = 4 << 20


@dataclass
class _Target:
    label: str
    component: str
    source: Any
    ctx: Any
    static: bool = True
    kind: str = "pairs"


def _tools() -> Any:
    from . import tools

    return tools


def _progress() -> Any:
    from tqdm.auto import tqdm

    flag = os.environ.get("MMALIGN_PROGRESS")
    disable = None if flag is None else (flag == "0")

    def progress(iterable: Iterable, desc: str = "", total: Optional[int] = None) -> Iterable:
        return tqdm(iterable, desc=desc, total=total, disable=disable, mininterval=1.0, leave=False, file=sys.stderr)

    return progress


def _context(seed: int, out_dir: Path) -> Any:
    from mmalign_core.protocols import Context

    cache = cache_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    return Context(seed=seed, output_dir=out_dir, cache_dir=cache, progress=_progress(), log=lambda m: print(f"[mmalign] {m}", file=sys.stderr, flush=True))


def _is_spec(path: Path) -> bool:
    """A JSON object with ``stages`` (small enough to be a spec, not a data file)."""
    if path.suffix.lower() != ".json" or not path.is_file() or path.stat().st_size > _SPEC_MAX_BYTES:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "stages" in data and "model" in data


def _build(entry: Any, config: Any, label: str) -> Any:
    from mmalign_core.build import BuildContext
    from mmalign_core.manager import get_plugins

    try:
        return entry.build(config, context=BuildContext(plugins=get_plugins()))
    except MmalignError:
        raise
    except Exception as exc:  # noqa: BLE001 - a component's own failure: name it
        raise MmalignError(f"{label}: building '{entry.qualified_name}' failed: {type(exc).__name__}: {exc}") from exc


def _targets(args: argparse.Namespace, tmp: Path) -> list[_Target]:
    src = Path(args.src)
    if not src.exists():
        raise MmalignError(f"{src}: no such file or folder")
    from mmalign_core.manager import get_plugins

    plugins = get_plugins()
    if _is_spec(src):
        if args.format or args.config or args.image_root:
            raise MmalignError("--format, --config and --image-root apply to a data path, not to a run spec (set them in the spec)")
        from mmalign_core.spec import check_spec, load_spec

        validated, problems = check_spec(load_spec(src), plugins, source=str(src))
        if validated is None:
            raise SpecValidationError(problems, source=str(src))
        targets = []
        for i, _stage in enumerate(validated.spec.stages):
            path = f"stages[{i}].data"
            if path not in validated.components:
                continue
            if getattr(args, "stage", None) is not None and args.stage != i:
                continue
            entry, config = validated.component(path)
            static = "static" in entry.capabilities or "online" not in entry.capabilities
            source = _build(entry, config, path) if static else None
            ctx = _context(validated.spec.seed + 1000 * (i + 1), tmp / f"stage-{i}")
            kind = "sft" if _stage.type == "sft" else "pairs"
            targets.append(_Target(path, entry.qualified_name, source, ctx, static, kind))
        if not targets:
            raise MmalignError(f"{src}: the spec has no data source" + (f" in stage {args.stage}" if getattr(args, "stage", None) is not None else ""))
        return targets
    from pydantic import ValidationError

    name = args.format
    if not name:
        try:
            from .detect import detect_format
        except ImportError:
            raise MmalignError("`mmalign data` needs the mmalign-datasets plugin: pip install mmalign-datasets") from None
        name = detect_format(src)
    entry = plugins.resolve("preference_source", name)
    if "path" not in entry.config.model_fields:
        raise MmalignError(f"'{entry.qualified_name}' does not read files (its config has no 'path'); give a run spec instead")
    settings: dict[str, Any] = {}
    if args.config:
        try:
            settings = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise MmalignError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(settings, dict):
            raise MmalignError("--config must be a JSON object of loader settings")
    settings["path"] = str(src)
    if args.image_root:
        settings["image_root"] = args.image_root
    try:
        config = entry.config.model_validate(settings)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}" for e in exc.errors()]
        raise MmalignError(f"invalid settings for '{entry.qualified_name}':\n" + "\n".join(lines)) from None
    component = entry.qualified_name + ("" if args.format else " (format detected)")
    return [_Target(str(src), component, _build(entry, config, str(src)), _context(0, tmp / "src"))]


def _length_model(args: argparse.Namespace) -> Any:
    """The model of the spec ``args.src``, built (this imports torch): what decides which pairs are too long."""
    src = Path(args.src)
    if not _is_spec(src):
        raise MmalignError("--lengths needs a run spec: the spec's model decides which pairs are too long")
    from mmalign_core.manager import get_plugins
    from mmalign_core.spec import check_spec, load_spec

    validated, problems = check_spec(load_spec(src), get_plugins(), source=str(src))
    if validated is None:
        raise SpecValidationError(problems, source=str(src))
    entry, config = validated.component("model")
    return _build(entry, config, "model")


def _print_examples(examples: dict[str, list[dict[str, Any]]], out: Any) -> None:
    for reason, rows in examples.items():
        for ex in rows:
            print(f"      {reason}: {ex['where']}: {ex['detail']}", file=out)


# ------------------------------------------------------------------------------ check
def cmd_check(args: argparse.Namespace) -> int:
    """``mmalign data check SRC``."""
    tools = _tools()
    results = []
    with tempfile.TemporaryDirectory(prefix="mmalign-data-") as tmp:
        targets = _targets(args, Path(tmp))
        model = _length_model(args) if getattr(args, "lengths", False) else None
        for t in targets:
            if not t.static:
                results.append({"source": t.label, "component": t.component, "skipped_check": "online source: nothing to check up front", "problems": 0})
                continue
            report = tools.check(t.source, t.ctx, images=args.images, kind=t.kind, reindex=getattr(args, "reindex", False))
            if model is not None:
                report["over_length"] = tools.length_report(t.source, t.ctx, model, kind=t.kind)
                report["problems"] += report["over_length"]["over"]
            if not report.get("pairs_available"):
                # Nothing to train on: `mmalign run` stops at this stage (its pre-flight), so say it here too.
                report["problems"] += 1
                report.setdefault("hints", []).append(
                    "no usable examples: the run would stop here (a wrong path, image_root or format? see the skips above)"
                )
            results.append({"source": t.label, "component": t.component, "kind": t.kind, **report})
    problems = sum(r["problems"] for r in results)
    if args.json:
        print(json.dumps({"ok": problems == 0, "problems": problems, "sources": results}, indent=2, default=str))
        return 0 if problems == 0 else 1
    out = sys.stdout
    for r in results:
        print(f"{r['source']}: {r['component']}", file=out)
        if "skipped_check" in r:
            print(f"  {r['skipped_check']}", file=out)
            continue
        if r.get("fingerprint"):
            size = sum(f.get("size", 0) for f in r.get("files") or [])
            files = f", {len(r['files'])} file(s), {size / 1e6:.1f} MB" if r.get("files") else ""
            print(f"  fingerprint {r['fingerprint']}{files}", file=out)
        head = f"  records {r['records']} -> " if r.get("records") is not None else "  "
        used = f", {r['pairs']} used (n_pairs {r['n_pairs']}, seed {r['seed']})" if r.get("n_pairs") else ""
        unit = "examples" if r.get("kind") == "sft" else "pairs"
        print(f"{head}{r['pairs_available']} {unit} available{used}", file=out)
        if r["skipped"]:
            print("  skipped: " + ", ".join(f"{k} {v}" for k, v in r["skipped"].items()), file=out)
            _print_examples(r.get("skip_examples") or {}, out)
        if r.get("dropped"):
            print("  left out inside records: " + ", ".join(f"{k} {v}" for k, v in r["dropped"].items()), file=out)
        images = r.get("images")
        if images:
            print(f"  images: {images['images'] - images['failed']} decoded, {images['failed']} failed", file=out)
            for ex in images["examples"]:
                print(f"      {ex['where']} (pair {ex['id']}): {ex['detail']}", file=out)
        for hint in r.get("hints") or []:
            print(f"  hint: {hint}", file=out)
        over = r.get("over_length")
        if over is not None:
            print(f"  over max_length {over['max_length']}: {over['over']} of {over['checked']} ({over['method']})", file=out)
            for ex in over["examples"]:
                print(f"      {ex['where']} (pair {ex['id']}): {ex['tokens']} tokens", file=out)
        if r.get("cache"):
            origin = " (reused from the cache; --reindex rebuilds it)" if r.get("from_cache") else " (built now)"
            print(f"  index: {r['cache']}{origin}", file=out)
        print(f"  {'OK' if r['problems'] == 0 else str(r['problems']) + ' problem(s)'}", file=out)
    return 0 if problems == 0 else 1


# ---------------------------------------------------------------------------- inspect
def cmd_inspect(args: argparse.Namespace) -> int:
    """``mmalign data inspect SRC``."""
    tools = _tools()
    sections = []
    reports = []
    with tempfile.TemporaryDirectory(prefix="mmalign-data-") as tmp:
        for t in _targets(args, Path(tmp)):
            if not t.static:
                continue
            stats = tools.inspect(t.source, t.ctx, kind=t.kind)
            shown = tools.shown_pairs(t.source, t.ctx, args.show, kind=t.kind) if args.show else []
            reports.append({"source": t.label, "component": t.component, **stats})
            sections.append((f"{t.label}: {t.component}", stats, shown))
        html_path = Path(args.html) if args.html else Path(f"{Path(args.src).stem or 'data'}.inspect.html")
        if sections and args.html != "-":
            tools.write_html(html_path, tools.render_html(f"mmalign data inspect {args.src}", sections))
    if args.json:
        print(json.dumps({"sources": reports, "html": str(html_path) if args.html != "-" else None}, indent=2, default=str))
        return 0
    out = sys.stdout
    for r in reports:
        print(f"{r['source']}: {r['component']}", file=out)
        extra = f" (subsample of {r['pairs_available']}, seed {r['seed']})" if r.get("pairs_available") not in (None, r["pairs"]) else ""
        recs = f" from {r['records']} records" if r.get("records") is not None else ""
        print(f"  {'pairs' if 'chosen' in r['words'] else 'examples'} {r['pairs']}{extra}{recs}", file=out)
        print(f"  {'words':<10}{'min':>8}{'p50':>8}{'p90':>8}{'max':>8}{'mean':>9}", file=out)
        for field, d in r["words"].items():
            if d:
                print(f"  {field:<10}{d['min']:>8g}{d['p50']:>8g}{d['p90']:>8g}{d['max']:>8g}{d['mean']:>9g}", file=out)
        print(f"  images per {'pair' if 'chosen' in r['words'] else 'example'}: " + (", ".join(f"{k}: {v}" for k, v in r["images_per_pair"].items()) or "-"), file=out)
        print("  skipped: " + (", ".join(f"{k} {v}" for k, v in r["skipped"].items()) or "none"), file=out)
        if r.get("dropped"):
            print("  left out inside records: " + ", ".join(f"{k} {v}" for k, v in r["dropped"].items()), file=out)
    if sections and args.html != "-":
        print(f"wrote {html_path}", file=out)
    return 0


# ---------------------------------------------------------------------------- convert
def cmd_convert(args: argparse.Namespace) -> int:
    """``mmalign data convert SRC --to canonical|trl OUT``."""
    _tools()
    from .export import write_pairs

    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="mmalign-data-") as tmp:
        targets = [t for t in _targets(args, Path(tmp)) if t.static and t.kind == "pairs"]
        if len(targets) != 1:
            raise MmalignError(
                f"{args.src}: {len(targets)} static pair sources; pick one with --stage N" if targets else f"{args.src}: no static pair source (align stage) to convert"
            )
        t = targets[0]
        counts = write_pairs(t.source.pairs(t.ctx), out, args.to, progress=t.ctx.progress)
        stats = t.source.stats() if callable(getattr(t.source, "stats", None)) else {}
    print(f"wrote {counts['pairs']} pairs ({counts['images']} images) from {t.label} to {out} ({args.to} format)")
    if stats.get("skipped"):
        print("  skipped while reading: " + ", ".join(f"{k} {v}" for k, v in stats["skipped"].items()))
    if counts["not_representable"]:
        print(f"  warning: {counts['not_representable']} pair(s) use rejected_images or extra_rejected, which TRL's format cannot hold; written without them")
    return 0


# ----------------------------------------------------------------------------- parser
def _data_usage(args: argparse.Namespace) -> int:
    """``mmalign data`` without a subcommand: say which exist."""
    print("usage: mmalign data {check,inspect,convert} ... (mmalign data --help for details)", file=sys.stderr)
    return 2



def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="a run spec (every data source of every stage), or a data file or folder")
    p.add_argument("--format", metavar="NAME", help="loader for a data path (povid, rlhf-v, rlaif-v, vlfeedback, llava-rlhf, hadpo, local); default: inferred from the layout")
    p.add_argument("--config", metavar="JSON", help='loader settings for a data path as a JSON object, e.g. \'{"n_pairs": 5000, "seed": 0}\'')
    p.add_argument("--image-root", metavar="DIR", help="folder that image paths are resolved against (data paths only)")


def add_commands(commands: Commands) -> None:
    """Add ``mmalign data check|inspect|convert``."""
    data = commands.add(
        "data",
        _data_usage,
        help="check, inspect and convert preference data sets",
        description="Work with preference data: published sets (POVID, RLHF-V, RLAIF-V, VLFeedback, LLaVA-RLHF, HA-DPO), "
        "canonical and TRL files, and the data sources of run specs. Imports no torch.",
    )
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND")

    chk = dsub.add_parser("check", help="find bad rows and undecodable images before a run",
                          description="Index each data source (reusing the run cache) and decode every image; print skipped rows by "
                          "reason with file and row. Exit 0 when clean, 1 when rows would be skipped or images fail, 2 for bad input.")
    _source_args(chk)
    chk.add_argument("--images", choices=["decode", "none"], default="decode", help="decode every image (default) or only index")
    chk.add_argument("--json", action="store_true", help="print a machine-readable report")
    chk.add_argument("--reindex", action="store_true", help="rebuild each index even when the cache holds a current one")
    chk.add_argument("--lengths", action="store_true",
                     help="also count pairs longer than the spec model's max_length (builds the model: imports torch)")
    chk.set_defaults(func=cmd_check)

    ins = dsub.add_parser("inspect", help="statistics and an HTML page of a few pairs",
                          description="Print pairs, word-length distributions, images per pair and skips; write an HTML page with a "
                          "few pairs (images as embedded thumbnails, chosen and rejected side by side).")
    _source_args(ins)
    ins.add_argument("--html", metavar="FILE", help="where to write the page (default: <SRC name>.inspect.html here; '-' for none)")
    ins.add_argument("--show", type=int, default=8, metavar="N", help="pairs shown in the page (default 8)")
    ins.add_argument("--json", action="store_true", help="print the statistics as JSON")
    ins.set_defaults(func=cmd_inspect)

    conv = dsub.add_parser("convert", help="write pairs in the canonical or TRL format",
                           description="Read SRC (a data path, or one data source of a spec) and write OUT: .parquet or .jsonl "
                           "(.arrow for canonical). TRL's format: images, prompt, chosen, rejected (+ id).")
    _source_args(conv)
    conv.add_argument("--to", choices=["canonical", "trl"], required=True, help="output format")
    conv.add_argument("out", metavar="OUT", help="output file (.parquet, .jsonl or .arrow)")
    conv.add_argument("--stage", type=int, metavar="N", help="for a spec with several data sources: the stage to convert")
    conv.set_defaults(func=cmd_convert)
    for p in (chk, ins):
        p.set_defaults(stage=None)
