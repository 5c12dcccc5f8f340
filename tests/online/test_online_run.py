"""Whole runs through ``mmalign`` in subprocesses: online-DPO with the shapes-oracle on the tiny model; spec checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def env(mmalign_cache: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(MMALIGN_CACHE=str(mmalign_cache), MMALIGN_PROGRESS="0", OMP_NUM_THREADS="1")
    return e


def cli(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmalign_core.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def small(name: str) -> dict[str, Any]:
    """An example spec shrunk for speed: a short SFT, a few online steps, small evaluations."""
    spec = json.loads((EXAMPLES / f"{name}.json").read_text())
    sft, ev1, align, ev2 = spec["stages"]
    # Captions only, briefly: enough for the policy to write shape captions the oracle can rank.
    sft["data"]["config"].update(n_examples=600, caption_fraction=1.0, yes_no_fraction=0.0, count_fraction=0.0, text_only_fraction=0.0)
    sft["train"].update(steps=80, batch_size=16, lr=0.003, log_every=20)
    align["train"].update(steps=3, batch_size=8, log_every=1, checkpoint_every=2)
    cfg = align["data"]["config"]
    (cfg.get("prompts") or cfg.get("base"))["config"]["n_pairs"] = 64
    cfg["max_new_tokens"] = 12
    for ev in (ev1, ev2):
        for e in ev["evaluators"]:
            e["config"]["n_images"] = 8
            if e["name"].split(":")[-1] == "shapes-chair":
                e["config"]["n_absent_images"] = 8
    spec["stages"] = [sft, align, ev2]
    return spec


@pytest.mark.slow
def test_online_dpo_run_with_the_shapes_oracle(env, tmp_path: Path) -> None:
    spec = small("online-dpo-oracle")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "run"
    res = cli(env, "run", str(path), "--output-dir", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    align = manifest["stages"][1]
    assert align["data"]["source"] == "online:online-dpo" and align["steps"] == 3
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    online = [r for r in rows if r["stage"] == "online-dpo"]
    # The runner logs a row for steps that trained (a step whose pairs were all dropped makes no update).
    assert [r["step"] for r in online] == [1, 2, 3]
    for r in online:
        assert r["online/online"] == 8 and r["online/generated"] == 16
        assert r["online/kept"] + r["online/dropped_tie"] + r["online/dropped_identical"] + r["online/dropped_unparsable"] == 8
        assert 0 <= r["online/position1_rate"] <= 1
    log = out / "stages" / "1-online-dpo" / "data" / "online"
    samples = [json.loads(x) for x in (log / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == [0, 1, 2] and len(samples) == 24
    kept = sum(s["status"] == "kept" for s in samples)
    assert len((log / "pairs.jsonl").read_text().splitlines()) == kept
    assert json.loads((log / "summary.json").read_text())["totals"]["online"] == 24
    assert "online-dpo" in (out / "report.md").read_text()
    assert manifest["evaluations"] and "shapes-chair" in manifest["evaluations"][0]["results"]


def test_example_specs_validate(env) -> None:
    for path in sorted(EXAMPLES.glob("online-*.json")) + sorted(EXAMPLES.glob("mixed-*.json")):
        res = cli(env, "validate", str(path), timeout=120)
        assert res.returncode == 0 and "OK" in res.stdout, (path.name, res.stdout, res.stderr)


def test_validation_catches_cross_component_mistakes(env, tmp_path: Path) -> None:
    spec = small("mixed-dpo-oracle")
    align = spec["stages"][1]
    align["train"]["cache_reference"] = True
    align["data"]["config"]["engine"] = {"name": "vllm"}
    align["data"]["config"]["judge"]["config"] = {"world": {"cooccurrence": 0.5}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    res = cli(env, "validate", str(path), timeout=120)
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "stages[1].train.cache_reference" in text
    assert "stages[1].data.config.engine.name" in text and "vllm" in text
    assert "stages[1].data.config.judge.config.world" in text
    spec = small("online-dpo-oracle")
    spec["stages"][1]["data"]["config"]["judge"] = {"name": "shapes-orakel"}
    path.write_text(json.dumps(spec))
    res = cli(env, "validate", str(path), timeout=120)
    assert res.returncode != 0 and "shapes-oracle" in res.stdout + res.stderr  # "did you mean"
