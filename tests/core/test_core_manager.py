"""The plugin manager: discovery, fault isolation, disabling, lifecycle calls."""
from __future__ import annotations

import logging
import types

import pytest

from mmalign_core import LossEntry, ModelEntry
from mmalign_core import manager as manager_module
from mmalign_core.errors import AmbiguousComponentError, Problem, UnknownComponentError
from mmalign_core.manager import create_plugins, get_plugins, load_plugins, reset_plugins


class FakeEntryPoint:
    """Stands in for ``importlib.metadata.EntryPoint`` (name, value, dist, load)."""

    def __init__(self, name, load, dist_name="mmalign-fake", version="1.2.3"):
        self.name = name
        self.value = f"{dist_name.replace('-', '_')}.plugin"
        self.dist = types.SimpleNamespace(metadata={"Name": dist_name}, name=dist_name, version=version)
        self._load = load

    def load(self):
        return self._load()


def _raise_import():
    raise ImportError("needs the package 'frobnicate'")


def test_builtin_plugin_is_registered_by_module_path():
    plugins = create_plugins()
    info = plugins.info("core")
    assert info is not None and info.status == "ok"
    assert info.module == "mmalign_core.builtin" and info.distribution == "mmalign"


def test_entries_are_stamped_with_their_plugin(toy):
    entry = toy.resolve("loss", "dpo")
    assert entry.plugin == "toy" and entry.qualified_name == "toy:dpo"
    assert {e.name for e in toy.entries("model")} == {"toy-model", "toy-blind"}
    assert [e.name for e in toy.entries_of("toy") if e.kind == "evaluator"] == ["gen-eval", "probe"]


def test_entry_points_are_loaded_and_failures_recorded(monkeypatch, toy_plugin_fn):
    good = FakeEntryPoint("toy", toy_plugin_fn, dist_name="mmalign-toy", version="0.2.0")
    bad = FakeEntryPoint("broken", _raise_import, dist_name="mmalign-broken", version="0.0.1")
    monkeypatch.setattr(manager_module, "_discover_entry_points", lambda: [bad, good])
    plugins = load_plugins(disabled=())
    broken = plugins.info("broken")
    assert broken.status == "broken" and broken.stage == "import"
    assert broken.distribution == "mmalign-broken" and broken.version == "0.0.1"
    assert broken.error == "ImportError: needs the package 'frobnicate'"
    assert "Traceback" in broken.traceback and "_raise_import" in broken.traceback
    ok = plugins.info("toy")
    assert ok.status == "ok" and ok.origin == "mmalign-toy 0.2.0"
    assert plugins.resolve("loss", "dpo").plugin == "toy"
    assert [p.name for p in plugins.broken()] == ["broken"]


def test_module_path_that_fails_to_import_is_broken(toy_plugin_fn):
    plugins = create_plugins(("missing", "mmalign_no_such_module_xyz"), ("toy", toy_plugin_fn()))
    info = plugins.info("missing")
    assert info.status == "broken" and info.error.startswith("ModuleNotFoundError")
    assert plugins.resolve("model", "toy-model").plugin == "toy"


def test_registration_hook_that_raises_breaks_only_its_plugin(make_plugin_fn, toy_plugin_fn):
    def explode():
        raise RuntimeError("boom")

    model = ModelEntry(name="other-model", summary="x.", config=_cfg(), factory="a:b")
    bad = make_plugin_fn(mmalign_models=lambda: [model], mmalign_losses=explode)
    plugins = create_plugins(("bad", bad), ("toy", toy_plugin_fn()))
    info = plugins.info("bad")
    assert info.status == "broken" and info.stage == "register (mmalign_losses)"
    assert info.error == "RuntimeError: boom"
    assert "other-model" not in plugins.registry.names("model")  # none of its entries survive
    assert plugins.entries_of("bad") == []
    assert plugins.resolve("loss", "dpo").plugin == "toy"


def _cfg():
    from mmalign_core import ComponentConfig

    class Cfg(ComponentConfig):
        """Empty."""

    return Cfg


@pytest.mark.parametrize(
    "result, message",
    [
        (lambda: [LossEntry(name="Bad_Name", summary="x.", config=_cfg(), factory="a:b")], "kebab-case"),
        (lambda: [ModelEntry(name="m", summary="x.", config=_cfg(), factory="a:b")], "must return LossEntry records, got ModelEntry"),
        (lambda: {"dpo": 1}, "must return a list, got dict"),
        (lambda: [LossEntry(name="x", summary="x.", config=_cfg(), factory="a:b")] * 2, "returns loss 'x' twice"),
    ],
    ids=["invalid-entry", "wrong-kind", "not-a-list", "duplicate"],
)
def test_malformed_entries_break_the_plugin(make_plugin_fn, result, message):
    plugins = create_plugins(("bad", make_plugin_fn(mmalign_losses=result)))
    info = plugins.info("bad")
    assert info.status == "broken"
    assert info.error.startswith("EntryError") and message in info.error


def test_misspelt_hook_is_reported(make_plugin_fn):
    plugins = create_plugins(("typo", make_plugin_fn(mmalign_loss=lambda: [])))
    info = plugins.info("typo")
    assert info.status == "broken" and "unknown hook 'mmalign_loss'" in info.error
    assert "did you mean 'mmalign_losses'" in info.error


def test_disabled_plugins_are_not_imported(monkeypatch, toy_plugin_fn):
    def forbidden():
        raise AssertionError("a disabled plugin must not be imported")

    monkeypatch.setattr(manager_module, "_discover_entry_points", lambda: [FakeEntryPoint("toy", forbidden)])
    monkeypatch.setenv("MMALIGN_DISABLE_PLUGINS", " toy , other")
    plugins = load_plugins()
    info = plugins.info("toy")
    assert info.status == "disabled" and info.version == "1.2.3"
    assert plugins.registry.names("model") == []
    with pytest.raises(UnknownComponentError, match="disabled by MMALIGN_DISABLE_PLUGINS"):
        plugins.resolve("model", "toy:toy-model")


def test_explicit_disabled_list(toy_plugin_fn):
    plugins = create_plugins(("toy", toy_plugin_fn()), disabled={"toy"})
    assert plugins.info("toy").status == "disabled"
    assert plugins.entries() == []


def test_same_plugin_name_twice_keeps_the_first(toy_plugin_fn, make_plugin_fn):
    plugins = create_plugins(("toy", toy_plugin_fn()), ("toy", make_plugin_fn(mmalign_models=lambda: [])))
    assert plugins.info("toy").status == "ok"
    clash = plugins.broken()
    assert len(clash) == 1 and "already used" in clash[0].error


def test_conflicting_names_need_qualification(toy_plugin_fn):
    plugins = create_plugins(("a", toy_plugin_fn()), ("b", toy_plugin_fn()))
    with pytest.raises(AmbiguousComponentError) as err:
        plugins.resolve("loss", "dpo")
    text = str(err.value)
    assert "'a'" in text and "'b'" in text and "'a:dpo'" in text and "'b:dpo'" in text
    assert err.value.plugins == ("a", "b")
    assert plugins.resolve("loss", "b:dpo").plugin == "b"
    assert ("loss", "dpo", ["a", "b"]) in plugins.registry.conflicts()


def test_late_registration_updates_the_registry(toy_plugin_fn):
    plugins = create_plugins()
    assert plugins.registry.names("loss") == []
    info = plugins.register(toy_plugin_fn(), name="late")
    assert info.status == "ok" and plugins.registry.names("loss") == ["dpo", "sft"]


def test_observer_errors_are_logged_not_raised(make_plugin_fn, caplog):
    seen = []

    def fails(run_dir, stage, step, metrics):
        raise ValueError("tracker offline")

    def records(run_dir, stage, step, metrics):
        seen.append((stage, step, metrics))

    plugins = create_plugins(("bad", make_plugin_fn(mmalign_on_metrics=fails)), ("good", make_plugin_fn(mmalign_on_metrics=records)))
    with caplog.at_level(logging.WARNING, logger="mmalign"):
        failures = plugins.on_metrics("/tmp/run", "align", 3, {"loss": 0.5})
    assert seen == [("align", 3, {"loss": 0.5})]
    assert len(failures) == 1 and "bad" in failures[0] and "tracker offline" in failures[0]
    assert "tracker offline" in caplog.text
    assert plugins.on_run_end("/tmp/run", {}) == []
    assert plugins.on_evaluation("/tmp/run", "evaluate", "pope", {"f1": 1.0}) == []


def test_check_run_results_carry_their_plugin(make_plugin_fn):
    def check(spec, resolved):
        return ["the run is odd", Problem("stages[0]", "this stage too", severity="warning")]

    def crash(spec, resolved):
        raise KeyError("x")

    plugins = create_plugins(("judge", make_plugin_fn(mmalign_check_run=check)), ("crash", make_plugin_fn(mmalign_check_run=crash)),
                             builtin=False)
    problems = plugins.check_run(object(), {})
    by_plugin = {(p.plugin, p.severity, p.path) for p in problems}
    assert ("judge", "error", "") in by_plugin and ("judge", "warning", "stages[0]") in by_plugin
    assert ("crash", "warning", "") in by_plugin


def test_get_plugins_is_cached():
    reset_plugins()
    try:
        first = get_plugins()
        assert get_plugins() is first
        assert first.info("core").status == "ok"
        reset_plugins()
        assert get_plugins() is not first
    finally:
        reset_plugins()
