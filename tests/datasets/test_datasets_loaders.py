"""Each loader on fixture files in its published schema: the pairs, the skip counts, the messages, the contract."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_fixtures import (
    RLAIF_V_SCHEMA,
    as_dict_of_lists,
    hadpo_files,
    llava_rlhf_files,
    povid_files,
    povid_record,
    rlaif_row,
    rlaif_v_file,
    rlhf_v_file,
    save_image,
    vlf_record,
    vlfeedback_files,
    write_json,
    write_jsonl,
    write_parquet,
)
from mmalign_core.testing import check_source
from mmalign_datasets.errors import DataError
from mmalign_datasets.store import PairSequence


# ------------------------------------------------------------------------------ RLAIF-V
def test_rlaif_v_pairs_and_skips(tmp_path: Path, build) -> None:
    source, pairs = build("rlaif-v", path=str(rlaif_v_file(tmp_path / "RLAIF-V-Dataset_000.parquet")))
    assert [p.id for p in pairs] == [f"rlaif-v/{i}:OKVQA_{i}" for i in range(6)]
    p = pairs[2]
    assert (p.prompt, p.chosen, p.rejected) == ("What colour is square 2?", "The square 2 is colour 2.", "The square 2 is colour 3.")
    assert p.source == "rlaif-v" and p.rejected_images is None and p.extra_rejected == []
    assert p.meta["origin_dataset"] == "OKVQA" and p.meta["idx"] == "OKVQA_2" and p.meta["n_images"] == 1
    assert p.meta["file"] == "RLAIF-V-Dataset_000.parquet" and p.meta["row"] == 2
    assert p.meta["image_sizes"] == [[16, 16]]  # from the header read while indexing
    assert len(p.images) == 1 and p.images[0].load().size == (16, 16)
    stats = source.stats()
    assert stats["skipped"] == {"bad_image": 1, "missing_image": 1, "empty_response": 1, "identical": 1}
    assert stats["records"] == 10 and stats["pairs_available"] == 6 and stats["pairs"] == 6
    assert stats["files"][0]["file"] == "RLAIF-V-Dataset_000.parquet" and len(stats["files"][0]["sha256_head_tail"]) == 64
    examples = source.skip_examples()
    assert examples["bad_image"][0]["where"] == "RLAIF-V-Dataset_000.parquet row 6"
    assert "does not decode" in examples["bad_image"][0]["detail"]
    assert "nowhere/missing.png" in examples["missing_image"][0]["detail"]


def test_rlaif_v_reads_a_folder_of_shards_and_picks_the_split(tmp_path: Path, build) -> None:
    folder = tmp_path / "RLAIF-V-Dataset"
    write_parquet(folder / "data" / "train-00000-of-00002.parquet", [rlaif_row(i) for i in range(3)], RLAIF_V_SCHEMA)
    write_parquet(folder / "data" / "train-00001-of-00002.parquet", [rlaif_row(i) for i in range(3, 5)], RLAIF_V_SCHEMA, row_group_size=1)
    write_parquet(folder / "data" / "test-00000-of-00001.parquet", [rlaif_row(9)], RLAIF_V_SCHEMA)
    source, pairs = build("rlaif-v", path=str(folder))
    assert [p.meta["idx"] for p in pairs] == [f"OKVQA_{i}" for i in range(5)]
    assert [f["file"] for f in source.stats()["files"]] == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    _, test_pairs = build("rlaif-v", path=str(folder), split="test")
    assert [p.meta["idx"] for p in test_pairs] == ["OKVQA_9"]


def test_rlaif_v_on_error_fail_names_file_and_row(tmp_path: Path, entry, ctx) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"rlaif-v: r\.parquet row 6: bad_image: the embedded image \(12 bytes\) does not decode"):
        entry("rlaif-v").build({"path": str(path), "on_error": "fail"}).pairs(ctx)
    # a clean file passes under 'fail'
    clean = rlaif_v_file(tmp_path / "clean.parquet", bad=False)
    assert len(entry("rlaif-v").build({"path": str(clean), "on_error": "fail"}).pairs(ctx)) == 6


def test_rlaif_v_contract(tmp_path: Path, entry) -> None:
    check_source(entry("rlaif-v"), {"path": str(rlaif_v_file(tmp_path / "r.parquet"))})


# ------------------------------------------------------------------------------- RLHF-V
def test_rlhf_v_parses_the_text_column(tmp_path: Path, build) -> None:
    source, pairs = build("rlhf-v", path=str(rlhf_v_file(tmp_path / "RLHF-V-Dataset.parquet")))
    assert len(pairs) == 5
    p = pairs[3]
    assert p.id == "rlhf-v/3:3"
    assert (p.prompt, p.chosen, p.rejected) == ("Describe picture 3.", "A square, number 3.", "A circle, number 3.")
    assert p.meta["image_placeholders"] == 1 and p.meta["idx"] == 3 and p.meta["ds_name"] == "RLHF-V"
    assert p.images[0].load().mode == "RGB"
    assert source.stats()["skipped"] == {"bad_json": 2, "missing_field": 1}
    details = {e["detail"] for e in source.skip_examples()["bad_json"]}
    assert any("`text` is not valid JSON" in d for d in details) and any("not an object" in d for d in details)
    assert "lacks rejected" in source.skip_examples()["missing_field"][0]["detail"]


def test_rlhf_v_contract(tmp_path: Path, entry) -> None:
    check_source(entry("rlhf-v"), {"path": str(rlhf_v_file(tmp_path / "RLHF-V-Dataset.parquet"))})


# -------------------------------------------------------------------------------- POVID
def test_povid_resolves_coco_paths_and_skips(tmp_path: Path, build) -> None:
    path, coco = povid_files(tmp_path)
    source, pairs = build("povid", path=str(path), image_root=str(coco))
    assert [p.id for p in pairs] == [f"povid/{i}:COCO_train2014_{i:012d}" for i in range(4)]
    first = pairs[0]
    assert (first.prompt, first.chosen, first.rejected) == ("What is in picture 0?", "True answer 0.0.", "Hallucinated answer 0.0.")
    # image 0 found at the path as given under the root, image 1 by its file name
    assert first.images[0].key == f"path:{coco / 'data' / 'coco' / 'COCO_train2014_000000000000.jpg'}"
    assert pairs[1].images[0].key == f"path:{coco / 'COCO_train2014_000000000001.jpg'}"
    assert pairs[2].meta["turn"] == 0 and pairs[2].meta["turns"] == 2  # multi-turn: the first exchange
    assert source.stats()["skipped"] == {"missing_image": 1, "missing_field": 1, "identical": 1}
    assert "COCO_train2014_000000000004.jpg" in source.skip_examples()["missing_image"][0]["detail"]


def test_povid_turns(tmp_path: Path, build) -> None:
    path, coco = povid_files(tmp_path)
    _, last = build("povid", path=str(path), image_root=str(coco), turn="last")
    assert last[2].prompt == "And what else, part 1?" and last[2].chosen == "True answer 2.1."
    _, every = build("povid", path=str(path), image_root=str(coco), turn="all")
    assert [p.id for p in every if ":COCO_train2014_000000000002" in p.id] == [
        "povid/2:COCO_train2014_000000000002#t0",
        "povid/2:COCO_train2014_000000000002#t1",
    ]


def test_povid_without_image_root_uses_the_json_folder(tmp_path: Path, build) -> None:
    save_image(tmp_path / "COCO_train2014_000000000007.jpg", 7)
    path = write_json(tmp_path / "povid.json", [povid_record(7)])
    _, pairs = build("povid", path=str(path))
    assert len(pairs) == 1


def test_povid_contract(tmp_path: Path, entry) -> None:
    path, coco = povid_files(tmp_path)
    check_source(entry("povid"), {"path": str(path), "image_root": str(coco)})


# --------------------------------------------------------------------------- VLFeedback
def test_vlfeedback_best_vs_worst(tmp_path: Path, build) -> None:
    path, images = vlfeedback_files(tmp_path)
    source, pairs = build("vlfeedback", path=str(path), image_root=str(images))
    by_key = {p.id.split(":", 1)[1]: p for p in pairs}
    assert sorted(by_key) == ["llava-6", "svit-1", "svit-2"]
    one = by_key["svit-1"]
    assert one.prompt == "What happens in scene svit-1?"
    assert (one.chosen, one.rejected) == ("Answer of gpt-4v to svit-1.", "Answer of qwen-vl-chat to svit-1.")
    assert (one.meta["chosen_score"], one.meta["rejected_score"]) == (5.0, 1.0)
    two = by_key["svit-2"]  # llava's 'N/A' is left out; the two 4s tie for best: the first wins
    assert (two.meta["chosen_model"], two.meta["rejected_model"]) == ("qwen-vl-chat", "gpt-4v")
    assert by_key["llava-6"].images[0].key.endswith("llava/llava-6.png")
    stats = source.stats()
    # skipped: rows that give no pair. The broken line, the all-tie row, the row with one rated completion, the missing image.
    assert stats["skipped"] == {"bad_json": 1, "tie": 1, "unparsable_rating": 1, "missing_image": 1}
    assert stats["dropped"] == {"unrated_completions": 1}
    assert "line 4 is not valid JSON" in source.skip_examples()["bad_json"][0]["detail"]


def test_vlfeedback_all_ordered_and_single_aspect(tmp_path: Path, build) -> None:
    path, images = vlfeedback_files(tmp_path)
    source, pairs = build("vlfeedback", path=str(path), image_root=str(images), pairing="all-ordered")
    svit1 = [p for p in pairs if ":svit-1#" in p.id]
    assert len(svit1) == 6 and all(p.meta["chosen_score"] > p.meta["rejected_score"] for p in svit1)
    svit2 = [p for p in pairs if ":svit-2#" in p.id]
    assert len(svit2) == 2  # 2 vs 4, 2 vs 4; the 4-4 tie is left out
    assert source.stats()["dropped"] == {"tied_pairs": 1, "unrated_completions": 1}
    _, helpful = build("vlfeedback", path=str(path), image_root=str(images), rating="helpfulness")
    six = [p for p in helpful if p.id.endswith(":llava-6")][0]
    assert (six.meta["chosen_model"], six.meta["chosen_score"]) == ("llava-v1.5-13b", 4.0)


def test_vlfeedback_accepts_completions_as_a_dict_of_lists(tmp_path: Path, build) -> None:
    images = tmp_path / "img"
    save_image(images / "merged_images" / "a-1.jpg", 1)
    rec = vlf_record("a-1", [["5", "4", "5"], ["1", "2", "1"], ["3", "3", "3"]])
    path = write_jsonl(tmp_path / "features.jsonl", [as_dict_of_lists(rec)])
    _, pairs = build("vlfeedback", path=str(path), image_root=str(images))
    assert len(pairs) == 1 and pairs[0].meta["chosen_model"] == "gpt-4v" and pairs[0].meta["rejected_model"] == "llava-v1.5-13b"
    # the same through parquet, as `datasets` writes it
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([as_dict_of_lists(rec)]), str(tmp_path / "train.parquet"))
    _, from_parquet = build("vlfeedback", path=str(tmp_path / "train.parquet"), image_root=str(images))
    assert [(p.chosen, p.rejected) for p in from_parquet] == [(p.chosen, p.rejected) for p in pairs]


def test_vlfeedback_contract(tmp_path: Path, entry) -> None:
    path, images = vlfeedback_files(tmp_path)
    check_source(entry("vlfeedback"), {"path": str(path), "image_root": str(images), "pairing": "all-ordered"})


# --------------------------------------------------------------------------- LLaVA-RLHF
def test_llava_rlhf_preference(tmp_path: Path, build) -> None:
    path, coco = llava_rlhf_files(tmp_path)
    source, pairs = build("llava-rlhf", path=str(path), image_root=str(coco))
    by_row = {p.meta["row"]: p for p in pairs}
    assert sorted(by_row) == [0, 1, 2, 5]
    assert (by_row[0].chosen, by_row[0].rejected) == ("First answer about 0.", "Second answer about 0.")
    assert (by_row[1].chosen, by_row[1].rejected) == ("Second answer about 1.", "First answer about 1.")
    assert by_row[2].meta["preference"] == 2  # "2" as a string
    assert by_row[0].meta["hallucination"] is True and by_row[1].meta["hallucination"] is False
    assert by_row[5].prompt == "Follow-up question about 5?" and by_row[5].meta["context_turns"] == 1
    assert by_row[0].prompt == "What is shown in image 0?"
    assert source.stats()["skipped"] == {"bad_preference": 1, "missing_image": 1}
    assert "`preference` must be 1 or 2, got 3" in source.skip_examples()["bad_preference"][0]["detail"]


def test_llava_rlhf_contract(tmp_path: Path, entry) -> None:
    path, coco = llava_rlhf_files(tmp_path)
    check_source(entry("llava-rlhf"), {"path": str(path), "image_root": str(coco)})


# -------------------------------------------------------------------------------- HA-DPO
def test_hadpo_description_data(tmp_path: Path, build) -> None:
    _, vg = hadpo_files(tmp_path)
    source, pairs = build("hadpo", path=str(tmp_path), image_root=str(vg))  # the whole release: model picks the folder
    assert [p.id for p in pairs] == ["hadpo/0:101", "hadpo/1:102"]
    p = pairs[1]
    assert (p.chosen, p.rejected) == ("A green square.", "A green dog.")
    assert p.prompt in source.config.prompts and p.images[0].key.endswith("VG_100K_2/102.jpg")
    assert source.stats()["skipped"] == {"missing_field": 1, "missing_image": 1}
    again = [q for q in source.pairs(None)]
    assert [(q.prompt, q.chosen, q.rejected) for q in again] == [(q.prompt, q.chosen, q.rejected) for q in pairs]
    _, every = build("hadpo", path=str(tmp_path / "hadpo" / "llava-v1.5" / "desc_data.json"), image_root=str(vg), pairing="all")
    assert len([q for q in every if ":101#" in q.id]) == 6 and len(every) == 7


def test_hadpo_pope_data(tmp_path: Path, build) -> None:
    vg = tmp_path / "VG"
    save_image(vg / "VG_100K" / "7.jpg", 7)
    data = [
        {"image_id": 7, "question": "Is there a dog in the image?", "chosen": "No, there is no dog.", "reject": "Yes, there is a dog.", "answer": "no", "correct": False},
        {"image_id": 7, "question": "Is there a square?", "chosen": "Yes.", "reject": "No.", "answer": "yes", "correct": True},
    ]
    source, pairs = build("hadpo", path=str(write_json(tmp_path / "pope_data.json", data)), image_root=str(vg))
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("Is there a dog in the image?", "No, there is no dog.", "Yes, there is a dog.")]
    assert source.stats()["skipped"] == {"pope_correct": 1}


def test_hadpo_contract(tmp_path: Path, entry) -> None:
    _, vg = hadpo_files(tmp_path)
    check_source(entry("hadpo"), {"path": str(tmp_path), "image_root": str(vg), "pairing": "all"})


# --------------------------------------------------------------------------------- local
def test_local_contract_canonical_jsonl(tmp_path: Path, entry) -> None:
    save_image(tmp_path / "imgs" / "a.png", 1)
    rows = [
        {"id": "a", "prompt": "<image>\nWhat is it?", "chosen": "A red square.", "rejected": "A red circle.", "images": ["imgs/a.png"], "meta": {"k": 1}},
        {"id": "b", "prompt": "Text only?", "chosen": "Yes.", "rejected": "No."},
    ]
    out = check_source(entry("local"), {"path": str(write_jsonl(tmp_path / "pairs.jsonl", rows))})
    a, b = out["pairs"]
    assert (a.id, a.prompt, a.meta["k"], a.meta["image_placeholders"]) == ("a", "What is it?", 1, 1)
    assert b.images == [] and b.meta["n_images"] == 0


def test_every_loader_is_a_lazy_sequence(tmp_path: Path, entry, ctx) -> None:
    pairs = entry("rlaif-v").build({"path": str(rlaif_v_file(tmp_path / "r.parquet"))}).pairs(ctx)
    assert isinstance(pairs, PairSequence) and len(pairs) == 6
    assert pairs[-1].id == pairs[5].id and [p.id for p in pairs[1:3]] == [pairs[1].id, pairs[2].id]
    with pytest.raises(IndexError):
        pairs[6]
    json.dumps(pairs[0].meta)  # meta is plain JSON


def test_published_file_names_win_in_a_folder(tmp_path: Path, build) -> None:
    """A Hub snapshot holds more than the data file (VLFeedback's instruction_source.jsonl, README JSON): only it is read."""
    from mmalign_datasets.detect import detect_format

    path, images = vlfeedback_files(tmp_path / "vlf")
    write_jsonl(path.parent / "instruction_source.jsonl", [{"id": "svit-1", "source": "svit"}])
    source, pairs = build("vlfeedback", path=str(path.parent), image_root=str(images))
    assert len(pairs) == 3 and [f["file"] for f in source.stats()["files"]] == ["vlfeedback_80k.jsonl"]
    assert detect_format(path.parent) == "vlfeedback"
    povid, coco = povid_files(tmp_path / "povid")
    write_json(povid.parent / "dataset_infos.json", {"default": {"features": {}}})
    _, pairs = build("povid", path=str(povid.parent), image_root=str(coco))
    assert len(pairs) == 4 and detect_format(povid.parent) == "povid"
