"""The study's figures (matplotlib, Agg, imported only here): metric bars with seed spread, and per-arm training curves."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Sequence

from .grid import Cell
from .table import StudyTable


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars(table: StudyTable, metrics: Sequence[str], path: Path) -> Path:
    """One panel per metric: a bar per row (mean over seeds), the seeds as dots, the sample sd as an error bar."""
    plt = _pyplot()
    shown = [m for m in metrics if m in table.metrics] or table.metrics[:6]
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, shown):
        labels = [r for r in table.rows if table.values.get(r, {}).get(metric)]
        means = [table.mean_sd(r, metric)[0] or 0.0 for r in labels]
        sds = [table.mean_sd(r, metric)[1] or 0.0 for r in labels]
        xs = range(len(labels))
        ax.bar(xs, means, yerr=sds, capsize=3, color="#4c78a8", alpha=0.8)
        for x, row in zip(xs, labels):
            vals = table.values[row][metric]
            ax.plot([x] * len(vals), vals, "o", color="black", markersize=3)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        hib = table.higher_is_better.get(metric)
        ax.set_title(f"{metric} ({'higher' if hib else 'lower' if hib is False else '?'} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle("mean over seeds (bars), each seed (dots), sample sd (error bars)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(cells: Sequence[Cell], base_label: str, path: Path) -> Path:
    """The training loss of each arm's own stages against step, mean over seeds (one line per arm)."""
    plt = _pyplot()
    by_arm: dict[str, dict[int, list[float]]] = {}
    for cell in cells:
        if cell.row == base_label:
            continue
        metrics = cell.folder / "metrics.jsonl"
        if not metrics.is_file():
            continue
        offset = 0
        last_stage, last_step = None, 0
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row.get("loss"), (int, float)):
                continue
            if row.get("stage") != last_stage:
                offset += last_step
                last_stage = row.get("stage")
            last_step = int(row.get("step", 0))
            by_arm.setdefault(cell.row, {}).setdefault(offset + last_step, []).append(float(row["loss"]))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for arm, points in by_arm.items():
        steps = sorted(points)
        ax.plot(steps, [statistics.fmean(points[s]) for s in steps], label=arm)
    ax.set_xlabel("optimizer step of the arm's own stages")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.grid(alpha=0.3)
    if by_arm:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
