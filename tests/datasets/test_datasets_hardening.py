"""Bad rows are counted, never a crash; image paths stay inside the data; the loaders' remaining holes (issue 14).

Fixtures are the published layouts of dataset_fixtures.py; oversized images are PNG headers that
declare their size (what a decompression bomb looks like to a reader that checks first).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from mmalign_datasets.errors import DataError

from dataset_fixtures import (
    RLAIF_V_SCHEMA,
    llava_rlhf_files,
    povid_files,
    povid_record,
    rlaif_row,
    save_image,
    vlf_record,
    vlfeedback_files,
    write_json,
    write_jsonl,
    write_parquet,
)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (1-bit grey) with one tiny compressed row: a decompression bomb
    to any reader that decodes before it checks the size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _rlaif(path: Path, extra: list[dict]) -> Path:
    return write_parquet(path, [rlaif_row(i) for i in range(3)] + extra, RLAIF_V_SCHEMA)


# --------------------------------------------------------------------- part 3: bad rows
def test_decompression_bomb_and_oversized_images_are_counted(build, entry, ctx, tmp_path: Path) -> None:
    data = _rlaif(tmp_path / "r.parquet", [
        rlaif_row(10, image={"bytes": png_header(14000, 14000), "path": "bomb.png"}),  # over PIL's own bomb limit
        rlaif_row(11, image={"bytes": png_header(8000, 8000), "path": "big.png"}),  # under PIL's, over max_image_pixels
    ])
    source, pairs = build("rlaif-v", path=str(data))
    assert len(pairs) == 3
    assert source.stats()["skipped"] == {"image_too_large": 2}
    details = [e["detail"] for e in source.skip_examples()["image_too_large"]]
    assert "decompression bomb" in details[0] and "8000x8000" in details[1] and "max_image_pixels" in details[1]
    raised, kept = build("rlaif-v", path=str(data), max_image_pixels=70_000_000)
    assert len(kept) == 4 and raised.stats()["skipped"] == {"image_too_large": 1}
    with pytest.raises(DataError, match=r"r\.parquet row 3: image_too_large: .*decompression bomb.*on_error is 'fail'"):
        entry("rlaif-v").build({"path": str(data), "on_error": "fail"}).pairs(ctx)


def test_an_oversized_image_indexed_unchecked_fails_cleanly_when_loaded(build, tmp_path: Path) -> None:
    data = _rlaif(tmp_path / "r.parquet", [rlaif_row(11, image={"bytes": png_header(8000, 8000), "path": "big.png"})])
    _, pairs = build("rlaif-v", path=str(data), verify_images="exists")
    assert len(pairs) == 4
    pairs[0].images[0].load()
    with pytest.raises(DataError, match=r"ImageTooLarge: 8000x8000 = 64,000,000 pixels, over max_image_pixels 25,000,000"):
        pairs[3].images[0].load()


# ------------------------------------------------------------ part 5: paths stay inside
def test_image_paths_that_leave_the_image_folder_are_never_opened(build, entry, ctx, tmp_path: Path) -> None:
    root = tmp_path / "data"
    outside = save_image(tmp_path / "secret" / "x.png", 1)
    save_image(root / "images" / "ok.png", 2)
    records = [
        povid_record(0, image="images/ok.png"),
        povid_record(1, image="../../../../../../../../etc/passwd"),
        povid_record(2, image=str(outside)),  # absolute
        povid_record(3, image="../secret/x.png"),
    ]
    data = write_json(root / "POVID_preference_data_for_VLLMs_version_1.json", records)
    source, pairs = build("povid", path=str(data))
    assert [p.images[0].source.path for p in pairs] == [str(root / "images" / "ok.png")]
    # each is looked for by its file name inside the folder only (not there), and the path itself is never tried
    assert source.stats()["skipped"] == {"image_outside_root": 3}
    assert "allow_outside_images" in source.skip_examples()["image_outside_root"][0]["detail"]
    with pytest.raises(DataError, match=r"row 1: image_outside_root: image path '\.\./\.\./.*etc/passwd' leaves the image folders"):
        entry("povid").build({"path": str(data), "on_error": "fail"}).pairs(ctx)
    trusting, trusted = build("povid", path=str(data), allow_outside_images=True)
    assert sorted(p.images[0].source.path for p in trusted) == sorted([str(root / "images" / "ok.png"), str(outside), str(outside)])
    assert trusting.stats()["skipped"] == {"bad_image": 1}  # /etc/passwd, opened only because it was allowed


# --------------------------------------------------------------- part 6: loader holes
def test_vlfeedback_incomplete_prompts_policy(build, entry, ctx, tmp_path: Path) -> None:
    data, images = vlfeedback_files(tmp_path)
    default, pairs = build("vlfeedback", path=str(data), image_root=str(images))
    assert any(p.id.startswith("vlfeedback/") and ":svit-2" in p.id for p in pairs)  # N/A left out, the rest paired
    strict, kept = build("vlfeedback", path=str(data), image_root=str(images), incomplete="skip-prompt")
    assert not any(":svit-2" in p.id for p in kept)
    skipped = strict.stats()["skipped"]
    assert skipped["incomplete_ratings"] == 2  # svit-2 (one N/A) and svit-4 (three unparsable)
    where = [e["where"] for e in strict.skip_examples()["incomplete_ratings"]]
    assert where[0] == "vlfeedback_80k.jsonl row 1 (line 2)"


def test_vlfeedback_empty_answer_is_fatal_under_fail(entry, ctx, tmp_path: Path) -> None:
    images = tmp_path / "images"
    save_image(images / "merged_images" / "a.jpg", 1)
    rec = vlf_record("a", [["5", "5", "5"], ["3", "3", "3"], ["1", "1", "1"]])
    rec["completions"][0]["response"] = "  "  # the top-rated answer is empty
    data = write_jsonl(tmp_path / "v.jsonl", [rec])
    source = entry("vlfeedback").build({"path": str(data), "image_root": str(images)})
    assert len(source.pairs(ctx)) == 1 and source.stats()["dropped"] == {"empty_completions": 1}
    with pytest.raises(DataError, match=r"v\.jsonl row 0 \(line 1\): empty_response: completion 0 \(gpt-4v\) has an empty response"):
        entry("vlfeedback").build({"path": str(data), "image_root": str(images), "on_error": "fail"}).pairs(ctx)


def test_a_cached_index_is_rebuilt_when_missing_images_appear(entry, ctx, tmp_path: Path) -> None:
    data, coco = povid_files(tmp_path)
    lines: list[str] = []
    ctx.log = lines.append
    first = entry("povid").build({"path": str(data), "image_root": str(coco)})
    first.pairs(ctx)
    assert first.stats()["skipped"]["missing_image"] == 1 and not first.stats()["from_cache"]
    again = entry("povid").build({"path": str(data), "image_root": str(coco)})
    n = len(again.pairs(ctx))
    assert again.stats()["from_cache"] and any("using the cached index" in m and "reindex" in m for m in lines)
    save_image(coco / "COCO_train2014_000000000004.jpg", 4)  # the missing image is fixed
    fixed = entry("povid").build({"path": str(data), "image_root": str(coco)})
    assert len(fixed.pairs(ctx)) == n + 1 and "missing_image" not in fixed.stats()["skipped"]
    assert not fixed.stats()["from_cache"] and any("was missing when the index was built and exists now" in m for m in lines)
    forced = entry("povid").build({"path": str(data), "image_root": str(coco), "reindex": True})
    forced.pairs(ctx)
    assert not forced.stats()["from_cache"] and any("reindex is set" in m for m in lines)
    assert forced.fingerprint() == fixed.fingerprint()  # reindex changes no rows


def test_multi_shard_messages_name_the_files_own_row(entry, build, ctx, tmp_path: Path) -> None:
    folder = tmp_path / "rlaif"
    write_parquet(folder / "data" / "train-00000-of-00002.parquet", [rlaif_row(i) for i in range(10)], RLAIF_V_SCHEMA)
    write_parquet(folder / "data" / "train-00001-of-00002.parquet", [rlaif_row(20), rlaif_row(21, chosen="  ")], RLAIF_V_SCHEMA)
    with pytest.raises(DataError, match=r"data/train-00001-of-00002\.parquet row 1: empty_response"):
        entry("rlaif-v").build({"path": str(folder), "on_error": "fail"}).pairs(ctx)
    _, pairs = build("rlaif-v", path=str(folder))
    assert pairs[-1].meta["file"] == "data/train-00001-of-00002.parquet" and pairs[-1].meta["row"] == 0


def test_wrong_loader_suggests_the_detected_one(entry, ctx, tmp_path: Path) -> None:
    data = _rlaif(tmp_path / "r.parquet", [])
    wrong = entry("rlhf-v").build({"path": str(data)})
    assert len(wrong.pairs(ctx)) == 0
    assert any("looks like the 'rlaif-v' layout" in h for h in wrong.stats()["hints"])
    with pytest.raises(DataError, match=r"no `text` column The file looks like the 'rlaif-v' layout .*\"name\": \"rlaif-v\""):
        entry("rlhf-v").build({"path": str(data), "on_error": "fail"}).pairs(ctx)


def test_llava_rlhf_finds_train2017_and_says_when_image_root_is_wrong(entry, ctx, tmp_path: Path) -> None:
    data, coco = llava_rlhf_files(tmp_path)
    assert coco == tmp_path / "train2017"
    found = entry("llava-rlhf").build({"path": str(data)})  # no image_root: train2017/ beside the data file
    assert len(found.pairs(ctx)) == 4 and found.stats()["skipped"] == {"bad_preference": 1, "missing_image": 1}
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = entry("llava-rlhf").build({"path": str(data), "image_root": str(empty)})
    assert len(wrong.pairs(ctx)) == 0
    assert any(h.startswith("0 of 5 images found: image_root is probably wrong") for h in wrong.stats()["hints"])
    with pytest.raises(DataError, match=r"image_root '.*/nowhere' does not exist"):
        entry("llava-rlhf").build({"path": str(data), "image_root": str(tmp_path / "nowhere")}).pairs(ctx)


# ------------------------------------------------------- part 3: over-length in data check
class _WordModel:
    """Tokens are words; a length budget."""

    max_length = 500

    def answer_tokens(self, text: str) -> list[str]:
        return text.split()


def _long_local(tmp_path: Path) -> Path:
    rows = []
    for i in range(3):
        save_image(tmp_path / f"{i}.png", i)
        chosen = "The square is red. " * 2700 if i == 1 else f"The square {i} is red."  # ~51,000 characters
        rows.append({"id": f"q{i}", "prompt": "What colour?", "chosen": chosen, "rejected": f"Blue {i}.", "images": [f"{i}.png"]})
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def test_length_report_names_over_long_pairs(entry, ctx, tmp_path: Path) -> None:
    from mmalign_datasets.tools import length_report

    source = entry("local").build({"path": str(_long_local(tmp_path))})
    report = length_report(source, ctx, _WordModel())
    assert report["over"] == 1 and report["checked"] == 3 and report["longest"] > 10_000
    assert report["examples"] == [{"id": "q1", "where": "pairs.jsonl row 1", "tokens": report["longest"]}]
    assert report["method"].startswith("text tokens only")

    class Exact(_WordModel):
        def sequence_lengths(self, examples):
            return [600 if e.id == "q0" else 10 for e in examples]

    exact = length_report(source, ctx, Exact())
    assert exact["method"] == "tokens, image tokens included" and [e["id"] for e in exact["examples"]] == ["q0"]
