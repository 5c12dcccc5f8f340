"""Behaviour every loader shares: subsample, cache and fingerprints, lazy images, placeholders, readers, layouts, Hub ids."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from dataset_fixtures import (
    RLAIF_V_SCHEMA,
    hadpo_files,
    image_bytes,
    llava_rlhf_files,
    povid_files,
    rlaif_row,
    rlaif_v_file,
    rlhf_v_file,
    vlfeedback_files,
    write_jsonl,
    write_parquet,
)
from mmalign_core.testing import make_context
from mmalign_datasets.detect import detect_format
from mmalign_datasets.errors import DataError
from mmalign_datasets.files import iter_json_top, iter_records


def _ids(source, ctx) -> list[str]:
    return [p.id for p in source.pairs(ctx)]


# ---------------------------------------------------------------------------- subsample
def test_subsample_is_seeded_nested_and_recorded(tmp_path: Path, entry, ctx) -> None:
    path = write_parquet(tmp_path / "r.parquet", [rlaif_row(i) for i in range(40)], RLAIF_V_SCHEMA)
    make = lambda **c: entry("rlaif-v").build({"path": str(path), **c})  # noqa: E731
    five, again, ten = make(n_pairs=5, seed=3), make(n_pairs=5, seed=3), make(n_pairs=10, seed=3)
    assert _ids(five, ctx) == _ids(again, ctx)
    assert set(_ids(five, ctx)) < set(_ids(ten, ctx))  # nested: the 5 are among the 10
    assert _ids(five, ctx) != _ids(make(n_pairs=5, seed=4), ctx)
    rows = [p.meta["row"] for p in five.pairs(ctx)]
    assert rows == sorted(rows)  # file order is kept
    stats = five.stats()
    assert (stats["n_pairs"], stats["seed"], stats["pairs"], stats["pairs_available"]) == (5, 3, 5, 40)
    assert five.fingerprint() != ten.fingerprint() != make().fingerprint()


def test_asking_for_more_pairs_than_exist_uses_all_and_says_so(tmp_path: Path, entry, ctx) -> None:
    source = entry("rlaif-v").build({"path": str(rlaif_v_file(tmp_path / "r.parquet", bad=False)), "n_pairs": 100})
    assert len(source.pairs(ctx)) == 6
    assert "only 6 are available" in source.stats()["warning"]


# ------------------------------------------------------------------------- cache, prints
def test_index_is_cached_and_keyed_by_content(tmp_path: Path, entry, ctx) -> None:
    path = rlaif_v_file(tmp_path / "a" / "r.parquet")
    first = entry("rlaif-v").build({"path": str(path)})
    first.pairs(ctx)
    assert first.stats()["from_cache"] is False
    second = entry("rlaif-v").build({"path": str(path), "n_pairs": 3, "on_error": "skip"})
    second.pairs(ctx)
    assert second.stats()["from_cache"] is True and second.stats()["skipped"] == first.stats()["skipped"]
    # the fingerprint ignores where the file lives and its mtime, not its content
    moved = tmp_path / "b" / "renamed.parquet"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    os.utime(moved, (1, 1))
    assert entry("rlaif-v").build({"path": str(moved)}).fingerprint() == first.fingerprint()
    write_parquet(moved, [rlaif_row(i) for i in range(3)], RLAIF_V_SCHEMA)
    changed = entry("rlaif-v").build({"path": str(moved)})
    assert changed.fingerprint() != first.fingerprint()
    assert len(changed.pairs(ctx)) == 3 and changed.stats()["from_cache"] is False


def test_fail_after_a_cached_skip_build_still_fails(tmp_path: Path, entry, ctx) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet")
    entry("rlaif-v").build({"path": str(path)}).pairs(ctx)
    with pytest.raises(DataError, match=r"r\.parquet row 6: bad_image"):
        entry("rlaif-v").build({"path": str(path), "on_error": "fail"}).pairs(ctx)


# ------------------------------------------------------------------------------- images
def test_images_are_lazy_and_a_late_decode_failure_names_the_row(tmp_path: Path, entry, ctx) -> None:
    truncated = image_bytes(1, "PNG", size=64)[:-40]  # a valid header, a broken body
    rows = [rlaif_row(0), rlaif_row(1, image={"bytes": truncated, "path": "t.png"})]
    path = write_parquet(tmp_path / "r.parquet", rows, RLAIF_V_SCHEMA)
    pairs = entry("rlaif-v").build({"path": str(path)}).pairs(ctx)  # 'header' passes it
    assert len(pairs) == 2
    with pytest.raises(DataError, match=r"rlaif-v: image 1 of pair 'rlaif-v/1:OKVQA_1' \(r\.parquet row 1\) cannot be loaded") as err:
        pairs[1].images[0].load()
    assert "mmalign data check" in str(err.value) and "BytesIO object" not in str(err.value)
    strict = entry("rlaif-v").build({"path": str(path), "verify_images": "decode"})
    assert len(strict.pairs(ctx)) == 1 and strict.stats()["skipped"] == {"bad_image": 1}
    report = entry("rlaif-v").build({"path": str(path)}).decode_all(ctx)
    assert report["images"] == 2 and report["failed"] == 1 and report["examples"][0]["where"] == "r.parquet row 1"


def test_image_keys_are_stable(tmp_path: Path, entry) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet", bad=False)
    a = entry("rlaif-v").build({"path": str(path)}).pairs(make_context(tmp_path / "c1"))
    b = entry("rlaif-v").build({"path": str(path)}).pairs(make_context(tmp_path / "c2"))
    assert [p.images[0].key for p in a] == [p.images[0].key for p in b]
    assert len({p.images[0].key for p in a}) == len(a)


@pytest.mark.parametrize(
    "raw, prompt, count",
    [
        ("<image>\nWhat is this?", "What is this?", 1),
        ("What is this?\n<image>", "What is this?", 1),
        ("Compare <image> and <image>: which is red?", "Compare and : which is red?", 2),
        ("Look:\n<image>\nWhat now?", "Look:\nWhat now?", 1),
        ("No placeholder.", "No placeholder.", 0),
    ],
)
def test_image_placeholders_are_stripped_and_counted(tmp_path: Path, entry, ctx, raw: str, prompt: str, count: int) -> None:
    path = write_parquet(tmp_path / "r.parquet", [rlaif_row(0, question=raw)], RLAIF_V_SCHEMA)
    (pair,) = entry("rlaif-v").build({"path": str(path)}).pairs(ctx)
    assert (pair.prompt, pair.meta["image_placeholders"], pair.meta["n_images"]) == (prompt, count, 1)


def test_a_prompt_that_is_only_a_placeholder_is_skipped(tmp_path: Path, entry, ctx) -> None:
    path = write_parquet(tmp_path / "r.parquet", [rlaif_row(0, question="<image>\n"), rlaif_row(1)], RLAIF_V_SCHEMA)
    source = entry("rlaif-v").build({"path": str(path)})
    assert len(source.pairs(ctx)) == 1 and source.stats()["skipped"] == {"empty_prompt": 1}


# ------------------------------------------------------------------------------ readers
def test_streaming_json_reader_handles_chunk_boundaries(tmp_path: Path) -> None:
    items = [{"id": i, "text": "x]}[{," * (i % 7) + '"quoted" \\ \u00e9', "n": 1.5e3, "ok": i % 2 == 0, "none": None} for i in range(200)]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(items, indent=2, ensure_ascii=False))
    for chunk in (7, 64, 1 << 20):
        assert [v for _, v in iter_json_top(path, chunk=chunk)] == items
    obj = {str(i): {"chosen": [f"c{i}"], "rejected": ["r"]} for i in range(50)}
    path2 = tmp_path / "obj.json"
    path2.write_text(json.dumps(obj))
    assert dict(iter_json_top(path2, chunk=5)) == obj
    assert list(iter_json_top(tmp_path / "obj.json", chunk=3))[:1] == [("0", {"chosen": ["c0"], "rejected": ["r"]})]
    (tmp_path / "empty.json").write_text("[]")
    assert list(iter_json_top(tmp_path / "empty.json")) == []


def test_malformed_json_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"a": 1}, {"a": 2,, }]')
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON at character"):
        list(iter_json_top(path))
    path.write_text('[{"a": 1}, {"a": 2}')
    with pytest.raises(DataError, match="ends inside the top-level list"):
        list(iter_json_top(path))
    path.write_text('"just a string"')
    with pytest.raises(DataError, match="expected a JSON list or object"):
        list(iter_json_top(path))


def test_json_lines_in_a_json_file_are_read_as_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", [{"a": 1}, "not json", {"a": 2}])
    recs = list(iter_records([path]))
    assert [r.data for r in recs] == [{"a": 1}, None, {"a": 2}] and "line 2 is not valid JSON" in recs[1].error


def test_hf_save_to_disk_folders(tmp_path: Path, build) -> None:
    """The layout `datasets.Dataset.save_to_disk` writes: Arrow IPC streams listed in state.json, per split for a DatasetDict."""
    table = pa.Table.from_pylist([rlaif_row(i) for i in range(4)], schema=RLAIF_V_SCHEMA)
    for split, part in (("train", table.slice(0, 3)), ("test", table.slice(3))):
        folder = tmp_path / "dd" / split
        folder.mkdir(parents=True)
        with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": split}))
        (folder / "dataset_info.json").write_text("{}")
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    _, train = build("rlaif-v", path=str(tmp_path / "dd"))
    _, test = build("rlaif-v", path=str(tmp_path / "dd"), split="test")
    assert [p.meta["idx"] for p in train] == ["OKVQA_0", "OKVQA_1", "OKVQA_2"] and [p.meta["idx"] for p in test] == ["OKVQA_3"]
    with pytest.raises(DataError, match="no split 'validation'"):
        build("rlaif-v", path=str(tmp_path / "dd"), split="validation")


def test_a_real_datasets_save_to_disk_folder(tmp_path: Path, build) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "chosen": datasets.Value("string"),
         "rejected": datasets.Value("string"), "idx": datasets.Value("string")}
    )
    rows = [{k: rlaif_row(i)[k] for k in features} for i in range(3)]
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    _, pairs = build("rlaif-v", path=str(tmp_path / "saved"))
    assert [p.chosen for p in pairs] == [r["chosen"] for r in rows] and pairs[0].images[0].load().size == (16, 16)


# ------------------------------------------------------------------------------ layouts
def test_formats_are_detected_from_the_layout(tmp_path: Path) -> None:
    assert detect_format(rlaif_v_file(tmp_path / "a.parquet")) == "rlaif-v"
    assert detect_format(rlhf_v_file(tmp_path / "b" / "RLHF-V-Dataset.parquet")) == "rlhf-v"
    assert detect_format(povid_files(tmp_path / "c")[0]) == "povid"
    assert detect_format(vlfeedback_files(tmp_path / "d")[0]) == "vlfeedback"
    assert detect_format(llava_rlhf_files(tmp_path / "e")[0]) == "llava-rlhf"
    hadpo_files(tmp_path / "f")
    assert detect_format(tmp_path / "f") == "hadpo"
    assert detect_format(tmp_path / "f" / "hadpo" / "llava-v1.5" / "desc_data.json") == "hadpo"
    assert detect_format(write_jsonl(tmp_path / "g.jsonl", [{"id": "1", "prompt": "p", "chosen": "c", "rejected": "r"}])) == "local"
    with pytest.raises(DataError, match=r"cannot tell which data set this is \(fields: x, y\); pass --format"):
        detect_format(write_jsonl(tmp_path / "h.jsonl", [{"x": 1, "y": 2}]))


# --------------------------------------------------------------------------- locations
def test_a_missing_path_says_what_to_place_where(tmp_path: Path, entry, ctx) -> None:
    with pytest.raises(DataError, match=r"povid: .*nope\.json does not exist\. Expected layout: POVID_preference_data_for_VLLMs_version_1\.json"):
        entry("povid").build({"path": str(tmp_path / "nope.json")}).pairs(ctx)


def test_a_hub_id_offline_fails_with_the_files_to_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entry, ctx) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as err:
        entry("rlaif-v").build({}).pairs(ctx)
    text = str(err.value)
    assert "cannot fetch the Hub dataset 'openbmb/RLAIF-V-Dataset'" in text and "offline mode" in text
    assert "huggingface-cli download openbmb/RLAIF-V-Dataset --repo-type dataset --local-dir DIR" in text
    assert "the parquet shards of openbmb/RLAIF-V-Dataset" in text


def test_pair_sequences_pickle_for_data_loader_workers(tmp_path: Path, entry, ctx) -> None:
    import pickle

    pairs = entry("rlaif-v").build({"path": str(rlaif_v_file(tmp_path / "r.parquet")), "n_pairs": 4}).pairs(ctx)
    clone = pickle.loads(pickle.dumps(pairs))
    assert [p.id for p in clone] == [p.id for p in pairs]
    assert clone[1].images[0].load().tobytes() == pairs[1].images[0].load().tobytes()
    ref = pickle.loads(pickle.dumps(pairs[0].images[0]))
    assert ref.key == pairs[0].images[0].key and ref.load().size == (16, 16)


def test_policy_skips_are_never_fatal_but_bad_rows_are(tmp_path: Path, entry, ctx) -> None:
    from dataset_fixtures import save_image, vlf_record

    images = tmp_path / "img"
    save_image(images / "merged_images" / "a.jpg", 1)
    save_image(images / "merged_images" / "b.jpg", 2)
    rows = [vlf_record("a", [["5", "5", "5"], ["1", "1", "1"]]), vlf_record("b", [["3", "3", "3"], ["3", "3", "3"]])]
    ok = entry("vlfeedback").build({"path": str(write_jsonl(tmp_path / "v.jsonl", rows)), "image_root": str(images), "on_error": "fail"})
    assert len(ok.pairs(ctx)) == 1 and ok.stats()["skipped"] == {"tie": 1}
    bad = write_jsonl(tmp_path / "bad.jsonl", [*rows, "{not json"])
    with pytest.raises(DataError, match=r"vlfeedback: bad\.jsonl row 2 \(line 3\): bad_json: line 3 is not valid JSON"):
        entry("vlfeedback").build({"path": str(bad), "image_root": str(images), "on_error": "fail"}).pairs(ctx)


@pytest.mark.parametrize("level, n", [("none", 2), ("exists", 1)])
def test_verify_levels_for_image_files(tmp_path: Path, entry, ctx, level: str, n: int) -> None:
    from dataset_fixtures import povid_record, save_image, write_json

    save_image(tmp_path / "COCO_train2014_000000000001.jpg", 1)
    path = write_json(tmp_path / "p.json", [povid_record(1), povid_record(2)])
    source = entry("povid").build({"path": str(path), "verify_images": level})
    pairs = source.pairs(ctx)
    assert len(pairs) == n
    if level == "none":  # nothing was checked: the missing file surfaces on load, naming it
        with pytest.raises(DataError, match=r"image 1 of pair 'povid/1:COCO_train2014_000000000002' \(p\.json row 1\), file .*COCO_train2014_000000000002\.jpg cannot be loaded"):
            pairs[1].images[0].load()
