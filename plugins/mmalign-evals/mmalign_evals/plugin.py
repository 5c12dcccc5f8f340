"""Registration of the benchmark evaluators and the scripted judge (imports only config classes and entry records)."""
from __future__ import annotations

import re
from typing import Any

from mmalign_core import EvaluatorEntry, JudgeEntry, hookimpl
from mmalign_core.commands import ColumnSet
from mmalign_core.errors import Problem

from .columns import PAPER
from .config import (
    LLAVA_W_METRICS,
    MMHAL_METRICS,
    MMHAL_V_METRICS,
    MMVET_METRICS,
    OBJECT_HALBENCH_METRICS,
    POPE_METRICS,
    VQA_METRICS,
    LlavaWildConfig,
    MMHalConfig,
    MMHalVConfig,
    MMVetConfig,
    ObjectHalBenchConfig,
    PopeConfig,
    ScriptedJudgeConfig,
    VQAConfig,
)

#: name -> (config, factory, metrics, summary, "module:class" of the evaluator, judge required)
EVALUATORS: dict[str, tuple[Any, str, tuple[str, ...], str, str, bool]] = {
    "pope": (
        PopeConfig, "mmalign_evals.pope:make_pope", POPE_METRICS,
        "POPE yes/no object probing on COCO (random, popular, adversarial): F1, accuracy, precision, recall, yes-ratio.",
        "mmalign_evals.pope:PopeEvaluator", False,
    ),
    "object-halbench": (
        ObjectHalBenchConfig, "mmalign_evals.object_halbench:make_object_halbench", OBJECT_HALBENCH_METRICS,
        "Object HalBench: COCO object recall and CHAIR of detailed descriptions (synonym rules, or a judge).",
        "mmalign_evals.object_halbench:ObjectHalBenchEvaluator", False,
    ),
    "mmhal-bench": (
        MMHalConfig, "mmalign_evals.judged:make_mmhal", MMHAL_METRICS,
        "MMHal-Bench: a text-only judge rates answers 0-6 from image tags and reference; mean and hallucination rate.",
        "mmalign_evals.judged:MMHalEvaluator", True,
    ),
    "mmhal-bench-v": (
        MMHalVConfig, "mmalign_evals.judged:make_mmhal_v", MMHAL_V_METRICS,
        "MMHal-Bench-V: MMHal-Bench rated 0-6 by a judge that also sees the image.",
        "mmalign_evals.judged:MMHalVEvaluator", True,
    ),
    "llava-bench-wild": (
        LlavaWildConfig, "mmalign_evals.judged:make_llava_wild", LLAVA_W_METRICS,
        "LLaVA-Bench-in-the-Wild: judge score of the answer relative to the reference answer (x100).",
        "mmalign_evals.judged:LlavaWildEvaluator", True,
    ),
    "mm-vet": (
        MMVetConfig, "mmalign_evals.judged:make_mmvet", MMVET_METRICS,
        "MM-Vet: a judge grades each answer 0-1 against the reference; mean x100.",
        "mmalign_evals.judged:MMVetEvaluator", True,
    ),
    "vqa": (
        VQAConfig, "mmalign_evals.vqa:make_vqa", VQA_METRICS,
        "Short-answer VQA: TextVQA (VQA accuracy, ten annotators) and GQA (exact match), standard answer normalisation.",
        "mmalign_evals.vqa:VQAEvaluator", False,
    ),
}


@hookimpl
def mmalign_evaluators() -> list[EvaluatorEntry]:
    return [
        EvaluatorEntry(name=name, summary=summary, config=config, factory=factory, requires={"generate"}, metrics=metrics)
        for name, (config, factory, metrics, summary, _, _) in EVALUATORS.items()
    ]


@hookimpl
def mmalign_judges() -> list[JudgeEntry]:
    return [
        JudgeEntry(
            name="scripted-judge",
            summary="Test/debug judge: replies from a pattern -> reply mapping (or one fixed reply); never calls a model.",
            config=ScriptedJudgeConfig,
            factory="mmalign_evals.judging:make_scripted_judge",
            capabilities={"complete"},
        )
    ]


_EVALUATOR_PATH = re.compile(r"^stages\[(\d+)\]\.evaluators\[(\d+)\]$")


def _evaluator_class(spec: str) -> Any:
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@hookimpl
def mmalign_compare_columns() -> list[ColumnSet]:
    return [PAPER]


@hookimpl
def mmalign_check_run(spec: Any, resolved: Any) -> list:
    """A judge-scored evaluator needs a judge. Missing benchmark files are an error in an evaluation-only spec
    (nothing is lost by stopping now) and a warning when the spec trains first (it may be validated on
    another machine than the one that runs it)."""
    from .common import BenchmarkDataError

    problems: list[Problem] = []
    eval_only = all(getattr(stage, "type", None) == "evaluate" for stage in spec.stages)
    by_factory = {v[1]: (name, v) for name, v in EVALUATORS.items()}
    for path, entry in resolved.items():
        m = _EVALUATOR_PATH.match(path)
        if m is None or entry.kind != "evaluator" or entry.factory not in by_factory:
            continue
        name, (config_cls, _, _, _, cls_path, needs_judge) = by_factory[entry.factory]
        raw = spec.stages[int(m.group(1))].evaluators[int(m.group(2))].config
        try:
            config = config_cls.model_validate(raw)
        except Exception:  # noqa: BLE001 - reported by the config's own validation
            continue
        if (needs_judge or getattr(config, "extraction", None) == "judge") and config.judge is None:
            problems.append(Problem(
                f"{path}.config.judge",
                f"{name} is scored by a judge: set \"judge\": {{\"name\": ..., \"config\": {{...}}}} "
                "(`mmalign plugins` lists the installed judges; 'scripted-judge' replies from a fixed mapping, for tests)",
            ))
        try:
            _evaluator_class(cls_path)(config).locate(None)
        except BenchmarkDataError as exc:
            if eval_only:
                problems.append(Problem(path, str(exc)))
            else:
                problems.append(Problem(path, f"{exc}\nThe stage will fail unless the files are there when it runs.", severity="warning"))
    return problems
