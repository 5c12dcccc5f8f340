"""The per-run report: ``report.md`` with matplotlib figures and the evaluation table.

Figures come from :mod:`mmalign_core.figures` (the optional ``report`` extra);
without matplotlib the report says how to install it and keeps its tables.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..figures import FiguresUnavailable, evaluation_figure, training_figures
from .io import atomic_write_text, read_jsonl


def _eval_table(evaluations: list[dict[str, Any]]) -> list[str]:
    """Rows: metric; columns: evaluate stages (e.g. before / after alignment)."""
    if not evaluations:
        return ["_No evaluation stage in this run._"]
    cols = [e["stage"] for e in evaluations]
    metrics: list[tuple[str, str]] = []
    for e in evaluations:
        for ev, res in e["results"].items():
            for m in res["metrics"]:
                if (ev, m) not in metrics:
                    metrics.append((ev, m))
    lines = ["| evaluator | metric | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for ev, m in metrics:
        cells = []
        for e in evaluations:
            res = e["results"].get(ev)
            v = None if res is None else res["metrics"].get(m)
            cells.append("–" if v is None else f"{v:.4g}")
        hib = None
        for e in evaluations:
            res = e["results"].get(ev)
            if res and m in res.get("higher_is_better", {}):
                hib = res["higher_is_better"][m]
        arrow = "" if hib is None else (" ↑" if hib else " ↓")
        lines.append(f"| {ev} | {m}{arrow} | " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """(Re)write ``report.md`` and its plots from the metrics log and the manifest."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    lines = [f"# Run report: {manifest['spec']['name']}", ""]
    if manifest["spec"].get("description"):
        lines += [manifest["spec"]["description"], ""]
    lines += [
        f"- status: **{manifest.get('status')}**",
        f"- spec hash: `{manifest.get('spec_hash', '')[:16]}`",
        f"- mmalign {manifest.get('mmalign_version')}, git commit `{manifest.get('git_commit') or 'n/a'}`",
        f"- seed {manifest['spec'].get('seed')}, device {manifest.get('device')}",
        "",
        "## Stages",
        "",
        "| stage | type | status | seconds | details |",
        "|---|---|---|---|---|",
    ]
    for st in manifest.get("stages", []):
        det = []
        if st.get("steps"):
            det.append(f"{st['steps']} steps")
        if st.get("data"):
            det.append(f"{st['data'].get('n_examples')} examples from `{st['data'].get('source')}`")
        if st.get("loss"):
            det.append(f"loss `{st['loss']}`")
        secs = st.get("seconds")
        lines.append(
            f"| {st['name']} | {st['type']} | {st.get('status')} | {'' if secs is None else f'{secs:.1f}'} | {', '.join(det)} |"
        )
    lines += ["", "## Evaluation", ""]
    lines += _eval_table(manifest.get("evaluations", []))
    lines += ["", "## Figures", ""]
    lines += _figure_lines(run_dir, rows, manifest)
    lines.append("")
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _figure_lines(run_dir: Path, rows: list[dict[str, Any]], manifest: dict[str, Any]) -> list[str]:
    """Draw the run's figures under ``plots/`` and return the Markdown that shows them."""
    plots_dir = run_dir / "plots"
    stages = manifest.get("stages", [])
    try:
        figures = training_figures(rows, stages, plots_dir)
        evals = evaluation_figure(manifest.get("evaluations", []), stages, plots_dir / "evaluations.png")
    except FiguresUnavailable as exc:
        return [f"_No figures: {exc}._"]
    if evals is not None:
        figures.append(evals)
    if not figures:
        return ["_No training curves or evaluations in this run._"]
    lines = []
    for fig in figures:
        lines += [f"![{fig.title}](plots/{fig.path.name})", ""]
    return lines
