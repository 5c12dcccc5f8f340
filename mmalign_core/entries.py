"""Typed entry records that plugins return from the registration hooks.

An entry describes a component without importing its implementation: the
config class is a light pydantic model, the factory is a ``"module:attr"``
string imported only when a run builds the component.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

KINDS: tuple[str, ...] = ("model", "preference_source", "loss", "evaluator", "judge", "embedder", "reward", "rl_algorithm", "tracker")

KIND_LABELS = {
    "model": "model",
    "preference_source": "preference source",
    "loss": "loss",
    "evaluator": "evaluator",
    "judge": "judge",
    "embedder": "sentence embedder",
    "tracker": "tracker",
    "reward": "reward",
    "rl_algorithm": "RL algorithm",
}


class EntryError(ValueError):
    """An entry record is malformed (raised at registration time)."""


@dataclass(frozen=True)
class ComponentEntry:
    """Base record. Subclasses fix ``kind``.

    Attributes:
        name: kebab-case name, unique per kind within a plugin.
        summary: one line shown by ``mmalign plugins``.
        config: pydantic model class (``extra="forbid"``, every field described).
        factory: ``"package.module:callable"``; called as ``factory(config)``.
        capabilities: what the component offers (e.g. ``"generate"``, ``"pairs"``, ``"sft"``).
        requires: what it needs from the rest of the run (e.g. ``"reference"``, ``"generate"``).
        plugin: filled in by the plugin manager (the registering plugin's name).
    """

    kind: ClassVar[str] = ""

    name: str
    summary: str
    config: type[BaseModel]
    factory: str
    capabilities: frozenset[str] = frozenset()
    requires: frozenset[str] = frozenset()
    plugin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        object.__setattr__(self, "requires", frozenset(self.requires))
        problems = validate_entry(self)
        if problems:
            raise EntryError(f"{self.kind} entry {self.name!r}: " + "; ".join(problems))

    def load_factory(self) -> Any:
        """Import and return the factory callable."""
        module_name, _, attr = self.factory.partition(":")
        module = importlib.import_module(module_name)
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def build(self, config: BaseModel | dict[str, Any] | None = None, context: Any = None) -> Any:
        """Validate ``config`` (a dict or config instance) and call the factory.

        ``context`` (a :class:`~mmalign_core.build.BuildContext`) is passed to a factory that declares a
        ``context`` parameter; a dict config is validated with its manager, so nested names resolve there.
        """
        from .build import call_factory

        validation = {"plugins": context.plugins} if context is not None else None
        if config is None:
            config = self.config.model_validate({}, context=validation)
        elif isinstance(config, dict):
            config = self.config.model_validate(config, context=validation)
        return call_factory(self.load_factory(), config, context)

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}" if self.plugin else self.name


@dataclass(frozen=True)
class ModelEntry(ComponentEntry):
    """A model: ``factory(config)`` returns an object satisfying :class:`mmalign_core.protocols.AlignableModel`."""

    kind: ClassVar[str] = "model"


@dataclass(frozen=True)
class SourceEntry(ComponentEntry):
    """A preference (or SFT) data source. Capabilities: ``"pairs"``, ``"sft"``, ``"static"``/``"online"``."""

    kind: ClassVar[str] = "preference_source"


@dataclass(frozen=True)
class LossEntry(ComponentEntry):
    """A training objective. ``requires`` may hold ``"reference"`` and ``"rejected"``."""

    kind: ClassVar[str] = "loss"
    # Names of the per-step metrics this loss logs (documentation and contract checks).
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluatorEntry(ComponentEntry):
    """A benchmark or probe. ``metrics`` lists exactly the metric names it reports."""

    kind: ClassVar[str] = "evaluator"
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class JudgeEntry(ComponentEntry):
    """Ranks or grades answers (online-DPO, judge-scored benchmarks)."""

    kind: ClassVar[str] = "judge"


@dataclass(frozen=True)
class EmbedderEntry(ComponentEntry):
    """A sentence embedder: ``factory(config)`` returns an object with ``embed(texts) -> [N, D]`` rows of
    unit length (cosine similarity is their dot product) and ``describe() -> dict`` (identity for
    manifests and caches). Used by components that compare texts, e.g. BDHS's similarity check."""

    kind: ClassVar[str] = "embedder"


@dataclass(frozen=True)
class TrackerEntry(ComponentEntry):
    """An experiment tracker (TensorBoard, Weights & Biases, MLflow, ...): ``factory(config)`` returns an
    object satisfying :class:`mmalign_core.protocols.Tracker`; a run spec lists trackers under ``trackers``.

    ``library`` is the module the tracker needs (checked with ``importlib.util.find_spec`` during
    validation, never imported there) and ``install`` the command that installs it, shown when it is missing.
    """

    kind: ClassVar[str] = "tracker"
    library: str = ""
    install: str = ""


@dataclass(frozen=True)
class RewardEntry(ComponentEntry):
    """A reward for RL stages: ``factory(config)`` returns an object satisfying
    :class:`mmalign_core.protocols.Reward` (scalars for (prompt, images, response) batches, ``describe()``)."""

    kind: ClassVar[str] = "reward"
    # Names of the per-reward metrics it logs besides its score (documentation).
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class RLAlgorithmEntry(ComponentEntry):
    """An RL algorithm (PPO, RLOO, GRPO, ...): ``factory(config)`` returns an object satisfying
    :class:`mmalign_core.protocols.RLAlgorithm`, whose ``train(stage)`` runs an ``rl`` stage."""

    kind: ClassVar[str] = "rl_algorithm"
    metrics: tuple[str, ...] = ()


ENTRY_TYPES: dict[str, type[ComponentEntry]] = {
    cls.kind: cls
    for cls in (ModelEntry, SourceEntry, LossEntry, EvaluatorEntry, JudgeEntry, EmbedderEntry, RewardEntry, RLAlgorithmEntry,
                TrackerEntry)
}


def validate_entry(entry: ComponentEntry) -> list[str]:
    """Problems with an entry record (empty list when fine)."""
    import re

    problems: list[str] = []
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.name or ""):
        problems.append("name must be kebab-case (lower-case letters, digits and single dashes)")
    if not entry.summary or "\n" in entry.summary:
        problems.append("summary must be one non-empty line")
    cfg = entry.config
    if not (isinstance(cfg, type) and issubclass(cfg, BaseModel)):
        problems.append("config must be a pydantic BaseModel subclass")
    else:
        if cfg.model_config.get("extra") != "forbid":
            problems.append(f"config class {cfg.__name__} must set model_config extra='forbid'")
        undocumented = [n for n, f in cfg.model_fields.items() if not f.description]
        if undocumented:
            problems.append(f"config fields without a description: {', '.join(undocumented)}")
        problems += default_problems(cfg)
    if not isinstance(entry.factory, str) or not re.fullmatch(r"[\w.]+:[\w.]+", entry.factory):
        problems.append("factory must be a 'module:attr' string")
    return problems


def default_problems(cfg: type[BaseModel]) -> list[str]:
    """Defaults of ``cfg`` that fail its own validation (pydantic does not check defaults by itself).

    Each default is validated again as an assignment to its own field, so a default
    such as ``Field(-1.0, gt=0)`` is found when the plugin registers, not after a run
    trained with it. Required fields, defaults whose factory needs other plugins and
    model-level rules (which may need user input) are left out.
    """
    from pydantic import ValidationError

    from .refs import RESOLVE_KEY

    data: dict[str, Any] = {}
    for name, info in cfg.model_fields.items():
        if info.is_required():
            continue
        try:
            data[name] = info.get_default(call_default_factory=True)
        except Exception:  # noqa: BLE001 - a factory that needs other plugins: not checkable at registration
            continue
    # Field by field, on an unvalidated instance: a model validator that needs other plugins is not run here.
    holder = cfg.model_construct(**{name: data.get(name) for name in cfg.model_fields})
    problems: list[str] = []
    for name, value in data.items():
        try:
            cfg.__pydantic_validator__.validate_assignment(holder, name, value, context={RESOLVE_KEY: False})
        except ValidationError as exc:
            problems += [
                f"config class {cfg.__name__}: the default of {'.'.join(str(p) for p in e['loc']) or name} fails its "
                f"own validation: {e['msg']} (got {e.get('input')!r:.60})"
                for e in exc.errors(include_url=False)
                if e["type"] != "missing" and e["loc"] and e["loc"][0] == name  # model-level rules need user input
            ]
        except Exception:  # noqa: BLE001 - a validator needing the rest of the run: checked when a spec is validated
            continue
    return problems
