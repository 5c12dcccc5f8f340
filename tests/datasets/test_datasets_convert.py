"""The canonical format and TRL's vision preference format, in both directions; round trips keep every pair."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dataset_fixtures import image_bytes, rlaif_v_file, save_image, write_jsonl
from mmalign_core.types import ImageRef, PreferencePair
from mmalign_datasets.errors import DataError
from mmalign_datasets.export import write_pairs
from mmalign_datasets.store import image_raw


def _pairs() -> list[PreferencePair]:
    return [
        PreferencePair(id="p0", prompt="What is it?", chosen="A red square.", rejected="A red circle.",
                       images=[ImageRef(image_bytes(0))], source="synthetic", meta={"k": 0}),
        PreferencePair(id="p1", prompt="Compare the two.", chosen="Left is green.", rejected="Left is blue.",
                       images=[ImageRef(image_bytes(1, "JPEG")), ImageRef(image_bytes(2))], source="synthetic"),
        PreferencePair(id="p2", prompt="Only text, no image?", chosen="Yes.", rejected="No.", source="synthetic"),
    ]


def _key(p: PreferencePair) -> tuple:
    return (p.id, p.prompt, p.chosen, p.rejected, [image_raw(r)[0] or Path(image_raw(r)[1]).read_bytes() for r in p.images])


def _read(entry, ctx, path: Path, fmt: str = "auto") -> list[PreferencePair]:
    return list(entry("local").build({"path": str(path), "format": fmt}).pairs(ctx))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_canonical_to_trl_to_canonical_keeps_every_pair(tmp_path: Path, entry, ctx, suffix: str) -> None:
    original = _pairs()
    canonical = tmp_path / f"canonical{suffix}"
    write_pairs(original, canonical, "canonical")
    first = _read(entry, ctx, canonical, "canonical")
    assert [_key(p) for p in first] == [_key(p) for p in original]
    assert first[0].source == "synthetic" and first[0].meta["k"] == 0
    trl = tmp_path / f"trl{suffix}"
    counts = write_pairs(first, trl, "trl")
    assert counts == {"pairs": 3, "images": 3, "not_representable": 0}
    second = _read(entry, ctx, trl, "trl")
    assert [_key(p) for p in second] == [_key(p) for p in original]
    assert [p.meta["image_parts"] for p in second] == [1, 2, 0]
    back = tmp_path / f"back{suffix}"
    write_pairs(second, back, "canonical")
    assert [_key(p) for p in _read(entry, ctx, back)] == [_key(p) for p in original]


def test_trl_file_layout(tmp_path: Path) -> None:
    out = tmp_path / "trl.parquet"
    write_pairs(_pairs(), out, "trl")
    table = pq.read_table(out)
    assert table.column_names == ["id", "images", "prompt", "chosen", "rejected"]
    row = table.slice(1, 1).to_pylist()[0]
    assert row["prompt"] == [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "image", "text": None},
                                                          {"type": "text", "text": "Compare the two."}]}]
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "Left is green."}]}]
    assert row["images"][1]["bytes"] == image_bytes(2)


def test_trl_parquet_loads_in_datasets_with_pil_images(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "trl.parquet"
    write_pairs(_pairs(), out, "trl")
    ds = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "hf"))
    assert type(ds.features["images"]).__name__ in ("List", "Sequence")
    first = ds[0]
    assert first["images"][0].size == (16, 16) and first["prompt"][0]["content"][-1]["text"] == "What is it?"


def test_plain_trl_strings_and_rejected_images(tmp_path: Path, entry, ctx) -> None:
    save_image(tmp_path / "x.png", 3)
    rows = [
        {"images": ["x.png"], "prompt": "<image>What is it?", "chosen": "A square.", "rejected": "A circle."},
        {"images": [], "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
         "chosen": [{"role": "assistant", "content": "Hello."}], "rejected": [{"role": "assistant", "content": "Go away."}]},
    ]
    pairs = _read(entry, ctx, write_jsonl(tmp_path / "trl.jsonl", rows))
    assert [(p.id, p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("local/0", "What is it?", "A square.", "A circle."),
        ("local/1", "Hi?", "Hello.", "Go away."),
    ]
    assert pairs[1].meta["context_messages"] == 1
    # canonical keeps rejected_images and extra_rejected; TRL cannot and says so
    special = PreferencePair(id="s", prompt="Q?", chosen="Same text.", rejected="Same text.", images=[ImageRef(image_bytes(0))],
                             rejected_images=[ImageRef(image_bytes(5))], extra_rejected=["Other."])
    canonical = tmp_path / "special.arrow"
    write_pairs([special], canonical, "canonical")
    (back,) = _read(entry, ctx, canonical)
    assert image_raw(back.rejected_images[0])[0] == image_bytes(5) and back.extra_rejected == ["Other."]
    assert write_pairs([back], tmp_path / "special-trl.parquet", "trl")["not_representable"] == 1


def test_duplicate_canonical_ids_are_skipped(tmp_path: Path, entry, ctx) -> None:
    rows = [{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}, {"id": "a", "prompt": "p2", "chosen": "c2", "rejected": "r2"}]
    source = entry("local").build({"path": str(write_jsonl(tmp_path / "dup.jsonl", rows))})
    assert len(source.pairs(ctx)) == 1 and source.stats()["skipped"] == {"duplicate_id": 1}


def test_published_set_to_canonical_parquet_keeps_the_image_bytes(tmp_path: Path, entry, ctx) -> None:
    src = entry("rlaif-v").build({"path": str(rlaif_v_file(tmp_path / "r.parquet"))}).pairs(ctx)
    out = tmp_path / "c.parquet"
    write_pairs(src, out, "canonical")
    back = _read(entry, ctx, out)
    assert [_key(p) for p in back] == [_key(p) for p in src]
    meta = json.loads(pq.read_table(out).column("meta")[0].as_py())
    assert meta["origin_dataset"] == "OKVQA"
    assert back[0].meta["origin"] == {"file": "r.parquet", "row": 0}  # where the pair first came from


def test_bad_output_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="must end in .parquet, .jsonl or .arrow"):
        write_pairs(_pairs(), tmp_path / "x.csv", "canonical")
    with pytest.raises(DataError, match="TRL output is .parquet or .jsonl"):
        write_pairs(_pairs(), tmp_path / "x.arrow", "trl")
