"""The ``mmalign`` command line.

Commands and exit codes:

- ``run SPEC [--output-dir D] [--resume | --overwrite]``: validate, then train
  and evaluate (imports the runner, and with it torch, only here). 0 on
  success, 2 for an invalid spec or bad input.
- ``validate SPEC [--json]``: 0 when valid (warnings allowed), 2 otherwise.
- ``plugins [--known] [--json] [--traceback]``: 0.
- ``schema [-o FILE]``: 0; 2 when the file cannot be written.
- ``registry check [--file PATH]``: 0 when ``registry.toml`` matches the
  installed plugins, 1 on a mismatch, 2 for an invalid registry file.

``validate``, ``plugins``, ``schema`` and ``--help`` import no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, TextIO

from . import __version__, cli_eval, html_report
from .commands import CommandProblem, Commands
from .entries import KINDS
from .errors import MmalignError, Problem, SpecValidationError

if TYPE_CHECKING:  # pragma: no cover
    from .manager import Plugins
    from .registry import PluginInfo
    from .spec import ValidatedSpec

_TRAINING_MODULES = {"torch", "transformers", "accelerate", "peft", "safetensors"}


# ------------------------------------------------------------------ output helpers
def _table(rows: list[list[str]], headers: list[str], out: TextIO) -> None:
    """Print rows as aligned columns (the last column is not padded)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [row[-1]]
        print("  ".join(cells).rstrip(), file=out)


def _print_problems(problems: Sequence[Problem], out: TextIO) -> None:
    for problem in problems:
        label = "warning" if problem.severity == "warning" else "error"
        print(f"  {label}: {problem.format()}", file=out)


def _plugins() -> Plugins:  # imported lazily so that `mmalign --help` stays light
    from .manager import get_plugins

    return get_plugins()


# -------------------------------------------------------------------------- validate
def _validated(spec_path: str) -> tuple[Optional[ValidatedSpec], list[Problem]]:
    """Load and validate a spec file; return ``(validated spec or None, problems)``."""
    from .spec import check_spec, load_spec

    data = load_spec(spec_path)
    return check_spec(data, _plugins(), source=spec_path)


def _component_rows(validated: ValidatedSpec) -> list[list[str]]:
    plugins = _plugins()
    rows = []
    for path, comp in validated.components.items():
        info = plugins.info(comp.entry.plugin)
        rows.append([path, comp.entry.name, comp.entry.plugin, info.origin if info else ""])
    return rows


def cmd_validate(args: argparse.Namespace) -> int:
    """``mmalign validate SPEC``."""
    validated, problems = _validated(args.spec)
    if args.json:
        report: dict[str, Any] = {
            "ok": validated is not None,
            "problems": [p.__dict__ for p in problems],
        }
        if validated is not None:
            report["spec_hash"] = validated.spec_hash
            report["components"] = {p: c.as_json() for p, c in validated.components.items()}
        print(json.dumps(report, indent=2))
        return 0 if validated is not None else 2
    if validated is None:
        errors = [p for p in problems if p.severity == "error"]
        print(f"{args.spec}: {len(errors)} problem{'s' if len(errors) != 1 else ''}:")
        _print_problems(problems, sys.stdout)
        return 2
    spec = validated.spec
    print(f"OK {args.spec}: run {spec.name!r}, {len(spec.stages)} stage(s), spec hash {validated.spec_hash[:12]}")
    _table(_component_rows(validated), ["PATH", "COMPONENT", "PLUGIN", "FROM"], sys.stdout)
    _print_problems(validated.warnings, sys.stdout)
    return 0


# ------------------------------------------------------------------------------ run
#: The spec ``mmalign run`` uses when none is given (the same file as examples/quickstart.json).
EMBEDDED_QUICKSTART = Path(__file__).resolve().parent / "defaults" / "quickstart.json"

def cmd_run(args: argparse.Namespace) -> int:
    """``mmalign run SPEC``: validate, then hand over to the runner."""
    if args.spec is None:
        recorded = Path(args.output_dir) / "spec.json" if args.resume and args.output_dir else None
        if recorded is not None and recorded.is_file():
            args.spec = str(recorded)  # resume exactly what was recorded (qualified names, every default)
        else:
            args.spec = str(EMBEDDED_QUICKSTART)
    validated, problems = _validated(args.spec)
    if validated is None:
        raise SpecValidationError(problems, source=args.spec)
    _print_problems(validated.warnings, sys.stderr)
    try:
        from .runner import run_spec
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _TRAINING_MODULES:
            raise MmalignError(f"`mmalign run` needs the training extras: pip install 'mmalign[train]' ({exc})") from None
        raise
    output_dir = Path(args.output_dir) if args.output_dir else None
    result = run_spec(validated, output_dir=output_dir, resume=args.resume, overwrite=args.overwrite)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# -------------------------------------------------------------------------- plugins
def _plugin_rows(plugins: Plugins, known: bool) -> list[dict[str, Any]]:
    """One row per component: installed ones, those of broken/disabled plugins, and (``known``) uninstalled ones."""
    rows = []
    for entry in plugins.entries():
        info = plugins.info(entry.plugin)
        rows.append(_row(entry.kind, entry.name, entry.plugin, info, "ok", entry.summary))
    seen = {p.name for p in plugins.infos()}
    for info in plugins.infos():
        found = plugins.known.by_entry_point(info.name) if info.status != "ok" else None
        if found is None:
            continue
        record = found[1]
        for kind, names in record.components.items():
            rows += [_row(kind, name, info.name, info, info.status, record.summary) for name in names]
    if known:
        for record in plugins.known.plugins.values():
            if record.entry_point in seen:
                continue
            for kind, names in record.components.items():
                for name in names:
                    row = _row(kind, name, record.entry_point, None, "not installed", record.summary)
                    row.update(distribution=record.distribution, registry_status=record.status)
                    rows.append(row)
    providers: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["status"] == "ok":
            providers.setdefault((row["kind"], row["name"]), []).append(row["plugin"])
    for row in rows:
        others = [p for p in providers.get((row["kind"], row["name"]), []) if p != row["plugin"]]
        if row["status"] == "ok" and others:
            row["clash"] = others
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(rows, key=lambda r: (order.get(r["kind"], 99), r["name"], r["plugin"]))


def _print_clashes(rows: Sequence[dict[str, Any]]) -> None:
    clashes: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row.get("clash"):
            clashes.setdefault((row["kind"], row["name"]), []).append(row["plugin"])
    if not clashes:
        return
    print("\nName clashes (a spec must write plugin:name for these; recorded specs and defaults already do):")
    for (kind, name), owners in sorted(clashes.items()):
        print(f"  {kind} {name!r} is provided by {', '.join(owners)}: write " + " or ".join(f"{o}:{name}" for o in owners))


def _row(kind: str, name: str, plugin: str, info: Optional[PluginInfo], status: str, summary: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "plugin": plugin,
        "distribution": info.distribution if info else None,
        "version": info.version if info else None,
        "status": status,
        "summary": summary,
    }


def cmd_plugins(args: argparse.Namespace) -> int:
    """``mmalign plugins``: installed components, broken and disabled plugins."""
    plugins = _plugins()
    rows = _plugin_rows(plugins, args.known)
    infos = plugins.infos()
    if args.json:
        report = {
            "components": rows,
            "plugins": [info.__dict__ for info in infos],
            "command_problems": [problem.__dict__ for problem in COMMAND_PROBLEMS],
        }
        print(json.dumps(report, indent=2))
        return 0
    table = [
        [r["kind"], r["name"], r["plugin"], _version(r), _status(r), r["summary"]]
        for r in rows
    ]
    if table:
        _table(table, ["KIND", "NAME", "PLUGIN", "VERSION", "STATUS", "SUMMARY"], sys.stdout)
    else:
        print("No components are installed.")
    _print_clashes(rows)
    _print_plugin_states(infos, args.traceback)
    if COMMAND_PROBLEMS:
        print("\nCommands not added:")
        for problem in COMMAND_PROBLEMS:
            print(f"  {problem.format()}")
    return 0


def _version(row: dict[str, Any]) -> str:
    if row["version"]:
        return f"{row['distribution']} {row['version']}" if row["distribution"] else row["version"]
    return row["distribution"] or "-"


def _status(row: dict[str, Any]) -> str:
    if row.get("clash"):
        return f"{row['status']}, clash"
    return f"{row['status']} ({row['registry_status']})" if row.get("registry_status") else row["status"]


def _print_plugin_states(infos: Sequence[PluginInfo], with_traceback: bool) -> None:
    broken = [i for i in infos if i.status == "broken"]
    disabled = [i for i in infos if i.status == "disabled"]
    if broken:
        print("\nBroken plugins (their components are unavailable):")
        for info in broken:
            print(f"  {info.name} ({info.origin}) failed at {info.stage}: {info.error}")
            if with_traceback and info.traceback:
                print("    " + info.traceback.rstrip().replace("\n", "\n    "))
        if not with_traceback:
            print("  (mmalign plugins --traceback shows the tracebacks; MMALIGN_DISABLE_PLUGINS=name skips a plugin)")
    if disabled:
        print("\nDisabled by MMALIGN_DISABLE_PLUGINS: " + ", ".join(f"{i.name} ({i.origin})" for i in disabled))


# --------------------------------------------------------------------------- schema
def cmd_schema(args: argparse.Namespace) -> int:
    """``mmalign schema``: the run-spec JSON Schema for the installed plugins."""
    from .schema import build_schema

    text = json.dumps(build_schema(_plugins()), indent=2) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MmalignError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------- registry
def cmd_registry_check(args: argparse.Namespace) -> int:
    """``mmalign registry check``: registry.toml against the installed plugins."""
    from .known import check_installed, default_registry_path, load_known

    path = Path(args.file) if args.file else default_registry_path()
    if path is None:
        raise MmalignError("no registry.toml found; pass --file PATH or set MMALIGN_REGISTRY")
    known = load_known(path)
    plugins = _plugins()
    report = check_installed(known, plugins.infos(), plugins.entries())
    for note in report.notes:
        print(f"note: {note}")
    for mismatch in report.mismatches:
        print(f"mismatch: {mismatch}")
    if report.ok:
        print(f"OK {path}: {len(known.plugins)} known plugin(s) agree with the installed ones")
        return 0
    print(f"{path}: {len(report.mismatches)} mismatch(es)")
    return 1


# --------------------------------------------------------------------------- parser
def _add(
    sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str, description: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description)
    parser.set_defaults(func=func)
    return parser


def build_parser(plugins: Optional[Plugins] = None) -> argparse.ArgumentParser:
    """The argument parser of ``mmalign``: the core's commands, then those plugins add (of ``plugins``,
    default the installed ones)."""
    parser = argparse.ArgumentParser(
        prog="mmalign",
        description="Plugin-based preference alignment for vision-language models.",
    )
    parser.add_argument("--version", action="version", version=f"mmalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = _add(sub, "run", cmd_run, "validate a run spec, then train and evaluate",
               "Validate SPEC, then run its stages (training needs the 'train' extras).")
    run.add_argument(
        "spec", metavar="SPEC", nargs="?", default=None,
        help="run spec (JSON); default: with --resume --output-dir D, the spec D recorded (D/spec.json); "
        "otherwise the embedded quickstart (examples/quickstart.json)",
    )
    run.add_argument("--output-dir", metavar="D", help="where the run writes (default: the spec's output_dir or runs/<name>)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted run in the output directory")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run in the output directory")

    val = _add(sub, "validate", cmd_validate, "check a run spec without running it",
               "Check SPEC: the envelope, every component and its config, and cross-component rules. "
               "Exit 0 when valid, 2 otherwise. Imports no torch.")
    val.add_argument("spec", metavar="SPEC", help="run spec (JSON)")
    val.add_argument("--json", action="store_true", help="print a machine-readable report")

    plug = _add(sub, "plugins", cmd_plugins, "list installed components and plugin status",
                "List every installed component (kind, name, plugin, version, status, summary), "
                "and plugins that are broken or disabled.")
    plug.add_argument("--known", action="store_true", help="also list components of known plugins that are not installed")
    plug.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plug.add_argument("--traceback", action="store_true", help="show the traceback of each broken plugin")

    sch = _add(sub, "schema", cmd_schema, "print the run-spec JSON Schema for the installed plugins",
               "Emit a JSON Schema of the run spec, with component names and configs of the installed plugins.")
    sch.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")

    cli_eval.add_commands(sub)
    html_report.add_command(sub)

    reg = sub.add_parser("registry", help="work with registry.toml (the list of known plugins)",
                         description="Commands about registry.toml, the curated list of known plugins.")
    reg_sub = reg.add_subparsers(dest="registry_command", metavar="COMMAND", required=True)
    chk = _add(reg_sub, "check", cmd_registry_check, "compare registry.toml with the installed plugins",
               "Report official plugins that are missing, and components declared but not provided or provided "
               "but not declared. Exit 1 on a mismatch.")
    chk.add_argument("--file", metavar="PATH", help="registry file (default: $MMALIGN_REGISTRY or the repository's registry.toml)")
    _add_plugin_commands(sub, plugins)
    return parser


#: Commands refused while the parser was last built (name taken, a plugin's hook failed); `mmalign plugins` shows them.
COMMAND_PROBLEMS: list[CommandProblem] = []


def _add_plugin_commands(sub: Any, plugins: Optional[Plugins]) -> None:
    """Let plugins add their commands (``mmalign_add_commands``); the core's own names cannot be taken."""
    taken = {name: "the core" for name in sub.choices}
    commands = Commands(sub, taken)
    COMMAND_PROBLEMS[:] = (plugins if plugins is not None else _plugins()).add_commands(commands)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit code (never raises for user errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.func(args)
        return code
    except SpecValidationError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except MmalignError as exc:
        print(f"mmalign: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
