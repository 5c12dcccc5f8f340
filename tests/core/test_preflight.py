"""Pre-flight (issue 14, part 2): every pending stage's static data is read before the first step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_a_stage_without_examples_stops_the_run_before_anything_trains(tmp_path: Path, mmalign_cache: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    spec = {
        "name": "zero", "model": {"name": "tiny:tiny-llava"}, "threads": 1,
        "stages": [
            {"type": "sft", "data": {"name": "shapes:shapes-sft", "config": {"n_examples": 16}}, "train": {"steps": 1, "batch_size": 4}},
            {"type": "align", "data": {"name": "datasets:local", "config": {"path": "empty.jsonl", "cache_dir": str(tmp_path / "idx")}},
             "train": {"steps": 1}},
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "MMALIGN_CACHE": str(mmalign_cache), "MMALIGN_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mmalign_core.cli", "run", str(tmp_path / "spec.json"), "--output-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode in (1, 2), done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "stages[1].data: source 'datasets:local' produced no examples" in done.stderr
    assert "mmalign data check" in done.stderr
    assert not (tmp_path / "run" / "stages" / "0-sft" / "model").exists(), "stage 0 trained before the data problem was found"


def test_data_check_flags_a_stage_without_examples(tmp_path: Path, capsys) -> None:
    from mmalign_core import cli

    (tmp_path / "empty.jsonl").write_text("")
    spec = {"name": "zero", "model": {"name": "tiny:tiny-llava"},
            "stages": [{"type": "align", "data": {"name": "datasets:local", "config": {"path": str(tmp_path / "empty.jsonl"),
                                                                                      "cache_dir": str(tmp_path / "idx")}}}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert cli.main(["data", "check", str(tmp_path / "spec.json"), "--images", "none"]) == 1
    out = capsys.readouterr().out
    assert "stages[0].data" in out and "no usable examples: the run would stop here" in out
