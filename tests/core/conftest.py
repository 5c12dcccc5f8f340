"""Fixtures of the core tests: in-test plugins and fixture packages installed once per session."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Callable, Literal

import pytest
from pydantic import Field

from mmalign_core import ComponentConfig, EvaluatorEntry, LossEntry, ModelEntry, SourceEntry, hookimpl
from mmalign_core.manager import Plugins, create_plugins



# ------------------------------------------------------------------ in-test plugins
class ModelConfig(ComponentConfig):
    """Toy model settings."""

    hidden: int = Field(8, ge=1, description="Width.")
    mode: Literal["fast", "slow"] = Field("fast", description="A literal choice.")


class SourceConfig(ComponentConfig):
    """Toy source settings."""

    size: int = Field(4, ge=1, description="Number of examples.")


class DPOConfig(ComponentConfig):
    """Toy DPO settings."""

    beta: float = Field(0.1, gt=0, description="Inverse temperature.")


class EmptyConfig(ComponentConfig):
    """No settings."""


def make_plugin(**hooks: Callable[..., Any]) -> types.SimpleNamespace:
    """A plugin object whose attributes are the given hook implementations."""
    plugin = types.SimpleNamespace()
    for name, function in hooks.items():
        setattr(plugin, name, hookimpl(function))
    return plugin


def toy_entries() -> dict[str, list]:
    factory = "builtins:print"
    return {
        "mmalign_models": [
            ModelEntry(name="toy-model", summary="Generates.", config=ModelConfig, factory=factory, capabilities={"generate"}),
            ModelEntry(name="toy-blind", summary="Cannot generate.", config=ModelConfig, factory=factory),
        ],
        "mmalign_preference_sources": [
            SourceEntry(name="toy-pairs", summary="Pairs.", config=SourceConfig, factory=factory, capabilities={"pairs"}),
            SourceEntry(name="toy-captions", summary="SFT data.", config=SourceConfig, factory=factory, capabilities={"sft"}),
        ],
        "mmalign_losses": [
            LossEntry(name="dpo", summary="DPO.", config=DPOConfig, factory=factory, requires={"reference", "rejected"}),
            LossEntry(name="sft", summary="NLL.", config=EmptyConfig, factory=factory),
        ],
        "mmalign_evaluators": [
            EvaluatorEntry(name="gen-eval", summary="Needs generation.", config=EmptyConfig, factory=factory,
                           requires={"generate"}, metrics=("m",)),
            EvaluatorEntry(name="probe", summary="Log-probs only.", config=EmptyConfig, factory=factory, metrics=("p",)),
        ],
    }


def toy_plugin() -> types.SimpleNamespace:
    """A plugin providing two models, two sources, two losses and two evaluators."""
    entries = toy_entries()
    return make_plugin(**{hook: (lambda found=found: found) for hook, found in entries.items()})


@pytest.fixture()
def toy() -> Plugins:
    """An isolated manager with the core's built-in plugin and the toy plugin."""
    return create_plugins(("toy", toy_plugin()))


def good_spec(**overrides: Any) -> dict[str, Any]:
    """A valid spec over the toy components (sft, align, evaluate)."""
    spec: dict[str, Any] = {
        "name": "toy-run",
        "model": {"name": "toy-model"},
        "stages": [
            {"type": "sft", "data": {"name": "toy-captions"}, "train": {"steps": 2, "batch_size": 2}},
            {"type": "align", "data": {"name": "toy-pairs"}, "loss": {"name": "dpo", "config": {"beta": 0.2}},
             "train": {"steps": 2, "batch_size": 2}},
            {"type": "evaluate", "evaluators": [{"name": "gen-eval"}, {"name": "probe"}]},
        ],
    }
    spec.update(overrides)
    return spec


@pytest.fixture()
def spec_data() -> dict[str, Any]:
    return good_spec()


# -------------------------------------------------------- installed fixture packages
@pytest.fixture(scope="session")
def run_cli(fixture_site: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m mmalign_core.cli ARGS`` with the fixture packages importable."""

    def run(*args: str, env: dict[str, str] | None = None, code: str | None = None) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if k not in ("MMALIGN_DISABLE_PLUGINS", "MMALIGN_REGISTRY")}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fixture_site), os.environ.get("PYTHONPATH")]))
        full_env.update(env or {})
        cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "mmalign_core.cli", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120)

    return run


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@pytest.fixture()
def make_plugin_fn() -> Callable[..., types.SimpleNamespace]:
    """``make_plugin_fn(mmalign_losses=lambda: [...])`` -> a plugin object."""
    return make_plugin


@pytest.fixture()
def spec_factory() -> Callable[..., dict[str, Any]]:
    """``spec_factory(**top_level_overrides)`` -> a valid toy spec."""
    return good_spec


@pytest.fixture()
def toy_plugin_fn() -> Callable[[], types.SimpleNamespace]:
    """Builds a fresh toy plugin object."""
    return toy_plugin


@pytest.fixture()
def configs() -> types.SimpleNamespace:
    """The toy config classes."""
    return types.SimpleNamespace(model=ModelConfig, source=SourceConfig, dpo=DPOConfig, empty=EmptyConfig)
