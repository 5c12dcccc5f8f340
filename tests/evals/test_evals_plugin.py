"""The evals plugin registers cleanly, its judge meets the judge contract, and nothing imports torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mmalign_core.testing import check_judge, check_plugin, make_requests


def test_every_entry_meets_the_entry_contract() -> None:
    plugins = check_plugin("mmalign_evals.plugin", name="evals")
    names = {(e.kind, e.name) for e in plugins.entries_of("evals")}
    assert names == {
        ("evaluator", n) for n in ("pope", "object-halbench", "mmhal-bench", "mmhal-bench-v", "llava-bench-wild", "mm-vet", "vqa")
    } | {("judge", "scripted-judge")}
    for entry in plugins.entries("evaluator"):
        if entry.plugin == "evals":
            assert entry.requires == {"generate"} and entry.metrics


def test_scripted_judge_meets_the_judge_contract(evals, mmalign_context) -> None:
    entry = evals.resolve("judge", "scripted-judge")
    judge = check_judge(entry, {"replies": {"Describe": "Rating: 3"}, "default": "Rating: 0"}, requests=make_requests(2), ctx=mmalign_context)
    assert judge.complete(make_requests(1, prompt="Describe it"), mmalign_context) == ["Rating: 3"]
    assert judge.complete(make_requests(1, prompt="Other"), mmalign_context) == ["Rating: 0"]
    regex = check_judge(entry, {"replies": {r"colou?r": "blue"}, "match": "regex"})
    assert regex.complete(make_requests(1, prompt="What color?"), mmalign_context) == ["blue"]
    assert judge.describe()["judge"] == "scripted-judge" and judge.describe() != regex.describe()
    with pytest.raises(ValueError, match="not a valid regular expression"):
        entry.build({"replies": {"(": "x"}, "match": "regex"})


def test_validation_and_dry_run_import_no_torch(tmp_path) -> None:
    from evals_data import write_pope_parquet

    data = write_pope_parquet(tmp_path / "pope")
    code = (
        "import sys, json\n"
        "import mmalign_evals.plugin, mmalign_evals.pope, mmalign_evals.judged, mmalign_evals.vqa, mmalign_evals.object_halbench\n"
        "from mmalign_core.cli import main\n"
        f"rc = main(['eval', '--model', 'tiny-llava', '--evaluator', 'pope:' + json.dumps({{'data_dir': {str(data)!r}}}), '--dry-run'])\n"
        "assert rc == 0, rc\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
