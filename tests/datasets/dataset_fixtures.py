"""Writers of small fixture files in the exact published schemas (generated per test from tiny PIL images).

Schemas (see docs/datasets.md and the method spec, sections 5 and 11):

* RLAIF-V parquet: ds_name, image {bytes, path}, question, chosen, rejected, origin_dataset, origin_split, idx (str), image_path;
* RLHF-V parquet: ds_name, image {bytes, path}, text (JSON: question, chosen, rejected), origin_dataset, origin_split, idx (int64), image_path;
* POVID JSON list: id, image (./data/coco/... path), conversations, rejected_conversations;
* VLFeedback JSONL: id, prompt, img_path, models, completions [{annotations: {aspect: {Rating: str, Rationale}}, model, response}];
* LLaVA-Human-Preference JSON list: id, image, conversations, output_1, output_2, preference, hallucination;
* HA-DPO desc_data.json: {image_id: {chosen: [...], rejected: [...]}} over Visual Genome VG_100K/{id}.jpg.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from mmalign_core.testing import make_image

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

RLAIF_V_SCHEMA = pa.schema(
    [
        ("ds_name", pa.string()),
        ("image", IMAGE),
        ("question", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("origin_dataset", pa.string()),
        ("origin_split", pa.string()),
        ("idx", pa.string()),
        ("image_path", pa.string()),
    ]
)

RLHF_V_SCHEMA = pa.schema(
    [
        ("ds_name", pa.string()),
        ("image", IMAGE),
        ("text", pa.string()),
        ("origin_dataset", pa.string()),
        ("origin_split", pa.string()),
        ("idx", pa.int64()),
        ("image_path", pa.string()),
    ]
)


def image_bytes(i: int, fmt: str = "PNG", size: int = 16) -> bytes:
    buf = io.BytesIO()
    make_image(i, size).save(buf, format=fmt)
    return buf.getvalue()


def save_image(path: Path, i: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(i).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], schema: pa.Schema, row_group_size: Optional[int] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), str(path), row_group_size=row_group_size)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ RLAIF-V
def rlaif_row(i: int, **over: Any) -> dict[str, Any]:
    row = {
        "ds_name": "RLAIF-V",
        "image": {"bytes": image_bytes(i), "path": f"{i}.png"},
        "question": f"What colour is square {i}?",
        "chosen": f"The square {i} is colour {i}.",
        "rejected": f"The square {i} is colour {i + 1}.",
        "origin_dataset": "OKVQA",
        "origin_split": json.dumps({"model": "OmniLMM-12B", "feedback_model": "OmniLMM-12B", "type": "question_answering"}),
        "idx": f"OKVQA_{i}",
        "image_path": f"okvqa/{i}.png",
    }
    row.update(over)
    return row


def rlaif_v_file(path: Path, n: int = 6, bad: bool = True) -> Path:
    """``n`` good rows, plus (``bad``) four malformed ones: undecodable image, no image bytes, empty chosen, chosen == rejected."""
    rows = [rlaif_row(i) for i in range(n)]
    if bad:
        rows.append(rlaif_row(100, image={"bytes": b"not an image", "path": "broken.png"}))
        rows.append(rlaif_row(101, image={"bytes": None, "path": "nowhere/missing.png"}))
        rows.append(rlaif_row(102, chosen="  "))
        rows.append(rlaif_row(103, rejected="The square 103 is colour 103."))
    return write_parquet(path, rows, RLAIF_V_SCHEMA)


# ------------------------------------------------------------------------------- RLHF-V
def rlhf_row(i: int, text: Optional[str] = None, **over: Any) -> dict[str, Any]:
    if text is None:
        text = json.dumps({"question": f"<image>\nDescribe picture {i}.", "chosen": f"A square, number {i}.", "rejected": f"A circle, number {i}."})
    row = {
        "ds_name": "RLHF-V",
        "image": {"bytes": image_bytes(i, "JPEG"), "path": f"rlhf/{i}.jpg"},
        "text": text,
        "origin_dataset": "UniMM-Chat",
        "origin_split": json.dumps({"model": "Muffin", "type": "detailed_description"}),
        "idx": i,
        "image_path": f"rlhf/{i}.jpg",
    }
    row.update(over)
    return row


def rlhf_v_file(path: Path, n: int = 5) -> Path:
    rows = [rlhf_row(i) for i in range(n)]
    rows.append(rlhf_row(50, text='{"question": "broken", "chosen": '))  # malformed JSON
    rows.append(rlhf_row(51, text=json.dumps({"question": "Q?", "chosen": "yes"})))  # no rejected
    rows.append(rlhf_row(52, text=json.dumps(["not", "an", "object"])))
    return write_parquet(path, rows, RLHF_V_SCHEMA)


# -------------------------------------------------------------------------------- POVID
def povid_record(i: int, turns: int = 1, image: Optional[str] = None, **over: Any) -> dict[str, Any]:
    image_id = f"COCO_train2014_{i:012d}"
    conv, rej = [], []
    for t in range(turns):
        q = f"<image>\nWhat is in picture {i}?" if t == 0 else f"And what else, part {t}?"
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": f"True answer {i}.{t}."}]
        rej += [{"from": "human", "value": q}, {"from": "gpt", "value": f"Hallucinated answer {i}.{t}."}]
    record = {"id": image_id, "image": image or f"./data/coco/{image_id}.jpg", "conversations": conv, "rejected_conversations": rej}
    record.update(over)
    return record


def povid_files(root: Path) -> tuple[Path, Path]:
    """(json file, COCO image root). Image 0 sits at the path as given under the root; the others only by file name."""
    coco = root / "coco"
    records = [povid_record(0), povid_record(1), povid_record(2, turns=2), povid_record(3)]
    save_image(coco / "data" / "coco" / "COCO_train2014_000000000000.jpg", 0)
    for i in (1, 2, 3):
        save_image(coco / f"COCO_train2014_{i:012d}.jpg", i)
    records.append(povid_record(4))  # its image does not exist
    records.append(povid_record(5, conversations=None))  # malformed: no conversations
    bad = povid_record(6)
    bad["rejected_conversations"][1]["value"] = bad["conversations"][1]["value"]  # y- == y+
    records.append(bad)
    save_image(coco / "COCO_train2014_000000000005.jpg", 5)
    save_image(coco / "COCO_train2014_000000000006.jpg", 6)
    return write_json(root / "POVID_preference_data_for_VLLMs_version_1.json", records), coco


# --------------------------------------------------------------------------- VLFeedback
ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")


def completion(model: str, response: str, ratings: Sequence[str]) -> dict[str, Any]:
    return {
        "annotations": {a: {"Rating": r, "Rationale": f"{a} rationale"} for a, r in zip(ASPECTS, ratings)},
        "model": model,
        "response": response,
    }


def vlf_record(rid: str, ratings: Sequence[Sequence[str]], img_path: Optional[str] = None) -> dict[str, Any]:
    models = ["gpt-4v", "llava-v1.5-13b", "qwen-vl-chat", "instructblip-vicuna-7b"][: len(ratings)]
    return {
        "id": rid,
        "prompt": f"<image>\nWhat happens in scene {rid}?",
        "img_path": img_path,
        "models": models,
        "completions": [completion(m, f"Answer of {m} to {rid}.", r) for m, r in zip(models, ratings)],
    }


def vlfeedback_files(root: Path) -> tuple[Path, Path]:
    """(jsonl, image root). Ratings are strings; some are not numbers."""
    images = root / "images"
    records = [
        # means 5, 3, 1, 4 -> best gpt-4v, worst qwen; all-ordered: 6 pairs
        vlf_record("svit-1", [["5", "5", "5"], ["3", "3", "3"], ["1", "1", "1"], ["4", "4", "4"]]),
        # a non-numeric rating leaves one completion out; means 2, (N/A), 4, 4
        vlf_record("svit-2", [["2", "2", "2"], ["N/A", "4", "4"], ["4", "4", "4"], ["4", "4", "4"]]),
        # all tie
        vlf_record("svit-3", [["3", "3", "3"], ["3", "3", "3"], ["3", "3", "3"], ["3", "3", "3"]]),
        # only one parsable completion
        vlf_record("svit-4", [["5", "5", "5"], ["x", "1", "1"], ["", "1", "1"], ["n/a", "1", "1"]]),
        # image missing
        vlf_record("svit-5", [["5", "5", "5"], ["1", "1", "1"]]),
        # image under the img_path name, helpfulness favours the other model
        vlf_record("llava-6", [["2", "5", "5"], ["4", "1", "1"]], img_path="llava/llava-6.png"),
    ]
    for rid in ("svit-1", "svit-2", "svit-3", "svit-4"):
        save_image(images / "merged_images" / f"{rid}.jpg", int(rid[-1]))
    save_image(images / "llava" / "llava-6.png", 6)
    lines: list[Any] = list(records)
    lines.insert(3, '{"id": "broken", "prompt": ')  # a line that is not JSON
    return write_jsonl(root / "vlfeedback_80k.jsonl", lines), images


def as_dict_of_lists(record: dict[str, Any]) -> dict[str, Any]:
    """``completions`` as ``datasets`` features produce it (a dict of lists)."""
    comps = record["completions"]
    out = dict(record)
    out["completions"] = {k: [c[k] for c in comps] for k in ("annotations", "model", "response")}
    return out


# --------------------------------------------------------------------------- LLaVA-RLHF
def llava_rlhf_record(i: int, preference: Any = 1, **over: Any) -> dict[str, Any]:
    record = {
        "id": f"{i:012d}",
        "image": f"{i:012d}.jpg",
        "conversations": [
            {"from": "human", "value": f"<image>\nWhat is shown in image {i}?"},
            {"from": "gpt", "value": "(replaced by each output)"},
        ],
        "output_1": {"from": "llava", "value": f"First answer about {i}."},
        "output_2": {"from": "llava", "value": f"Second answer about {i}."},
        "preference": preference,
        "hallucination": i % 2 == 0,
    }
    record.update(over)
    return record


def llava_rlhf_files(root: Path) -> tuple[Path, Path]:
    coco = root / "train2017"
    records = [llava_rlhf_record(0, 1), llava_rlhf_record(1, 2), llava_rlhf_record(2, "2")]
    records.append(llava_rlhf_record(3, 3))  # preference out of range
    records.append(llava_rlhf_record(4, 1))  # no image file
    multi = llava_rlhf_record(5, 1)
    multi["conversations"] = [
        {"from": "human", "value": "<image>\nFirst question?"},
        {"from": "gpt", "value": "First reply."},
        {"from": "human", "value": "Follow-up question about 5?"},
        {"from": "gpt", "value": "(replaced)"},
    ]
    records.append(multi)
    for i in (0, 1, 2, 3, 5):
        save_image(coco / f"{i:012d}.jpg", i)
    return write_json(root / "llava_7b_v1_preference.json", records), coco


# -------------------------------------------------------------------------------- HA-DPO
def hadpo_files(root: Path) -> tuple[Path, Path]:
    """The release layout hadpo/llava-v1.5/desc_data.json and a Visual Genome folder."""
    vg = root / "VG"
    data = {
        "101": {"chosen": ["A red square on grey.", "A grey picture with a red square."], "rejected": ["A red circle.", "A blue square.", "Two squares."]},
        "102": {"chosen": ["A green square."], "rejected": ["A green dog."]},
        "103": {"chosen": ["Nothing to compare."], "rejected": []},
        "104": {"chosen": ["An image that is not there."], "rejected": ["A wrong description."]},
    }
    save_image(vg / "VG_100K" / "101.jpg", 1)
    save_image(vg / "VG_100K_2" / "102.jpg", 2)
    save_image(vg / "VG_100K" / "103.jpg", 3)
    return write_json(root / "hadpo" / "llava-v1.5" / "desc_data.json", data), vg
