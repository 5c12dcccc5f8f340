"""`mmalign data check | inspect | convert` on paths and specs; no torch import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_fixtures import povid_files, rlaif_v_file, write_jsonl
from mmalign_core.cli import main


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MMALIGN_PROGRESS", "0")


def _spec(tmp_path: Path, on_error: str = "fail") -> Path:
    povid, coco = povid_files(tmp_path / "povid")
    spec = {
        "name": "data-check",
        "model": {"name": "tiny-llava"},
        "stages": [
            {"type": "align", "data": {"name": "rlaif-v", "config": {"path": str(rlaif_v_file(tmp_path / "r.parquet")), "n_pairs": 4}}},
            {"type": "evaluate", "evaluators": [{"name": "shapes-pope", "config": {"n_images": 2}}]},
            {"type": "align", "data": {"name": "povid", "config": {"path": str(povid), "image_root": str(coco), "on_error": on_error}}},
        ],
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_check_a_path_lists_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet")
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "datasets:rlaif-v (format detected)" in out and "records 10 -> 6 pairs available" in out
    assert "skipped: bad_image 1, empty_response 1, identical 1, missing_image 1" in out
    assert "bad_image: r.parquet row 6: the embedded image (12 bytes) does not decode" in out
    assert "images: 6 decoded, 0 failed" in out and "4 problem(s)" in out
    clean = rlaif_v_file(tmp_path / "clean.parquet", bad=False)
    assert main(["data", "check", str(clean), "--format", "rlaif-v"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")


def test_check_a_spec_covers_every_data_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", str(_spec(tmp_path)), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(s["source"], s["component"]) for s in report["sources"]] == [
        ("stages[0].data", "datasets:rlaif-v"),
        ("stages[2].data", "datasets:povid"),
    ]
    rlaif, povid = report["sources"]
    assert (rlaif["pairs"], rlaif["pairs_available"], rlaif["n_pairs"]) == (4, 6, 4)
    assert rlaif["images"] == {"images": 4, "failed": 0, "examples": []}  # the images of the pairs in use
    # on_error 'fail' in the spec does not stop the check: every bad row is reported
    assert povid["skipped"] == {"identical": 1, "missing_field": 1, "missing_image": 1} and povid["problems"] == 3
    assert report["problems"] == 7 and report["ok"] is False


def test_inspect_prints_statistics_and_writes_html(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet")
    page = tmp_path / "page.html"
    assert main(["data", "inspect", str(path), "--html", str(page), "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert "pairs 6 from 10 records" in out and "images per pair: 1: 6" in out
    assert "chosen" in out and "skipped: bad_image 1" in out
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 3
    assert "class='chosen'" in html and "The square 0 is colour 1." in html and "rlaif-v/0:OKVQA_0" in html


def test_inspect_a_spec_as_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # inspect reads the sources as a run would: on_error 'fail' stops at the first bad row, naming it
    assert main(["data", "inspect", str(_spec(tmp_path / "a")), "--html", "-"]) == 2
    err = capsys.readouterr().err
    assert "povid: POVID_preference_data_for_VLLMs_version_1.json row 4: missing_image: image './data/coco/COCO_train2014_000000000004.jpg' not found" in err
    assert "set `image_root`" in err and "(on_error is 'fail'" in err
    assert main(["data", "inspect", str(_spec(tmp_path / "b", on_error="skip")), "--json", "--html", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    first = report["sources"][0]
    assert first["pairs"] == 4 and first["words"]["prompt"]["min"] == 5 and first["images_per_pair"] == {"1": 4}


def test_convert_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = rlaif_v_file(tmp_path / "r.parquet")
    trl = tmp_path / "out" / "trl.parquet"
    assert main(["data", "convert", str(src), "--to", "trl", str(trl), "--config", '{"n_pairs": 3, "seed": 1}']) == 0
    assert "wrote 3 pairs (3 images)" in capsys.readouterr().out
    back = tmp_path / "back.jsonl"
    assert main(["data", "convert", str(trl), "--to", "canonical", str(back)]) == 0
    rows = [json.loads(line) for line in back.read_text().splitlines()]
    assert len(rows) == 3 and all(r["id"].startswith("rlaif-v/") for r in rows) and (tmp_path / rows[0]["images"][0]).is_file()
    # a spec with two data sources needs --stage
    spec = _spec(tmp_path / "s", on_error="skip")
    assert main(["data", "convert", str(spec), "--to", "canonical", str(tmp_path / "x.parquet")]) == 2
    assert "pick one with --stage N" in capsys.readouterr().err
    assert main(["data", "convert", str(spec), "--stage", "2", "--to", "canonical", str(tmp_path / "x.parquet")]) == 0


def test_user_errors_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    unknown = write_jsonl(tmp_path / "u.jsonl", [{"foo": 1}])
    assert main(["data", "check", str(unknown)]) == 2
    assert "cannot tell which data set this is (fields: foo); pass --format" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "missing.parquet")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    path = rlaif_v_file(tmp_path / "r.parquet")
    assert main(["data", "check", str(path), "--config", '{"n_pairs": 0}']) == 2
    assert "invalid settings for 'datasets:rlaif-v'" in capsys.readouterr().err
    assert main(["data", "check", str(path), "--format", "no-such-loader"]) == 2
    assert "no-such-loader" in capsys.readouterr().err
    povid = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "image": "x.jpg", "conversations": [], "rejected_conversations": []}])
    assert main(["data", "check", str(povid), "--config", '{"on_error": "fail"}']) == 1  # a check never stops at the first bad row


def test_data_commands_import_no_torch(tmp_path: Path) -> None:
    path = rlaif_v_file(tmp_path / "r.parquet")
    code = (
        "import sys; from mmalign_core.cli import main\n"
        f"codes = [main(['data', 'check', {str(path)!r}]), main(['data', 'inspect', {str(path)!r}, '--html', {str(tmp_path / 'p.html')!r}]),"
        f" main(['data', 'convert', {str(path)!r}, '--to', 'trl', {str(tmp_path / 't.parquet')!r}])]\n"
        "import mmalign_datasets.loaders, mmalign_datasets.tools, mmalign_datasets.export\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)\n"
        "print('CODES', codes, 'HEAVY', heavy)\n"
    )
    env = {**os.environ, "MMALIGN_CACHE": str(tmp_path / "cache"), "MMALIGN_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "CODES [1, 0, 0] HEAVY []" in done.stdout, done.stdout + done.stderr


def test_other_plugins_sources_are_checked_generically(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("mmalign_shapes")
    spec = {
        "name": "shapes",
        "model": {"name": "tiny-llava"},
        "stages": [
            {"type": "sft", "data": {"name": "shapes-sft", "config": {"n_examples": 12}}},
            {"type": "align", "data": {"name": "shapes-pairs", "config": {"n_pairs": 6}}},
        ],
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["data", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stages[0].data: shapes:shapes-sft" in out and "12 examples available" in out and "images: " in out
    assert main(["data", "inspect", str(path), "--html", str(tmp_path / "p.html"), "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "response" in out and "rejected" in out
    assert (tmp_path / "p.html").read_text().count("data:image/jpeg;base64,") >= 2  # some SFT examples are text-only
