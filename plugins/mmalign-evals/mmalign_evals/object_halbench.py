"""Object HalBench: detailed descriptions of COCO val2014 images, scored by object recall and CHAIR.

Data (``data_dir``):

* the sample list and prompts: ``obj_halbench_300_with_image.jsonl`` (RLHF-V's
  release; one line per image: ``image_id``, ``question`` and the image as
  base64 ``image``) or any JSONL with ``image_id`` and ``question``, whose
  images are then read from ``image_dir`` (``COCO_val2014_<id:012d>.jpg``);
* the COCO 2014 annotations: ``annotations/instances_val2014.json`` and
  ``annotations/captions_val2014.json``.

Ground truth per image: the categories of its instance annotations plus the
objects its five reference captions name (``caption_objects``, as in both
reference scripts). Objects mentioned by a description are found by the rules
of the config's ``protocol`` (:mod:`mmalign_evals.chair_protocols`:
``chair-original`` or ``rlhf-v``), or listed by a judge and read by the same
rules (``extraction="judge"``).

Metrics (fractions): ``recall`` = sum over descriptions of |mentioned classes
and ground truth| / sum of |ground truth| (the paper's Rec column, RLHF-V's
``obj_rec``); ``chair_s`` = descriptions with at least one hallucinated object
/ all descriptions (``chair-original``) or / descriptions naming an object
(``rlhf-v``); ``chair_i`` = hallucinated / all object mentions;
``objects_per_caption`` = mean number of distinct classes mentioned (a guard:
naming fewer objects lowers CHAIR and recall together).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from mmalign_core import EvalResult, GenerationRequest
from mmalign_core.protocols import Context, GenerativeModel

from .chair_protocols import chair_protocol
from .coco import caption_objects, category_names, extract_mentions, objects_from_list
from .common import (
    BenchmarkDataError,
    Sample,
    data_root,
    decoding,
    find_files,
    first_dir,
    generate,
    image_ref,
    mean,
    missing_data,
    read_jsonl,
    render,
    sample_details,
    select,
)
from .config import OBJECT_HALBENCH_METRICS, ObjectHalBenchConfig
from .judging import CachedJudge, build_judge
from .rubrics import OBJECT_EXTRACTION_RUBRIC

FOLDER = "object-halbench"
SOURCE = ("RLHF-V/RLAIF-V eval/data/obj_halbench_300_with_image.jsonl (https://github.com/RLHF-V/RLAIF-V) and the COCO 2014 "
          "annotations (https://cocodataset.org/#download: annotations_trainval2014.zip)")
LAYOUTS = (
    "<data_dir>/obj_halbench_300_with_image.jsonl (image_id, question, base64 image) "
    "+ <data_dir>/annotations/instances_val2014.json and captions_val2014.json",
    "any JSONL of {image_id, question} (config.questions_file) + COCO val2014 images in <data_dir>/val2014",
)


class ObjectHalBenchEvaluator:
    """Object recall and CHAIR on free-form descriptions, with rule-based (default) or judge-based object extraction."""

    name = "object-halbench"

    def __init__(self, config: ObjectHalBenchConfig, judge: Any = None):
        self.config = config
        self._judge = judge

    @property
    def judge(self) -> Any:
        """The extraction judge (``None`` with rule-based extraction)."""
        if self.config.extraction != "judge":
            return None
        if self._judge is None:
            self._judge = build_judge(self.config.judge, self.name)
        return self._judge

    @property
    def rubric(self) -> str:
        return self.config.rubric or OBJECT_EXTRACTION_RUBRIC

    def root(self, ctx: Optional[Context]) -> Path:
        return data_root(self.config.data_dir, FOLDER, ctx)

    def locate(self, ctx: Optional[Context] = None) -> dict[str, Any]:
        cfg, root = self.config, self.root(ctx)
        if cfg.questions_file:
            questions = Path(cfg.questions_file).expanduser()
            if not questions.is_file():
                raise missing_data(self.name, root, LAYOUTS, SOURCE, extra=f"config.questions_file {questions} does not exist.")
        else:
            found = find_files(root, ["obj_halbench_300_with_image.jsonl", "**/obj_halbench_300_with_image.jsonl", "*obj_halbench*.jsonl", "**/*obj_halbench*.jsonl"])
            if not found:
                raise missing_data(self.name, root, LAYOUTS, SOURCE)
            questions = found[0]
        ann = Path(cfg.annotations_dir).expanduser() if cfg.annotations_dir else first_dir(root / "annotations", root)
        wanted = ["instances_val2014.json"] + (["captions_val2014.json"] if cfg.caption_objects else [])
        lacking = [n for n in wanted if not (ann / n).is_file()]
        if lacking:
            raise missing_data(self.name, root, LAYOUTS, SOURCE, extra=f"COCO annotations missing in {ann}: {', '.join(lacking)}.")
        image_dir = Path(cfg.image_dir).expanduser() if cfg.image_dir else first_dir(root / "val2014", root / "images", root)
        return {"dir": str(root), "questions": questions, "annotations": [ann / n for n in wanted], "image_dir": image_dir}

    def load(self, ctx: Optional[Context] = None) -> tuple[list[Sample], dict[str, Any]]:
        where = self.locate(ctx)
        path = where["questions"]
        samples, seen = [], {}
        for n, rec in enumerate(read_jsonl(path)):
            if "image_id" not in rec:
                raise BenchmarkDataError(f"{path}: line {n + 1} has no image_id")
            image_id = int(rec["image_id"])
            base = str(rec.get("org_idx", image_id))
            seen[base] = seen.get(base, 0) + 1
            sid = base if seen[base] == 1 else f"{base}#{seen[base]}"
            cell = rec.get("image") or f"COCO_val2014_{image_id:012d}.jpg"
            samples.append(Sample(sid, {"image_id": image_id, "question": str(rec.get("question") or rec.get("text") or "")},
                                  [image_ref(cell, base=where["image_dir"], what=f"{path.name} line {n + 1}")]))
        info = {"dir": where["dir"], "files": [str(path), *map(str, where["annotations"])], "n_in_data": len(samples)}
        return samples, info

    def ground_truth(self, annotation_files: list[Path], image_ids: set[int]) -> tuple[dict[int, set[str]], dict[int, list[str]]]:
        """Per image: the ground-truth classes and the reference captions (``BenchmarkDataError`` for unknown images)."""
        instances = json.loads(annotation_files[0].read_text(encoding="utf-8"))
        names = category_names(instances.get("categories", []))
        truth: dict[int, set[str]] = {i: set() for i in image_ids}
        known = {int(im["id"]) for im in instances.get("images", [])}
        for ann in instances.get("annotations", []):
            iid = int(ann["image_id"])
            if iid in truth:
                truth[iid].add(names.get(int(ann["category_id"]), str(ann["category_id"])))
        captions: dict[int, list[str]] = {i: [] for i in image_ids}
        if len(annotation_files) > 1:
            caps = json.loads(annotation_files[1].read_text(encoding="utf-8"))
            known |= {int(im["id"]) for im in caps.get("images", [])}
            for ann in caps.get("annotations", []):
                iid = int(ann["image_id"])
                if iid in captions:
                    captions[iid].append(str(ann["caption"]))
            for iid, texts in captions.items():
                truth[iid] |= caption_objects(texts, self.config.protocol)
        unknown = sorted(image_ids - known)
        if unknown:
            raise BenchmarkDataError(f"{self.name}: images not in the COCO annotations ({annotation_files[0].name}): {unknown[:5]}")
        return truth, captions

    def evaluate(self, model: GenerativeModel, ctx: Optional[Context] = None) -> EvalResult:
        cfg = self.config
        ctx = ctx if ctx is not None else Context()
        everything, data_info = self.load(ctx)
        samples = select(everything, cfg, self.name)
        where = self.locate(ctx)
        truth, _ = self.ground_truth(where["annotations"], {s.fields["image_id"] for s in samples})

        def prompt(s: Sample) -> str:
            if cfg.prompt is None:
                if not s.fields["question"]:
                    raise BenchmarkDataError(f"{self.name}: sample {s.id} has no question; set config.prompt")
                return s.fields["question"]
            return render(cfg.prompt, question=s.fields["question"]) if "{question}" in cfg.prompt else cfg.prompt

        requests = [GenerationRequest(prompt=prompt(s), images=s.images) for s in samples]
        captions = generate(model, requests, cfg, ctx, self.name)
        client = None
        replies: list[Optional[str]] = [None] * len(samples)
        judge = self.judge
        if judge is not None:
            client = CachedJudge(judge, ctx, enabled=cfg.judge_cache, batch_size=cfg.judge_batch_size)
            replies = list(client.complete([GenerationRequest(prompt=render(self.rubric, caption=c)) for c in captions], desc=self.name))

        protocol = chair_protocol(cfg.protocol)
        mentions_total = hallucinated_total = with_hallucination = naming = 0
        recall_hits = recall_total = 0
        distinct_counts = []
        records = []
        for s, caption, reply in zip(samples, captions, replies):
            gt = truth[s.fields["image_id"]]
            mentions = extract_mentions(caption, cfg.protocol) if reply is None else objects_from_list(reply, cfg.protocol)
            named = {m.category for m in mentions}
            if cfg.chair_i_counts == "unique":
                counted = sorted(named)
            else:
                counted = [m.category for m in mentions]
            wrong = [c for c in counted if c not in gt]
            mentions_total += len(counted)
            hallucinated_total += len(wrong)
            with_hallucination += bool(wrong)
            naming += bool(mentions)
            recall_hits += len(named & gt)
            recall_total += len(gt)
            distinct_counts.append(len(named))
            records.append({
                "id": s.id,
                "image_id": s.fields["image_id"],
                "prompt": requests[len(records)].prompt,
                "caption": caption,
                **({"judge_reply": reply} if reply is not None else {}),
                "mentioned": [[m.words, m.category] for m in mentions],
                "ground_truth": sorted(gt),
                "hallucinated": sorted(set(wrong)),
                "recalled": sorted(named & gt),
            })
        metrics = {
            "recall": recall_hits / recall_total if recall_total else 0.0,
            "chair_s": protocol.chair_s(with_hallucination, len(samples), naming),
            "chair_i": hallucinated_total / mentions_total if mentions_total else 0.0,
            "objects_per_caption": mean(distinct_counts),
        }
        higher = {"recall": True, "chair_s": False, "chair_i": False, "objects_per_caption": True}
        details: dict[str, Any] = {
            "benchmark": self.name,
            "data": data_info,
            "prompt_template": cfg.prompt or "<each sample's question>",
            "example_prompt": requests[0].prompt,
            "decoding": decoding(cfg),
            "extraction": cfg.extraction,
            "protocol": protocol.describe(),
            "ground_truth": "instances + caption objects" if cfg.caption_objects else "instances",
            "chair_i_counts": cfg.chair_i_counts,
            "mentions": mentions_total,
            "hallucinated_mentions": hallucinated_total,
            "descriptions_with_hallucination": with_hallucination,
            "descriptions_naming_objects": naming,
            "ground_truth_objects": recall_total,
            "image_ids": [s.fields["image_id"] for s in samples],
            **sample_details(samples),
        }
        if client is not None:
            details["judge"] = {**client.details(self.rubric), "sees_image": False}
        assert tuple(metrics) == OBJECT_HALBENCH_METRICS
        return EvalResult(metrics=metrics, higher_is_better=higher, n=len(samples), records=records, details=details)


def make_object_halbench(config: ObjectHalBenchConfig) -> ObjectHalBenchEvaluator:
    """Factory of ``object-halbench`` (builds the judge when ``extraction="judge"``)."""
    judge = build_judge(config.judge, ObjectHalBenchEvaluator.name) if config.extraction == "judge" else None
    return ObjectHalBenchEvaluator(config, judge)
