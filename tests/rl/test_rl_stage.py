"""The 'rl' stage through the spec and the runner: validation errors, a run, and exact resume after SIGKILL."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmalign_core.spec import check_spec

ROOT = Path(__file__).resolve().parents[2]
QUICK = json.loads((ROOT / "examples" / "rl" / "grpo-quick.json").read_text())


def _spec(steps: int = 3, every: int | None = None, **stage: Any) -> dict[str, Any]:
    spec = copy.deepcopy(QUICK)
    st = spec["stages"][0]
    st["train"].update(steps=steps, checkpoint_every=every)
    st["rollout"].update(prompts_per_step=2, samples_per_prompt=4, max_new_tokens=6)
    st.update(stage)
    return spec


def _problems(spec: dict[str, Any]) -> dict[str, str]:
    validated, problems = check_spec(spec)
    assert validated is None
    return {p.path: p.message for p in problems}


def test_the_quick_example_validates() -> None:
    validated, problems = check_spec(_spec())
    assert validated is not None, [p.__dict__ for p in problems]


@pytest.mark.parametrize("change, path, words", [
    ({"reward": {"name": "shapes-orcale"}}, "stages[0].reward.name", "shapes-oracle"),
    ({"algorithm": {"name": "grpo", "config": {"loss_aggregation": "mean"}}}, "stages[0].algorithm.config.loss_aggregation", "token-sum"),
    ({"reward": {"name": "python-function", "config": {"function": "os:system"}}}, "stages[0].reward.config.function", "plugin"),
    ({"data": {"name": "online-dpo"}}, "stages[0].data", "online source"),
    ({"reward": {"name": "shapes-oracle", "config": {"world": {"image_size": 64}}},
      "data": {"name": "shapes-pairs", "config": {"n_pairs": 8}}}, "stages[0].reward.config.world", "world"),
])
def test_validation_names_the_field_and_the_fix(change: dict, path: str, words: str) -> None:
    problems = _problems(_spec(**change))
    assert path in problems, problems
    assert words in problems[path]


def test_grpo_needs_two_samples_per_prompt() -> None:
    spec = _spec()
    spec["stages"][0]["rollout"]["samples_per_prompt"] = 1
    assert "at least 2" in _problems(spec)["stages[0].rollout.samples_per_prompt"]


@pytest.mark.slow
def test_a_run_records_the_stage_in_metrics_and_manifest(tmp_path: Path, mmalign_cache: Path) -> None:
    from mmalign_core.runner.run import run_spec

    validated, _ = check_spec(_spec(steps=2))
    out = run_spec(validated, output_dir=tmp_path / "run")
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stages"][0]
    assert stage["status"] == "complete" and stage["steps"] == 2 and stage["examples_seen"] == 16
    assert stage["algorithm"]["component"] == "rl:grpo" and stage["reward"]["component"] == "rl:weighted-sum"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["stage"] == "rl" for r in rows)
    assert {"reward/shapes-oracle/mean", "reward/length/mean", "kl", "entropy"} <= set(rows[0])
    assert (out / "stages" / "0-rl" / "model" / "adapter_model.safetensors").is_file()
    assert (out / "stages" / "0-rl" / "data" / "rl" / "rollouts.jsonl").is_file()


def _env(mmalign_cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MMALIGN_CACHE=str(mmalign_cache), OMP_NUM_THREADS="1", MMALIGN_PROGRESS="0")
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmalign_core.cli", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_rl_run(tmp_path: Path, mmalign_cache: Path) -> None:
    from safetensors.torch import load_file

    steps, every = 8, 2
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(_spec(steps=steps, every=every)))
    env = _env(mmalign_cache)
    straight = tmp_path / "straight"
    ok = _run(env, "run", str(spec), "--output-dir", str(straight))
    assert ok.returncode == 0, ok.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mmalign_core.cli", "run", str(spec), "--output-dir", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "stages" / "0-rl" / "data" / "rl" / "rollouts.jsonl"
    marker = killed / "stages" / "0-rl" / "checkpoints" / f"step-{every:07d}" / "trainer_state.pt"
    deadline = time.time() + 300

    def logged_steps() -> set[int]:
        if not log.is_file():
            return set()
        return {json.loads(x)["step"] for x in log.read_text().splitlines() if x.strip().endswith("}")}

    # Kill after the first checkpoint, once a step past it is logged (so the resume replays it).
    while proc.poll() is None and time.time() < deadline and not (marker.is_file() and max(logged_steps(), default=-1) >= every):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.is_file(), "the run never reached its first checkpoint"
    assert not (killed / "stages" / "0-rl" / "done.json").exists(), "the run finished before it could be killed"

    resumed = _run(env, "run", str(spec), "--output-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step-" in resumed.stdout
    a = load_file(str(straight / "stages" / "0-rl" / "model" / "adapter_model.safetensors"))
    b = load_file(str(killed / "stages" / "0-rl" / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after resume"
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert any(r["reused"] == 1.0 for r in rows)  # at least one step came from the rollout log
    want = {r["step"]: r["reward/mean"] for r in (json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines())}
    assert {r["step"]: r["reward/mean"] for r in rows} == want
