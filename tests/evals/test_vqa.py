"""VQA: the ten-annotator accuracy rule with the standard normalisation (TextVQA) and exact match (GQA)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel, check_evaluator
from evals_data import GQA_ITEMS, TEXTVQA_ITEMS, write_gqa, write_gqa_parquet, write_textvqa, write_textvqa_parquet


def model_for(items, question_at: int, answer_at: int) -> ScriptedModel:
    answers = {item[question_at]: item[answer_at] for item in items}
    return ScriptedModel(lambda request: answers[request.prompt.split("\n")[0]])


@pytest.mark.parametrize("writer", [write_textvqa, write_textvqa_parquet])
def test_textvqa_accuracy_by_the_ten_annotator_rule(evals, ctx, tmp_path: Path, writer) -> None:
    root = writer(tmp_path / "textvqa")
    result = check_evaluator(evals.resolve("evaluator", "vqa"), model_for(TEXTVQA_ITEMS, 0, 2),
                             {"benchmark": "textvqa", "data_dir": str(root)}, ctx)
    # Per item (computed by hand in evals_data.TEXTVQA_ITEMS): 0.9, 0.3, 1.0, 1.0, 0.0.
    for rec, (_, _, _, acc, em) in zip(result.records, TEXTVQA_ITEMS):
        assert rec["accuracy"] == pytest.approx(acc) and rec["exact_match"] == em
    assert result.metrics["vqa_accuracy"] == pytest.approx((0.9 + 0.3 + 1.0 + 1.0 + 0.0) / 5)
    assert result.metrics["vqa_exact_match"] == pytest.approx(4 / 5)
    assert result.n == 5  # the train shard of the parquet release is not read
    assert result.details["scoring"] == "vqa" and result.details["benchmark"] == "textvqa"
    assert result.details["decoding"]["max_new_tokens"] == 16
    assert result.details["sample_ids"] == [str(34602 + n) for n in range(5)]


@pytest.mark.parametrize("writer", [write_gqa, write_gqa_parquet])
def test_gqa_exact_match(evals, ctx, tmp_path: Path, writer) -> None:
    root = writer(tmp_path / "gqa")
    result = check_evaluator(evals.resolve("evaluator", "vqa"), model_for(GQA_ITEMS, 2, 4), {"benchmark": "gqa", "data_dir": str(root)}, ctx)
    assert [r["exact_match"] for r in result.records] == [item[5] for item in GQA_ITEMS]
    assert result.metrics["vqa_accuracy"] == pytest.approx(2 / 3) == result.metrics["vqa_exact_match"]
    assert result.details["scoring"] == "exact_match" and result.details["normalize"] == "lower-punct"
    assert result.details["sample_ids"] == [item[0] for item in GQA_ITEMS]


def test_normalisation_rules() -> None:
    from mmalign_evals.vqa_norm import exact_match, normalize_lower_punct, normalize_vqa, vqa_accuracy

    assert normalize_vqa("The Two dogs.") == "2 dogs"
    assert normalize_vqa("dont") == "don't" and normalize_vqa("well") == "well"
    assert normalize_vqa("1,000") == "1000" and normalize_vqa("3.5") == "3.5"
    assert normalize_vqa("coca-cola") == "coca cola" and normalize_vqa("yes - no") == "yes no"
    assert normalize_vqa("Is it?") == "is it"
    assert normalize_lower_punct("Left, side!") == "left side"
    assert vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("red", ["red"]) == 1.0 and vqa_accuracy("red", []) == 0.0
    assert exact_match("Blue.", ["blue"], "lower-punct") == 1.0 and exact_match("Blue.", ["blue"], "none") == 0.0


def test_missing_vqa_data(evals, ctx, tmp_path: Path) -> None:
    from mmalign_evals.common import BenchmarkDataError

    evaluator = evals.resolve("evaluator", "vqa").build({"benchmark": "gqa", "data_dir": str(tmp_path / "none")})
    with pytest.raises(BenchmarkDataError, match="testdev_balanced_questions.json"):
        evaluator.evaluate(ScriptedModel("yes"), ctx)
