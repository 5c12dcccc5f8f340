"""The GPU check (benchmarks/gpu/run.sh) without a GPU: its dry run executes every part's code on CPU with tiny
sizes, so the script cannot rot while no GPU is lent; a failing, overrunning or unstarted part is recorded
and the other parts still run."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "benchmarks" / "gpu"
if str(GPU) not in sys.path:
    sys.path.insert(0, str(GPU))

from gpucheck.correctness import first_divergences  # noqa: E402
from gpucheck.sizes import DRY, PARTS  # noqa: E402


def _check_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_script", GPU / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _failed(part: dict) -> list:
    return part.get("errors", []) + [c for c in part.get("checks", []) if not c["ok"]]


@pytest.mark.slow
def test_the_dry_run_runs_every_part_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_CHECK_WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    env.pop("GPU_CHECK_INJECT", None)
    done = subprocess.run(["bash", str(GPU / "run.sh"), "--dry-run"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert list(report["parts"]) == list(PARTS)
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, _failed(part))
    corr = report["parts"]["correctness"]
    runs = sum(len(dtypes) for _, dtypes in DRY.correctness.runs) * len(DRY.correctness.families)
    assert len(corr["checks"]) == 4 * runs  # pair_logps, BDHS rho=0 and rho=1, decoding (each family here has a lean loop)
    dpo = report["parts"]["dpo"]["figures"]
    for arm in ("trl", "mmalign", "mmalign-cached"):
        assert dpo[f"{arm}/pairs_per_s"] > 0
    assert dpo["mmalign/speedup_vs_trl"] > 0 and "mmalign/memory_vs_trl" not in dpo  # no CUDA memory on CPU
    assert report["parts"]["sampling"]["figures"]["4x1/speedup"] > 0
    fsdp = report["parts"]["fsdp"]["figures"]
    assert fsdp["resumed_from_step"] == DRY.fsdp.checkpoint_every and fsdp["resume_loss_equal"] is True
    assert report["install"]["status"] == "ok"
    summary = (out / "gpu-check.txt").read_text()
    assert "target mmalign" in summary and "fsdp" in summary
    assert len(list(out.iterdir())) <= 8  # the device returns at most 8 files from $OUT


def test_a_failing_an_overrunning_and_an_unstarted_part_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = _check_module()
    monkeypatch.setenv("GPU_CHECK_INJECT", "environment:fail,correctness:hang")
    profile = replace(DRY, budgets={**DRY.budgets, "correctness": 3.0, "environment": 60.0})
    report = check.orchestrate(profile, ["correctness", "environment"], tmp_path / "out", tmp_path / "scratch", total=120.0)
    parts = report["parts"]
    assert parts["correctness"]["status"] == "timeout"  # killed at its budget ...
    assert 3.0 <= parts["correctness"]["wall_seconds"] < 30
    assert parts["environment"]["status"] == "error"  # ... and the next part still ran (and failed, as injected)
    assert "injected" in parts["environment"]["errors"][0]
    saved = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert saved["parts"].keys() == parts.keys()
    assert sum("ERROR" in line for line in saved["summary"]["lines"]) == 2
    late = check.orchestrate(profile, ["sampling"], tmp_path / "late", tmp_path / "scratch", total=0.0)
    assert late["parts"]["sampling"]["status"] == "skipped"  # the check's time was used up


def test_greedy_rows_may_part_only_where_generate_saw_a_near_tie() -> None:
    import torch

    scores = [torch.tensor([[0.0, 5.0, 4.99], [0.0, 1.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])]
    lean = [[2, 0], [2, 1]]
    gen = [[1, 0], [2, 1]]  # row 0 parts at step 0, where generate's top two differ by 0.01
    divs = first_divergences(lean, gen, scores)
    assert divs == [{"row": 0, "step": 0, "lean": 2, "generate": 1, "margin": pytest.approx(0.01, abs=1e-6),
                     "tie_tolerance": pytest.approx(0.1)}]
