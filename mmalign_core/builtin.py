"""The core's own default plugin (registered as ``core`` by module path).

It provides no components; it contributes run-wide checks that no single
component config can see. Checks that need the component entries
(capabilities, ``requires``) live in :mod:`mmalign_core.spec`; the ones here
read only the envelope and the resolved entries' capabilities:

- stage names must be unique after numbering, and usable as folder names;
- ``device`` must be ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``;
- warnings: ``float16`` weights on the CPU, a batch larger than
  ``max_examples``, ``checkpoint_every`` beyond the last step, an online
  source trained by epochs, one evaluator listed twice in one stage.

Imports no torch.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .entries import ComponentEntry
from .errors import Problem
from .hookspecs import hookimpl

_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_SAFE_STAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@hookimpl
def mmalign_models() -> list[Any]:
    """The core provides no models."""
    return []


@hookimpl
def mmalign_preference_sources() -> list[Any]:
    """The core provides no preference sources."""
    return []


@hookimpl
def mmalign_losses() -> list[Any]:
    """The core provides no losses."""
    return []


@hookimpl
def mmalign_evaluators() -> list[Any]:
    """The core provides no evaluators."""
    return []


@hookimpl
def mmalign_judges() -> list[Any]:
    """The core provides no judges."""
    return []


@hookimpl
def mmalign_check_run(spec: Any, resolved: Mapping[str, ComponentEntry]) -> list[Problem]:
    """Cross-component checks of the core (see the module docstring)."""
    problems: list[Problem] = []
    problems += _check_stage_names(spec)
    problems += _check_device(spec)
    for index, stage in enumerate(spec.stages):
        prefix = f"stages[{index}]"
        if stage.type == "evaluate":
            problems += _check_evaluators(prefix, stage, resolved)
        else:
            problems += _check_training(prefix, stage, resolved)
    return problems


def _check_stage_names(spec: Any) -> list[Problem]:
    problems = []
    seen: dict[str, int] = {}
    for index, (stage, name) in enumerate(zip(spec.stages, spec.stage_names())):
        path = f"stages[{index}].name"
        if stage.name is not None and not _SAFE_STAGE_RE.fullmatch(stage.name):
            problems.append(Problem(path, f"stage name {stage.name!r} must be letters, digits, '.', '_' or '-' (it names a folder)"))
        if name in seen:
            problems.append(Problem(path, f"stage name {name!r} is already used by stages[{seen[name]}]; give the stages distinct names"))
        seen.setdefault(name, index)
    return problems


def _check_device(spec: Any) -> list[Problem]:
    if not _DEVICE_RE.fullmatch(spec.device):
        return [Problem("device", f"unknown device {spec.device!r}; use 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")]
    if spec.device == "cpu" and spec.dtype == "float16":
        return [Problem("dtype", "float16 weights on the CPU are slow and poorly supported; use float32 or bfloat16", severity="warning")]
    return []


def _check_training(prefix: str, stage: Any, resolved: Mapping[str, ComponentEntry]) -> list[Problem]:
    problems = []
    train = stage.train
    if train.max_examples is not None and train.batch_size > train.max_examples:
        message = f"batch_size ({train.batch_size}) is larger than max_examples ({train.max_examples})"
        problems.append(Problem(f"{prefix}.train.batch_size", message, severity="warning"))
    if train.steps is not None and train.checkpoint_every is not None and train.checkpoint_every > train.steps:
        message = f"checkpoint_every ({train.checkpoint_every}) exceeds steps ({train.steps}); only the final checkpoint is written"
        problems.append(Problem(f"{prefix}.train.checkpoint_every", message, severity="warning"))
    data = resolved.get(f"{prefix}.data")
    if data is not None and "online" in data.capabilities and train.steps is None:
        message = f"source {data.name!r} is online (no fixed size); set train.steps rather than relying on epochs"
        problems.append(Problem(f"{prefix}.train", message, severity="warning"))
    if data is not None and "online" in data.capabilities and train.cache_reference:
        message = (f"source {data.name!r} is online: its pairs change every step, so reference log-probs cannot be "
                   "cached; set cache_reference to false")
        problems.append(Problem(f"{prefix}.train.cache_reference", message))
    return problems


def _check_evaluators(prefix: str, stage: Any, resolved: Mapping[str, ComponentEntry]) -> list[Problem]:
    problems = []
    seen: dict[tuple[str, str], int] = {}
    for index, ref in enumerate(stage.evaluators):
        path = f"{prefix}.evaluators[{index}]"
        entry = resolved.get(path)
        key = (entry.qualified_name if entry else ref.name, repr(sorted(ref.config.items())))
        if key in seen:
            message = f"evaluator {ref.name!r} with the same config is already listed at {prefix}.evaluators[{seen[key]}]"
            problems.append(Problem(path, message, severity="warning"))
        seen.setdefault(key, index)
    return problems
