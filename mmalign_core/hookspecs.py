"""The pluggy hook specifications of mmalign.

Registration hooks return lists of entry records; lifecycle hooks observe a
run. Every hook here is documented with its exact signature in
``docs/hooks.md`` (a test keeps the two in step).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pluggy

from .commands import ColumnSet, Commands
from .entries import (
    EmbedderEntry,
    EvaluatorEntry,
    JudgeEntry,
    LossEntry,
    ModelEntry,
    RewardEntry,
    RLAlgorithmEntry,
    SourceEntry,
    TrackerEntry,
)
from .errors import Problem
from .spec import ResolvedComponent
from .spec_models import RunSpec

PROJECT = "mmalign"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mmalign_models() -> list[ModelEntry]:
    """Return a list of :class:`~mmalign_core.entries.ModelEntry` this plugin provides."""


@hookspec
def mmalign_preference_sources() -> list[SourceEntry]:
    """Return a list of :class:`~mmalign_core.entries.SourceEntry` this plugin provides."""


@hookspec
def mmalign_losses() -> list[LossEntry]:
    """Return a list of :class:`~mmalign_core.entries.LossEntry` this plugin provides."""


@hookspec
def mmalign_evaluators() -> list[EvaluatorEntry]:
    """Return a list of :class:`~mmalign_core.entries.EvaluatorEntry` this plugin provides."""


@hookspec
def mmalign_judges() -> list[JudgeEntry]:
    """Return a list of :class:`~mmalign_core.entries.JudgeEntry` this plugin provides."""


@hookspec
def mmalign_embedders() -> list[EmbedderEntry]:
    """Return a list of :class:`~mmalign_core.entries.EmbedderEntry` this plugin provides."""


@hookspec
def mmalign_trackers() -> list[TrackerEntry]:
    """Return a list of :class:`~mmalign_core.entries.TrackerEntry` this plugin provides."""


@hookspec
def mmalign_rewards() -> list[RewardEntry]:
    """Return a list of :class:`~mmalign_core.entries.RewardEntry` this plugin provides."""


@hookspec
def mmalign_rl_algorithms() -> list[RLAlgorithmEntry]:
    """Return a list of :class:`~mmalign_core.entries.RLAlgorithmEntry` this plugin provides."""


@hookspec
def mmalign_check_run(spec: RunSpec, resolved: Mapping[str, ResolvedComponent]) -> list[str | Problem]:
    """Return problems (strings) with a whole run that no single config can see.

    ``spec`` is the validated :class:`~mmalign_core.spec.RunSpec`; ``resolved``
    maps each component's JSON path to its entry record. Called during
    ``mmalign validate`` and before ``mmalign run``; must not import torch.
    """


@hookspec
def mmalign_add_commands(commands: Commands) -> None:
    """Add subcommands to ``mmalign`` with ``commands.add(name, handler, help=..., description=...)``.

    Called once per CLI invocation while the parser is built (keep it light:
    no torch). A taken name is refused and recorded, never overriding another
    owner's command.
    """


@hookspec
def mmalign_compare_columns() -> list[ColumnSet]:
    """Return :class:`~mmalign_core.commands.ColumnSet` layouts for ``mmalign compare --columns NAME``."""


@hookspec
def mmalign_on_metrics(run_dir: Path, stage: str, step: int, metrics: dict[str, float]) -> None:
    """Observe one logged row of training metrics (after it is written to ``metrics.jsonl``)."""


@hookspec
def mmalign_on_evaluation(run_dir: Path, stage: str, evaluator: str, metrics: dict[str, float]) -> None:
    """Observe the metrics of one evaluator once it has finished."""


@hookspec
def mmalign_on_run_end(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Observe the end of a run, with its final manifest."""


REGISTRATION_HOOKS: dict[str, str] = {
    "model": "mmalign_models",
    "preference_source": "mmalign_preference_sources",
    "loss": "mmalign_losses",
    "evaluator": "mmalign_evaluators",
    "judge": "mmalign_judges",
    "embedder": "mmalign_embedders",
    "tracker": "mmalign_trackers",
    "reward": "mmalign_rewards",
    "rl_algorithm": "mmalign_rl_algorithms",
}
