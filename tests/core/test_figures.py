"""Figures with matplotlib: training curves chosen by the loss's declared metrics, evaluations vs step, compare bars."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from mmalign_core.figures import axis_label, bar_chart, curve_metrics, evaluation_figure, stage_offsets, training_figures  # noqa: E402
from mmalign_core.runner.report import write_report  # noqa: E402

DPO_METRICS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"]


def rows() -> list[dict]:
    out = []
    for step in range(5, 41, 5):
        out.append({"stage": "sft", "step": step, "loss": 2.5 / step ** 0.3, "tokens": 40.0, "epoch": step / 40, "lr": 1e-5})
    for step in range(2, 21, 2):
        m = 0.05 * step
        out.append({"stage": "dpo", "step": step, "loss": math.log(2) - 0.02 * step, "rewards/chosen": m / 2,
                    "rewards/rejected": -m / 2, "rewards/margin": m, "rewards/accuracy": min(1.0, 0.5 + step / 40),
                    "logps/chosen": -40.0 + step, "examples_per_s": 3.0})
    return out


def stages() -> list[dict]:
    return [
        {"name": "eval-base", "type": "evaluate"},
        {"name": "sft", "type": "sft", "steps": 40, "loss_metrics": ["loss", "tokens"]},
        {"name": "eval-sft", "type": "evaluate"},
        {"name": "dpo", "type": "align", "steps": 20, "loss_metrics": DPO_METRICS},
        {"name": "eval-dpo", "type": "evaluate"},
    ]


def evaluations() -> list[dict]:
    def res(f1: float, chair: float) -> dict:
        return {"shapes-pope": {"metrics": {"f1": f1, "yes_ratio": 0.5}, "higher_is_better": {"f1": True}},
                "shapes-chair": {"metrics": {"chair_i": chair}, "higher_is_better": {"chair_i": False}}}

    return [{"stage": "eval-base", "results": res(0.5, 0.4)}, {"stage": "eval-sft", "results": res(0.7, 0.3)},
            {"stage": "eval-dpo", "results": res(0.8, 0.2)}]


def assert_drawn(path: Path, min_width: int = 400) -> None:
    with Image.open(path) as im:
        assert im.size[0] >= min_width and im.size[1] >= 250
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20  # lines, text and antialiasing: not a blank canvas


def test_curves_follow_the_declared_metrics_not_everything_logged() -> None:
    r = rows()
    assert curve_metrics(r, "dpo", DPO_METRICS) == DPO_METRICS  # logps/chosen is logged but not declared
    assert "logps/chosen" in curve_metrics(r, "dpo", None)  # nothing declared: every logged curve
    assert curve_metrics(r, "sft", ["loss", "tokens"]) == ["loss", "tokens"]
    assert stage_offsets(stages()) == {"eval-base": 0, "sft": 0, "eval-sft": 40, "dpo": 40, "eval-dpo": 60}
    assert axis_label("rewards/margin") == "rewards/margin (β · log-ratio)" and axis_label("f1") == "f1"


def test_training_and_evaluation_figures(tmp_path: Path) -> None:
    figs = training_figures(rows(), stages(), tmp_path)
    names = [f.path.name for f in figs]
    assert names == ["train_loss.png", "train_tokens.png", "train_rewards.png"]
    for f in figs:
        assert_drawn(f.path)
    ev = evaluation_figure(evaluations(), stages(), tmp_path / "evaluations.png")
    assert ev is not None
    assert_drawn(ev.path, min_width=900)  # two evaluator panels side by side
    assert evaluation_figure([], stages(), tmp_path / "none.png") is None


def test_compare_bars(tmp_path: Path) -> None:
    values = {"run-a": {"pope.f1": 0.81, "chair.chair_i": 12.5}, "run-b": {"pope.f1": 0.77, "chair.chair_i": 9.25},
              "run-c": {"pope.f1": 0.84}}
    path = bar_chart(list(values), [("pope.f1", True), ("chair.chair_i", False)], values, tmp_path / "cmp.png", decimals=2)
    assert_drawn(path)


def test_report_links_every_figure(tmp_path: Path) -> None:
    with open(tmp_path / "metrics.jsonl", "w") as fh:
        for r in rows():
            fh.write(json.dumps(r) + "\n")
    manifest = {"spec": {"name": "demo", "seed": 0}, "status": "complete", "stages": stages(), "evaluations": evaluations()}
    text = write_report(tmp_path, manifest).read_text()
    linked = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert linked == ["plots/train_loss.png", "plots/train_tokens.png", "plots/train_rewards.png", "plots/evaluations.png"]
    for rel in linked:
        assert (tmp_path / rel).stat().st_size > 5000


def test_report_without_matplotlib_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(rows()[0]) + "\n")
    text = write_report(tmp_path, {"spec": {"name": "x"}, "stages": stages()[:2], "evaluations": []}).read_text()
    assert "pip install 'mmalign[report]'" in text
    assert not (tmp_path / "plots").exists()


def test_long_metric_names_wrap_at_their_separators() -> None:
    from mmalign_core.figures import wrap_label

    assert wrap_label("pope.pope_f1") == "pope.pope_f1"
    wrapped = wrap_label("object-halbench.metric_number_0_long_name", 32)
    assert wrapped.replace("\n", "") == "object-halbench.metric_number_0_long_name"
    assert all(len(line) <= 32 for line in wrapped.splitlines()) and "\n" in wrapped
