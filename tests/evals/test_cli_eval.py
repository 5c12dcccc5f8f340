"""`mmalign eval` and `mmalign compare`: subprocess runs on the tiny model, and the commands' rules in-process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evals_data import POPE_ITEMS, write_pope_parquet

SMALL_POPE = POPE_ITEMS[:2] + POPE_ITEMS[4:6] + POPE_ITEMS[8:10]  # two questions per split


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmalign_core.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)


def main(*args: str) -> int:
    from mmalign_core.cli import main as cli_main

    return cli_main(list(args))


@pytest.fixture
def env(mmalign_cache: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("MMALIGN_DISABLE_PLUGINS", None)
    e.update(MMALIGN_CACHE=str(mmalign_cache), MMALIGN_PROGRESS="0", OMP_NUM_THREADS="1")
    return e


def manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


# ------------------------------------------------------------------------ subprocesses
def test_eval_and_compare_on_the_tiny_model(env: dict[str, str], tiny_dir: Path, tmp_path: Path) -> None:
    data = write_pope_parquet(tmp_path / "pope", SMALL_POPE)
    pope = {"data_dir": str(data), "max_new_tokens": 3, "batch_size": 4}
    # 1. From flags: a base-model folder (the tiny LLaVA's saved folder), one evaluator, no training.
    run_a = tmp_path / "run-a"
    done = cli(env, "eval", "--model", "tiny-llava", "--model-path", str(tiny_dir),
               "--evaluator", "pope:" + json.dumps(pope), "--output-dir", str(run_a))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pope.pope_f1" in done.stdout  # the metric table printed at the end
    man = manifest(run_a)
    assert man["status"] == "complete" and [s["type"] for s in man["stages"]] == ["evaluate"]
    assert man["spec"]["model"]["config"]["path"] == str(tiny_dir)
    result = json.loads((run_a / "stages" / "0-evaluate" / "eval" / "pope" / "results.json").read_text())
    assert result["n"] == 6 and set(result["metrics"]) == set(man["evaluations"][0]["results"]["pope"]["metrics"])
    details = result["details"]
    assert details["decoding"]["max_new_tokens"] == 3 and details["decoding"]["strategy"] == "greedy"
    assert details["sample_ids"] == ["random/1", "random/2", "popular/3", "popular/4", "adversarial/1", "adversarial/2"]
    assert details["prompt_template"].startswith("{question}")
    samples = (run_a / "stages" / "0-evaluate" / "eval" / "pope" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 6 and {"answer", "prediction", "label"} <= set(json.loads(samples[0]))
    assert "## Evaluation" in (run_a / "report.md").read_text()

    # 2. From a spec with evaluate stages only (another protocol, so the numbers may differ).
    spec = {"name": "pope-yes-no", "model": {"name": "tiny-llava", "config": {"path": str(tiny_dir)}},
            "stages": [{"type": "evaluate", "evaluators": [{"name": "pope", "config": {**pope, "protocol": "first-yes-no"}}]}]}
    spec_file = tmp_path / "eval.json"
    spec_file.write_text(json.dumps(spec))
    run_b = tmp_path / "run-b"
    done = cli(env, "eval", str(spec_file), "--output-dir", str(run_b))
    assert done.returncode == 0, done.stdout + done.stderr
    # The protocol used is in the manifest (and results.json).
    assert manifest(run_b)["evaluations"][0]["results"]["pope"]["details"]["protocol"]["name"] == "first-yes-no"
    assert manifest(run_a)["evaluations"][0]["results"]["pope"]["details"]["protocol"]["name"] == "pope-original"

    # 3. Compare the two: 20 metrics -> transposed (one row per metric, one column per run).
    chart = tmp_path / "cmp.png"
    done = cli(env, "compare", str(run_a), str(run_b), "--chart", str(chart))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["metric", "eval-tiny-llava", "pope-yes-no"]
    assert any(line.startswith("pope.pope_f1 ↑") for line in lines)
    from PIL import Image

    with Image.open(chart) as im:
        assert im.size[0] > 200 and im.size[1] > 100
    # A few metrics -> the paper's layout: one row per run.
    done = cli(env, "compare", str(run_a), str(run_b), "--metrics", "pope.pope_f1,pope.pope_yes_ratio", "--no-chart")
    assert done.returncode == 0, done.stderr
    header, first, second = done.stdout.splitlines()[:3]
    assert header.split() == ["run", "pope.pope_f1", "↑", "pope.pope_yes_ratio", "↓"]
    assert first.startswith("eval-tiny-llava") and second.startswith("pope-yes-no")


# --------------------------------------------------------------------------- in-process
def test_eval_rejects_training_stages(tmp_path: Path, capsys) -> None:
    spec = {"name": "trains", "model": {"name": "tiny-llava"},
            "stages": [{"type": "sft", "data": {"name": "shapes-sft"}}, {"type": "evaluate", "evaluators": [{"name": "pope"}]}]}
    path = tmp_path / "trains.json"
    path.write_text(json.dumps(spec))
    assert main("eval", str(path)) == 2
    err = capsys.readouterr().err
    assert "runs evaluate stages only" in err and "stages[0] (sft, type 'sft')" in err and "mmalign run" in err


def test_eval_argument_errors(tmp_path: Path, capsys) -> None:
    assert main("eval") == 2
    assert "needs SPEC, or --model NAME" in capsys.readouterr().err
    assert main("eval", "x.json", "--model", "tiny-llava") == 2
    assert "not both" in capsys.readouterr().err
    assert main("eval", "--model", "tiny-llava", "--evaluator", "pope:{oops") == 2
    assert "--evaluator pope: invalid JSON" in capsys.readouterr().err
    assert main("eval", "--model", "tiny-llava", "--evaluator", "popee", "--dry-run") == 2
    assert "Unknown evaluator 'popee'" in capsys.readouterr().err


def test_eval_reports_missing_data_before_loading_the_model(tmp_path: Path, capsys) -> None:
    code = main("eval", "--model", "tiny-llava", "--evaluator", "pope:" + json.dumps({"data_dir": str(tmp_path / "nope")}))
    assert code == 2
    err = capsys.readouterr().err
    assert "stages[0].evaluators[0]: pope: benchmark data not found" in err and "coco_pope_random.json" in err


def test_eval_dry_run_prints_the_resolved_spec(tmp_path: Path, capsys) -> None:
    data = write_pope_parquet(tmp_path / "pope", SMALL_POPE)
    judge = {"name": "scripted-judge", "config": {"default": "Rating: 3"}}
    cfg_file = tmp_path / "mmhal.json"
    cfg_file.write_text(json.dumps({"data_dir": str(tmp_path / "no-mmhal"), "judge": judge}))
    code = main("eval", "--model", "tiny-llava", "--model-config", '{"hidden_size": 32}', "--seed", "3",
                "--evaluator", f'evals:pope:{{"data_dir": "{data}", "limit": 1}}', "--evaluator", f"mmhal-bench:@{cfg_file}", "--dry-run")
    out, err = capsys.readouterr()
    # mmhal-bench has no data in tmp_path: in an evaluation-only spec that is an error.
    assert code == 2 and "mmhal-bench: benchmark data not found" in err
    code = main("eval", "--model", "tiny-llava", "--model-config", '{"hidden_size": 32}', "--seed", "3",
                "--evaluator", f'evals:pope:{{"data_dir": "{data}", "limit": 1}}', "--dry-run")
    out, err = capsys.readouterr()
    assert code == 0, err
    spec = json.loads(out)
    assert spec["name"] == "eval-tiny-llava" and spec["seed"] == 3
    assert spec["model"] == {"name": "tiny:tiny-llava", "config": spec["model"]["config"]} and spec["model"]["config"]["hidden_size"] == 32
    (ev,) = spec["stages"][0]["evaluators"]
    assert ev["name"] == "evals:pope" and ev["config"]["limit"] == 1 and ev["config"]["max_new_tokens"] == 128


def test_parse_evaluator_arg(tmp_path: Path) -> None:
    from mmalign_core.cli_eval import parse_evaluator_arg

    assert parse_evaluator_arg("pope") == {"name": "pope", "config": {}}
    assert parse_evaluator_arg('evals:pope:{"limit": 2}') == {"name": "evals:pope", "config": {"limit": 2}}
    (tmp_path / "c.json").write_text('{"benchmark": "gqa"}')
    assert parse_evaluator_arg(f"vqa:@{tmp_path / 'c.json'}") == {"name": "vqa", "config": {"benchmark": "gqa"}}


# ------------------------------------------------------------------------------ compare
def fake_run(root: Path, name: str, stages: list[tuple[str, dict[str, Any]]], status: str = "complete") -> Path:
    """A run directory with only a manifest: ``stages`` = [(stage name, {evaluator key: (metrics, hib, details)})]."""
    root.mkdir(parents=True, exist_ok=True)
    evaluations = []
    for stage, results in stages:
        evaluations.append({"stage": stage, "results": {
            key: {"metrics": m, "higher_is_better": h, "details": d} for key, (m, h, d) in results.items()}})
    (root / "manifest.json").write_text(json.dumps({"spec": {"name": name}, "status": status, "evaluations": evaluations}))
    return root


def paper_results(pope_f1: float, textvqa: float, gqa: float, rec: float) -> dict[str, Any]:
    return {
        "pope": ({"pope_f1": pope_f1, "pope_yes_ratio": 0.5}, {"pope_f1": True, "pope_yes_ratio": False}, {"benchmark": "pope"}),
        "mmhal-bench": ({"mmhal_score": 2.95, "mmhal_hallucination_rate": 0.5}, {"mmhal_score": True, "mmhal_hallucination_rate": False},
                        {"benchmark": "mmhal-bench"}),
        "vqa": ({"vqa_accuracy": textvqa, "vqa_exact_match": 0.7}, {"vqa_accuracy": True, "vqa_exact_match": True}, {"benchmark": "textvqa"}),
        "vqa-3": ({"vqa_accuracy": gqa, "vqa_exact_match": gqa}, {"vqa_accuracy": True, "vqa_exact_match": True}, {"benchmark": "gqa"}),
        "object-halbench": ({"recall": rec, "chair_i": 0.1}, {"recall": True, "chair_i": False}, {"benchmark": "object-halbench"}),
    }


def test_compare_paper_layout(tmp_path: Path, capsys) -> None:
    base = fake_run(tmp_path / "base", "baseline", [("evaluate", paper_results(0.8640, 0.6485, 0.6423, 0.6813))])
    dpo = fake_run(tmp_path / "dpo", "dpo-povid", [("evaluate", paper_results(0.8809, 0.6456, 0.6412, 0.7348))])
    assert main("compare", str(base), str(dpo), "--paper", "--no-chart") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "POPE", "↑", "MMHAL", "↑", "MMHAL_V", "↑", "LLaVA_W", "↑", "VQA_T", "↑", "GQA", "↑", "MMVet", "↑", "Rec", "↑"]
    # In the paper's units: POPE 86.40, VQA_T 64.85, GQA 64.23, Rec 68.13; absent benchmarks are "–"; * marks the best.
    assert out[1].split() == ["baseline", "86.40", "2.95", "–", "–", "64.85*", "64.23*", "–", "68.13"]
    assert out[2].split() == ["dpo-povid", "88.09*", "2.95", "–", "–", "64.56", "64.12", "–", "73.48*"]
    assert any("no run has MMHAL_V, LLaVA_W, MMVet" in line for line in out)


def test_compare_labels_layout_and_json(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "r", "two-stage", [("before", paper_results(0.5, 0.5, 0.5, 0.5)), ("after", paper_results(0.6, 0.4, 0.5, 0.7))])
    empty = fake_run(tmp_path / "e", "crashed", [], status="failed")
    assert main("compare", str(run), str(empty), "--json", "--no-chart") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == ["two-stage/before", "two-stage/after"]
    labels = [c["label"] for c in report["columns"]]
    assert "textvqa.vqa_accuracy" in labels and "gqa.vqa_accuracy" in labels  # vqa evaluators named by their benchmark
    assert report["values"]["two-stage/after"]["object-halbench.recall"] == 0.7
    assert any("no finished evaluate stage" in n for n in report["notes"])
    # 10 metrics, 2 rows -> runs as rows; forcing the transposed layout puts metrics in rows.
    assert main("compare", str(run), "--metrics", "pope.*", "--layout", "metrics", "--markdown", "--no-chart") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| metric | two-stage/before | two-stage/after |"
    assert out[2] == "| pope.pope_f1 ↑ | 0.5000 | 0.6000* |"
    assert main("compare", str(run), "--metrics", "nothing.*", "--no-chart") == 2
    assert "no metric matches nothing.*" in capsys.readouterr().err
    assert main("compare", str(tmp_path / "missing")) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_compare_chart_is_written(tmp_path: Path, capsys) -> None:
    from PIL import Image

    runs = [str(fake_run(tmp_path / f"r{i}", f"run-{i}", [("evaluate", paper_results(0.8 + i / 100, 0.6, 0.6, 0.7 - i / 10))])) for i in range(3)]
    chart = tmp_path / "out" / "chart.png"
    assert main("compare", *runs, "--chart", str(chart)) == 0
    assert f"wrote {chart}" in capsys.readouterr().err
    with Image.open(chart) as im:
        assert im.mode in ("RGB", "RGBA") and im.size[0] >= 4 * 260
