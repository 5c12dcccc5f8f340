"""Registration of the dataset loaders (imports only config classes and entry records)."""
from __future__ import annotations

from typing import Any, Mapping

from mmalign_core import SourceEntry, hookimpl
from mmalign_core.commands import Commands
from mmalign_core.errors import Problem

from .config import DatasetConfig, HadpoConfig, LlavaRlhfConfig, LocalConfig, PovidConfig, RlaifVConfig, RlhfVConfig, VLFeedbackConfig

_CAPS = {"pairs", "static"}


@hookimpl
def mmalign_preference_sources() -> list[SourceEntry]:
    return [
        SourceEntry(
            name="povid",
            summary="POVID (17k): SFT answer vs GPT-4V hallucinated rewrite; JSON list over COCO train2014 paths.",
            config=PovidConfig,
            factory="mmalign_datasets.loaders:make_povid",
            capabilities=_CAPS,
        ),
        SourceEntry(
            name="rlhf-v",
            summary="RLHF-V (5.7k): human-corrected vs original answer; parquet with image bytes and a JSON text column.",
            config=RlhfVConfig,
            factory="mmalign_datasets.loaders:make_rlhf_v",
            capabilities=_CAPS,
        ),
        SourceEntry(
            name="rlaif-v",
            summary="RLAIF-V (83k): AI-labelled chosen vs rejected; parquet shards with image bytes.",
            config=RlaifVConfig,
            factory="mmalign_datasets.loaders:make_rlaif_v",
            capabilities=_CAPS,
        ),
        SourceEntry(
            name="vlfeedback",
            summary="VLFeedback (80k prompts): GPT-4V-rated completions paired best-vs-worst, all ordered pairs, or by one aspect.",
            config=VLFeedbackConfig,
            factory="mmalign_datasets.loaders:make_vlfeedback",
            capabilities=_CAPS,
        ),
        SourceEntry(
            name="llava-rlhf",
            summary="LLaVA-RLHF human preferences (10k): output_1 vs output_2 by the annotator's preference; COCO images.",
            config=LlavaRlhfConfig,
            factory="mmalign_datasets.loaders:make_llava_rlhf",
            capabilities=_CAPS,
        ),
        SourceEntry(
            name="hadpo",
            summary="HA-DPO description data: hallucination-free vs hallucinated descriptions over Visual Genome.",
            config=HadpoConfig,
            factory="mmalign_datasets.loaders:make_hadpo",
            capabilities=_CAPS,
        ),
        SourceEntry(
            name="local",
            summary="Local pairs in the canonical format or TRL's vision preference format (JSONL, JSON, parquet, Arrow).",
            config=LocalConfig,
            factory="mmalign_datasets.loaders:make_local",
            capabilities=_CAPS,
        ),
    ]


@hookimpl
def mmalign_add_commands(commands: Commands) -> None:
    """``mmalign data check|inspect|convert``."""
    from .cli import add_commands

    add_commands(commands)


@hookimpl
def mmalign_check_run(spec: Any, resolved: Mapping[str, Any]) -> list[Problem]:
    """Every file and folder a dataset loader names exists -- in every stage and inside other components
    (a BDHS base source, an online prompt source) -- so a wrong path in stage 3 stops `mmalign validate`,
    not the run after stage 1 has trained. Reads nothing but the file system's entries."""
    from pathlib import Path

    problems: list[Problem] = []
    for where, comp in resolved.items():
        config = getattr(comp, "config", None)
        if getattr(comp, "kind", None) != "preference_source" or not isinstance(config, DatasetConfig):
            continue
        name = comp.entry.qualified_name
        if config.path is not None and not Path(config.path).expanduser().exists():
            problems.append(Problem(f"{where}.config.path", f"{name}: no such file or folder: {config.path}"))
        root = config.image_root
        if root is not None and not Path(root).expanduser().is_dir():
            problems.append(Problem(f"{where}.config.image_root", f"{name}: image_root is not a folder: {root}"))
    return problems
