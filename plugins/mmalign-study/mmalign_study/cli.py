"""``mmalign study SPEC``: run the grid (or only write its table), with every run resumable."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from pydantic import ValidationError

from mmalign_core.commands import Commands
from mmalign_core.errors import MmalignError

from .spec import StudySpec

MAX_SPEC_BYTES = 4 << 20


def _log(message: str) -> None:
    print(message, flush=True)


def load_study(path: Path) -> StudySpec:
    """Read and validate a study spec; errors name the file and the field."""
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise MmalignError(f"{path}: larger than {MAX_SPEC_BYTES >> 20} MB; not a study spec")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MmalignError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MmalignError(f"{path}: cannot read the file: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MmalignError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(study)'}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise MmalignError(f"{path}: not a valid study spec:\n" + "\n".join(lines)) from None


def _names(text: str | None, known: list[str], what: str) -> list[str]:
    if not text:
        return known
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise MmalignError(f"--{what} {','.join(unknown)}: not in the study (it has: {', '.join(known)})")
    return wanted


def cmd_study(args: argparse.Namespace) -> int:
    from mmalign_core.manager import get_plugins

    from . import grid, table

    study = load_study(Path(args.spec))
    full = study
    arms = _names(args.arms, list(study.arms), "arms")
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise MmalignError(f"--seeds {args.seeds}: expected comma-separated integers") from None
        missing = [s for s in seeds if s not in study.seeds]
        if missing:
            raise MmalignError(f"--seeds: {missing} not in the study's seeds {study.seeds}")
        study = study.model_copy(update={"seeds": seeds})
    root = Path(args.output_dir or study.output_dir or Path("studies") / study.name).resolve()
    plugins = get_plugins()
    all_cells = grid.cells(study, root, arms)
    if not args.table_only:
        grid.validate_all(study, arms, plugins)
        if args.dry_run:
            for cell in all_cells:
                _log(f"{cell.row:>20}  seed {cell.seed}  {grid.status(cell):>8}  {cell.folder}")
            return 0
        grid.run_study(study, root, arms, plugins, _log)
    # The table covers every finished run of the study, also when --seeds/--arms ran only some of them.
    every_cell = grid.cells(full, root, list(full.arms))
    result = table.collect(every_cell, args.metric or ())
    if not result.rows:
        raise MmalignError(f"{root}: no finished run to tabulate yet (run `mmalign study {args.spec}` first)")
    written = table.write(result, root, study.name, study.description, {a: study.arms[a].description for a in arms})
    try:
        from . import figures

        written.append(figures.bars(result, args.metric or result.metrics[:6], root / "study.png"))
        written.append(figures.curves(every_cell, study.base_label, root / "curves.png"))
    except ModuleNotFoundError as exc:
        _log(f"[study] figures skipped: {exc.name} is not installed (pip install 'mmalign-study[report]')")
    sys.stdout.write((root / "study.md").read_text(encoding="utf-8"))
    for path in written:
        _log(f"wrote {path}")
    return 0


def add_command(commands: Commands) -> None:
    parser = commands.add(
        "study", cmd_study, help="run every arm of a study over seeds from the same SFT model, and tabulate",
        description="Per seed: run the study's base stages (e.g. text prior + SFT) once, then every arm from the base's "
        "final model, each followed by the study's evaluators. Every run is an ordinary run folder under the study folder "
        "(complete ones are reused, interrupted ones resumed), and the table (study.md, study.json: mean ± sd over seeds) "
        "and figures are written at the end.",
    )
    parser.add_argument("spec", metavar="SPEC", help="study spec (JSON; see docs/study.md)")
    parser.add_argument("--output-dir", metavar="D", help="the study folder (default: the spec's output_dir or studies/<name>)")
    parser.add_argument("--arms", metavar="A,B", help="only these arms (default: all)")
    parser.add_argument("--seeds", metavar="S,T", help="only these of the study's seeds (default: all)")
    parser.add_argument("--metric", metavar="EVALUATOR.METRIC", action="append", default=[],
                        help="only these columns in the table and figure (repeatable), e.g. shapes-chair.chair_i")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="validate every run and list the grid with each run's state; run nothing")
    mode.add_argument("--table-only", action="store_true", help="only (re)write the table and figures from the finished runs")


__all__ = ["add_command", "cmd_study", "load_study"]
