"""Running a study: for each seed the base run, then every arm from its final model; finished runs are skipped.

Each run is an ordinary mmalign run folder (``<study>/seed-<s>/<row>``), so a study is resumable run by run:
a complete run is reused, an interrupted one is resumed (``--resume`` semantics: from its last checkpoint),
a missing one is started. Every run spec is validated before the first step of the first run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mmalign_core.errors import MmalignError, SpecValidationError

from .spec import StudySpec, arm_run, base_run


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a row (the base label or an arm) at one seed."""

    row: str
    seed: int
    folder: Path

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"


def read_manifest(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def status(cell: Cell) -> str:
    """``complete``, ``partial`` (a run folder to resume) or ``missing``."""
    manifest = read_manifest(cell.manifest)
    if manifest is not None and manifest.get("status") == "complete":
        return "complete"
    return "partial" if cell.folder.is_dir() and any(cell.folder.iterdir()) else "missing"


def cells(study: StudySpec, root: Path, arms: Sequence[str]) -> list[Cell]:
    out = []
    for seed in study.seeds:
        out.append(Cell(study.base_label, seed, root / f"seed-{seed}" / study.base_label))
        out += [Cell(arm, seed, root / f"seed-{seed}" / arm) for arm in arms]
    return out


def validate_all(study: StudySpec, arms: Sequence[str], plugins: Any) -> None:
    """Validate the base and every arm at every seed (arms with the base's model config) and report all problems at once."""
    from mmalign_core.spec import check_spec

    problems = []
    for seed in study.seeds:
        specs = [(f"base (seed {seed})", base_run(study, seed))]
        specs += [(f"arms.{arm} (seed {seed})", arm_run(study, arm, seed, None)) for arm in arms]
        for label, data in specs:
            _, found = check_spec(data, plugins, source=label)
            problems += [(label, p) for p in found if p.severity == "error"]
        if problems:
            break  # the other seeds repeat the same problems
    if problems:
        lines = [f"  {label}: {p.format()}" for label, p in problems]
        raise MmalignError("the study's runs do not validate:\n" + "\n".join(lines))


def run_cell(data: dict[str, Any], cell: Cell, plugins: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Run (or resume) one cell and return its manifest."""
    from mmalign_core.runner import run_spec
    from mmalign_core.spec import check_spec

    state = status(cell)
    if state == "complete":
        log(f"[study] {cell.row} seed {cell.seed}: already complete ({cell.folder})")
        manifest = read_manifest(cell.manifest)
        assert manifest is not None
        return manifest
    validated, problems = check_spec(data, plugins, source=f"{cell.row} (seed {cell.seed})")
    if validated is None:
        raise SpecValidationError(problems, source=f"{cell.row} (seed {cell.seed})")
    log(f"[study] {cell.row} seed {cell.seed}: {'resuming' if state == 'partial' else 'starting'} in {cell.folder}")
    run_spec(validated, output_dir=cell.folder, resume=state == "partial", plugins=plugins)
    manifest = read_manifest(cell.manifest)
    if manifest is None or manifest.get("status") != "complete":
        raise MmalignError(f"{cell.folder}: the run did not complete (status {manifest.get('status') if manifest else 'unknown'})")
    return manifest


def run_study(study: StudySpec, root: Path, arms: Sequence[str], plugins: Any, log: Callable[[str], None]) -> dict[tuple[str, int], dict[str, Any]]:
    """Every cell, in order (per seed: the base, then each arm); returns the manifests by (row, seed)."""
    manifests: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in study.seeds:
        base = Cell(study.base_label, seed, root / f"seed-{seed}" / study.base_label)
        manifest = run_cell(base_run(study, seed), base, plugins, log)
        manifests[(base.row, seed)] = manifest
        final_model = manifest.get("final_model")
        if not final_model:
            raise MmalignError(f"{base.folder}: the base run has no final model (does it train?)")
        for arm in arms:
            cell = Cell(arm, seed, root / f"seed-{seed}" / arm)
            manifests[(arm, seed)] = run_cell(arm_run(study, arm, seed, final_model), cell, plugins, log)
    return manifests
