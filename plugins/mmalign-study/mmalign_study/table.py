"""The study's table: the last evaluation of every run, mean and sample standard deviation over seeds."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .grid import Cell, read_manifest


@dataclass
class StudyTable:
    """``values[row][metric]`` holds one value per seed (in seed order)."""

    rows: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seeds: dict[str, list[int]] = field(default_factory=dict)
    higher_is_better: dict[str, Optional[bool]] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)

    def mean_sd(self, row: str, metric: str) -> tuple[Optional[float], Optional[float], int]:
        vals = self.values.get(row, {}).get(metric, [])
        if not vals:
            return None, None, 0
        sd = statistics.stdev(vals) if len(vals) > 1 else None
        return statistics.fmean(vals), sd, len(vals)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": {}, "metrics": self.metrics, "higher_is_better": self.higher_is_better}
        for row in self.rows:
            out["rows"][row] = {
                "seeds": self.seeds.get(row, []),
                "train_steps": self.steps.get(row, []),
                "metrics": {
                    m: {"mean": mean, "sd": sd, "n": n, "values": self.values[row][m]}
                    for m in self.metrics
                    for mean, sd, n in [self.mean_sd(row, m)]
                    if n
                },
            }
        return out


def _train_steps(manifest: dict[str, Any]) -> int:
    """Optimizer steps of the run's training stages (arms are compared at equal steps: the table shows them)."""
    total = 0
    for stage in manifest.get("stages") or []:
        steps = stage.get("steps") if isinstance(stage, dict) and stage.get("type") != "evaluate" else None
        total += int(steps) if isinstance(steps, (int, float)) and not isinstance(steps, bool) else 0
    return total


def collect(cells: Sequence[Cell], metrics: Sequence[str] = ()) -> StudyTable:
    """The last evaluate stage of each cell's run; ``metrics`` (``evaluator.metric`` names) keeps only those."""
    table = StudyTable()
    for cell in cells:
        manifest = read_manifest(cell.manifest)
        if manifest is None or manifest.get("status") != "complete" or not manifest.get("evaluations"):
            continue
        if cell.row not in table.rows:
            table.rows.append(cell.row)
        row = table.values.setdefault(cell.row, {})
        table.seeds.setdefault(cell.row, []).append(cell.seed)
        table.steps.setdefault(cell.row, []).append(_train_steps(manifest))
        for evaluator, result in (manifest["evaluations"][-1].get("results") or {}).items():
            hib = result.get("higher_is_better") or {}
            for metric, value in (result.get("metrics") or {}).items():
                key = f"{evaluator}.{metric}"
                if metrics and key not in metrics:
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    row.setdefault(key, []).append(float(value))
                    if key not in table.metrics:
                        table.metrics.append(key)
                    table.higher_is_better.setdefault(key, hib.get(metric))
    return table


def _fmt(mean: Optional[float], sd: Optional[float], n: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def markdown(table: StudyTable, title: str, description: str = "", arms: Optional[dict[str, str]] = None) -> str:
    """The table as markdown: one row per arm, ``mean ± sd`` over seeds, in each evaluator's own units."""
    lines = [f"# {title}", ""]
    if description:
        lines += [description, ""]
    header = ["row", "seeds", "train steps", *table.metrics]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in table.rows:
        steps = sorted(set(table.steps.get(row, [])))
        cells = [row, str(len(table.seeds.get(row, []))), "/".join(str(s) for s in steps)]
        cells += [_fmt(*table.mean_sd(row, m)) for m in table.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Values are mean ± sample standard deviation over seeds, in each evaluator's own units (rates as fractions). "
              "`train steps` counts the optimizer steps each run trained (the base's shared stages for the base row, the arm's "
              "own stages for an arm)."]
    if arms:
        lines += ["", "Arms:", ""] + [f"- **{name}**: {text}" for name, text in arms.items() if text]
    return "\n".join(lines) + "\n"


def write(table: StudyTable, root: Path, title: str, description: str, arms: dict[str, str]) -> list[Path]:
    """``study.json`` and ``study.md`` in ``root``; returns what was written."""
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / "study.json", root / "study.md"]
    tmp = root / ".study.json.tmp"
    tmp.write_text(json.dumps(table.as_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(paths[0])
    tmp = root / ".study.md.tmp"
    tmp.write_text(markdown(table, title, description, arms), encoding="utf-8")
    tmp.replace(paths[1])
    return paths
