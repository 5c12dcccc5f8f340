"""Trackers: the spec's ``trackers`` list, its validation, the fan-out, and each library's store read back."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from mmalign_core.protocols import TrackedRun
from mmalign_core.spec import check_spec
from mmalign_core.tracking import TrackerSet, flatten

MANIFEST_STAGES = [
    {"name": "sft", "type": "sft", "steps": 4},
    {"name": "eval-sft", "type": "evaluate"},
    {"name": "dpo", "type": "align", "steps": 2},
]


def spec_with(trackers: list[Any]) -> dict[str, Any]:
    return {
        "name": "tracked",
        "description": "a tracked run",
        "model": {"name": "tiny-llava"},
        "stages": [
            {"type": "sft", "data": {"name": "shapes-sft", "config": {"n_examples": 8}}, "train": {"steps": 2, "batch_size": 4, "log_every": 1}},
            {"type": "evaluate", "name": "eval-sft", "evaluators": [{"name": "shapes-pope", "config": {"n_images": 2}}]},
        ],
        "trackers": trackers,
    }


# ------------------------------------------------------------------------------------ validation
def problems_of(trackers: list[Any]) -> list[tuple[str, str]]:
    _, problems = check_spec(spec_with(trackers))
    return [(p.path, p.message) for p in problems if p.severity == "error"]


def test_trackers_resolve_qualified_with_defaults() -> None:
    validated, problems = check_spec(spec_with([{"name": "tensorboard"}, {"name": "trackers:mlflow", "config": {"experiment": "e"}}]))
    assert validated is not None, problems
    recorded = validated.resolved["trackers"]
    assert recorded[0] == {"name": "trackers:tensorboard", "config": {"log_dir": None, "run_name": None}}
    assert recorded[1]["name"] == "trackers:mlflow" and recorded[1]["config"]["experiment"] == "e"
    assert check_spec(spec_with([]))[0].resolved["trackers"] == []


def test_unknown_tracker_and_bad_config_are_errors_at_their_path() -> None:
    found = problems_of([{"name": "tensorbored"}, {"name": "wandb", "config": {"mode": "cloud"}}, {"name": "tensorboard", "config": {"logdir": "x"}}])
    paths = [p for p, _ in found]
    assert paths[0] == "trackers[0]" and "tensorboard" in found[0][1]  # did-you-mean
    assert "trackers[1].config.mode" in paths
    assert any(p == "trackers[2].config.logdir" and "log_dir" in m for p, m in found)


def test_a_tracker_whose_library_is_missing_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmalign_core.tracking as tracking

    monkeypatch.setattr(tracking, "library_installed", lambda module: module != "wandb")
    found = problems_of([{"name": "tensorboard"}, {"name": "wandb"}])
    assert len(found) == 1
    path, message = found[0]
    assert path == "trackers[1]"
    assert "needs the Python package 'wandb', which is not installed" in message
    assert "pip install 'mmalign-trackers[wandb]'" in message


def test_flatten_gives_tracker_friendly_hyperparameters() -> None:
    flat = flatten({"a": {"b": [1, {"c": None}], "d": []}, "e": "x"})
    assert flat == {"a.b.0": 1, "a.b.1.c": "null", "a.d": "[]", "e": "x"}


# -------------------------------------------------------------------------------------- fan-out
class Recorder:
    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.fail_on = fail_on

    def start(self, run: TrackedRun) -> None:
        self.calls.append(("start", run.name, None))

    def log_metrics(self, metrics: dict, step: int) -> None:
        if self.fail_on and any(self.fail_on in k for k in metrics):
            raise ConnectionError("server gone")
        self.calls.append(("log", dict(metrics), step))

    def finish(self, manifest: dict) -> None:
        self.calls.append(("finish", manifest["status"], None))


def drive(trackers: list[Any], run_dir: Path, log: list[str]) -> None:
    stages: list[dict] = []
    ts = TrackerSet([(f"trackers[{i}]", t) for i, t in enumerate(trackers)], lambda: stages, log.append)
    ts.start(TrackedRun(run_dir, "tracked", {"name": "tracked", "seed": 0}, "abc123"))
    stages.append({"name": "sft", "type": "sft"})
    for step in (2, 4):
        ts.on_metrics(run_dir, "sft", step, {"loss": 1.0 / step, "epoch": 0.5, "flag": True})
    stages[-1]["steps"] = 4
    stages.append({"name": "eval-sft", "type": "evaluate"})
    ts.on_evaluation(run_dir, "eval-sft", "shapes-pope", {"f1": 0.75, "note": "text"})
    stages.append({"name": "dpo", "type": "align"})
    ts.on_metrics(run_dir, "dpo", 2, {"loss": 0.6, "rewards/margin": 0.2})
    stages[-1]["steps"] = 2
    manifest = {"status": "complete", "stages": stages, "evaluations": [
        {"stage": "eval-sft", "results": {"shapes-pope": {"metrics": {"f1": 0.75}}}}]}
    ts.on_run_end(run_dir, manifest)
    ts.on_run_end(run_dir, manifest)  # finishing twice (success path, then a failure handler) is harmless


def test_fan_out_uses_one_run_wide_step_axis(tmp_path: Path) -> None:
    rec, log = Recorder(), []
    drive([rec], tmp_path, log)
    assert rec.calls == [
        ("start", "tracked", None),
        ("log", {"sft/loss": 0.5, "sft/epoch": 0.5}, 2),
        ("log", {"sft/loss": 0.25, "sft/epoch": 0.5}, 4),
        ("log", {"eval/shapes-pope/f1": 0.75}, 4),
        ("log", {"dpo/loss": 0.6, "dpo/rewards/margin": 0.2}, 6),
        ("finish", "complete", None),
    ]


def test_a_failing_tracker_is_reported_once_and_switched_off(tmp_path: Path) -> None:
    bad, good, log = Recorder(fail_on="eval/"), Recorder(), []
    drive([bad, good], tmp_path, log)
    assert [c[0] for c in bad.calls] == ["start", "log", "log"]  # nothing after the failure, no finish
    assert [c[0] for c in good.calls] == ["start", "log", "log", "log", "log", "finish"]
    warnings = [line for line in log if line.startswith("warning")]
    assert len(warnings) == 1 and "trackers[0]" in warnings[0] and "server gone" in warnings[0]


def test_a_tracker_that_cannot_start_stops_the_run_and_only_started_ones_finish(tmp_path: Path) -> None:
    from mmalign_core.errors import RunError

    class NoStart(Recorder):
        def start(self, run: TrackedRun) -> None:
            raise PermissionError("cannot write the log folder")

    first, broken, never = Recorder(), NoStart(), Recorder()
    ts = TrackerSet([("trackers[0] (a)", first), ("trackers[1] (b)", broken), ("trackers[2] (c)", never)], lambda: [], print)
    with pytest.raises(RunError, match=r"trackers\[1\] \(b\): the tracker failed to start: PermissionError"):
        ts.start(TrackedRun(tmp_path, "tracked", {}, "h"))
    ts.on_run_end(tmp_path, {"status": "failed"})
    assert first.calls[-1] == ("finish", "failed", None) and never.calls == [] and broken.calls == []


# ------------------------------------------------------------------------ each library, read back
def build(name: str, config: dict | None = None) -> Any:
    from mmalign_core.manager import get_plugins

    return get_plugins().resolve("tracker", name).build(config or {})


@pytest.mark.slow
def test_tensorboard_event_files_hold_every_value(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    drive([build("tensorboard")], tmp_path, [])
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "tracked"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert scalars == {
        "sft/loss": [(2, 0.5), (4, 0.25)], "sft/epoch": [(2, 0.5), (4, 0.5)], "eval/shapes-pope/f1": [(4, 0.75)],
        "dpo/loss": [(6, 0.6)], "dpo/rewards/margin": [(6, 0.2)],
    }
    texts = {tag: acc.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in acc.Tags()["tensors"]}
    assert '"status": "complete"' in texts["mmalign/manifest/text_summary"]
    assert '"name": "tracked"' in texts["mmalign/spec/text_summary"]


@pytest.mark.slow
def test_mlflow_file_store_holds_every_value(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    drive([build("mlflow")], tmp_path, [])
    client = MlflowClient((tmp_path / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([exp.experiment_id])
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics}
    assert history == {
        "sft/loss": [(2, 0.5), (4, 0.25)], "sft/epoch": [(2, 0.5), (4, 0.5)], "eval/shapes-pope/f1": [(4, 0.75)],
        "dpo/loss": [(6, 0.6)], "dpo/rewards/margin": [(6, 0.2)],
    }
    assert run.data.params["name"] == "tracked" and run.data.params["spec_hash"] == "abc123"
    assert run.data.tags["mmalign.status"] == "complete" and run.info.status == "FINISHED"
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert json.loads((artifacts / "manifest.json").read_text())["status"] == "complete"
    assert json.loads((artifacts / "spec.json").read_text())["name"] == "tracked"


def wandb_records(path: Path) -> list[bytes]:
    """The records of a ``.wandb`` transaction log (LevelDB log format: 32 KiB blocks of CRC/length/type chunks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            records.append(pending)
            pending = b""
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_every_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2 as pb

    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "complete"}))
    drive([build("wandb")], tmp_path, [])
    (log_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history: dict[str, list[tuple[int, float]]] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for raw in wandb_records(log_file):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            step = int(items.pop("_step", rec.history.step.num))
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, []).append((step, value))
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
    assert history == {
        "sft/loss": [(2, 0.5), (4, 0.25)], "sft/epoch": [(2, 0.5), (4, 0.5)], "eval/shapes-pope/f1": [(4, 0.75)],
        "dpo/loss": [(6, 0.6)], "dpo/rewards/margin": [(6, 0.2)],
    }
    assert config["spec_hash"] == "abc123" and config["spec"]["name"] == "tracked"
    assert summary["mmalign/status"] == "complete" and summary["final/eval-sft/shapes-pope/f1"] == 0.75


# ------------------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_a_run_logs_its_metrics_rows_and_evaluations_to_tensorboard(tmp_path: Path, mmalign_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("mmalign_tiny")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mmalign_core.manager import get_plugins
    from mmalign_core.runner.run import run_spec

    monkeypatch.setenv("MMALIGN_PROGRESS", "lines")
    monkeypatch.setenv("MMALIGN_PROGRESS_INTERVAL", "0.001")
    validated, problems = check_spec(spec_with([{"name": "tensorboard", "config": {"log_dir": "tb"}}]), get_plugins())
    assert validated is not None, problems
    out = run_spec(validated, output_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    acc = EventAccumulator(str(out / "tb" / "tracked"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    logged = [(e.step, round(e.value, 5)) for e in acc.Scalars("sft/loss")]
    assert logged == [(r["step"], round(r["loss"], 5)) for r in rows] and len(logged) == 2
    f1 = manifest["evaluations"][0]["results"]["shapes-pope"]["metrics"]["pope_f1"]
    assert [(e.step, round(e.value, 5)) for e in acc.Scalars("eval/shapes-pope/pope_f1")] == [(2, round(f1, 5))]
    assert '"status": "complete"' in acc.Tensors("mmalign/manifest/text_summary")[0].tensor_proto.string_val[0].decode()
    # not a terminal: the stage printed progress lines with the step, rate, ETA and the last loss
    log = (out / "run.log").read_text()
    assert "sft: step 2/2 (100%)" in log and "steps/s" in log and "loss " in log
