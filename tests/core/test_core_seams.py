"""Seams a third party relies on: a clashing name breaks no existing spec or run folder; bad defaults are caught."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from mmalign_core import ComponentConfig, LossEntry, hookimpl
from mmalign_core.manager import create_plugins, load_plugins
from mmalign_core.spec import check_spec, load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("**/*.json") if "study" not in p.parts)


class _BetaConfig(ComponentConfig):
    """A loss config."""

    beta: float = Field(0.1, gt=0, description="Temperature.")


class Clasher:
    """A third-party package that registers its own `dpo`, `sft` and `shapes-pairs`-like names."""

    @hookimpl
    def mmalign_losses(self) -> list:
        return [
            LossEntry(name="dpo", summary="Someone else's DPO.", config=_BetaConfig, factory="x.y:z"),
            LossEntry(name="sft", summary="Someone else's SFT.", config=_BetaConfig, factory="x.y:z"),
        ]


@pytest.fixture(scope="module")
def clashing() -> Any:
    return load_plugins(extra=[("clasher", Clasher())])


@pytest.fixture(scope="module")
def installed() -> Any:
    return load_plugins()


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_examples_validate_unchanged_when_a_third_party_clashes(path: Path, clashing: Any, installed: Any) -> None:
    if path.parent.name == "plugin-example":
        pytest.skip("the plugin example's spec needs its own (uninstalled) plugin")
    data = load_spec(path)
    before, problems = check_spec(data, installed, source=str(path))
    assert before is not None, problems
    after, problems = check_spec(data, clashing, source=str(path))
    assert after is not None, [p.format() for p in problems]
    assert after.spec_hash == before.spec_hash  # the same components, so old run folders still --resume


def test_a_bare_clashing_name_fails_naming_both_providers(clashing: Any) -> None:
    spec = {"name": "bare", "model": {"name": "tiny-llava"},
            "stages": [{"type": "align", "data": {"name": "shapes-pairs"}, "loss": {"name": "dpo"}}]}
    validated, problems = check_spec(spec, clashing)
    assert validated is None
    text = " ".join(p.format() for p in problems)
    assert "stages[0].loss.name" in text and "losses:dpo" in text and "clasher:dpo" in text
    # The stage default is qualified: leaving the loss out still means the losses plugin's DPO.
    del spec["stages"][0]["loss"]
    validated, problems = check_spec(spec, clashing)
    assert validated is not None, problems
    assert validated.loss(0).entry.qualified_name == "losses:dpo"


def test_a_recorded_spec_validates_to_the_same_hash_under_a_clash(installed: Any, clashing: Any) -> None:
    quickstart = load_spec(ROOT / "examples" / "quickstart.json")
    first, _ = check_spec(quickstart, installed)
    assert first is not None
    recorded = json.loads(json.dumps(first.resolved))  # what a run writes as spec.json
    again, problems = check_spec(recorded, clashing)
    assert again is not None, problems
    assert again.spec_hash == first.spec_hash


def test_resume_without_spec_uses_the_recorded_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: Any) -> None:
    from mmalign_core import cli, runner

    quickstart = load_spec(ROOT / "examples" / "quickstart.json")
    first, _ = check_spec(quickstart, installed)
    assert first is not None
    (tmp_path / "spec.json").write_text(json.dumps(first.resolved), encoding="utf-8")
    seen: dict[str, Any] = {}

    def fake_run_spec(validated: Any, **kw: Any) -> int:
        seen.update(hash=validated.spec_hash, source=validated.source, **kw)
        return 0

    monkeypatch.setattr(runner, "run_spec", fake_run_spec)
    assert cli.main(["run", "--resume", "--output-dir", str(tmp_path)]) == 0
    assert seen["hash"] == first.spec_hash and seen["source"] == str(tmp_path / "spec.json") and seen["resume"] is True


def test_plugins_listing_flags_the_clash(clashing: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from mmalign_core import cli

    monkeypatch.setattr(cli, "_plugins", lambda: clashing)
    cli.cmd_plugins(SimpleNamespace(known=False, json=False, traceback=False))  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "loss 'dpo' is provided by clasher, losses: write clasher:dpo or losses:dpo" in out
    row = next(line for line in out.splitlines() if line.startswith("loss") and " dpo " in line and "clasher" in line)
    assert "ok, clash" in row


def test_a_default_that_fails_its_own_constraint_breaks_only_that_plugin() -> None:
    class Negative(ComponentConfig):
        """A config whose default violates its own bound."""

        beta: float = Field(-1.0, gt=0, description="Temperature.")

    class Bad:
        @hookimpl
        def mmalign_losses(self) -> list:
            return [LossEntry(name="neg", summary="A loss.", config=Negative, factory="x.y:z")]

    class Good:
        @hookimpl
        def mmalign_losses(self) -> list:
            return [LossEntry(name="pos", summary="A loss.", config=_BetaConfig, factory="x.y:z")]

    plugins = create_plugins(("bad", Bad()), ("good", Good()))
    bad = plugins.info("bad")
    assert bad is not None and bad.status == "broken"
    assert "Negative: the default of beta fails its own validation: Input should be greater than 0 (got -1.0)" in (bad.error or "")
    assert [e.qualified_name for e in plugins.entries("loss")] == ["good:pos"]


def test_every_official_default_passes_its_own_validation(installed: Any) -> None:
    from mmalign_core.entries import default_problems

    assert not installed.broken(), [(i.name, i.error) for i in installed.broken()]
    for entry in installed.entries():
        assert default_problems(entry.config) == [], entry.qualified_name


# ------------------------------------------------------------------ nested errors and run checks
from typing import ClassVar  # noqa: E402

from mmalign_core import ModelEntry, NestedComponent  # noqa: E402


class _ModelRef(NestedComponent):
    """The wrapped model."""

    kind: ClassVar[str] = "model"


class _WrapConfig(ComponentConfig):
    """A model wrapper's settings."""

    base: _ModelRef = Field(default_factory=lambda: {"name": "tiny:tiny-llava"}, validate_default=True, description="Wrapped.")
    scale: float = Field(1.0, gt=0, description="A factor.")


class Wrapper:
    seen: dict[str, Any] = {}

    @hookimpl
    def mmalign_models(self) -> list:
        return [ModelEntry(name="wrapped", summary="A wrapper.", config=_WrapConfig, factory="x.y:z")]

    @hookimpl
    def mmalign_check_run(self, spec: Any, resolved: Any) -> list:
        Wrapper.seen = dict(resolved)
        return ["a cross-stage problem this plugin always reports"]


def _wrapped_spec(base_config: dict[str, Any]) -> dict[str, Any]:
    return {"name": "n", "model": {"name": "wrapped", "config": {"base": {"name": "tiny-llava", "config": base_config}}},
            "stages": [{"type": "align", "data": {"name": "shapes-pairs", "config": {"n_pairs": 8}}, "train": {"steps": 1}}]}


def test_a_nested_error_is_reported_at_its_field_and_blamed_on_its_owner() -> None:
    plugins = load_plugins(extra=[("wrap", Wrapper())])
    _, problems = check_spec(_wrapped_spec({"hiden_size": 32}), plugins)
    typo = next(p for p in problems if "hiden_size" in p.path)
    assert typo.path == "model.config.base.config.hiden_size" and typo.plugin == "tiny"
    assert "Did you mean 'hidden_size'?" in typo.message
    # ... and the run checks still ran: every problem at once.
    assert any(p.message == "a cross-stage problem this plugin always reports" for p in problems)


def test_run_checks_see_nested_components_with_validated_configs_and_paths() -> None:
    plugins = load_plugins(extra=[("wrap", Wrapper())])
    check_spec(_wrapped_spec({"hidden_size": 32}), plugins)
    nested = Wrapper.seen["model.config.base"]
    assert nested.entry.qualified_name == "tiny:tiny-llava" and nested.nested
    assert nested.config.hidden_size == 32 and nested.config.num_layers == 2  # validated, defaults filled in
    assert Wrapper.seen["stages[0].data"].stage == 0 and Wrapper.seen["model"].stage is None
    assert Wrapper.seen["stages[0].data"].name == "shapes-pairs"  # the old entry-style access still works


# ------------------------------------------------------------------ build context
def _old_factory(config: Any) -> Any:
    return ("old", config)


def _new_factory(config: Any, context: Any = None) -> Any:
    return ("new", config, context)


def test_factories_get_the_build_context_and_the_old_form_still_works() -> None:
    from mmalign_core.build import BuildContext

    here = __name__
    old = LossEntry(name="old", summary="Old form.", config=_BetaConfig, factory=f"{here}:_old_factory")
    new = LossEntry(name="new", summary="New form.", config=_BetaConfig, factory=f"{here}:_new_factory")
    plugins = create_plugins()
    ctx = BuildContext(plugins=plugins, seed=5, device="cpu", run_dir=Path("/tmp/run"))
    assert old.build({"beta": 0.2}, context=ctx)[0] == "old"
    kind, config, got = new.build({"beta": 0.2}, context=ctx)
    assert kind == "new" and config.beta == 0.2 and got is ctx and got.plugins is plugins and got.seed == 5


def test_a_weighted_sum_builds_its_terms_with_the_validating_manager() -> None:
    """The term loss exists only in an isolated manager: building through the process-wide one would fail."""
    from mmalign_core.build import BuildContext
    from mmalign_losses import plugin as losses_plugin

    class Term:
        def __init__(self, config: Any) -> None:
            self.config = config

    class Isolated:
        @hookimpl
        def mmalign_losses(self) -> list:
            return [LossEntry(name="only-here", summary="A term.", config=_BetaConfig, factory=f"{__name__}:_Term")]

    globals()["_Term"] = Term
    plugins = create_plugins(("losses", losses_plugin), ("iso", Isolated()))
    entry = plugins.resolve("loss", "weighted-sum")
    config = entry.config.model_validate({"terms": [{"loss": {"name": "only-here"}, "weight": 1.0}]}, context={"plugins": plugins})
    built = entry.build(config, context=BuildContext(plugins=plugins))
    assert isinstance(built.terms[0], Term)


def test_validate_finds_a_missing_data_file_in_any_stage_and_inside_other_components(tmp_path: Path, installed: Any) -> None:
    """Issue 14, part 2: a wrong path in a later stage, or in BDHS's base source, stops `mmalign validate`."""
    missing = str(tmp_path / "no-such.jsonl")
    spec = {
        "name": "preflight", "model": {"name": "tiny:tiny-llava"},
        "stages": [
            {"type": "sft", "data": {"name": "shapes:shapes-sft", "config": {"n_examples": 8}}, "train": {"steps": 1}},
            {"type": "align", "data": {"name": "datasets:local", "config": {"path": missing}}, "train": {"steps": 1}},
            {"type": "align", "data": {"name": "bdhs:bdhs", "config": {"base": {"name": "datasets:local", "config": {
                "path": missing, "image_root": str(tmp_path / "images")}}}}, "train": {"steps": 1}},
        ],
    }
    validated, problems = check_spec(spec, installed)
    assert validated is None
    found = {p.path: p.message for p in problems if p.severity == "error"}
    assert "no such file or folder" in found["stages[1].data.config.path"]
    assert "no such file or folder" in found["stages[2].data.config.base.config.path"]
    assert "not a folder" in found["stages[2].data.config.base.config.image_root"]


def test_paths_in_a_spec_resolve_against_the_spec_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: Any) -> None:
    """Issue 16 point 7: a spec works from any working directory; spec.json records the resolved paths."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "pairs.jsonl").write_text("")
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps({
        "name": "relative", "model": {"name": "tiny:tiny-llava", "config": {"cache_dir": "cache/tiny"}},
        "stages": [{"type": "align", "data": {"name": "datasets:local", "config": {"path": "data/pairs.jsonl"}}, "train": {"steps": 1}},
                   {"type": "evaluate", "evaluators": [{"name": "evals:pope", "config": {"data_dir": "pope"}}]}],
    }))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    validated, problems = check_spec(load_spec(spec_file), installed, source=str(spec_file))
    assert validated is not None, [p.format() for p in problems if p.severity == "error"]
    recorded = validated.resolved
    assert recorded["stages"][0]["data"]["config"]["path"] == str(folder / "data" / "pairs.jsonl")
    assert recorded["model"]["config"]["cache_dir"] == str(folder / "cache" / "tiny")
    assert recorded["stages"][1]["evaluators"][0]["config"]["data_dir"] == str(folder / "pope")
    # Data validated without a spec file keeps what it says: relative to the working directory, where it is missing.
    same, problems = check_spec(load_spec(spec_file), installed)
    assert same is None and any(p.path == "stages[0].data.config.path" and "data/pairs.jsonl" in p.message for p in problems)
