"""Short-answer VQA: TextVQA (VQA accuracy) and GQA (exact match), plus a generic JSONL layout.

Layouts (``benchmark``):

* ``textvqa``: the lmms-lab parquet release (``lmms-lab/textvqa``:
  ``data/validation-*.parquet`` with ``question_id``, ``question``, ``answers``
  (10 strings), ``image``); or the original ``TextVQA_0.5.1_val.json`` with the
  images in ``<data_dir>/train_images/<image_id>.jpg``.
* ``gqa``: the lmms-lab parquet release (``lmms-lab/GQA``: the
  ``testdev_balanced_instructions`` questions and ``testdev_balanced_images``
  images); or the original ``testdev_balanced_questions.json`` with the images
  in ``<data_dir>/images/<imageId>.jpg``.
* ``jsonl``: ``<data_dir>/questions.jsonl`` with ``question_id``, ``image``
  (a file in ``<data_dir>/images``), ``question`` and ``answers`` (list) or
  ``answer``.

``vqa_accuracy`` is the benchmark's score -- VQA accuracy (TextVQA, jsonl) or
exact match (GQA) -- and ``vqa_exact_match`` is exact match against any
reference answer, both as the config's ``protocol`` computes them
(:mod:`mmalign_evals.vqa_protocols`; by default the benchmark's published
script). Both are fractions.
"""
from __future__ import annotations

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
    mean,
    missing_data,
    parquet_columns,
    parquet_with,
    read_json,
    read_jsonl,
    read_parquet,
    render,
    sample_details,
    select,
)
from .config import VQA_METRICS, VQAConfig
from .vqa_protocols import vqa_protocol

FOLDERS = {"textvqa": "textvqa", "gqa": "gqa", "jsonl": "vqa"}
SOURCES = {
    "textvqa": "https://huggingface.co/datasets/lmms-lab/textvqa (parquet) or https://textvqa.org/dataset (TextVQA_0.5.1_val.json + train_val_images)",
    "gqa": "https://huggingface.co/datasets/lmms-lab/GQA (testdev_balanced_instructions + testdev_balanced_images) or https://cs.stanford.edu/people/dorarad/gqa/download.html",
    "jsonl": "your own export",
}
LAYOUTS = {
    "textvqa": (
        "lmms-lab parquet: <data_dir>/data/validation-*.parquet (question_id, question, answers, image)",
        "original: <data_dir>/TextVQA_0.5.1_val.json + images in <data_dir>/train_images/<image_id>.jpg",
    ),
    "gqa": (
        "lmms-lab parquet: <data_dir>/testdev_balanced_instructions/*.parquet + <data_dir>/testdev_balanced_images/*.parquet",
        "original: <data_dir>/testdev_balanced_questions.json + images in <data_dir>/images/<imageId>.jpg",
    ),
    "jsonl": ("<data_dir>/questions.jsonl (question_id, image, question, answers or answer) + images in <data_dir>/images/",),
}
DEFAULT_SPLITS = {"textvqa": ("validation", "val"), "gqa": ("testdev",), "jsonl": ()}


def _for_split(files: list[Path], splits: tuple[str, ...]) -> list[Path]:
    """The files whose path names one of ``splits`` (all of them when none does)."""
    if not splits:
        return files
    chosen = [f for f in files if any(s in part.lower() for s in splits for part in (f.name, f.parent.name))]
    return chosen or files


def _prefer(files: list[Path], word: str) -> list[Path]:
    """The files whose folder or name contains ``word`` (all of them when none does)."""
    chosen = [f for f in files if word in f.parent.name.lower() or word in f.name.lower()]
    return chosen or files


class VQAEvaluator:
    """Short-answer VQA with the standard answer normalisation."""

    name = "vqa"

    def __init__(self, config: VQAConfig):
        self.config = config
        b = config.benchmark
        self.protocol = vqa_protocol(config.protocol, b)
        self.splits = (config.split.lower(),) if config.split else DEFAULT_SPLITS[b]

    def root(self, ctx: Optional[Context]) -> Path:
        return data_root(self.config.data_dir, FOLDERS[self.config.benchmark], ctx)

    def _missing(self, root: Path, extra: str = "") -> BenchmarkDataError:
        b = self.config.benchmark
        return missing_data(f"{self.name} ({b})", root, LAYOUTS[b], SOURCES[b], extra)

    def locate(self, ctx: Optional[Context] = None) -> dict[str, Any]:
        cfg, root = self.config, self.root(ctx)
        image_dir = Path(cfg.image_dir).expanduser() if cfg.image_dir else None
        if cfg.benchmark == "textvqa":
            parquet = parquet_with(root, ("question", "answers", "image"))
            if parquet:
                return {"layout": "lmms-lab parquet", "dir": str(root), "files": _for_split(parquet, self.splits)}
            found = find_files(root, ["TextVQA_*_val.json", "**/TextVQA_*_val.json", "TextVQA_*.json", "**/TextVQA_*.json"])
            if found:
                return {"layout": "original json", "dir": str(root), "files": found[:1],
                        "image_dir": image_dir or first_dir(root / "train_images", root / "train_val_images" / "train_images", root / "images")}
        elif cfg.benchmark == "gqa":
            parquet = find_files(root, ["*.parquet", "**/*.parquet"])
            if parquet:
                questions, images = [], []
                for f in parquet:
                    names = parquet_columns(f)
                    if "imageId" in names and "question" in names:
                        questions.append(f)
                    elif "image" in names and "id" in names:
                        images.append(f)
                questions, images = _for_split(questions, self.splits), _for_split(images, self.splits)
                # The release also has *_all_* configurations; the benchmark is the balanced one.
                questions, images = _prefer(questions, "balanced"), _prefer(images, "balanced")
                if questions and images:
                    return {"layout": "lmms-lab parquet", "dir": str(root), "files": questions, "image_files": images}
                if questions or images:
                    raise self._missing(root, extra="Found only the " + ("questions" if questions else "images") + " of the lmms-lab release.")
            found = find_files(root, ["testdev_balanced_questions.json", "**/testdev_balanced_questions.json", "*_questions.json"])
            if found:
                return {"layout": "original json", "dir": str(root), "files": found[:1], "image_dir": image_dir or first_dir(root / "images", root)}
        else:
            found = find_files(root, ["questions.jsonl", "**/questions.jsonl"])
            if found:
                return {"layout": "jsonl", "dir": str(root), "files": found[:1], "image_dir": image_dir or first_dir(root / "images", root)}
        raise self._missing(root)

    def load(self, ctx: Optional[Context] = None) -> tuple[list[Sample], dict[str, Any]]:
        where = self.locate(ctx)
        b, layout = self.config.benchmark, where["layout"]
        samples: list[Sample] = []
        if b == "textvqa" and layout == "lmms-lab parquet":
            for i, row in enumerate(read_parquet(where["files"])):
                v = row.values
                if "question" not in v or "answers" not in v:
                    raise BenchmarkDataError(f"{row.file}: needs 'question' and 'answers' columns (is this lmms-lab/textvqa?)")
                samples.append(Sample(str(v.get("question_id", i)), {"question": str(v["question"]), "answers": list(v["answers"] or [])},
                                      [CellImage(row, "image")]))
        elif b == "textvqa":
            path = where["files"][0]
            data = read_json(path)
            for rec in data.get("data", []) if isinstance(data, dict) else data:
                samples.append(Sample(str(rec["question_id"]), {"question": str(rec["question"]), "answers": list(rec.get("answers") or [])},
                                      [image_ref(f"{rec['image_id']}.jpg", base=where["image_dir"], what=f"{path.name} {rec['question_id']}")]))
        elif b == "gqa" and layout == "lmms-lab parquet":
            images = {str(row.values["id"]): row for row in read_parquet(where["image_files"])}
            for i, row in enumerate(read_parquet(where["files"])):
                v = row.values
                image_id = str(v["imageId"])
                if image_id not in images:
                    raise BenchmarkDataError(f"{row.file}: question {v.get('id', i)} shows image {image_id}, which no image file holds")
                samples.append(Sample(str(v.get("id", i)), {"question": str(v["question"]), "answers": [str(v["answer"])], "image_id": image_id},
                                      [CellImage(images[image_id], "image")]))
        elif b == "gqa":
            path = where["files"][0]
            data = read_json(path)
            if not isinstance(data, dict):
                raise BenchmarkDataError(f"{path}: expected a JSON object keyed by question id")
            for qid, rec in data.items():
                samples.append(Sample(str(qid), {"question": str(rec["question"]), "answers": [str(rec["answer"])], "image_id": rec["imageId"]},
                                      [image_ref(f"{rec['imageId']}.jpg", base=where["image_dir"], what=f"{path.name} {qid}")]))
        else:
            path = where["files"][0]
            for n, rec in enumerate(read_jsonl(path)):
                answers = rec.get("answers")
                if answers is None:
                    answers = [rec["answer"]] if "answer" in rec else []
                if not answers:
                    raise BenchmarkDataError(f"{path}: line {n + 1} has neither 'answers' nor 'answer'")
                samples.append(Sample(str(rec.get("question_id", n)), {"question": str(rec["question"]), "answers": [str(a) for a in answers]},
                                      [image_ref(str(rec["image"]), base=where["image_dir"], what=f"{path.name} line {n + 1}")]))
        info = {"layout": layout, "dir": where["dir"], "files": [str(p) for p in where["files"]], "n_in_data": len(samples)}
        return samples, info

    def evaluate(self, model: GenerativeModel, ctx: Optional[Context] = None) -> EvalResult:
        cfg = self.config
        ctx = ctx if ctx is not None else Context()
        everything, data_info = self.load(ctx)
        samples = select(everything, cfg, self.name)
        requests = [GenerationRequest(prompt=render(cfg.prompt, question=s.fields["question"]), images=s.images) for s in samples]
        answers = generate(model, requests, cfg, ctx, f"{self.name} ({cfg.benchmark})")
        records, acc, em = [], [], []
        for s, answer in zip(samples, answers):
            refs = s.fields["answers"]
            e = self.protocol.exact_match(answer, refs)
            a = self.protocol.accuracy(answer, refs)
            acc.append(a)
            em.append(e)
            records.append({"id": s.id, "question": s.fields["question"], "answer": answer, "references": refs,
                            "accuracy": a, "exact_match": e})
        metrics = {"vqa_accuracy": mean(acc), "vqa_exact_match": mean(em)}
        details = {
            "benchmark": cfg.benchmark,
            "data": data_info,
            "protocol": self.protocol.describe(),
            "scoring": self.protocol.scoring,
            "normalize": self.protocol.normalize,
            "prompt_template": cfg.prompt,
            "example_prompt": requests[0].prompt,
            "decoding": decoding(cfg),
            **sample_details(samples),
        }
        return EvalResult(metrics=metrics, higher_is_better={m: True for m in VQA_METRICS}, n=len(samples), records=records, details=details)


def make_vqa(config: VQAConfig) -> VQAEvaluator:
    """Factory of ``vqa``."""
    return VQAEvaluator(config)
