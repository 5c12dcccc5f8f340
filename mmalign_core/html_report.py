"""``mmalign report RUN... [-o page.html]``: one self-contained HTML page for one or several runs.

The page holds, per run: its provenance (status, spec hash, mmalign version and git commit, python,
platform, device, seed, package versions, plugins), the stages, the evaluation table (one column per
evaluate stage), the last training metrics of each stage, the figures of :mod:`mmalign_core.figures`
and links to every evaluator's ``samples.jsonl`` (relative to the page). With several runs it starts
with the ``mmalign compare`` chart. Figures are embedded as ``data:`` PNGs and the style is inline:
the page loads nothing from the network and has no script. Imports no torch.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import MmalignError
from .figures import FiguresUnavailable, evaluation_figure, training_figures

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f6fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0 1.5em; border: 1px solid #eee; }
.status-complete { color: #2a7d2a; font-weight: bold; }
.status-failed, .status-interrupted { color: #b22; font-weight: bold; }
.note { color: #666; font-style: italic; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e("–" if value is None else value)
    return _e(f"{value:.4g}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table from already-escaped cells (a cell starting with ``<td`` is used as is)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def read_run(run: Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """The run folder, its manifest and its metrics rows; :class:`MmalignError` when it is not a run."""
    folder = run.parent if run.name == "manifest.json" else run
    path = folder / "manifest.json"
    if not path.is_file():
        raise MmalignError(f"{run}: no manifest.json (is it a run directory written by `mmalign run`/`mmalign eval`?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MmalignError(f"{path}: cannot read the manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise MmalignError(f"{path}: not a run manifest")
    rows = []
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a running or killed run
            if isinstance(row, dict):
                rows.append(row)
    return folder, manifest, rows


def _provenance(manifest: Mapping[str, Any]) -> str:
    spec = manifest.get("spec") or {}
    status = str(manifest.get("status"))
    items = [
        ("status", f'<span class="status-{_e(status)}">{_e(status)}</span>'),
        ("spec hash", f"<code>{_e(manifest.get('spec_hash', ''))}</code>"),
        ("mmalign", _e(manifest.get("mmalign_version"))),
        ("git commit", f"<code>{_e(manifest.get('git_commit') or 'n/a')}</code>"),
        ("created / finished", _e(f"{manifest.get('created', '')} / {manifest.get('finished', '–')}")),
        ("python / platform", _e(f"{manifest.get('python', '')} / {manifest.get('platform', '')}")),
        ("device, processes", _e(f"{manifest.get('device', '')}, {manifest.get('processes', 1)}")),
        ("seed", _e(spec.get("seed"))),
        ("packages", _e(", ".join(f"{k} {v}" for k, v in (manifest.get("packages") or {}).items()))),
        ("plugins", _e(", ".join(f"{p.get('name')} {p.get('version') or ''} ({p.get('status')})".replace(" ()", "")
                                 for p in manifest.get("plugins") or []))),
    ]
    if manifest.get("error"):
        items.append(("error", _e(manifest["error"])))
    return "<table><tbody>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in items) + "</tbody></table>"


def _stages(manifest: Mapping[str, Any]) -> str:
    rows = []
    for st in manifest.get("stages") or []:
        data = st.get("data") or {}
        rows.append([_e(st.get("name")), _e(st.get("type")), f'<span class="status-{_e(st.get("status"))}">{_e(st.get("status"))}</span>',
                     f'<td class="num">{_num(st.get("seconds"))}</td>', f'<td class="num">{_num(st.get("steps"))}</td>',
                     _e(f"{data.get('n_examples')} from {data.get('source')}" if data else ""), _e(st.get("loss") or "")])
    if not rows:
        return '<p class="note">No stage has started.</p>'
    return _table(["stage", "type", "status", "seconds", "steps", "examples", "loss"], rows)


def _evaluations(manifest: Mapping[str, Any]) -> str:
    evaluations = manifest.get("evaluations") or []
    if not evaluations:
        return '<p class="note">No evaluate stage finished in this run.</p>'
    keys: list[tuple[str, str]] = []
    arrows: dict[tuple[str, str], str] = {}
    for ev in evaluations:
        for key, res in (ev.get("results") or {}).items():
            for metric in res.get("metrics") or {}:
                if (key, metric) not in keys:
                    keys.append((key, metric))
                hib = (res.get("higher_is_better") or {}).get(metric)
                if hib is not None:
                    arrows[(key, metric)] = " ↑" if hib else " ↓"
    rows = []
    for key, metric in keys:
        cells = [((ev.get("results") or {}).get(key) or {}).get("metrics", {}).get(metric) for ev in evaluations]
        rows.append([_e(key), _e(metric + arrows.get((key, metric), ""))] + [f'<td class="num">{_num(v)}</td>' for v in cells])
    return _table(["evaluator", "metric"] + [_e(ev.get("stage")) for ev in evaluations], rows)


def _last_metrics(manifest: Mapping[str, Any]) -> str:
    stages = [st for st in manifest.get("stages") or [] if st.get("last_metrics")]
    if not stages:
        return '<p class="note">No training stage finished in this run.</p>'
    names: list[str] = []
    for st in stages:
        names += [k for k in st["last_metrics"] if k not in names]
    rows = [[_e(name)] + [f'<td class="num">{_num(st["last_metrics"].get(name))}</td>' for st in stages] for name in names]
    return _table(["metric (last logged row)"] + [_e(st["name"]) for st in stages], rows)


def _samples(folder: Path, manifest: Mapping[str, Any], page: Path) -> str:
    links = []
    for st in manifest.get("stages") or []:
        base = folder / "stages" / f"{st.get('index')}-{st.get('name')}" / "eval"
        for samples in sorted(base.glob("*/samples.jsonl")) if base.is_dir() else []:
            rel = Path(os.path.relpath(samples, page.parent.resolve())).as_posix()
            links.append(f'<li><a href="{_e(rel)}">{_e(st.get("name"))} / {_e(samples.parent.name)}</a> '
                         f'<span class="note">({samples.stat().st_size} bytes)</span></li>')
    if not links:
        return '<p class="note">No evaluator samples in this run.</p>'
    return "<ul>" + "".join(links) + "</ul>"


def _figures(rows: list[dict[str, Any]], manifest: Mapping[str, Any], scratch: Path) -> str:
    stages = manifest.get("stages") or []
    try:
        figures = training_figures(rows, stages, scratch)
        evals = evaluation_figure(manifest.get("evaluations") or [], stages, scratch / "evaluations.png")
    except FiguresUnavailable as exc:
        return f'<p class="note">No figures: {_e(exc)}.</p>'
    if evals is not None:
        figures.append(evals)
    if not figures:
        return '<p class="note">No training curves or evaluations in this run.</p>'
    return "".join(_img(f.path, f.title) for f in figures)


def _run_section(n: int, folder: Path, manifest: Mapping[str, Any], rows: list[dict[str, Any]], page: Path, scratch: Path) -> str:
    spec = manifest.get("spec") or {}
    name = spec.get("name") or folder.name
    parts = [f'<h1 id="run-{n}">{_e(name)}</h1>', f'<p><code>{_e(folder.resolve())}</code></p>']
    if spec.get("description"):
        parts.append(f"<p>{_e(spec['description'])}</p>")
    parts += ["<h2>Provenance</h2>", _provenance(manifest), "<h2>Stages</h2>", _stages(manifest),
              "<h2>Evaluation</h2>", _evaluations(manifest), "<h2>Training metrics</h2>", _last_metrics(manifest),
              "<h2>Figures</h2>", _figures(rows, manifest, scratch), "<h2>Samples</h2>", _samples(folder, manifest, page)]
    return "\n".join(parts)


def _comparison(runs: Sequence[Path], scratch: Path) -> str:
    from .cli_eval import collect, draw_chart

    table = collect(list(runs))
    if not table.rows or not table.columns:
        return '<p class="note">None of these runs has a finished evaluation to compare.</p>'
    try:
        chart = draw_chart(table, scratch / "compare.png")
    except FiguresUnavailable as exc:
        return f'<p class="note">No comparison chart: {_e(exc)}.</p>'
    return _img(chart, "every evaluation metric across the runs")


def render(runs: Sequence[Path], page: Path) -> Path:
    """Write the HTML page for ``runs`` to ``page`` and return its path."""
    loaded = [read_run(Path(r)) for r in runs]
    with tempfile.TemporaryDirectory(prefix="mmalign-report-") as tmp:
        scratch = Path(tmp)
        sections = []
        if len(loaded) > 1:
            toc = "".join(f'<li><a href="#run-{n}">{_e((m.get("spec") or {}).get("name") or f.name)}</a></li>'
                          for n, (f, m, _) in enumerate(loaded))
            sections.append(f"<h1>{len(loaded)} runs</h1><ul>{toc}</ul>{_comparison([f for f, _, _ in loaded], scratch / 'cmp')}")
        for n, (folder, manifest, rows) in enumerate(loaded):
            sections.append(_run_section(n, folder, manifest, rows, page, scratch / str(n)))
    title = ", ".join(str((m.get("spec") or {}).get("name") or f.name) for f, m, _ in loaded)
    text = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>mmalign report: {_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>\n'
            f"<body>\n" + "\n<hr>\n".join(sections) + "\n</body></html>\n")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
    return page


def cmd_report(args: argparse.Namespace) -> int:
    """``mmalign report RUN... [-o page.html]``."""
    runs = [Path(r) for r in args.runs]
    default = (runs[0].parent if runs[0].name == "manifest.json" else runs[0]) / "report.html" if len(runs) == 1 else Path("report.html")
    page = Path(args.output) if args.output else default
    try:
        written = render(runs, page)
    except OSError as exc:
        raise MmalignError(f"cannot write {page}: {exc.strerror or exc}") from None
    print(f"wrote {written}", file=sys.stderr)
    return 0


def add_command(sub: Any) -> None:
    """Add ``report`` to the top-level sub-parsers."""
    rep = sub.add_parser(
        "report",
        help="render finished (or running) runs as one self-contained HTML page",
        description="Render one HTML page for one or several runs: provenance from the manifest, stages, the evaluation "
        "table, the last training metrics, figures (matplotlib, embedded) and links to each evaluator's samples.jsonl; "
        "with several runs, the compare chart first. The page loads nothing from the network. Imports no torch.",
    )
    rep.set_defaults(func=cmd_report)
    rep.add_argument("runs", metavar="RUN", nargs="+", help="run directories (or their manifest.json)")
    rep.add_argument("-o", "--output", metavar="HTML",
                     help="where to write the page (default: RUN/report.html for one run, ./report.html for several)")


__all__ = ["render", "read_run", "cmd_report", "add_command"]
