"""Judge-scored benchmarks: MMHal-Bench (and -V), LLaVA-Bench-in-the-Wild and MM-Vet.

Each evaluator generates the model's answers, builds one judging prompt per
sample from its rubric (``rubrics.py``, or the config's ``rubric``), sends the
prompts through a :class:`~mmalign_evals.judging.CachedJudge` and parses the
replies. MMHal-Bench reads ratings by its ``protocol`` (the published
``llava-rlhf`` rates an unreadable reply 0); for the other benchmarks replies
that cannot be parsed are left out of the means and counted in
``details.unparsed_judgements`` (each is in ``samples.jsonl``).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import urlparse

from mmalign_core import EvalResult, GenerationRequest
from mmalign_core.protocols import Context, GenerativeModel

from .common import (
    BenchmarkDataError,
    CellImage,
    Sample,
    data_root,
    decoding,
    find_files,
    first_dir,
    generate,
    image_ref,
    mean,
    missing_data,
    parquet_with,
    read_json,
    read_jsonl,
    read_parquet,
    render,
    sample_details,
    select,
)
from .config import (
    MMHAL_METRICS,
    MMHAL_RUBRIC_FIELDS,
    MMHAL_V_METRICS,
    JudgedConfig,
    LlavaWildConfig,
    MMHalConfig,
    MMHalVConfig,
    MMVetConfig,
    positional_fields,
    read_rubric_file,
)
from .judging import CachedJudge, build_judge
from .mmhal_protocols import DEFAULT_MMHAL_PROTOCOL, HALLUCINATION_BELOW, mmhal_protocol
from .parsing import parse_correctness, parse_pair_scores
from .rubrics import LLAVA_W_RUBRIC, MMHAL_RUBRIC, MMHAL_V_RUBRIC, MMVET_RUBRIC

#: MMHal-Bench's eight question types, in the order its summary reports them.
MMHAL_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other")
MMHAL_HALLUCINATION_BELOW = HALLUCINATION_BELOW
LLAVA_W_CATEGORIES = ("conv", "detail", "complex")
MMVET_CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


def _first(record: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return default


class JudgedEvaluator:
    """Common flow: data -> answers -> judging prompts -> cached judge -> parsed scores."""

    name = ""
    folder = ""
    source = ""
    layouts: tuple[str, ...] = ()
    default_rubric = ""
    judge_sees_image = False

    def __init__(self, config: JudgedConfig, judge: Any = None):
        self.config = config
        self._judge = judge

    @property
    def judge(self) -> Any:
        """The judge component (built from ``config.judge`` on first use when the factory did not pass one)."""
        if self._judge is None:
            self._judge = build_judge(self.config.judge, self.name)
        return self._judge

    @property
    def rubric(self) -> str:
        return self.config.rubric or self.default_rubric

    @property
    def rubric_source(self) -> str:
        return "config.rubric" if self.config.rubric else "built-in"

    def judge_prompt(self, fields: dict[str, str]) -> str:
        return render(self.rubric, **fields)

    def root(self, ctx: Optional[Context]) -> Path:
        return data_root(self.config.data_dir, self.folder, ctx)

    # Subclasses: locate(ctx) -> dict, load(ctx) -> (samples, info), judge_fields(sample, answer) -> dict,
    # and score(samples, answers, replies) -> (metrics, higher, records, extra details).
    def locate(self, ctx: Optional[Context] = None) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, ctx: Optional[Context] = None) -> tuple[list[Sample], dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def judge_fields(self, sample: Sample, answer: str) -> dict[str, str]:  # pragma: no cover
        raise NotImplementedError

    def score(self, samples: Sequence[Sample], answers: Sequence[str], replies: Sequence[str]) -> tuple[dict, dict, list, dict]:  # pragma: no cover
        raise NotImplementedError

    def evaluate(self, model: GenerativeModel, ctx: Optional[Context] = None) -> EvalResult:
        cfg = self.config
        ctx = ctx if ctx is not None else Context()
        everything, data_info = self.load(ctx)
        samples = select(everything, cfg, self.name)
        requests = [GenerationRequest(prompt=render(cfg.prompt, question=s.fields["question"]), images=s.images) for s in samples]
        answers = generate(model, requests, cfg, ctx, self.name)
        client = CachedJudge(self.judge, ctx, enabled=cfg.judge_cache, batch_size=cfg.judge_batch_size)
        judge_requests = [
            GenerationRequest(prompt=self.judge_prompt(self.judge_fields(s, a)), images=list(s.images) if self.judge_sees_image else [])
            for s, a in zip(samples, answers)
        ]
        replies = client.complete(judge_requests, desc=self.name)
        metrics, higher, records, extra = self.score(samples, answers, replies)
        for rec, req in zip(records, judge_requests):
            rec["judge_prompt_sha256"] = client.key(req)[:16]
        details = {
            "benchmark": self.name,
            "data": data_info,
            "prompt_template": cfg.prompt,
            "example_prompt": requests[0].prompt,
            "decoding": decoding(cfg),
            "judge": {**client.details(self.rubric), "prompt_source": self.rubric_source, "sees_image": self.judge_sees_image,
                      "example_prompt": judge_requests[0].prompt},
            **extra,
            **sample_details(samples),
        }
        return EvalResult(metrics=metrics, higher_is_better=higher, n=len(samples), records=records, details=details)


# ----------------------------------------------------------------------------- MMHal-Bench
class MMHalEvaluator(JudgedEvaluator):
    """MMHal-Bench: answers rated 0-6 by a judge that sees the image-content tags, question and reference answer.

    Layouts: the original release, ``<data_dir>/response_template.json`` (a list of
    ``{question_type, question_topic, image_id, image_src, image_content, question, gt_answer, model_answer}``)
    with the images in ``<data_dir>/images/`` named as the last part of ``image_src``; or any ``*.parquet`` with the
    same columns and an ``image`` column. Sample ids are the 0-based positions in the file (or ``question_id``).
    Metrics: ``mmhal_score`` (mean rating) and ``mmhal_hallucination_rate`` (share of ratings below 3).
    """

    name = "mmhal-bench"
    folder = "mmhal-bench"
    source = "https://huggingface.co/datasets/Shengcao1006/MMHal-Bench (response_template.json + test_data.zip images)"
    layouts = (
        "original: <data_dir>/response_template.json + images in <data_dir>/images/",
        "parquet: <data_dir>/**/*.parquet with question, gt_answer, image_content, question_type and image columns",
    )
    default_rubric = MMHAL_RUBRIC
    metric_names = MMHAL_METRICS

    def locate(self, ctx: Optional[Context] = None) -> dict[str, Any]:
        root = self.root(ctx)
        found = find_files(root, ["response_template.json", "**/response_template.json"])
        if found:
            return {"layout": "original json", "dir": str(root), "files": found[:1], "image_dir": first_dir(found[0].parent / "images", root / "images", found[0].parent)}
        parquet = parquet_with(root, ("question", "gt_answer", "image"))
        if parquet:
            return {"layout": "parquet", "dir": str(root), "files": parquet}
        raise missing_data(self.name, root, self.layouts, self.source)

    def load(self, ctx: Optional[Context] = None) -> tuple[list[Sample], dict[str, Any]]:
        where = self.locate(ctx)
        samples = []
        if where["layout"] == "original json":
            path = where["files"][0]
            records = read_json(path)
            if not isinstance(records, list):
                raise BenchmarkDataError(f"{path}: expected a JSON list of MMHal-Bench records")
            for i, rec in enumerate(records):
                src = _first(rec, "image_src", "image_path", "image")
                if src is None:
                    raise BenchmarkDataError(f"{path}: record {i} has no image_src")
                filename = Path(urlparse(str(src)).path).name
                samples.append(self._sample(str(_first(rec, "question_id", "id", default=i)), rec, image_ref(filename, base=where["image_dir"], what=f"{path.name} record {i}"), path))
        else:
            for i, row in enumerate(read_parquet(where["files"])):
                samples.append(self._sample(str(_first(row.values, "question_id", "id", default=i)), row.values, CellImage(row, "image"), row.file))
        return samples, {"layout": where["layout"], "dir": where["dir"], "files": [str(p) for p in where["files"]], "n_in_data": len(samples)}

    def _sample(self, sid: str, rec: dict[str, Any], image: Any, path: Path) -> Sample:
        for col in ("question", "gt_answer"):
            if col not in rec:
                raise BenchmarkDataError(f"{path}: an MMHal-Bench record lacks {col!r}")
        content = rec.get("image_content") or []
        if isinstance(content, str):
            content = [content]
        return Sample(
            id=sid,
            fields={
                "question": str(rec["question"]),
                "reference": str(rec["gt_answer"]),
                "image_content": ", ".join(map(str, content)),
                "question_type": str(rec.get("question_type") or "other"),
                "question_topic": rec.get("question_topic"),
                "image_id": rec.get("image_id"),
            },
            images=[image],
        )

    def judge_fields(self, sample: Sample, answer: str) -> dict[str, str]:
        f = sample.fields
        return {"image_content": f["image_content"], "question": f["question"], "reference": f["reference"], "answer": answer}

    @property
    def rubric(self) -> str:
        cfg = self.config
        if cfg.rubric_file:
            return read_rubric_file(cfg.rubric_file)
        return cfg.rubric or self.default_rubric

    @property
    def rubric_source(self) -> str:
        cfg = self.config
        return f"file {cfg.rubric_file}" if cfg.rubric_file else super().rubric_source

    def judge_prompt(self, fields: dict[str, str]) -> str:
        if positional_fields(self.rubric):
            # A reference template ("{}" placeholders, as in eval_gpt_mmhal.py): filled in the reference's order.
            return self.rubric.format(*(fields[name] for name in MMHAL_RUBRIC_FIELDS))
        return render(self.rubric, **fields)

    def score(self, samples, answers, replies):
        score_name, rate_name = self.metric_names
        protocol, reference = mmhal_protocol(self.config.protocol), mmhal_protocol(DEFAULT_MMHAL_PROTOCOL)
        records, ratings = [], []
        by_type: dict[str, list[int]] = defaultdict(list)
        unparsed = differently = 0
        for s, answer, reply in zip(samples, answers, replies):
            reading, ref_reading = protocol.read(reply), reference.read(reply)
            rating = reading.rating
            unparsed += not reading.parsed
            differently += rating != ref_reading.rating
            if rating is not None:
                ratings.append(rating)
                by_type[s.fields["question_type"]].append(rating)
            records.append({
                "id": s.id,
                "question_type": s.fields["question_type"],
                "question": s.fields["question"],
                "reference": s.fields["reference"],
                "answer": answer,
                "judge_reply": reply,
                "rating": rating,
                "rating_parsed": reading.parsed,
                "hallucination": None if rating is None else rating < HALLUCINATION_BELOW,
                **({} if protocol.name == reference.name else {"reference_rating": ref_reading.rating}),
            })
        metrics = {
            score_name: mean(ratings),
            rate_name: mean([1.0 if r < HALLUCINATION_BELOW else 0.0 for r in ratings]),
        }
        higher = {score_name: True, rate_name: False}
        order = [t for t in MMHAL_TYPES if t in by_type] + sorted(t for t in by_type if t not in MMHAL_TYPES)
        extra = {
            "scale": "0-6; hallucination = rating < 3",
            "protocol": protocol.describe(),
            "unparsed_judgements": unparsed,
            # Replies this protocol rates otherwise than the published one (0 for the published one itself).
            "read_differently_from_reference": differently,
            "reference_protocol": reference.name,
            "score_by_question_type": {t: mean(by_type[t]) for t in order},
            "n_by_question_type": {t: len(by_type[t]) for t in order},
        }
        return metrics, higher, records, extra


class MMHalVEvaluator(MMHalEvaluator):
    """MMHal-Bench-V: the MMHal data and scale, judged by a judge that also sees the image (the paper's variant)."""

    name = "mmhal-bench-v"
    default_rubric = MMHAL_V_RUBRIC
    metric_names = MMHAL_V_METRICS
    judge_sees_image = True


# ------------------------------------------------------------------- LLaVA-Bench-in-the-Wild
class LlavaWildEvaluator(JudgedEvaluator):
    """LLaVA-Bench-in-the-Wild: the judge scores the reference answer and the model's answer (1-10 each);
    ``llava_w`` = mean model score / mean reference score x 100.

    Layouts: the lmms-lab parquet release (``question_id``, ``question``, ``image``, ``caption``,
    ``gpt_answer``, ``category``); or the original ``questions.jsonl`` + ``answers_gpt4.jsonl`` +
    ``context.jsonl`` with the images in ``<data_dir>/images/``. Sample ids are the question ids.
    """

    name = "llava-bench-wild"
    folder = "llava-bench-in-the-wild"
    source = "https://huggingface.co/datasets/lmms-lab/llava-bench-in-the-wild (parquet) or liuhaotian/llava-bench-in-the-wild"
    layouts = (
        "lmms-lab parquet: <data_dir>/**/*.parquet (question_id, question, image, caption, gpt_answer, category)",
        "original: <data_dir>/questions.jsonl, answers_gpt4.jsonl, context.jsonl + images in <data_dir>/images/",
    )
    default_rubric = LLAVA_W_RUBRIC

    def locate(self, ctx: Optional[Context] = None) -> dict[str, Any]:
        root = self.root(ctx)
        parquet = parquet_with(root, ("question", "gpt_answer", "image"))
        if parquet:
            return {"layout": "lmms-lab parquet", "dir": str(root), "files": parquet}
        names = ("questions.jsonl", "answers_gpt4.jsonl", "context.jsonl")
        found = {n: find_files(root, [n, f"**/{n}"]) for n in names}
        if all(found.values()):
            files = [found[n][0] for n in names]
            return {"layout": "original jsonl", "dir": str(root), "files": files, "image_dir": first_dir(files[0].parent / "images", root / "images")}
        extra = ""
        if any(found.values()):
            extra = "Missing: " + ", ".join(n for n in names if not found[n])
        raise missing_data(self.name, root, self.layouts, self.source, extra=extra)

    def load(self, ctx: Optional[Context] = None) -> tuple[list[Sample], dict[str, Any]]:
        where = self.locate(ctx)
        samples = []
        if where["layout"] == "lmms-lab parquet":
            for i, row in enumerate(read_parquet(where["files"])):
                v = row.values
                for col in ("question", "gpt_answer"):
                    if col not in v:
                        raise BenchmarkDataError(f"{row.file}: no {col!r} column (is this lmms-lab/llava-bench-in-the-wild?)")
                caption = v.get("caption") or ""
                samples.append(Sample(
                    id=str(_first(v, "question_id", "id", default=i)),
                    fields={"question": str(v["question"]), "reference": str(v["gpt_answer"]),
                            "context": "\n".join(caption) if isinstance(caption, list) else str(caption),
                            "category": str(v.get("category") or "")},
                    images=[CellImage(row, "image")],
                ))
        else:
            qpath, apath, cpath = where["files"]
            answers = {str(a["question_id"]): a for a in read_jsonl(apath)}
            contexts = {str(c.get("image")): c for c in read_jsonl(cpath)}
            for q in read_jsonl(qpath):
                qid = str(q["question_id"])
                if qid not in answers:
                    raise BenchmarkDataError(f"{apath}: no reference answer for question_id {qid}")
                ctx_rec = contexts.get(str(q["image"]), {})
                caption = ctx_rec.get("caption", "")
                samples.append(Sample(
                    id=qid,
                    fields={"question": str(q["text"]), "reference": str(answers[qid]["text"]),
                            "context": "\n".join(caption) if isinstance(caption, list) else str(caption),
                            "category": str(q.get("category") or "")},
                    images=[image_ref(str(q["image"]), base=where["image_dir"], what=f"{qpath.name} question {qid}")],
                ))
        return samples, {"layout": where["layout"], "dir": where["dir"], "files": [str(p) for p in where["files"]], "n_in_data": len(samples)}

    def judge_fields(self, sample: Sample, answer: str) -> dict[str, str]:
        f = sample.fields
        return {"context": f["context"], "question": f["question"], "reference": f["reference"], "answer": answer}

    def score(self, samples, answers, replies):
        records = []
        pairs: list[tuple[float, float]] = []
        by_cat: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for s, answer, reply in zip(samples, answers, replies):
            scores = parse_pair_scores(reply)
            if scores is not None:
                pairs.append(scores)
                by_cat[s.fields["category"] or "all"].append(scores)
            records.append({
                "id": s.id,
                "category": s.fields["category"],
                "question": s.fields["question"],
                "answer": answer,
                "judge_reply": reply,
                "reference_score": None if scores is None else scores[0],
                "model_score": None if scores is None else scores[1],
            })

        def relative(ps: Sequence[tuple[float, float]]) -> float:
            ref = mean([p[0] for p in ps])
            return 100.0 * mean([p[1] for p in ps]) / ref if ref else 0.0

        metrics = {
            "llava_w": relative(pairs),
            "llava_w_model_score": mean([p[1] for p in pairs]),
            "llava_w_reference_score": mean([p[0] for p in pairs]),
        }
        higher = {"llava_w": True, "llava_w_model_score": True, "llava_w_reference_score": True}
        order = [c for c in LLAVA_W_CATEGORIES if c in by_cat] + sorted(c for c in by_cat if c not in LLAVA_W_CATEGORIES)
        extra = {
            "scale": "judge scores 1-10; llava_w = mean model score / mean reference score x 100",
            "unparsed_judgements": len(samples) - len(pairs),
            "relative_by_category": {c: relative(by_cat[c]) for c in order},
            "n_by_category": {c: len(by_cat[c]) for c in order},
        }
        return metrics, higher, records, extra


# ------------------------------------------------------------------------------- MM-Vet
class MMVetEvaluator(JudgedEvaluator):
    """MM-Vet: each answer graded 0-1 by the judge against the reference; ``mmvet`` = mean x 100.

    Layouts: the original ``<data_dir>/mm-vet.json`` (``{"v1_0": {"imagename", "capability", "question",
    "answer"}, ...}``) with the images in ``<data_dir>/images/``; or the lmms-lab parquet release
    (``question_id``, ``image``, ``question``, ``answer``, ``capability`` as "rec,ocr"). Sample ids are the
    ``v1_N`` keys / question ids.
    """

    name = "mm-vet"
    folder = "mm-vet"
    source = "https://github.com/yuweihao/MM-Vet (mm-vet.zip) or https://huggingface.co/datasets/lmms-lab/MMVet"
    layouts = (
        "original: <data_dir>/mm-vet.json + images in <data_dir>/images/",
        "lmms-lab parquet: <data_dir>/**/*.parquet (question_id, image, question, answer, capability)",
    )
    default_rubric = MMVET_RUBRIC

    def locate(self, ctx: Optional[Context] = None) -> dict[str, Any]:
        root = self.root(ctx)
        found = find_files(root, ["mm-vet.json", "**/mm-vet.json"])
        if found:
            return {"layout": "original json", "dir": str(root), "files": found[:1], "image_dir": first_dir(found[0].parent / "images", root / "images")}
        parquet = parquet_with(root, ("question", "answer", "image"))
        if parquet:
            return {"layout": "lmms-lab parquet", "dir": str(root), "files": parquet}
        raise missing_data(self.name, root, self.layouts, self.source)

    def load(self, ctx: Optional[Context] = None) -> tuple[list[Sample], dict[str, Any]]:
        where = self.locate(ctx)
        samples = []
        if where["layout"] == "original json":
            path = where["files"][0]
            data = read_json(path)
            if not isinstance(data, dict):
                raise BenchmarkDataError(f"{path}: expected a JSON object keyed by sample id (v1_0, ...)")
            for key, rec in data.items():
                samples.append(self._sample(str(key), rec, image_ref(str(rec["imagename"]), base=where["image_dir"], what=f"{path.name} {key}"), path))
        else:
            for i, row in enumerate(read_parquet(where["files"])):
                samples.append(self._sample(str(_first(row.values, "question_id", "id", default=i)), row.values, CellImage(row, "image"), row.file))
        return samples, {"layout": where["layout"], "dir": where["dir"], "files": [str(p) for p in where["files"]], "n_in_data": len(samples)}

    def _sample(self, sid: str, rec: dict[str, Any], image: Any, path: Path) -> Sample:
        for col in ("question", "answer"):
            if col not in rec:
                raise BenchmarkDataError(f"{path}: an MM-Vet record lacks {col!r}")
        caps = rec.get("capability") or []
        if isinstance(caps, str):
            caps = [c.strip() for c in caps.split(",") if c.strip()]
        return Sample(id=sid, fields={"question": str(rec["question"]), "reference": str(rec["answer"]), "capabilities": list(caps)}, images=[image])

    def judge_fields(self, sample: Sample, answer: str) -> dict[str, str]:
        reference = sample.fields["reference"].replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
        # The grading table is one row per item: keep the answer on one line.
        return {"question": sample.fields["question"], "reference": reference, "answer": " ".join(answer.split())}

    def score(self, samples, answers, replies):
        records, grades = [], []
        by_cap: dict[str, list[float]] = defaultdict(list)
        for s, answer, reply in zip(samples, answers, replies):
            grade = parse_correctness(reply)
            if grade is not None:
                grades.append(grade)
                for cap in s.fields["capabilities"]:
                    by_cap[cap].append(grade)
            records.append({
                "id": s.id,
                "capabilities": s.fields["capabilities"],
                "question": s.fields["question"],
                "reference": s.fields["reference"],
                "answer": answer,
                "judge_reply": reply,
                "correctness": grade,
            })
        metrics = {"mmvet": 100.0 * mean(grades)}
        order = [c for c in MMVET_CAPABILITIES if c in by_cap] + sorted(c for c in by_cap if c not in MMVET_CAPABILITIES)
        extra = {
            "scale": "judge correctness 0-1 per item; mmvet = mean x 100",
            "unparsed_judgements": len(samples) - len(grades),
            "score_by_capability": {c: 100.0 * mean(by_cap[c]) for c in order},
            "n_by_capability": {c: len(by_cap[c]) for c in order},
        }
        return metrics, {"mmvet": True}, records, extra


def make_mmhal(config: MMHalConfig) -> MMHalEvaluator:
    """Factory of ``mmhal-bench`` (builds the judge the config references)."""
    return MMHalEvaluator(config, build_judge(config.judge, MMHalEvaluator.name))


def make_mmhal_v(config: MMHalVConfig) -> MMHalVEvaluator:
    """Factory of ``mmhal-bench-v`` (builds the judge the config references)."""
    return MMHalVEvaluator(config, build_judge(config.judge, MMHalVEvaluator.name))


def make_llava_wild(config: LlavaWildConfig) -> LlavaWildEvaluator:
    """Factory of ``llava-bench-wild`` (builds the judge the config references)."""
    return LlavaWildEvaluator(config, build_judge(config.judge, LlavaWildEvaluator.name))


def make_mmvet(config: MMVetConfig) -> MMVetEvaluator:
    """Factory of ``mm-vet`` (builds the judge the config references)."""
    return MMVetEvaluator(config, build_judge(config.judge, MMVetEvaluator.name))
