"""TextVQA / GQA protocols: EvalAI's processor and accuracy, lmms-eval's GQA exact match, and the tolerant rules.

The expected values are those of LLaVA's ``m4c_evaluator.py`` (EvalAIAnswerProcessor), lmms-eval's
``textvqa_process_results`` and lmms-eval's ``exact_match`` (ignore_case, ignore_punctuation) on the same inputs.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel, check_evaluator
from evals_data import write_gqa, write_textvqa

# The 26 spellings mmalign's generated table restored and the official table lacks.
NOT_OFFICIAL = ["couldntve", "hadntve", "hedve", "i'dve", "id've", "idve", "im", "itdve", "ive", "mightntve", "shedve",
                "shouldntve", "somebodydve", "someonedve", "somethingdve", "theredve", "theydve", "wedve", "whodve",
                "wouldntve", "y'alldve", "yall'dve", "yalld've", "yalldve", "yallll", "youdve"]


def test_the_official_contraction_table() -> None:
    from mmalign_evals.vqa_norm import CONTRACTIONS, evalai_contractions, normalize_evalai, normalize_vqa

    table = evalai_contractions()
    assert len(table) == 120 and table["dont"] == "don't"
    assert sorted(set(CONTRACTIONS) - set(table)) == NOT_OFFICIAL
    for spelling in NOT_OFFICIAL:
        assert normalize_evalai(spelling) == spelling  # the reference leaves them as they are
    assert normalize_vqa("idve") == "i'd've"  # the tolerant rules restore them
    # The one entry the generated table lacks: the official table maps somebody'd to "somebodyd".
    assert normalize_evalai("somebody'd") == "somebodyd" and normalize_vqa("somebody'd") == "somebody'd"
    assert normalize_evalai("dont") == "don't" and normalize_evalai("Im") == "im"


def test_evalai_strips_at_most_32_periods() -> None:
    from mmalign_evals.vqa_norm import normalize_evalai, normalize_vqa

    answer = "x." * 40
    assert normalize_evalai(answer) == "x" * 33 + ".x" * 7 + "."
    assert normalize_vqa(answer) == "x" * 40
    assert normalize_evalai("The Two dogs.") == "2 dogs" and normalize_evalai("3.5") == "3.5"
    assert normalize_evalai("coca-cola") == "coca cola" and normalize_evalai("yes - no") == "yes no"


def test_single_reference_scores_zero_under_evalai() -> None:
    from mmalign_evals.vqa_norm import vqa_accuracy, vqa_accuracy_evalai

    assert vqa_accuracy_evalai("red", ["red"]) == 0.0 and vqa_accuracy("red", ["red"]) == 1.0
    assert vqa_accuracy_evalai("red", ["red", "red"]) == pytest.approx(1 / 3)
    assert vqa_accuracy_evalai("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy_evalai("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy_evalai("idve", ["idve"] * 10) == 1.0 and vqa_accuracy_evalai("red", []) == 0.0


def test_gqa_exact_match_keeps_white_space() -> None:
    from mmalign_evals.vqa_norm import exact_match, exact_match_lmms

    for prediction, lmms in [("left  side", 0.0), (" yes", 0.0), ("yes ", 0.0), ("Yes.", 1.0), ("t-shirt", 1.0)]:
        reference = "tshirt" if prediction == "t-shirt" else ("left side" if "side" in prediction else "yes")
        assert exact_match_lmms(prediction, [reference]) == lmms, prediction
        assert exact_match(prediction, [reference], "lower-punct") == 1.0  # tolerant: stripped and collapsed


def test_default_protocols_are_recorded(evals, ctx, tmp_path: Path) -> None:
    entry = evals.resolve("evaluator", "vqa")
    textvqa = check_evaluator(entry, ScriptedModel("red"), {"benchmark": "textvqa", "data_dir": str(write_textvqa(tmp_path / "t")), "limit": 1}, ctx)
    assert textvqa.details["protocol"]["name"] == "evalai" and textvqa.details["protocol"]["reference"] is True
    gqa = check_evaluator(entry, ScriptedModel("left  side"), {"benchmark": "gqa", "data_dir": str(write_gqa(tmp_path / "g"))}, ctx)
    assert gqa.details["protocol"]["name"] == "lmms-eval" and gqa.details["scoring"] == "exact_match"
    tolerant = check_evaluator(entry, ScriptedModel("left  side"), {"benchmark": "gqa", "data_dir": str(write_gqa(tmp_path / "g2")), "protocol": "tolerant"}, ctx)
    assert tolerant.details["protocol"]["name"] == "tolerant" and tolerant.details["protocol"]["reference"] is False
    assert tolerant.metrics["vqa_accuracy"] >= gqa.metrics["vqa_accuracy"]


def test_old_scoring_fields_name_their_replacement(evals) -> None:
    with pytest.raises(Exception, match="replaced by 'protocol'"):
        evals.resolve("evaluator", "vqa").config.model_validate({"scoring": "vqa"})
