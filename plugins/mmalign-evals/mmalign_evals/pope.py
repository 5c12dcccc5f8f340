"""POPE (Li et al. 2023): yes/no object-existence questions on COCO val2014.

Layouts read from ``data_dir`` (first match wins):

* the lmms-lab parquet release (``lmms-lab/POPE``): ``**/*.parquet`` with
  columns ``question_id``, ``question``, ``answer`` (yes/no), ``image``
  (``{"bytes", "path"}``), ``image_source`` and ``category`` (the split); in the
  ``Full`` configuration the split is the file name (``adversarial-*.parquet``);
* the original release: ``coco_pope_{random,popular,adversarial}.json`` (JSON
  lines ``{"question_id", "image", "text", "label"}``) with the COCO val2014
  images in ``image_dir`` (default ``<data_dir>/val2014``).

Sample ids are ``<split>/<question_id>``. Metrics: accuracy, precision,
recall, F1 (``yes`` is the positive class) and the share of ``yes`` answers
per split (``pope_<split>_<metric>``) and their means over the three splits
(``pope_<metric>``; pooled over the splits under ``lmms-eval``); ``pope_f1`` is
the paper's POPE column (as a fraction). How answers are read and scored is
the config's ``protocol`` (:mod:`mmalign_evals.pope_protocols`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

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
    missing_data,
    parquet_with,
    read_jsonl,
    read_parquet,
    render,
    sample_details,
    select,
)
from .config import POPE_METRICS, POPE_SPLIT_METRICS, POPE_SPLITS, PopeConfig
from .pope_protocols import DEFAULT_POPE_PROTOCOL, pope_protocol

FOLDER = "pope"
SOURCE = "https://huggingface.co/datasets/lmms-lab/POPE (parquet) or https://github.com/RUCAIBox/POPE (JSON + COCO val2014)"
LAYOUTS = (
    "lmms-lab/POPE parquet: <data_dir>/data/test-*.parquet (or any *.parquet below data_dir)",
    "original: <data_dir>/coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json "
    "+ COCO val2014 images in <data_dir>/val2014 (or config.image_dir)",
)
_SPLIT_IN_NAME = re.compile(r"(random|popular|adversarial)")


def _label(value: Any, where: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("yes", "no"):
        raise BenchmarkDataError(f"{where}: POPE answers must be 'yes' or 'no', got {value!r}")
    return text == "yes"


class PopeEvaluator:
    """POPE with a pinned prompt, greedy decoding and a named answer-reading protocol."""

    name = "pope"

    def __init__(self, config: PopeConfig):
        self.config = config

    # ------------------------------------------------------------------ data
    def root(self, ctx: Optional[Context]) -> Path:
        return data_root(self.config.data_dir, FOLDER, ctx)

    def locate(self, ctx: Optional[Context] = None) -> dict[str, Any]:
        """The files this evaluator will read (``BenchmarkDataError`` naming what is missing)."""
        root = self.root(ctx)
        parquet = parquet_with(root, ("question", "answer", "image"))
        if parquet:
            return {"layout": "lmms-lab parquet", "dir": str(root), "files": parquet}
        found = {}
        for split in POPE_SPLITS:
            files = find_files(root, [f"coco_pope_{split}.json", f"coco_pope_{split}.jsonl", f"**/*pope*{split}*.json", f"**/*pope*{split}*.jsonl"])
            if files:
                found[split] = files[0]
        if not found:
            raise missing_data(self.name, root, LAYOUTS, SOURCE)
        lacking = [s for s in POPE_SPLITS if s not in found]
        if lacking:
            raise missing_data(self.name, root, LAYOUTS, SOURCE, extra=f"Found {', '.join(p.name for p in found.values())} "
                               f"but no file for the split(s) {', '.join(lacking)} (coco_pope_<split>.json).")
        image_dir = Path(self.config.image_dir).expanduser() if self.config.image_dir else first_dir(root / "val2014", root / "images", root)
        if not image_dir.is_dir():
            raise missing_data(self.name, root, LAYOUTS, SOURCE, extra=f"The COCO val2014 image folder {image_dir} does not exist.")
        return {"layout": "original json", "dir": str(root), "files": [found[s] for s in POPE_SPLITS], "image_dir": image_dir}

    def load(self, ctx: Optional[Context] = None) -> tuple[list[Sample], dict[str, Any]]:
        """Every POPE question in the data, in file order (duplicates across files dropped)."""
        where = self.locate(ctx)
        samples: list[Sample] = []
        if where["layout"] == "lmms-lab parquet":
            for n, row in enumerate(read_parquet(where["files"])):
                v = row.values
                split = str(v.get("category") or "").strip().lower()
                if split not in POPE_SPLITS:
                    m = _SPLIT_IN_NAME.search(row.file.name.lower()) or _SPLIT_IN_NAME.search(str(row.file.parent).lower())
                    if m is None:
                        raise BenchmarkDataError(f"{row.file}: row {row._index} has no POPE split ('category' column or a split in the file name)")
                    split = m.group(1)
                for col in ("question", "answer"):
                    if col not in v:
                        raise BenchmarkDataError(f"{row.file}: no {col!r} column (is this the lmms-lab/POPE release?)")
                qid = v.get("question_id", v.get("id", n))
                samples.append(
                    Sample(
                        id=f"{split}/{qid}",
                        fields={"split": split, "question": str(v["question"]).strip(), "label": _label(v["answer"], str(row.file)),
                                "image_source": v.get("image_source")},
                        images=[CellImage(row, "image", what=f"{row.file.name} row {row._index}")],
                    )
                )
        else:
            for split, path in zip(POPE_SPLITS, where["files"]):
                for n, rec in enumerate(read_jsonl(path)):
                    try:
                        question, image = rec["text"], rec["image"]
                    except KeyError as exc:
                        raise BenchmarkDataError(f"{path}: line {n + 1} lacks {exc} (expected question_id, image, text, label)") from None
                    samples.append(
                        Sample(
                            id=f"{split}/{rec.get('question_id', n)}",
                            fields={"split": split, "question": str(question).strip(), "label": _label(rec.get("label"), str(path)),
                                    "image_source": image},
                            images=[image_ref(image, base=where["image_dir"], what=f"{path.name} line {n + 1}")],
                        )
                    )
        seen: set[str] = set()
        unique = []
        for s in samples:
            if s.id not in seen:
                seen.add(s.id)
                unique.append(s)
        info = {"layout": where["layout"], "dir": where["dir"], "files": [str(p) for p in where["files"]], "n_in_data": len(unique)}
        return unique, info

    # -------------------------------------------------------------- evaluate
    def evaluate(self, model: GenerativeModel, ctx: Optional[Context] = None) -> EvalResult:
        cfg = self.config
        ctx = ctx if ctx is not None else Context()
        everything, data_info = self.load(ctx)
        samples = select(everything, cfg, self.name, group=lambda s: s.fields["split"])
        lacking = [s for s in POPE_SPLITS if not any(x.fields["split"] == s for x in samples)]
        if lacking:
            raise BenchmarkDataError(f"{self.name}: no questions of the split(s) {', '.join(lacking)} left to evaluate "
                                     "(POPE reports all three; check the data and 'ids')")
        requests = [GenerationRequest(prompt=render(cfg.prompt, question=s.fields["question"]), images=s.images) for s in samples]
        answers = generate(model, requests, cfg, ctx, self.name)
        protocol, reference = pope_protocol(cfg.protocol), pope_protocol(DEFAULT_POPE_PROTOCOL)
        readings = [protocol.read(a) for a in answers]
        reference_readings = [reference.read(a) for a in answers]
        labels = [bool(s.fields["label"]) for s in samples]
        records: list[dict[str, Any]] = []
        for s, answer, reading, ref_reading in zip(samples, answers, readings, reference_readings):
            records.append({
                "id": s.id,
                "split": s.fields["split"],
                "question": s.fields["question"],
                "image": s.fields.get("image_source"),
                "answer": answer,
                "prediction": reading,
                "parsed": reading != "other",
                "label": "yes" if s.fields["label"] else "no",
                "correct": reading == ("yes" if s.fields["label"] else "no"),
                **({} if protocol.name == reference.name else {"reference_prediction": ref_reading}),
            })
        metrics: dict[str, float] = {}
        per_split: dict[str, int] = {}
        for split in POPE_SPLITS:
            idx = [i for i, s in enumerate(samples) if s.fields["split"] == split]
            values = protocol.metrics([labels[i] for i in idx], [readings[i] for i in idx])
            metrics.update({f"pope_{split}_{m}": values[m] for m in POPE_SPLIT_METRICS})
            per_split[split] = len(idx)
        if protocol.pooled:
            pooled = protocol.metrics(labels, readings)
            metrics.update({f"pope_{m}": pooled[m] for m in POPE_SPLIT_METRICS})
        else:
            for m in POPE_SPLIT_METRICS:
                metrics[f"pope_{m}"] = sum(metrics[f"pope_{s}_{m}"] for s in POPE_SPLITS) / len(POPE_SPLITS)
        metrics = {m: metrics[m] for m in POPE_METRICS}
        # The splits are balanced, so yes_ratio is ideally 0.5; it is read lower-is-better because the
        # failure it watches is the excess "yes" of a hallucinating model.
        higher = {m: not m.endswith("yes_ratio") for m in POPE_METRICS}
        details = {
            "benchmark": "pope",
            "data": data_info,
            "prompt_template": cfg.prompt,
            "example_prompt": requests[0].prompt,
            "decoding": decoding(cfg),
            "protocol": protocol.describe(),
            "unparsed_answers": sum(1 for r in readings if r == "other"),
            # Answers this protocol reads otherwise than the published one (0 for the published one itself).
            "read_differently_from_reference": sum(1 for r, q in zip(readings, reference_readings) if r != q),
            "reference_protocol": reference.name,
            "questions_per_split": per_split,
            **sample_details(samples),
        }
        return EvalResult(metrics=metrics, higher_is_better=higher, n=len(samples), records=records, details=details)


def make_pope(config: PopeConfig) -> PopeEvaluator:
    """Factory of ``pope``."""
    return PopeEvaluator(config)
