"""`mmalign data check`: over-length pairs for the spec's model, --reindex, where the index came from, hints (issue 14)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_fixtures import povid_files, rlaif_v_file, save_image, write_jsonl
from mmalign_core.cli import main


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MMALIGN_PROGRESS", "0")


def test_check_says_where_the_index_came_from_and_reindex_rebuilds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, coco = povid_files(tmp_path / "povid")
    args = ["data", "check", str(data), "--image-root", str(coco)]
    main(args)
    assert "(built now)" in capsys.readouterr().out
    main(args)
    assert "(reused from the cache; --reindex rebuilds it)" in capsys.readouterr().out
    main([*args, "--reindex"])
    assert "(built now)" in capsys.readouterr().out


def test_check_prints_the_wrong_loader_hint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet", bad=False)
    assert main(["data", "check", str(path), "--format", "rlhf-v"]) == 1
    assert "hint: The file looks like the 'rlaif-v' layout" in capsys.readouterr().out


def test_lengths_needs_a_spec(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet", bad=False)
    assert main(["data", "check", str(path), "--lengths"]) == 2
    assert "--lengths needs a run spec" in capsys.readouterr().err


@pytest.mark.slow
def test_check_reports_pairs_over_the_models_max_length(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("mmalign_tiny")
    rows = []
    for i in range(3):
        save_image(tmp_path / f"{i}.png", i)
        chosen = "The square is red. " * 2700 if i == 1 else f"The square {i} is red."  # ~51,000 characters
        rows.append({"id": f"q{i}", "prompt": "What colour?", "chosen": chosen, "rejected": f"Blue {i}.", "images": [f"{i}.png"]})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    spec = {"name": "long", "model": {"name": "tiny-llava"},
            "stages": [{"type": "align", "data": {"name": "local", "config": {"path": str(data)}}, "loss": {"name": "dpo"}}]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    assert main(["data", "check", str(spec_path), "--lengths", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)["sources"][0]
    over = report["over_length"]
    assert (over["over"], over["checked"], over["max_length"]) == (1, 3, 512)
    assert over["examples"][0]["id"] == "q1" and over["examples"][0]["where"] == "pairs.jsonl row 1"
    assert report["problems"] == 1
    assert main(["data", "check", str(spec_path), "--lengths"]) == 1
    assert "over max_length 512: 1 of 3" in capsys.readouterr().out
