"""MMHal-Bench protocols: LLaVA-RLHF's rating rule (the default) against the tolerant reading; the reference prompt file.

The expected ratings are those of the analysis loop of LLaVA-RLHF's ``eval_gpt_mmhal.py`` for the same replies.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel
from evals_data import write_png

REPLIES = [
    "Good answer.\nRating: 6.",                     # a period after the digit
    "Rating: 1.",
    "Rating: 3.0",
    "Rating: 05",                                   # the reference finds "rating: 0"
    "Rating:6",                                     # no space: the reference finds nothing
    "**Rating**: 4",
    "At first Rating: 2, on reflection Rating: 5",  # two different ratings: 0 in the reference
    "Rating: 4\nTo repeat, Rating: 4",              # the same rating twice: found once
    "I cannot rate this.",
    "Rating: 10",                                   # the reference finds "rating: 1"
    "RATING: 3",
    "Rating: [5]",
]
REFERENCE = [6, 1, 3, 0, 0, 0, 0, 4, 0, 1, 3, 0]
TOLERANT = [6, 1, 3, 5, 6, 4, 5, 4, None, None, 3, 5]


def test_readings_of_each_protocol() -> None:
    from mmalign_evals.mmhal_protocols import mmhal_protocol

    reference, tolerant = mmhal_protocol("llava-rlhf"), mmhal_protocol("tolerant")
    assert [reference.read(r).rating for r in REPLIES] == REFERENCE
    assert [reference.read(r).parsed for r in REPLIES] == [True, True, True, True, False, False, False, True, False, True, True, False]
    assert [tolerant.read(r).rating for r in REPLIES] == TOLERANT


def write_items(root: Path, n: int) -> Path:
    records = []
    for k in range(n):
        write_png(root / "images" / f"{k:04d}.jpg", k)
        records.append({"question_type": "attribute", "question_topic": "t", "image_id": f"i{k}", "image_src": f"https://x.org/{k:04d}.jpg",
                        "image_content": ["Dog", "Ball"], "question": f"Question {k}?", "gt_answer": f"Reference {k}.", "model_answer": ""})
    (root / "response_template.json").write_text(json.dumps(records))
    return root


class ListJudge:
    """Replies from a list, by the question number inside the judging prompt."""

    def __init__(self, replies):
        self.replies, self.prompts = replies, []

    def complete(self, requests, ctx):
        self.prompts += [r.prompt for r in requests]
        return [self.replies[int(r.prompt.split("Question ")[1].split("?")[0])] for r in requests]

    def describe(self):
        return {"judge": "list"}


@pytest.mark.parametrize("protocol", [None, "llava-rlhf", "tolerant"])
def test_protocol_means_match_the_reference(ctx, tmp_path: Path, protocol) -> None:
    from mmalign_evals.config import MMHalConfig
    from mmalign_evals.judged import MMHalEvaluator

    root = write_items(tmp_path / "mmhal", len(REPLIES))
    config = MMHalConfig(data_dir=str(root), judge_cache=False, **({"protocol": protocol} if protocol else {}))
    result = MMHalEvaluator(config, ListJudge(REPLIES)).evaluate(ScriptedModel("An answer."), ctx)
    if protocol == "tolerant":
        kept = [r for r in TOLERANT if r is not None]
        assert [r["rating"] for r in result.records] == TOLERANT
        assert result.metrics["mmhal_score"] == pytest.approx(sum(kept) / len(kept))
        assert result.metrics["mmhal_hallucination_rate"] == pytest.approx(sum(r < 3 for r in kept) / len(kept))
        assert result.details["unparsed_judgements"] == 2
        # Rated otherwise than the published protocol: 05, Rating:6, **Rating**: 4, 2-then-5, none, 10, [5].
        assert result.details["read_differently_from_reference"] == 7
        assert [r["reference_rating"] for r in result.records] == REFERENCE
    else:
        # eval_gpt_mmhal.py: "Average score: 1.50", "Hallucination rate: 0.67".
        assert [r["rating"] for r in result.records] == REFERENCE
        assert result.metrics["mmhal_score"] == pytest.approx(18 / 12)
        assert result.metrics["mmhal_hallucination_rate"] == pytest.approx(8 / 12)
        assert result.details["protocol"]["name"] == "llava-rlhf" and result.details["read_differently_from_reference"] == 0
        assert result.details["unparsed_judgements"] == 5


def test_a_reference_template_file_fills_positional_placeholders(ctx, tmp_path: Path) -> None:
    from mmalign_evals.config import MMHalConfig
    from mmalign_evals.judged import MMHalEvaluator

    template = tmp_path / "mmhal_template.txt"
    template.write_text("Judge it.\n### Image Contents\n{}\n### Question\n{}\n### Standard Human-Generated Answer\n{}\n### LMM Response to Evaluate\n{}\n")
    root = write_items(tmp_path / "mmhal", 2)
    judge = ListJudge(["Rating: 5", "Rating: 2"])
    result = MMHalEvaluator(MMHalConfig(data_dir=str(root), rubric_file=str(template), judge_cache=False), judge).evaluate(
        ScriptedModel("My answer."), ctx)
    assert judge.prompts[0] == ("Judge it.\n### Image Contents\nDog, Ball\n### Question\nQuestion 0?\n"
                                "### Standard Human-Generated Answer\nReference 0.\n### LMM Response to Evaluate\nMy answer.\n")
    assert result.details["judge"]["prompt_source"] == f"file {template}"
    assert result.details["judge"]["prompt_template"] == template.read_text()
    assert result.metrics["mmhal_score"] == 3.5


def test_rubric_file_errors_are_clear(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from mmalign_evals.config import MMHalConfig

    with pytest.raises(ValidationError, match="cannot read the rubric file"):
        MMHalConfig(rubric_file=str(tmp_path / "missing.txt"))
    bad = tmp_path / "three.txt"
    bad.write_text("{} {} {}")
    with pytest.raises(ValidationError, match="needs exactly 4"):
        MMHalConfig(rubric_file=str(bad))
    with pytest.raises(ValidationError, match="not both"):
        MMHalConfig(rubric_file=str(bad), rubric="{image_content}{question}{reference}{answer}")
    with pytest.raises(ValidationError, match="protocol"):
        MMHalConfig(protocol="gpt4")
