"""Whole runs through the ``mmalign`` CLI in subprocesses: quickstart, refusal to clobber, resume, third-party plugins."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "mmalign_core" / "defaults" / "quickstart.json"


@pytest.fixture(scope="module")
def env(fixture_site: Path, mmalign_cache: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("MMALIGN_DISABLE_PLUGINS",)}
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fixture_site), os.environ.get("PYTHONPATH")]))
    e["MMALIGN_CACHE"] = str(mmalign_cache)
    e["MMALIGN_PROGRESS"] = "0"
    e["OMP_NUM_THREADS"] = "1"  # the suite runs one subprocess at a time; avoid spin-wait contention with pytest
    return e


def cli(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmalign_core.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def write(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(json.dumps(spec, indent=2))
    return path


def small_quickstart() -> dict[str, Any]:
    """The embedded quickstart, shrunk for speed (same stages, components and shape)."""
    spec = json.loads(QUICKSTART.read_text())
    prior, sft, ev1, align, ev2 = spec["stages"]
    prior["data"]["config"]["n_examples"] = 200
    prior["train"].update(steps=10, batch_size=16, log_every=5)
    sft["data"]["config"]["n_examples"] = 600
    sft["train"].update(steps=40, batch_size=16, log_every=10)
    align["data"]["config"]["base"]["config"]["n_pairs"] = 64
    align["train"].update(steps=4, batch_size=8, log_every=2)
    for ev in (ev1, ev2):
        for e in ev["evaluators"]:
            e["config"]["n_images"] = 12
            if e["name"].split(":")[-1] == "shapes-chair":
                e["config"]["n_absent_images"] = 12
    return spec


def test_examples_quickstart_is_the_embedded_default() -> None:
    assert (ROOT / "examples" / "quickstart.json").resolve() == QUICKSTART.resolve()
    from mmalign_core import cli as cli_mod

    assert cli_mod.EMBEDDED_QUICKSTART.resolve() == QUICKSTART.resolve()


@pytest.mark.slow
def test_quickstart_end_to_end(env: dict[str, str], tmp_path: Path) -> None:
    spec = write(tmp_path / "qs.json", small_quickstart())
    out = tmp_path / "run"
    done = cli(env, "run", str(spec), "--output-dir", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert len(manifest["spec_hash"]) == 64
    assert manifest["packages"]["torch"].startswith("2.")
    assert {p["name"] for p in manifest["plugins"]} >= {"core", "tiny", "shapes", "losses"}
    assert [s["status"] for s in manifest["stages"]] == ["complete"] * 5
    prior, sft, ev1, align, ev2 = manifest["stages"]
    assert sft["data"]["n_examples"] == 600 and sft["data"]["fingerprint"]
    assert align["data"]["source"] == "bdhs:bdhs" and align["steps"] == 4
    assert all(s["seconds"] > 0 for s in manifest["stages"])
    for ev in (ev1, ev2):
        chair = ev["results"]["shapes-chair"]["metrics"]
        assert 0.0 <= chair["partner_hallucination"] <= 1.0
        assert (out / "stages" / f"{ev['index']}-{ev['name']}" / "eval" / "shapes-chair" / "samples.jsonl").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "sft"] == [10, 20, 30, 40]
    assert [r["step"] for r in rows if r["stage"] == "bdhs-dpo"] == [2, 4]
    assert all("rewards/margin" in r and "rewards/accuracy" in r for r in rows if r["stage"] == "bdhs-dpo")
    # SFT must actually learn: the loss falls.
    sft_loss = [r["loss"] for r in rows if r["stage"] == "sft"]
    assert sft_loss[-1] < sft_loss[0]
    report = (out / "report.md").read_text()
    assert "partner_hallucination" in report and "| eval-sft | eval-dpo |" in report.replace("metric | ", "")
    assert [r["step"] for r in rows if r["stage"] == "prior"] == [5, 10]
    for png in ("train_loss.png", "train_rewards.png", "evaluations.png"):
        assert (out / "plots" / png).stat().st_size > 1000
        assert f"](plots/{png})" in report
    # The trained model is a plain transformers folder.
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = Path(manifest["final_model"])
    assert model_dir == out / "stages" / "3-bdhs-dpo" / "model"
    AutoModelForImageTextToText.from_pretrained(str(model_dir))
    AutoProcessor.from_pretrained(str(model_dir))


def _tiny_spec(name: str, align_steps: int, checkpoint_every: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "seed": 3,
        "deterministic": True,
        "model": {"name": "tiny-llava"},
        "stages": [
            {"type": "sft", "data": {"name": "shapes-sft", "config": {"n_examples": 64}},
             "train": {"steps": 3, "batch_size": 8, "lr": 1e-3, "log_every": 1}},
            {"type": "align", "data": {"name": "shapes-pairs", "config": {"n_pairs": 48}},
             "loss": {"name": "dpo", "config": {"beta": 0.1}},
             "train": {"steps": align_steps, "batch_size": 4, "micro_batch_size": 2, "lr": 1e-3, "log_every": 1,
                       "checkpoint_every": checkpoint_every}},
        ],
    }


def test_refuses_to_overwrite_and_resumes_completed_stages(env: dict[str, str], tmp_path: Path) -> None:
    spec = write(tmp_path / "s.json", _tiny_spec("clobber", 2))
    out = tmp_path / "run"
    first = cli(env, "run", str(spec), "--output-dir", str(out))
    assert first.returncode == 0, first.stderr
    again = cli(env, "run", str(spec), "--output-dir", str(out))
    assert again.returncode == 2  # bad input (the folder holds a run): docs/cli.md
    assert "--resume" in again.stderr and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    resumed = cli(env, "run", str(spec), "--output-dir", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("already complete") == 2
    changed = _tiny_spec("clobber", 3)
    write(spec, changed)
    refused = cli(env, "run", str(spec), "--output-dir", str(out), "--resume")
    assert refused.returncode == 1 and "spec changed" in refused.stderr
    over = cli(env, "run", str(spec), "--output-dir", str(out), "--overwrite")
    assert over.returncode == 0, over.stderr
    assert json.loads((out / "manifest.json").read_text())["stages"][1]["steps"] == 3


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _kill_at_checkpoint(env: dict[str, str], spec: Path, killed: Path, every: int) -> None:
    """Start the run in ``killed`` and SIGKILL it once its align stage wrote the step-``every`` checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "mmalign_core.cli", "run", str(spec), "--output-dir", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "stages" / "1-align" / "checkpoints" / f"step-{every:07d}" / "trainer_state.pt"
    deadline = time.time() + 300
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.is_file(), "the run never reached its first checkpoint"
    assert not (killed / "stages" / "1-align" / "done.json").exists(), "the run finished before it could be killed"


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(env: dict[str, str], tmp_path: Path) -> None:
    steps, every = 24, 4
    spec = write(tmp_path / "s.json", _tiny_spec("killed", steps, every))
    straight = tmp_path / "straight"
    ok = cli(env, "run", str(spec), "--output-dir", str(straight))
    assert ok.returncode == 0, ok.stderr

    killed = tmp_path / "killed"
    _kill_at_checkpoint(env, spec, killed, every)

    resumed = cli(env, "run", str(spec), "--output-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step-" in resumed.stdout and "already complete" in resumed.stdout
    a = _weights(straight / "stages" / "1-align" / "model")
    b = _weights(killed / "stages" / "1-align" / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after resume"
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "align"] == list(range(1, steps + 1))


@pytest.mark.slow
def test_a_stateful_loss_resumes_bit_exactly_after_sigkill(env: dict[str, str], tmp_path: Path) -> None:
    """The fixture plugin's shifted-dpo keeps a running reward shift; its state_dict travels in the checkpoint."""
    steps, every = 12, 4
    data = _tiny_spec("stateful", steps, every)
    data["stages"][1]["loss"] = {"name": "example-eval:shifted-dpo", "config": {"beta": 0.1, "momentum": 0.5}}
    spec = write(tmp_path / "s.json", data)
    straight = tmp_path / "straight"
    ok = cli(env, "run", str(spec), "--output-dir", str(straight))
    assert ok.returncode == 0, ok.stderr

    killed = tmp_path / "killed"
    _kill_at_checkpoint(env, spec, killed, every)
    resumed = cli(env, "run", str(spec), "--output-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step-" in resumed.stdout

    def shifts(run: Path) -> list[float]:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["shift"] for r in rows if r["stage"] == "align"]

    assert len(shifts(killed)) == steps and shifts(killed) == shifts(straight)
    a = _weights(straight / "stages" / "1-align" / "model")
    b = _weights(killed / "stages" / "1-align" / "model")
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after resume"


def test_third_party_plugin_components_run(env: dict[str, str], tmp_path: Path) -> None:
    """Components of the pip-installed fixture plugin (tests/fixtures/plugins/mmalign-example-eval) in a real run."""
    listing = cli(env, "plugins")
    assert "answer-length" in listing.stdout and "example-eval" in listing.stdout
    assert "broken" in listing.stdout  # the deliberately broken package is reported, the rest still works
    spec = {
        "name": "third-party",
        "model": {"name": "tiny-llava"},
        "stages": [
            {"type": "align", "data": {"name": "shapes-pairs", "config": {"n_pairs": 16}},
             "loss": {"name": "example-eval:scaled-dpo", "config": {"scale": 2.0}},
             "train": {"steps": 2, "batch_size": 4, "log_every": 1}},
            {"type": "evaluate", "evaluators": [{"name": "answer-length", "config": {"max_new_tokens": 4, "image_size": 48}}]},
        ],
    }
    out = tmp_path / "run"
    done = cli(env, "run", str(write(tmp_path / "s.json", spec)), "--output-dir", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    res = json.loads((out / "stages" / "1-evaluate" / "eval" / "answer-length" / "results.json").read_text())
    assert res["evaluator"] == "example-eval:answer-length"
    assert all(0 <= v for v in res["metrics"].values())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("rewards/margin" in r for r in rows)
