"""`mmalign study`: a grid of arms over seeds from the same base model, resumable run by run, one table."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from mmalign_core import cli

pytest.importorskip("mmalign_study", reason="mmalign-study is not installed")

from mmalign_study.spec import StudySpec, arm_run, base_run, with_seed  # noqa: E402


def tiny_study(out: Path) -> dict[str, Any]:
    return {
        "name": "tiny-study",
        "output_dir": str(out),
        "seeds": [0, 1],
        "base": {
            "model": {"name": "tiny:tiny-llava", "config": {"seed": "$seed"}},
            "threads": 1,
            "stages": [{"type": "sft", "data": {"name": "shapes:shapes-sft", "config": {"n_examples": 64, "seed": {"$seed": 100}}},
                        "train": {"steps": 3, "batch_size": 8, "lr": 1e-3, "log_every": 1}}],
        },
        "evaluate": [{"name": "shapes:shapes-chair", "config": {"n_images": 4, "n_absent_images": 4}}],
        "arms": {
            "dpo": {"description": "DPO on injected pairs", "stages": [
                {"type": "align", "data": {"name": "shapes:shapes-pairs", "config": {"n_pairs": 16, "seed": {"$seed": 7}}},
                 "train": {"steps": 2, "batch_size": 4, "log_every": 1}}]},
            "nll": {"stages": [
                {"type": "sft", "data": {"name": "shapes:shapes-sft", "config": {"n_examples": 32}},
                 "train": {"steps": 2, "batch_size": 4, "log_every": 1}}]},
        },
    }


def test_seed_markers_and_the_runs_of_a_cell() -> None:
    assert with_seed({"a": "$seed", "b": {"$seed": 10}, "c": ["$seed", 3], "d": "seed"}, 4) == {"a": 4, "b": 14, "c": [4, 3], "d": "seed"}
    study = StudySpec.model_validate(tiny_study(Path("/tmp/x")))
    base = base_run(study, 1)
    assert base["seed"] == 1 and base["model"]["config"]["seed"] == 1
    assert base["stages"][0]["data"]["config"]["seed"] == 101 and base["stages"][-1]["type"] == "evaluate"
    arm = arm_run(study, "dpo", 1, "/runs/base/model")
    assert arm["model"]["config"] == {"seed": 1, "path": "/runs/base/model"}
    assert [s["type"] for s in arm["stages"]] == ["align", "evaluate"] and arm["stages"][0]["data"]["config"]["seed"] == 8
    with pytest.raises(ValueError, match="must not set 'seed'"):
        StudySpec.model_validate({**tiny_study(Path("/tmp/x")), "base": {**tiny_study(Path("/tmp/x"))["base"], "seed": 3}})


def test_a_bad_arm_is_reported_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_study(tmp_path / "out")
    data["arms"]["dpo"]["stages"][0]["loss"] = {"name": "dpoo"}
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps(data))
    assert cli.main(["study", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "arms.dpo (seed 0): stages[0].loss.name" in err and "dpo" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_study_runs_resumes_and_tabulates(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMALIGN_PROGRESS", "0")
    out = tmp_path / "out"
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps(tiny_study(out)))
    assert cli.main(["study", str(spec)]) == 0
    printed = capsys.readouterr().out
    assert "| dpo | 2 | 2 |" in printed.replace("  ", " ")
    table = json.loads((out / "study.json").read_text())
    assert list(table["rows"]) == ["sft", "dpo", "nll"]
    # Each cell is a plain run folder; the table is the mean and sample sd of their last evaluations.
    key = "shapes-chair.chair_i"
    values = []
    for seed in (0, 1):
        manifest = json.loads((out / f"seed-{seed}" / "dpo" / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        assert manifest["spec"]["model"]["config"]["path"] == str(out / f"seed-{seed}" / "sft" / "stages" / "0-sft" / "model")
        values.append(manifest["evaluations"][-1]["results"]["shapes-chair"]["metrics"]["chair_i"])
    cell = table["rows"]["dpo"]["metrics"][key]
    assert cell["values"] == values and cell["mean"] == pytest.approx(statistics.fmean(values))
    assert cell["sd"] == pytest.approx(statistics.stdev(values)) and cell["n"] == 2
    assert table["rows"]["dpo"]["train_steps"] == [2, 2] and table["rows"]["sft"]["train_steps"] == [3, 3]
    assert (out / "study.md").is_file()
    # Run again: everything is reused. Remove one arm's run: only that one runs again.
    assert cli.main(["study", str(spec)]) == 0
    again = capsys.readouterr().out
    assert again.count("already complete") == 6
    import shutil

    shutil.rmtree(out / "seed-1" / "nll")
    assert cli.main(["study", str(spec), "--seeds", "1"]) == 0
    third = capsys.readouterr().out
    assert "nll seed 1: starting" in third and third.count("already complete") == 2
    assert json.loads((out / "study.json").read_text())["rows"]["nll"]["metrics"][key]["n"] == 2  # the table keeps both seeds


def test_the_table_is_the_mean_and_sample_sd_of_each_runs_last_evaluation(tmp_path: Path) -> None:
    from mmalign_study.grid import Cell
    from mmalign_study.table import collect, markdown

    def run(folder: Path, chair: float, recall: float, steps: int) -> Cell:
        folder.mkdir(parents=True)
        manifest = {"status": "complete", "stages": [{"type": "align", "steps": steps}, {"type": "evaluate"}],
                    "evaluations": [{"stage": "early", "results": {"shapes-chair": {"metrics": {"chair_i": 9.0}}}},
                                    {"stage": "eval", "results": {"shapes-chair": {"metrics": {"chair_i": chair, "recall": recall},
                                                                                   "higher_is_better": {"chair_i": False, "recall": True}}}}]}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return Cell(folder.name, int(folder.parent.name), folder)

    cells = [run(tmp_path / "0" / "dpo", 0.10, 0.8, 5), run(tmp_path / "1" / "dpo", 0.20, 0.9, 5), run(tmp_path / "2" / "dpo", 0.60, 0.7, 5)]
    cells.append(Cell("dpo", 3, tmp_path / "3" / "dpo"))  # not run yet: left out, not counted as zero
    table = collect(cells)
    mean, sd, n = table.mean_sd("dpo", "shapes-chair.chair_i")
    assert n == 3 and mean == pytest.approx(0.3) and sd == pytest.approx(((0.2**2 + 0.1**2 + 0.3**2) / 2) ** 0.5)
    assert table.higher_is_better["shapes-chair.recall"] is True and table.steps["dpo"] == [5, 5, 5]
    text = markdown(table, "t")
    assert "| dpo | 3 | 5 | 0.300 ± 0.265 | 0.800 ± 0.100 |" in text
