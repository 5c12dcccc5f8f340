"""POPE protocols on crafted answers: the published script's reading (default), lmms-eval's, and the tolerant ones.

The expected values are what POPE's ``evaluate.py`` / LLaVA's ``eval_pope.py`` (per split) and lmms-eval's
``pope`` task functions (pooled) give for the same answers and labels.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel, check_evaluator
from evals_data import pope_question, write_pope_parquet

ITEMS = [
    # (split, object, label, answer)
    ("random", "dog", "yes", "NO"),                        # upper case: the script reads yes
    ("random", "cat", "no", "Not really."),                # "Not" is not "not": yes
    ("random", "car", "no", "\tNo"),                       # split on spaces only: "\tNo" is no piece "No": yes
    ("random", "bus", "yes", "Yes."),                      # lmms-eval: not exactly "yes", so wrong
    ("popular", "chair", "yes", "yes"),
    ("popular", "table", "no", "no\n"),                    # "no\n" is no piece "no": yes
    ("popular", "cup", "no", "No, there is not."),
    ("popular", "fork", "yes", "There is a fork, not a knife."),
    ("adversarial", "person", "yes", "Yes"),
    ("adversarial", "knife", "no", "Nope."),
    ("adversarial", "spoon", "no", "I don't see one."),
    ("adversarial", "bowl", "no", "no"),
]
ORIGINAL_READINGS = ["yes", "yes", "yes", "yes", "yes", "yes", "no", "no", "yes", "yes", "yes", "no"]
LMMS_READINGS = ["no", "other", "no", "other", "yes", "no", "other", "other", "yes", "other", "other", "no"]
TOLERANT_READINGS = ["no", "no", "no", "yes", "yes", "no", "no", "no", "yes", "yes", "yes", "no"]

# evaluate.py per split.
ORIGINAL = {
    "random": {"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "yes_ratio": 1.0},
    "popular": {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5},
    "adversarial": {"accuracy": 0.5, "precision": 1 / 3, "recall": 1.0, "f1": 0.5, "yes_ratio": 0.75},
}
# lmms-eval's aggregation functions, per split and over all twelve.
LMMS = {
    "random": {"accuracy": 0.25, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.5},
    "popular": {"accuracy": 0.5, "precision": 1.0, "recall": 1.0, "f1": 1.0, "yes_ratio": 0.5},
    "adversarial": {"accuracy": 0.5, "precision": 1.0, "recall": 1.0, "f1": 1.0, "yes_ratio": 0.25},
    "pooled": {"accuracy": 5 / 12, "precision": 1.0, "recall": 2 / 3, "f1": 0.8, "yes_ratio": 5 / 12},
}


def run(evals, ctx, tmp_path: Path, **config):
    root = write_pope_parquet(tmp_path / "pope", ITEMS)
    answers = {pope_question(obj): answer for _, obj, _, answer in ITEMS}
    model = ScriptedModel(lambda request: answers[request.prompt.split("\n")[0]])
    return check_evaluator(evals.resolve("evaluator", "pope"), model, {"data_dir": str(root), **config}, ctx)


def test_readings() -> None:
    from mmalign_evals.pope_protocols import pope_protocol

    answers = [a for *_, a in ITEMS]
    assert [pope_protocol("pope-original").read(a) for a in answers] == ORIGINAL_READINGS
    assert [pope_protocol("lmms-eval").read(a) for a in answers] == LMMS_READINGS
    assert [pope_protocol("tolerant").read(a) for a in answers] == TOLERANT_READINGS


def test_default_protocol_gives_the_scripts_numbers(evals, ctx, tmp_path: Path) -> None:
    result = run(evals, ctx, tmp_path)
    assert [r["prediction"] for r in result.records] == ORIGINAL_READINGS
    for split, values in ORIGINAL.items():
        for metric, value in values.items():
            assert result.metrics[f"pope_{split}_{metric}"] == pytest.approx(value), (split, metric)
    # LLaVA's convention: the mean over the splits.
    assert result.metrics["pope_f1"] == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
    assert result.details["protocol"] == {"name": "pope-original", "source": result.details["protocol"]["source"],
                                          "reference": True, "summary": "mean over the splits"}


def test_lmms_eval_protocol_gives_lmms_evals_numbers(evals, ctx, tmp_path: Path) -> None:
    result = run(evals, ctx, tmp_path, protocol="lmms-eval")
    assert [r["prediction"] for r in result.records] == LMMS_READINGS
    for split in ("random", "popular", "adversarial"):
        for metric, value in LMMS[split].items():
            assert result.metrics[f"pope_{split}_{metric}"] == pytest.approx(value), (split, metric)
    for metric, value in LMMS["pooled"].items():
        assert result.metrics[f"pope_{metric}"] == pytest.approx(value), metric
    assert result.details["unparsed_answers"] == 6
    assert result.details["read_differently_from_reference"] == sum(a != b for a, b in zip(LMMS_READINGS, ORIGINAL_READINGS))


def test_tolerant_protocol_says_what_it_rescued(evals, ctx, tmp_path: Path) -> None:
    result = run(evals, ctx, tmp_path, protocol="tolerant")
    assert [r["prediction"] for r in result.records] == TOLERANT_READINGS
    # NO, Not really., \tNo and no\n read as no where the script reads yes.
    assert result.details["read_differently_from_reference"] == 4
    assert [r["reference_prediction"] for r in result.records] == ORIGINAL_READINGS
    assert result.details["protocol"]["reference"] is False


def test_parser_field_names_its_replacement(evals) -> None:
    with pytest.raises(Exception, match="replaced by 'protocol'.*first-yes-no"):
        evals.resolve("evaluator", "pope").config.model_validate({"parser": "yes-no"})
