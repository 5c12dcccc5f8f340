"""Plugins add CLI commands and compare column sets through hooks, and can never break each other's."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mmalign_core import cli, hookimpl
from mmalign_core.cli_eval import Column, Table, column_set_table
from mmalign_core.commands import ColumnSet, CompareColumn
from mmalign_core.manager import create_plugins

CORE = Path(__file__).resolve().parents[2] / "mmalign_core"


def _greet(args: Any) -> int:
    print(f"hello {args.who}")
    return 0


class Greeter:
    @hookimpl
    def mmalign_add_commands(self, commands: Any) -> None:
        parser = commands.add("greet", _greet, help="say hello", description="Print a greeting.")
        parser.add_argument("--who", default="world")


class Squatter:
    """Takes the core's `run` and the greeter's `greet`; its own `squat` must still be added."""

    @hookimpl
    def mmalign_add_commands(self, commands: Any) -> None:
        commands.add("run", _greet, help="not the real run")
        commands.add("greet", _greet, help="a second greet")
        commands.add("squat", lambda args: 7, help="squat")


class Crasher:
    @hookimpl
    def mmalign_add_commands(self, commands: Any) -> None:
        raise RuntimeError("boom")


def _main(plugins: Any, *argv: str) -> int:
    parser = cli.build_parser(plugins)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_a_third_party_command_appears_in_help_and_runs(capsys: pytest.CaptureFixture[str]) -> None:
    plugins = create_plugins(("greeter", Greeter()))
    help_text = cli.build_parser(plugins).format_help()
    assert "greet" in help_text and "say hello" in help_text
    assert _main(plugins, "greet", "--who", "mmalign") == 0
    assert capsys.readouterr().out.strip() == "hello mmalign"


def test_clashing_and_failing_command_hooks_break_nothing_else(capsys: pytest.CaptureFixture[str]) -> None:
    plugins = create_plugins(("greeter", Greeter()), ("squatter", Squatter()), ("crasher", Crasher()))
    parser = cli.build_parser(plugins)
    problems = {(p.plugin, p.command): p.format() for p in cli.COMMAND_PROBLEMS}
    assert "already taken by the core" in problems[("squatter", "run")]
    assert "already taken by plugin greeter" in problems[("squatter", "greet")]
    assert "boom" in problems[("crasher", "")]
    # The core's run and the first greet are untouched; the squatter's free name works.
    assert parser.parse_args(["run"]).func is cli.cmd_run
    assert _main(plugins, "greet") == 0
    assert _main(plugins, "squat") == 7
    capsys.readouterr()
    # `mmalign plugins` lists what was refused.
    args = SimpleNamespace(known=False, json=False, traceback=False)
    original = cli._plugins
    cli._plugins = lambda: plugins  # type: ignore[assignment]
    try:
        cli.cmd_plugins(args)  # type: ignore[arg-type]
    finally:
        cli._plugins = original  # type: ignore[assignment]
    out = capsys.readouterr().out
    assert "Commands not added:" in out and "plugin squatter: command 'run' not added" in out


def test_installed_data_command_comes_from_the_datasets_plugin() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["data", "check", "x"])
    assert args.command_owner == "datasets"
    assert args.func.__module__ == "mmalign_datasets.cli"


def test_column_sets_from_plugins_and_clashes() -> None:
    cols = (CompareColumn("F1", "pope", "pope_f1", 100.0),)

    class A:
        @hookimpl
        def mmalign_compare_columns(self) -> list:
            return [ColumnSet("mini", "one column", cols)]

    class B:
        @hookimpl
        def mmalign_compare_columns(self) -> list:
            return [ColumnSet("mini", "the same name", cols), "garbage"]

    sets, problems = create_plugins(("a", A()), ("b", B())).column_sets()
    assert sets["mini"].plugin == "a"
    assert any("ignored: plugin a has it" in p for p in problems) and any("not ColumnSet" in p for p in problems)
    table = Table(rows=["r"], columns=[Column("pope.pope_f1", True)], values={"r": {"pope.pope_f1": 0.5}})
    out = column_set_table(table, sets["mini"])
    assert [c.label for c in out.columns] == ["F1"] and out.values["r"]["F1"] == pytest.approx(50.0)


def test_unknown_column_set_names_what_exists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"status": "complete", "evaluations": []}', encoding="utf-8")
    assert cli.main(["compare", str(tmp_path), "--columns", "nope", "--no-chart"]) == 2
    err = capsys.readouterr().err
    assert "--columns nope: no such column set; installed: paper" in err


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_no_official_plugin() -> None:
    official = {p.name.replace("-", "_") for p in (CORE.parent / "plugins").iterdir() if (p / "pyproject.toml").is_file()}
    assert official, "no official plugins found"
    offenders = {
        str(path.relative_to(CORE.parent)): sorted(_imported_modules(path) & official)
        for path in CORE.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"core modules import official plugins: {offenders}"
