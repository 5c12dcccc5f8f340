"""The ``mmalign eval`` and ``mmalign compare`` commands (added to the parser by :mod:`mmalign_core.cli`).

``mmalign eval`` evaluates a model -- any checkpoint or base-model folder its
model component can load -- without training: from a spec whose stages are all
``evaluate`` stages, or from ``--model``/``--evaluator`` flags that build such a
spec. The spec is validated like ``mmalign run`` and handed to
:func:`mmalign_core.runner.run_spec` (torch is imported only then).

``mmalign compare`` reads the ``manifest.json`` of finished runs and prints one
table of every metric across them (rows = runs when runs and metrics are few,
otherwise transposed), optionally in a plugin's fixed column layout (the paper's eight columns come from mmalign-evals), and
draws a PNG bar chart with matplotlib (the optional ``report`` extra).

Importing this module imports no torch, transformers, Pillow or matplotlib.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from .commands import ColumnSet
from .errors import MmalignError, SpecValidationError

_TRAINING_MODULES = {"torch", "transformers", "accelerate", "peft", "safetensors"}
_TRAINING_STAGES = ("sft", "align")

#: ``auto`` layout: runs are rows while there are at most this many metrics and this many rows.
AUTO_MAX_COLUMNS = 10
AUTO_MAX_ROWS = 20


# =============================================================================== eval
def _json_arg(text: str, what: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@file.json``."""
    source = text
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MmalignError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise MmalignError(f"{what}: invalid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(value, dict):
        raise MmalignError(f"{what}: expected a JSON object, got {text}")
    return value


def parse_evaluator_arg(text: str) -> dict[str, Any]:
    """``NAME``, ``NAME:{json}`` or ``NAME:@file.json`` -> ``{"name": NAME, "config": {...}}``.

    ``NAME`` may be qualified (``evals:pope``): the config starts at the first ``:{`` or ``:@``.
    """
    m = re.search(r":(?=[{@])", text)
    name, config = (text[: m.start()], _json_arg(text[m.end():], f"--evaluator {text[: m.start()]}")) if m else (text, {})
    if not name.strip():
        raise MmalignError(f"--evaluator {text!r}: no evaluator name")
    return {"name": name.strip(), "config": config}


def _run_name(model: str) -> str:
    return "eval-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-.") or "model")


def build_eval_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec that ``mmalign eval --model ... --evaluator ...`` runs: the model and one evaluate stage."""
    model_config = _json_arg(args.model_config, "--model-config") if args.model_config else {}
    if args.model_path:
        model_config["path"] = args.model_path
    spec: dict[str, Any] = {
        "name": args.name or _run_name(args.model),
        "description": "mmalign eval: " + " ".join(e for e in args.evaluator),
        "model": {"name": args.model, "config": model_config},
        "stages": [{"type": "evaluate", "name": "evaluate", "evaluators": [parse_evaluator_arg(e) for e in args.evaluator]}],
    }
    return spec


def _check_eval_only(data: Any, source: str) -> None:
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list):
        return  # validation reports it
    training = [
        f"stages[{i}] ({st.get('name') or st.get('type')!s}, type {st.get('type')!r})"
        for i, st in enumerate(stages)
        if isinstance(st, dict) and st.get("type") in _TRAINING_STAGES
    ]
    if training:
        raise MmalignError(
            f"{source}: `mmalign eval` runs evaluate stages only, but the spec trains in {', '.join(training)}. "
            "Use `mmalign run` for specs with training stages, or point the model at the trained checkpoint "
            "(e.g. --model-path <run>/stages/<i>-<name>/model) and evaluate that."
        )


def cmd_eval(args: argparse.Namespace) -> int:
    """``mmalign eval``: validate an evaluation-only spec (or build one from flags) and run it."""
    from .cli import _plugins, _print_problems
    from .spec import check_spec, load_spec

    flags = bool(args.model or args.evaluator or args.model_config or args.model_path or args.name)
    if args.spec and flags:
        raise MmalignError("give either SPEC or --model/--evaluator, not both")
    if args.spec:
        data, source = load_spec(args.spec), args.spec
    else:
        if not args.model or not args.evaluator:
            raise MmalignError("mmalign eval needs SPEC, or --model NAME and at least one --evaluator NAME[:JSON]")
        data, source = build_eval_spec(args), "<mmalign eval flags>"
    _check_eval_only(data, source)
    for key in ("device", "dtype", "seed"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    validated, problems = check_spec(data, _plugins(), source=source)
    if validated is None:
        raise SpecValidationError(problems, source=source)
    _print_problems(validated.warnings, sys.stderr)
    if args.dry_run:
        print(json.dumps(validated.resolved, indent=2))
        return 0
    try:
        from .runner import run_spec
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _TRAINING_MODULES:
            raise MmalignError(f"`mmalign eval` needs the model extras: pip install 'mmalign[train]' ({exc})") from None
        raise
    output_dir = Path(args.output_dir) if args.output_dir else None
    run_dir = run_spec(validated, output_dir=output_dir, resume=args.resume, overwrite=args.overwrite)
    if isinstance(run_dir, (str, Path)) and (Path(run_dir) / "manifest.json").is_file():
        table = collect([Path(run_dir)])
        print()
        render_text(table, layout="metrics", out=sys.stdout)
    return 0


# ============================================================================ compare
@dataclass
class Column:
    """One metric column: its label, the evaluator label and metric it comes from, and how to read it."""

    label: str
    higher_is_better: Optional[bool] = None


@dataclass
class Table:
    """Metric values of several runs: ``values[row][column]``."""

    rows: list[str] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    decimals: Optional[int] = None  # fixed decimals (the paper layout prints two)

    def column(self, label: str) -> Column:
        for c in self.columns:
            if c.label == label:
                return c
        col = Column(label)
        self.columns.append(col)
        return col


def _manifest_path(arg: Path) -> Path:
    path = arg / "manifest.json" if arg.is_dir() else arg
    if not path.is_file():
        raise MmalignError(f"{arg}: no manifest.json (is it a run directory written by `mmalign run`/`mmalign eval`?)")
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MmalignError(f"{path}: cannot read the manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise MmalignError(f"{path}: not a run manifest")
    return manifest


def evaluator_label(key: str, result: dict[str, Any], taken: set[str]) -> str:
    """What a column calls an evaluator: ``details.benchmark`` (e.g. 'textvqa' for a `vqa` evaluator) when it
    names one and is not already used in the stage, else the evaluator's key in the manifest."""
    details = result.get("details") if isinstance(result.get("details"), dict) else {}
    benchmark = details.get("benchmark") if details else None
    if isinstance(benchmark, str) and benchmark and benchmark not in taken:
        return benchmark
    return key


def collect(runs: Sequence[Path]) -> Table:
    """Every metric of every evaluate stage of ``runs``; one row per run (per run and stage when a run has several)."""
    table = Table()
    labels: dict[str, int] = {}
    for arg in runs:
        path = _manifest_path(Path(arg))
        manifest = _read_manifest(path)
        base = str((manifest.get("spec") or {}).get("name") or path.parent.name)
        labels[base] = labels.get(base, 0) + 1
        if labels[base] > 1:
            base = f"{base} ({path.parent})"
        evaluations = manifest.get("evaluations") or []
        if not evaluations:
            table.notes.append(f"{path.parent}: no finished evaluate stage (status {manifest.get('status')!r})")
            continue
        if manifest.get("status") not in (None, "complete"):
            table.notes.append(f"{path.parent}: run status is {manifest.get('status')!r}; showing its finished stages")
        for ev in evaluations:
            row = base if len(evaluations) == 1 else f"{base}/{ev.get('stage')}"
            table.rows.append(row)
            table.sources[row] = str(path.parent)
            values = table.values.setdefault(row, {})
            taken: set[str] = set()
            for key, result in (ev.get("results") or {}).items():
                label = evaluator_label(key, result, taken)
                taken.add(label)
                hib = result.get("higher_is_better") or {}
                for metric, value in (result.get("metrics") or {}).items():
                    col = table.column(f"{label}.{metric}")
                    if col.higher_is_better is None and metric in hib:
                        col.higher_is_better = bool(hib[metric])
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        values[col.label] = float(value)
    return table


def select_columns(table: Table, patterns: Sequence[str]) -> Table:
    """Keep the columns matching any glob pattern (``pope.*``, ``*.chair_i``), in the patterns' order."""
    wanted = [p.strip() for spec in patterns for p in spec.split(",") if p.strip()]
    kept: list[Column] = []
    for pattern in wanted:
        for col in table.columns:
            if fnmatch.fnmatchcase(col.label, pattern) and col not in kept:
                kept.append(col)
    if not kept:
        raise MmalignError(f"no metric matches {', '.join(wanted)}; available: {', '.join(c.label for c in table.columns)}")
    return Table(table.rows, kept, table.values, table.sources, table.notes, table.decimals)


def column_set_table(table: Table, columns: ColumnSet) -> Table:
    """The fixed columns of a column set (e.g. the paper's Table 2 from mmalign-evals), in its units."""
    out = Table(rows=list(table.rows), sources=table.sources, notes=list(table.notes), decimals=2)
    for col in columns.columns:
        source = f"{col.evaluator}.{col.metric}"
        hib = col.higher_is_better
        if hib is None:
            hib = next((c.higher_is_better for c in table.columns if c.label == source), True)
        out.columns.append(Column(col.label, hib))
        for row in table.rows:
            value = table.values.get(row, {}).get(source)
            if value is not None:
                out.values.setdefault(row, {})[col.label] = value * col.scale
    missing = [c for c in columns.columns if not any(f"{c.evaluator}.{c.metric}" in v for v in table.values.values())]
    if missing:
        out.notes.append("no run has " + ", ".join(c.label for c in missing) + " ("
                         + ", ".join(f"{c.evaluator}.{c.metric}" for c in missing)
                         + f"; column set {columns.name!r} of plugin {columns.plugin or '?'})")
    return out


def resolve_column_set(name: str) -> ColumnSet:
    """The column set ``name`` from the installed plugins, or an error listing those that exist."""
    from .manager import get_plugins

    sets, problems = get_plugins().column_sets()
    for problem in problems:
        print(f"mmalign: warning: {problem}", file=sys.stderr)
    if name in sets:
        return sets[name]
    hint = f"; installed: {', '.join(sorted(sets))}" if sets else "; no installed plugin provides column sets"
    extra = " (the paper's columns come from mmalign-evals: pip install mmalign-evals)" if name == "paper" else ""
    raise MmalignError(f"--columns {name}: no such column set{hint}{extra}")


def _fmt(value: Optional[float], decimals: Optional[int] = None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–" if value is None else str(value)
    if decimals is not None:
        return f"{value:.{decimals}f}"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _best(table: Table, column: Column) -> Optional[float]:
    if column.higher_is_better is None:
        return None
    vals = [v for v in (table.values.get(r, {}).get(column.label) for r in table.rows) if v is not None]
    if len(vals) < 2 or len(set(vals)) == 1:
        return None
    return max(vals) if column.higher_is_better else min(vals)


def choose_layout(table: Table, layout: str) -> str:
    """``runs`` (rows = runs, the paper's layout) or ``metrics`` (transposed)."""
    if layout != "auto":
        return layout
    if len(table.columns) <= AUTO_MAX_COLUMNS and len(table.rows) <= AUTO_MAX_ROWS:
        return "runs"
    return "metrics" if len(table.columns) > len(table.rows) else "runs"


def _grid(table: Table, layout: str) -> tuple[list[str], list[list[str]]]:
    arrows = {True: " ↑", False: " ↓", None: ""}
    best = {c.label: _best(table, c) for c in table.columns}

    def cell(row: str, col: Column) -> str:
        value = table.values.get(row, {}).get(col.label)
        mark = "*" if value is not None and best[col.label] is not None and value == best[col.label] else ""
        return _fmt(value, table.decimals) + mark

    if layout == "runs":
        headers = ["run"] + [c.label + arrows[c.higher_is_better] for c in table.columns]
        body = [[row] + [cell(row, c) for c in table.columns] for row in table.rows]
    else:
        headers = ["metric"] + list(table.rows)
        body = [[c.label + arrows[c.higher_is_better]] + [cell(row, c) for row in table.rows] for c in table.columns]
    return headers, body


def render_text(table: Table, *, layout: str = "auto", markdown: bool = False, out: TextIO = sys.stdout) -> None:
    """Print the table (aligned text or markdown); ``*`` marks the best value of a metric across rows."""
    if not table.rows or not table.columns:
        print("No metrics to compare.", file=out)
        for note in table.notes:
            print(f"note: {note}", file=out)
        return
    headers, body = _grid(table, choose_layout(table, layout))
    if markdown:
        print("| " + " | ".join(headers) + " |", file=out)
        print("|" + "---|" * len(headers), file=out)
        for r in body:
            print("| " + " | ".join(r) + " |", file=out)
    else:
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
        for r in [headers, *body]:
            first = r[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
            print("  ".join([first, *rest]).rstrip(), file=out)
    if any(_best(table, c) is not None for c in table.columns):
        print("(* best per metric; ↑ higher is better, ↓ lower is better)", file=out)
    for note in table.notes:
        print(f"note: {note}", file=out)


def draw_chart(table: Table, path: Path) -> Path:
    """A PNG of grouped bars: one panel per metric (its own scale), one coloured bar per run (matplotlib)."""
    from .figures import bar_chart

    columns = [(c.label, c.higher_is_better) for c in table.columns]
    return bar_chart(table.rows, columns, table.values, path, table.decimals)


def cmd_compare(args: argparse.Namespace) -> int:
    """``mmalign compare RUN...``: one table of every metric across runs, and a PNG chart."""
    table = collect([Path(r) for r in args.runs])
    columns = args.columns or ("paper" if args.paper else None)
    if columns:
        table = column_set_table(table, resolve_column_set(columns))
    if args.metrics:
        table = select_columns(table, args.metrics)
    if args.json:
        print(json.dumps({
            "rows": table.rows,
            "runs": table.sources,
            "columns": [{"label": c.label, "higher_is_better": c.higher_is_better} for c in table.columns],
            "values": table.values,
            "notes": table.notes,
        }, indent=2))
    else:
        render_text(table, layout=args.layout, markdown=args.markdown, out=sys.stdout)
    if not args.no_chart and table.rows and table.columns:
        from .figures import FiguresUnavailable

        try:
            written = draw_chart(table, Path(args.chart))
        except OSError as exc:
            raise MmalignError(f"cannot write the chart {args.chart}: {exc.strerror or exc}") from None
        except FiguresUnavailable as exc:
            print(f"note: no chart written: {exc}", file=sys.stderr)
        else:
            print(f"wrote {written}", file=sys.stderr)
    return 0


# ============================================================================= parser
def add_commands(sub: Any) -> None:
    """Add ``eval`` and ``compare`` to the top-level sub-parsers."""
    ev = sub.add_parser(
        "eval",
        help="evaluate a model or checkpoint without training",
        description="Evaluate a model -- a base model folder or a trained checkpoint -- with one or more evaluators, "
        "without any training stage. Either give SPEC (a run spec whose stages are all 'evaluate' stages) or build "
        "one from --model and --evaluator. Validates like `mmalign run`, then runs the spec; results land in the "
        "output directory as for any run (manifest.json, report.md, stages/*/eval/*/results.json and samples.jsonl).",
    )
    ev.set_defaults(func=cmd_eval)
    ev.add_argument("spec", metavar="SPEC", nargs="?", default=None, help="run spec (JSON) with evaluate stages only")
    ev.add_argument("--model", metavar="NAME", help="model component, e.g. tiny-llava or hf-vlm")
    ev.add_argument("--model-config", metavar="JSON", help="model config as JSON, or @file.json")
    ev.add_argument("--model-path", metavar="DIR", help="shortcut for the model config's 'path' (a checkpoint or base-model folder)")
    ev.add_argument(
        "--evaluator", metavar="NAME[:JSON]", action="append", default=[],
        help="an evaluator and optionally its config: pope, 'pope:{\"limit\": 100}', vqa:@textvqa.json (repeatable)",
    )
    ev.add_argument("--name", metavar="NAME", help="run name with --model (default eval-<model>)")
    ev.add_argument("--device", metavar="DEV", help="override the spec's device ('auto', 'cpu', 'cuda', 'cuda:N')")
    ev.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="override the spec's dtype")
    ev.add_argument("--seed", type=int, help="override the spec's seed")
    ev.add_argument("--output-dir", metavar="D", help="where the run writes (default: the spec's output_dir or runs/<name>)")
    mode = ev.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted evaluation in the output directory")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run in the output directory")
    ev.add_argument("--dry-run", action="store_true", help="validate and print the resolved spec; run nothing")

    cmp = sub.add_parser(
        "compare",
        help="compare the metrics of finished runs",
        description="Print one table of every metric across runs, read from each run's manifest.json (rows = runs and "
        "columns = metrics while both are few, as in the paper's Table 2; otherwise transposed), and draw a PNG bar "
        "chart. Imports no torch.",
    )
    cmp.set_defaults(func=cmd_compare)
    cmp.add_argument("runs", metavar="RUN", nargs="+", help="run directories (or their manifest.json)")
    cmp.add_argument("--metrics", metavar="PATTERN", action="append", default=[],
                     help="only columns matching these globs, e.g. 'pope.pope_f1,*.chair_i' (repeatable)")
    cmp.add_argument("--columns", metavar="SET",
                     help="a fixed column layout from a plugin, e.g. 'paper' (mmalign-evals: the paper's Table 2 columns "
                     "POPE | MMHAL | MMHAL_V | LLaVA_W | VQA_T | GQA | MMVet | Rec, in its units)")
    cmp.add_argument("--paper", action="store_true", help="shorthand for --columns paper")
    cmp.add_argument("--layout", choices=("auto", "runs", "metrics"), default="auto",
                     help="rows = runs ('runs') or rows = metrics ('metrics'); default: runs while both are few")
    cmp.add_argument("--markdown", action="store_true", help="print a markdown table")
    cmp.add_argument("--json", action="store_true", help="print the values as JSON instead of a table")
    cmp.add_argument("--chart", metavar="PNG", default="compare.png", help="where to write the chart (default compare.png)")
    cmp.add_argument("--no-chart", action="store_true", help="do not draw the chart")
