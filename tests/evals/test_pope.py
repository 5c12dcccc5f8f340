"""POPE: known confusion matrices give hand-computed metrics, in both published layouts."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel, check_evaluator

from evals_data import POPE_ITEMS, pope_answers, write_pope_json, write_pope_parquet


def answering_model() -> ScriptedModel:
    answers = pope_answers()

    def respond(request):
        question = request.prompt.split("\n")[0]
        return answers[question]

    return ScriptedModel(respond)


# Hand-computed from the confusion matrices in conftest.POPE_ITEMS ("yes" is positive).
EXPECTED = {
    "random": {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5},
    "popular": {"accuracy": 0.5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 0.75},
    "adversarial": {"accuracy": 0.75, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0},
}


@pytest.mark.parametrize("layout", ["parquet", "json"])
def test_pope_metrics_for_a_known_confusion_matrix(evals, ctx, tmp_path: Path, layout: str) -> None:
    root = tmp_path / "pope"
    (write_pope_parquet if layout == "parquet" else write_pope_json)(root)
    model = answering_model()
    result = check_evaluator(evals.resolve("evaluator", "pope"), model, {"data_dir": str(root), "batch_size": 5}, ctx)
    for split, values in EXPECTED.items():
        for metric, value in values.items():
            assert result.metrics[f"pope_{split}_{metric}"] == pytest.approx(value), (split, metric)
    assert result.metrics["pope_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert result.metrics["pope_accuracy"] == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert result.metrics["pope_precision"] == pytest.approx((0.5 + 2 / 3) / 3)
    assert result.metrics["pope_yes_ratio"] == pytest.approx((0.5 + 0.75 + 0.0) / 3)
    assert result.n == len(POPE_ITEMS)
    # Pinned and recorded: prompt, decoding, protocol, sample list.
    d = result.details
    assert d["prompt_template"] == "{question}\nAnswer the question using a single word or phrase."
    assert d["example_prompt"].startswith("Is there a dog in the image?\nAnswer")
    assert d["decoding"] == {"max_new_tokens": 128, "do_sample": False, "batch_size": 5, "strategy": "greedy"}
    assert d["protocol"]["name"] == "pope-original" and d["protocol"]["reference"] is True
    assert d["read_differently_from_reference"] == 0 and d["questions_per_split"] == {"random": 4, "popular": 4, "adversarial": 4}
    assert len(d["sample_ids"]) == 12 and d["sample_ids"][0].startswith("random/") and len(d["sample_ids_sha256"]) == 64
    assert d["data"]["layout"] == ("lmms-lab parquet" if layout == "parquet" else "original json")
    # Batched: 12 questions in batches of at most 5; greedy.
    gen_calls = [c for c in model.calls if c[0] == "generate"]
    assert [c[1] for c in gen_calls] == [5, 5, 2] and all(not c[2]["do_sample"] for c in gen_calls)
    rec = result.records[1]
    assert rec["answer"] == "No." and rec["prediction"] == "no" and rec["label"] == "yes" and rec["correct"] is False


def test_pope_limit_and_ids_select_samples_per_split(evals, ctx, tmp_path: Path) -> None:
    root = write_pope_parquet(tmp_path / "pope")
    entry = evals.resolve("evaluator", "pope")
    limited = check_evaluator(entry, answering_model(), {"data_dir": str(root), "limit": 1}, ctx)
    assert limited.details["sample_ids"] == ["random/1", "popular/1", "adversarial/1"]
    # random/1: yes->yes (tp); popular/1: yes->yes; adversarial/1: yes->no.
    assert limited.metrics["pope_random_recall"] == 1.0 and limited.metrics["pope_adversarial_recall"] == 0.0
    chosen = check_evaluator(entry, answering_model(), {"data_dir": str(root), "ids": ["random/2", "popular/4", "adversarial/3"]}, ctx)
    assert chosen.details["sample_ids"] == ["random/2", "popular/4", "adversarial/3"]


def test_pope_first_yes_no_protocol_counts_unparsed_answers(evals, ctx, tmp_path: Path) -> None:
    root = write_pope_parquet(tmp_path / "pope")
    model = ScriptedModel("I cannot tell from the picture.")
    llava = check_evaluator(evals.resolve("evaluator", "pope"), model, {"data_dir": str(root)}, ctx)
    assert llava.metrics["pope_yes_ratio"] == 1.0  # the published rule: no "no"/"not" means yes
    strict = check_evaluator(evals.resolve("evaluator", "pope"), model, {"data_dir": str(root), "protocol": "first-yes-no"}, ctx)
    assert strict.metrics["pope_yes_ratio"] == 0.0 and strict.details["unparsed_answers"] == 12
    assert strict.details["read_differently_from_reference"] == 12


def test_missing_pope_data_names_the_files(evals, ctx, tmp_path: Path) -> None:
    from mmalign_evals.common import BenchmarkDataError
    from mmalign_evals.pope import PopeEvaluator
    from mmalign_evals.config import PopeConfig

    with pytest.raises(BenchmarkDataError) as exc:
        PopeEvaluator(PopeConfig(data_dir=str(tmp_path / "nowhere"))).evaluate(ScriptedModel("Yes"), ctx)
    text = str(exc.value)
    assert "nowhere (the folder does not exist)" in text and "coco_pope_random.json" in text and "lmms-lab/POPE" in text
    # Only one split of the original layout: the others are named.
    write_pope_json(tmp_path / "partial")
    (tmp_path / "partial" / "coco_pope_popular.json").unlink()
    with pytest.raises(BenchmarkDataError, match="no file for the split\\(s\\) popular"):
        PopeEvaluator(PopeConfig(data_dir=str(tmp_path / "partial"))).locate(ctx)


def test_readings() -> None:
    from mmalign_evals.pope_protocols import pope_protocol

    original, tolerant, first = pope_protocol("pope-original"), pope_protocol("tolerant"), pope_protocol("first-yes-no")
    assert original.read("Yes, there is a dog.") == "yes"
    assert original.read("No. But yes, maybe.") == "no"
    assert original.read("There is not a dog") == "no"
    assert original.read("The dog is there. It is not a cat.") == "yes"  # only the first sentence counts
    assert tolerant.read("NO") == "no" and original.read("NO") == "yes"
    assert first.read("Yeah.") == "yes" and first.read("It isn't.") == "no" and first.read("Maybe") == "other"
