"""Configuration classes of the benchmark evaluators and the scripted judge (pydantic only, no torch).

The metric names every evaluator reports are fixed here, so the entry records
can declare them without importing the evaluators. Judge-scored evaluators
take their judge as a component reference, ``{"name": ..., "config": {...}}``,
resolved against the installed plugins when the spec is validated.
"""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from mmalign_core.config import SpecPath
from mmalign_core import ComponentConfig, NestedComponent

# ------------------------------------------------------------------------ metric names
POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
POPE_SPLIT_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio")
#: Exactly the metrics ``pope`` reports: the means over the three splits, then each split.
POPE_METRICS: tuple[str, ...] = tuple(f"pope_{m}" for m in ("f1", "accuracy", "precision", "recall", "yes_ratio")) + tuple(
    f"pope_{split}_{metric}" for split in POPE_SPLITS for metric in POPE_SPLIT_METRICS
)
#: ``object-halbench``: object recall (the paper's Rec column), CHAIR_s, CHAIR_i, objects named per caption.
OBJECT_HALBENCH_METRICS: tuple[str, ...] = ("recall", "chair_s", "chair_i", "objects_per_caption")
#: ``mmhal-bench``: mean judge rating (0-6) and share of ratings below 3.
MMHAL_METRICS: tuple[str, ...] = ("mmhal_score", "mmhal_hallucination_rate")
#: ``mmhal-bench-v``: the same with a judge that sees the image.
MMHAL_V_METRICS: tuple[str, ...] = ("mmhal_v_score", "mmhal_v_hallucination_rate")
#: ``llava-bench-wild``: relative score (model / reference x 100) and the two mean judge scores (1-10).
LLAVA_W_METRICS: tuple[str, ...] = ("llava_w", "llava_w_model_score", "llava_w_reference_score")
#: ``mm-vet``: mean judge correctness (0-1) x 100.
MMVET_METRICS: tuple[str, ...] = ("mmvet",)
#: ``vqa``: the benchmark's accuracy (VQA accuracy for TextVQA, exact match for GQA) and exact match.
VQA_METRICS: tuple[str, ...] = ("vqa_accuracy", "vqa_exact_match")

SHORT_ANSWER = "{question}\nAnswer the question using a single word or phrase."


# ------------------------------------------------------------------------- judge reference
class JudgeRef(NestedComponent):
    """A judge component: a registered judge name and its configuration.

    Validated against the installed plugins (see ``mmalign_core.refs``): an unknown name or a config its
    judge rejects is a spec error. After validation ``name`` is qualified and ``config`` holds the judge's
    full config, defaults written out.
    """

    kind: ClassVar[str] = "judge"


# --------------------------------------------------------------------------- common base
class BenchmarkConfig(ComponentConfig):
    """Where the data is, which samples to evaluate, and how to decode (recorded in ``details``)."""

    data_dir: Optional[SpecPath] = Field(
        None,
        description="Folder holding the benchmark files in their published layout; default: the benchmark's folder "
        "under $MMALIGN_DATA, else under data/ in the mmalign cache (see docs/evaluation.md).",
    )
    limit: Optional[int] = Field(None, ge=1, description="Evaluate only the first N samples (in file order) after 'ids'.")
    ids: Optional[list[str]] = Field(
        None, description="Evaluate only these sample ids, in the data's order (the ids recorded in results.json)."
    )
    ids_file: Optional[SpecPath] = Field(None, description="A text file with one sample id per line; combined with 'ids'.")
    batch_size: int = Field(8, ge=1, description="Requests per generate() call.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding (the published numbers use greedy).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (only with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (only with do_sample).")


def _check_template(value: str, *fields: str) -> str:
    for name in fields:
        if "{" + name + "}" not in value:
            raise ValueError(f"the template must contain '{{{name}}}'")
    try:
        value.format(**{n: "" for n in fields})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"the template has a placeholder other than {', '.join('{' + f + '}' for f in fields)} ({exc}); "
                         "write literal braces as '{{' and '}}'") from None
    return value


class JudgedConfig(BenchmarkConfig):
    """A benchmark scored by a judge component."""

    judge: Optional[JudgeRef] = Field(
        None,
        description="The judge, as {\"name\": ..., \"config\": {...}} (e.g. a VLM or API judge; 'scripted-judge' for tests). "
        "Required: the spec is invalid without it.",
    )
    judge_batch_size: int = Field(8, ge=1, description="Judging prompts per judge.complete() call.")
    judge_cache: bool = Field(
        True,
        description="Cache every judge reply on disk (judge-cache/ in the mmalign cache), keyed by judge identity, prompt and images; "
        "a rerun reuses them.",
    )
    rubric: Optional[str] = Field(None, description="Replace the built-in judging prompt template (same placeholders).")


# --------------------------------------------------------------------------- benchmarks
class PopeConfig(BenchmarkConfig):
    """POPE: yes/no object-existence questions on COCO val2014, three negative-sampling splits."""

    image_dir: Optional[SpecPath] = Field(
        None, description="COCO val2014 images for the original JSON layout; default data_dir/val2014, then data_dir/images."
    )
    prompt: str = Field(SHORT_ANSWER, description="Prompt template; '{question}' is the POPE question (lmms-eval's default).")
    protocol: Literal["pope-original", "lmms-eval", "tolerant", "first-yes-no"] = Field(
        "pope-original",
        description="How answers are read and scored. 'pope-original': the POPE script and LLaVA's eval_pope.py -- the "
        "text before the first period, split on spaces; a piece 'No', 'no' or 'not' means no, anything else yes; mean "
        "over the splits. 'lmms-eval': the lower-cased, stripped answer must be 'yes' or 'no' (else wrong); yes_ratio = "
        "share of yes labels; pooled over the splits. 'tolerant': pope-original case-insensitive, any white space. "
        "'first-yes-no': the first yes/no word decides; neither counts as no.",
    )
    max_new_tokens: int = Field(128, ge=1, description="Generation budget per answer (lmms-eval's default).")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "parser" in data:
            old = {"llava": "'tolerant' (or the published 'pope-original', the default)", "yes-no": "'first-yes-no'"}
            hint = old.get(str(data["parser"]), "one of 'pope-original', 'lmms-eval', 'tolerant', 'first-yes-no'")
            raise ValueError(f"'parser' was replaced by 'protocol': use \"protocol\": {hint}")
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _check_template(value, "question")


class ObjectHalBenchConfig(JudgedConfig):
    """Object HalBench: detailed descriptions of COCO val2014 images scored by object recall and CHAIR."""

    questions_file: Optional[SpecPath] = Field(
        None, description="The sample list: JSONL with image_id, question and optionally a base64 image; "
        "default data_dir/obj_halbench_300_with_image.jsonl (RLHF-V's release)."
    )
    annotations_dir: Optional[SpecPath] = Field(
        None, description="Folder with COCO instances_val2014.json and captions_val2014.json; default data_dir/annotations."
    )
    image_dir: Optional[SpecPath] = Field(
        None, description="COCO val2014 images, used for lines without an embedded image; default data_dir/val2014."
    )
    prompt: Optional[str] = Field(
        None, description="Prompt for every image; default: each line's own question. '{question}' inserts it."
    )
    protocol: Literal["chair-original", "rlhf-v"] = Field(
        "chair-original",
        description="Whose CHAIR rules and denominators: 'chair-original' (Rohrbach et al. 2018 utils/chair.py: its synonym "
        "table, pattern's singularizer, its two-word phrases; CHAIR_s over all descriptions) or 'rlhf-v' (RLHF-V's "
        "eval_gpt_obj_halbench.py: the refined table, WordNet-style lemmas; CHAIR_s over descriptions naming an object).",
    )
    extraction: Literal["rules", "judge"] = Field(
        "rules",
        description="How mentioned objects are found: 'rules' (the protocol's tokens, phrases and synonym table) or 'judge' "
        "(the judge lists the objects, each then read by the same rules).",
    )
    caption_objects: bool = Field(
        True, description="Ground truth = instance annotations plus objects named in the COCO reference captions (RLHF-V)."
    )
    chair_i_counts: Literal["mentions", "unique"] = Field(
        "mentions", description="CHAIR_i over every mention (Rohrbach et al.) or over unique objects per caption."
    )
    judge: Optional[JudgeRef] = Field(
        None, description="The judge that lists the objects; required with extraction='judge', unused otherwise."
    )
    max_new_tokens: int = Field(1024, ge=1, description="Generation budget per description.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and "{" in value:
            return _check_template(value, "question")
        return value

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_template(value, "caption")


MMHAL_RUBRIC_FIELDS = ("image_content", "question", "reference", "answer")
LLAVA_W_RUBRIC_FIELDS = ("context", "question", "reference", "answer")


class _QuestionJudgedConfig(JudgedConfig):
    """A judge-scored benchmark whose prompt holds the question; ``RUBRIC_FIELDS`` are the rubric's placeholders."""

    RUBRIC_FIELDS: ClassVar[tuple[str, ...]] = ()

    prompt: str = Field("{question}", description="Prompt template; '{question}' is the benchmark question.")
    max_new_tokens: int = Field(1024, ge=1, description="Generation budget per answer.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _check_template(value, "question")

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_template(value, *cls.RUBRIC_FIELDS)


def positional_fields(template: str) -> int:
    """How many automatically numbered ``{}`` placeholders ``template`` has."""
    return sum(1 for _, name, _, _ in string.Formatter().parse(template) if name == "")


def read_rubric_file(path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the rubric file {path}: {exc.strerror or exc}") from None


class MMHalConfig(_QuestionJudgedConfig):
    """MMHal-Bench: 96 questions on OpenImages, answers rated 0-6 by a text-only judge."""

    RUBRIC_FIELDS: ClassVar[tuple[str, ...]] = MMHAL_RUBRIC_FIELDS

    protocol: Literal["llava-rlhf", "tolerant"] = Field(
        "llava-rlhf",
        description="How a judge reply becomes a rating. 'llava-rlhf' (LLaVA-RLHF's eval_gpt_mmhal.py): the one N in 0..6 "
        "with 'rating: N' in the lower-cased reply; none or several -> 0 (a hallucination); every item counts. "
        "'tolerant': the last 'Rating: N' (markdown, '6.', '3.0', '05' accepted); replies without one are left out.",
    )
    rubric_file: Optional[SpecPath] = Field(
        None,
        description="A judging-prompt template file, e.g. the template of LLaVA-RLHF's eval_gpt_mmhal.py saved as text to "
        "reproduce published scores. Four '{}' placeholders are filled in the reference's order (image contents, question, "
        "reference answer, model answer); or use the named placeholders of 'rubric'. Recorded in details.judge.",
    )

    @model_validator(mode="after")
    def _rubric_file(self) -> "MMHalConfig":
        if self.rubric_file is None:
            return self
        if self.rubric is not None:
            raise ValueError("give 'rubric' or 'rubric_file', not both")
        text = read_rubric_file(self.rubric_file)
        count = positional_fields(text)
        if count:
            if count != len(MMHAL_RUBRIC_FIELDS) or any(name for _, name, _, _ in string.Formatter().parse(text) if name):
                raise ValueError(f"the rubric file {self.rubric_file} has {count} '{{}}' placeholder(s); a positional template "
                                 f"needs exactly {len(MMHAL_RUBRIC_FIELDS)} and no named ones (image contents, question, "
                                 "reference answer, model answer)")
        else:
            try:
                _check_template(text, *MMHAL_RUBRIC_FIELDS)
            except ValueError as exc:
                raise ValueError(f"the rubric file {self.rubric_file}: {exc}") from None
        return self


class MMHalVConfig(MMHalConfig):
    """MMHal-Bench-V: the MMHal data and rubric, with a judge that also sees the image."""


class LlavaWildConfig(_QuestionJudgedConfig):
    """LLaVA-Bench-in-the-Wild: 60 questions, judge scores of the answer relative to the reference answer."""

    RUBRIC_FIELDS: ClassVar[tuple[str, ...]] = LLAVA_W_RUBRIC_FIELDS


MMVET_RUBRIC_FIELDS = ("question", "reference", "answer")


class MMVetConfig(JudgedConfig):
    """MM-Vet: 218 open questions graded 0-1 by a judge against the reference answer."""

    prompt: str = Field("{question}", description="Prompt template; '{question}' is the MM-Vet question.")
    max_new_tokens: int = Field(1024, ge=1, description="Generation budget per answer.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _check_template(value, "question")

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_template(value, *MMVET_RUBRIC_FIELDS)


class VQAConfig(BenchmarkConfig):
    """Short-answer VQA: TextVQA (VQA accuracy over ten annotators) and GQA (exact match)."""

    benchmark: Literal["textvqa", "gqa", "jsonl"] = Field(
        "textvqa",
        description="Data layout and default scoring: 'textvqa' (TextVQA val, VQA accuracy), 'gqa' (testdev-balanced, "
        "exact match) or 'jsonl' (questions.jsonl with question_id, image, question, answers).",
    )
    split: Optional[str] = Field(
        None, description="Which split's files to read when several are present; default 'validation'/'val' for TextVQA, "
        "'testdev' for GQA."
    )
    image_dir: Optional[SpecPath] = Field(
        None, description="Images for the JSON layouts; default data_dir/train_images (TextVQA), data_dir/images (GQA, jsonl)."
    )
    prompt: str = Field(SHORT_ANSWER, description="Prompt template; '{question}' is the question (lmms-eval's default).")
    protocol: Literal["auto", "evalai", "lmms-eval", "tolerant"] = Field(
        "auto",
        description="How answers are scored. 'evalai': EvalAI's answer processor and TextVQA's VQA accuracy (mmf, LLaVA's "
        "m4c_evaluator.py, lmms-eval textvqa; a single reference scores 0). 'lmms-eval': lmms-eval's GQA exact match "
        "(lower case, ASCII punctuation deleted, white space kept). 'tolerant': mmalign's former rules. 'auto': evalai for "
        "TextVQA, lmms-eval for GQA, tolerant for jsonl.",
    )
    max_new_tokens: int = Field(16, ge=1, description="Generation budget per answer (lmms-eval's GQA default).")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and ({"scoring", "normalize"} & set(data)):
            raise ValueError("'scoring' and 'normalize' were replaced by 'protocol' ('auto', 'evalai', 'lmms-eval' or 'tolerant')")
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _check_template(value, "question")


# ---------------------------------------------------------------------------- judges
class ScriptedJudgeConfig(ComponentConfig):
    """A deterministic judge for tests and debugging: replies from a mapping, never calls a model."""

    replies: dict[str, str] = Field(
        default_factory=dict,
        description="Pattern -> reply. The first pattern (in order) found in the judging prompt gives the reply.",
    )
    match: Literal["substring", "regex"] = Field(
        "substring", description="How patterns are matched against the prompt: plain substring or regular expression (re.search)."
    )
    default: str = Field("", description="Reply when no pattern matches (with no replies at all: the fixed reply).")
    label: str = Field("scripted", min_length=1, description="Name recorded as the judge's identity (describe()).")

    @field_validator("replies")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k for k in value):
            raise ValueError("patterns must be non-empty")
        return value

    @model_validator(mode="after")
    def _regexes(self) -> "ScriptedJudgeConfig":
        if self.match == "regex":
            for pattern in self.replies:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return self


__all__ = [
    "POPE_METRICS",
    "POPE_SPLITS",
    "OBJECT_HALBENCH_METRICS",
    "MMHAL_METRICS",
    "MMHAL_V_METRICS",
    "LLAVA_W_METRICS",
    "MMVET_METRICS",
    "VQA_METRICS",
    "JudgeRef",
    "BenchmarkConfig",
    "JudgedConfig",
    "PopeConfig",
    "ObjectHalBenchConfig",
    "MMHalConfig",
    "MMHalVConfig",
    "LlavaWildConfig",
    "MMVetConfig",
    "VQAConfig",
    "ScriptedJudgeConfig",
]
