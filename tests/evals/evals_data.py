"""Fixture files in each benchmark's published layout, written into a test's ``tmp_path`` (a handful of items each).

Every helper writes what the benchmark's own release holds, with the items below, whose expected scores the
tests compute by hand."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Sequence

PALETTE = [(200, 30, 30), (30, 160, 60), (40, 70, 210), (220, 200, 40), (140, 60, 180), (20, 20, 20), (250, 250, 250)]


def png_bytes(index: int = 0, size: int = 12) -> bytes:
    """A small, distinct PNG per ``index``."""
    from PIL import Image

    image = Image.new("RGB", (size, size), PALETTE[index % len(PALETTE)])
    image.putpixel((index % size, (index // size) % size), (index * 37 % 256, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, index: int = 0, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(index, size))
    return path


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], image_columns: Sequence[str] = ("image",)) -> Path:
    """Rows as parquet, image columns as the Hugging Face image feature (struct of bytes and path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        columns[name] = pa.array(values, type=image_type) if name in image_columns else pa.array(values)
    pq.write_table(pa.table(columns), path)
    return path


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------- POPE
#: (split, object, label, scripted answer) -- per split a known confusion matrix.
POPE_ITEMS = [
    # random: tp=1 fn=1 fp=1 tn=1
    ("random", "dog", "yes", "Yes, there is a dog."),
    ("random", "cat", "yes", "No."),
    ("random", "car", "no", "yes"),
    ("random", "bus", "no", "There is not a bus in the image."),
    # popular: tp=2 fn=1 fp=1 tn=0
    ("popular", "chair", "yes", "Yes."),
    ("popular", "table", "yes", "Yes"),
    ("popular", "cup", "yes", "no"),
    ("popular", "fork", "no", "Yes, I see one."),
    # adversarial: tp=0 fn=1 fp=0 tn=3 (nothing predicted yes)
    ("adversarial", "person", "yes", "No, there is no person."),
    ("adversarial", "knife", "no", "No."),
    ("adversarial", "spoon", "no", "no"),
    ("adversarial", "bowl", "no", "No, it is not there."),
]


def pope_question(obj: str) -> str:
    return f"Is there a {obj} in the image?"


def pope_answers() -> dict[str, str]:
    """Question text -> the scripted model's answer."""
    return {pope_question(obj): answer for _, obj, _, answer in POPE_ITEMS}


def write_pope_parquet(root: Path, items: Sequence[tuple] = tuple(POPE_ITEMS)) -> Path:
    """lmms-lab/POPE layout: data/test-00000-of-00001.parquet with one row per question."""
    rows = []
    for n, (split, obj, label, _) in enumerate(items):
        rows.append({
            "id": str(n),
            "question_id": str(n % 4 + 1),  # question ids repeat across splits, as in the release
            "question": pope_question(obj),
            "answer": label,
            "image_source": f"COCO_val2014_{n:012d}",
            "image": {"bytes": png_bytes(n), "path": None},
            "category": split,
        })
    write_parquet(root / "data" / "test-00000-of-00001.parquet", rows)
    return root


def write_pope_json(root: Path, items: Sequence[tuple] = tuple(POPE_ITEMS)) -> Path:
    """The original POPE layout: coco_pope_<split>.json (JSON lines) + val2014 images."""
    for split in ("random", "popular", "adversarial"):
        rows = []
        for n, (s, obj, label, _) in enumerate(items):
            if s != split:
                continue
            name = f"COCO_val2014_{n:012d}.jpg"
            write_png(root / "val2014" / name, n)
            rows.append({"question_id": n + 1, "image": name, "text": pope_question(obj), "label": label})
        write_jsonl(root / f"coco_pope_{split}.json", rows)
    return root


# -------------------------------------------------------------------------------- MMHal
MMHAL_ITEMS = [
    # (question_type, question, gt_answer, model answer, judge reply)
    ("attribute", "What colour is the bus?", "The bus is red.", "The bus is red.", "Accurate and detailed.\nRating: 5"),
    ("counting", "How many dogs are there?", "Two dogs.", "There are five dogs and a cat.", "Hallucinated cat.\nRating: 2"),
    ("relation", "Where is the cup?", "On the table.", "The cup is on the table, next to a plate of food.", "**Rating: 6**"),
    ("other", "What is the man doing?", "Surfing.", "I cannot tell.", "The reply gives no score."),
]


def write_mmhal(root: Path) -> Path:
    """The original MMHal-Bench layout: response_template.json + images/<name from image_src>."""
    records = []
    for n, (qtype, question, gt, _, _) in enumerate(MMHAL_ITEMS):
        name = f"{n:04d}_image.jpg"
        write_png(root / "images" / name, n)
        records.append({
            "question_type": qtype, "question_topic": "topic", "image_id": f"img{n}",
            "image_src": f"https://example.org/openimages/{name}", "image_content": ["Bus", "Dog", "Table"],
            "question": question, "gt_answer": gt, "model_answer": "",
        })
    (root / "response_template.json").write_text(json.dumps(records, indent=1))
    return root


def mmhal_judge_replies() -> dict[str, str]:
    """Scripted-judge mapping: a model answer (inside the judging prompt) -> the judge's reply."""
    return {answer: reply for _, _, _, answer, reply in MMHAL_ITEMS}


# ----------------------------------------------------------------------------- LLaVA-W
LLAVA_W_ITEMS = [
    # (category, question, caption, gpt_answer, model answer, judge reply)
    ("conv", "What is on the plate?", "A plate of pasta.", "Pasta with tomato sauce.", "Some pasta.", "8 6\nThe first is more specific."),
    ("detail", "Describe the image.", "A beach at sunset.", "A sandy beach at sunset with gulls.", "A beach in the evening.", "7 7\nBoth fine."),
    ("complex", "Why is the man running?", "A man running after a bus.", "He is late for the bus.", "He exercises.", "9, 3\nWrong reason."),
]


def write_llava_w_parquet(root: Path) -> Path:
    rows = [
        {"question_id": n, "question": q, "image": {"bytes": png_bytes(n), "path": None}, "caption": cap,
         "gpt_answer": gpt, "category": cat}
        for n, (cat, q, cap, gpt, _, _) in enumerate(LLAVA_W_ITEMS)
    ]
    write_parquet(root / "data" / "train-00000-of-00001.parquet", rows)
    return root


def write_llava_w_original(root: Path) -> Path:
    questions, answers, contexts = [], [], []
    for n, (cat, q, cap, gpt, _, _) in enumerate(LLAVA_W_ITEMS):
        name = f"{n + 1:03d}.jpg"
        write_png(root / "images" / name, n)
        questions.append({"image": name, "text": q, "category": cat, "question_id": n})
        answers.append({"question_id": n, "prompt": q, "text": gpt, "answer_id": f"a{n}", "model_id": "gpt-4-0314", "metadata": {}})
        contexts.append({"id": f"c{n}", "image": name, "caption": cap})
    write_jsonl(root / "questions.jsonl", questions)
    write_jsonl(root / "answers_gpt4.jsonl", answers)
    write_jsonl(root / "context.jsonl", contexts)
    return root


# ------------------------------------------------------------------------------- MM-Vet
MMVET_ITEMS = [
    # (key, capabilities, question, answer, model answer, judge reply)
    ("v1_0", ["ocr", "math"], "What is the total?", "14", "The total is 14.", "1.0"),
    ("v1_1", ["rec"], "Which animals are shown?", "cat <AND> dog", "A cat.", "0.5"),
    ("v1_2", ["rec", "know"], "Who painted this?", "Van Gogh <OR> Vincent van Gogh", "Monet.", "0.0"),
]


def write_mmvet(root: Path) -> Path:
    data = {}
    for n, (key, caps, q, a, _, _) in enumerate(MMVET_ITEMS):
        write_png(root / "images" / f"{key}.png", n)
        data[key] = {"imagename": f"{key}.png", "capability": caps, "question": q, "answer": a}
    (root / "mm-vet.json").write_text(json.dumps(data))
    return root


# ----------------------------------------------------------------------------------- VQA
TEXTVQA_ITEMS = [
    # (question, ten answers, model answer, expected VQA accuracy, expected exact match)
    ("What does the sign say?", ["stop"] * 3 + ["stop sign"] * 7, "Stop.", 0.9, 1.0),
    ("What brand is the can?", ["coca cola"] + ["coke"] * 9, "Coca-Cola", 0.3, 1.0),
    ("How many people are there?", ["2"] * 4 + ["two"] * 2 + ["3"] * 4, "two", 1.0, 1.0),
    ("What animal is this?", ["dog"] * 10, "the dog", 1.0, 1.0),
    ("What colour is the car?", ["red"] * 10, "blue", 0.0, 0.0),
]


def write_textvqa(root: Path) -> Path:
    """The original TextVQA layout: TextVQA_0.5.1_val.json + train_images/<image_id>.jpg."""
    data = []
    for n, (q, answers, _, _, _) in enumerate(TEXTVQA_ITEMS):
        image_id = f"{n:016x}"
        write_png(root / "train_images" / f"{image_id}.jpg", n)
        data.append({"question": q, "image_id": image_id, "image_classes": [], "answers": answers, "question_tokens": q.split(),
                     "question_id": 34602 + n, "set_name": "val"})
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "dataset_type": "val",
                                                           "dataset_version": "0.5.1", "data": data}))
    return root


def write_textvqa_parquet(root: Path) -> Path:
    rows = [{"image_id": f"{n:016x}", "question_id": 34602 + n, "question": q, "answers": answers,
             "image": {"bytes": png_bytes(n), "path": None}, "set_name": "val"}
            for n, (q, answers, _, _, _) in enumerate(TEXTVQA_ITEMS)]
    write_parquet(root / "data" / "validation-00000-of-00001.parquet", rows)
    # A train shard of the same release, which the default split must not read.
    write_parquet(root / "data" / "train-00000-of-00001.parquet", [dict(rows[0], question_id=1)])
    return root


GQA_ITEMS = [
    # (question id, image id, question, answer, model answer, exact match under lower-punct)
    ("201307251", "n161313", "Is it overcast?", "no", "No.", 1.0),
    ("201640614", "n235859", "Which side is the cup on?", "left", "left side", 0.0),
    ("202225914", "n161313", "What colour is the bag?", "blue", "Blue", 1.0),
]


def write_gqa(root: Path) -> Path:
    """The original GQA layout: testdev_balanced_questions.json + images/<imageId>.jpg."""
    data = {}
    for n, (qid, image_id, q, a, _, _) in enumerate(GQA_ITEMS):
        write_png(root / "images" / f"{image_id}.jpg", n)
        data[qid] = {"imageId": image_id, "question": q, "answer": a, "fullAnswer": a, "isBalanced": True}
    (root / "testdev_balanced_questions.json").write_text(json.dumps(data))
    return root


def write_gqa_parquet(root: Path) -> Path:
    """lmms-lab/GQA layout: testdev_balanced_instructions/ and testdev_balanced_images/ parquet shards."""
    rows = [{"id": qid, "imageId": image_id, "question": q, "answer": a, "fullAnswer": a, "isBalanced": True}
            for qid, image_id, q, a, _, _ in GQA_ITEMS]
    write_parquet(root / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", rows, image_columns=())
    images = {image_id: n for n, (_, image_id, _, _, _, _) in enumerate(GQA_ITEMS)}
    write_parquet(root / "testdev_balanced_images" / "testdev-00000-of-00001.parquet",
                  [{"id": image_id, "image": {"bytes": png_bytes(n), "path": None}} for image_id, n in images.items()])
    return root


# ------------------------------------------------------------------------ Object HalBench
#: (image_id, instance categories, reference captions, model description)
OBJHAL_ITEMS = [
    (101, ["dog", "person"], ["A man with a dog on a couch."], "A woman and her puppy sit next to a cat."),
    (202, ["car", "bus"], ["A street with cars and a bus."], "Two cars and a car near a traffic light."),
    (303, ["pizza"], ["A pizza on a dining table."], "A pizza."),
]
COCO_CATEGORY_IDS = {"person": 1, "car": 3, "bus": 6, "dog": 18, "cat": 17, "pizza": 59, "couch": 63, "dining table": 67,
                     "traffic light": 10}


def write_object_halbench(root: Path, embed_images: bool = True) -> Path:
    """obj_halbench_300_with_image.jsonl (base64 images) + annotations/instances_val2014.json and captions_val2014.json."""
    lines, images, instances, captions = [], [], [], []
    for n, (image_id, cats, caps, _) in enumerate(OBJHAL_ITEMS):
        line = {"image_id": image_id, "question": "Describe this image in detail.", "org_idx": n}
        if embed_images:
            line["image"] = base64.b64encode(png_bytes(n, size=40)).decode()
        else:
            write_png(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", n, size=40)
        lines.append(line)
        images.append({"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg"})
        for k, cat in enumerate(cats):
            instances.append({"id": image_id * 10 + k, "image_id": image_id, "category_id": COCO_CATEGORY_IDS[cat]})
        for k, cap in enumerate(caps):
            captions.append({"id": image_id * 10 + k, "image_id": image_id, "caption": cap})
    write_jsonl(root / "obj_halbench_300_with_image.jsonl", lines)
    categories = [{"id": i, "name": name, "supercategory": "x"} for name, i in COCO_CATEGORY_IDS.items()]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps({"images": images, "annotations": instances, "categories": categories}))
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": captions}))
    return root


def objhal_descriptions() -> dict[int, str]:
    return {image_id: desc for image_id, _, _, desc in OBJHAL_ITEMS}


def scripted_judge(replies: dict[str, str], default: str = "", **kw: Any) -> dict[str, Any]:
    """A judge reference to ``scripted-judge`` as an evaluator config takes it."""
    return {"name": "scripted-judge", "config": {"replies": replies, "default": default, **kw}}
