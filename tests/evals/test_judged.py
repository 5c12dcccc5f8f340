"""Judge-scored benchmarks with the scripted judge: MMHal-Bench(-V), LLaVA-Bench-in-the-Wild, MM-Vet; the judge cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign_core.testing import ScriptedModel, check_evaluator
from evals_data import (
    LLAVA_W_ITEMS,
    MMHAL_ITEMS,
    MMVET_ITEMS,
    mmhal_judge_replies,
    scripted_judge,
    write_llava_w_original,
    write_llava_w_parquet,
    write_mmhal,
    write_mmvet,
)


def model_for(items, question_at: int, answer_at: int) -> ScriptedModel:
    answers = {item[question_at]: item[answer_at] for item in items}
    return ScriptedModel(lambda request: answers[request.prompt])


# ----------------------------------------------------------------------------- MMHal-Bench
def test_mmhal_mean_and_hallucination_rate(evals, ctx, tmp_path: Path) -> None:
    root = write_mmhal(tmp_path / "mmhal")
    config = {"data_dir": str(root), "judge": scripted_judge(mmhal_judge_replies())}
    result = check_evaluator(evals.resolve("evaluator", "mmhal-bench"), model_for(MMHAL_ITEMS, 1, 3), config, ctx)
    # The published protocol (llava-rlhf): ratings 5, 2, 6 and 0 for the reply without one -- mean 13/4, two of
    # four below 3.
    assert result.metrics == {"mmhal_score": pytest.approx(13 / 4), "mmhal_hallucination_rate": pytest.approx(2 / 4)}
    assert result.higher_is_better == {"mmhal_score": True, "mmhal_hallucination_rate": False}
    assert [r["rating"] for r in result.records] == [5, 2, 6, 0]
    assert [r["hallucination"] for r in result.records] == [False, True, False, True]
    d = result.details
    assert d["unparsed_judgements"] == 1 and d["protocol"]["name"] == "llava-rlhf" and d["read_differently_from_reference"] == 0
    assert d["score_by_question_type"] == {"attribute": 5.0, "counting": 2.0, "relation": 6.0, "other": 0.0}
    assert d["judge"]["prompt_source"] == "built-in"
    # The tolerant reading leaves the unreadable reply out: mean 13/3, one of three below 3.
    tolerant = check_evaluator(evals.resolve("evaluator", "mmhal-bench"), model_for(MMHAL_ITEMS, 1, 3), {**config, "protocol": "tolerant"}, ctx)
    assert tolerant.metrics == {"mmhal_score": pytest.approx(13 / 3), "mmhal_hallucination_rate": pytest.approx(1 / 3)}
    assert [r["rating"] for r in tolerant.records] == [5, 2, 6, None]
    assert tolerant.details["unparsed_judgements"] == 1 and tolerant.details["read_differently_from_reference"] == 1
    assert d["judge"]["identity"]["judge"] == "scripted-judge" and d["judge"]["sees_image"] is False
    assert "Rating: 6" in d["judge"]["prompt_template"] and len(d["judge"]["prompt_sha256"]) == 64
    # The judging prompt holds the image contents, question, reference and answer.
    example = d["judge"]["example_prompt"]
    for part in ("Bus, Dog, Table", "What colour is the bus?", "The bus is red.", "## Model answer to judge\nThe bus is red."):
        assert part in example
    assert d["sample_ids"] == ["0", "1", "2", "3"]


class RecordingJudge:
    """Records every request it gets; rates everything 4."""

    def __init__(self):
        self.requests = []

    def complete(self, requests, ctx):
        self.requests += list(requests)
        return ["Rating: 4"] * len(requests)

    def describe(self):
        return {"judge": "recording"}


def test_mmhal_v_gives_the_judge_the_image(ctx, tmp_path: Path) -> None:
    from mmalign_evals.config import MMHalConfig, MMHalVConfig
    from mmalign_evals.judged import MMHalEvaluator, MMHalVEvaluator

    root = write_mmhal(tmp_path / "mmhal")
    model = model_for(MMHAL_ITEMS, 1, 3)
    with_image, text_only = RecordingJudge(), RecordingJudge()
    v = MMHalVEvaluator(MMHalVConfig(data_dir=str(root), limit=2), with_image).evaluate(model, ctx)
    plain = MMHalEvaluator(MMHalConfig(data_dir=str(root), limit=2), text_only).evaluate(model, ctx)
    assert set(v.metrics) == {"mmhal_v_score", "mmhal_v_hallucination_rate"} and v.metrics["mmhal_v_score"] == 4.0
    assert set(plain.metrics) == {"mmhal_score", "mmhal_hallucination_rate"}
    assert [len(r.images) for r in with_image.requests] == [1, 1] and all(not r.images for r in text_only.requests)
    assert with_image.requests[0].images[0].load().size == (12, 12)
    assert "You are shown the image" in with_image.requests[0].prompt and "You cannot see the image" in text_only.requests[0].prompt


def test_a_judge_is_required(evals, tmp_path: Path) -> None:
    from mmalign_core.spec import check_spec

    from mmalign_evals.common import MissingJudgeError

    with pytest.raises(MissingJudgeError, match="scored by a judge"):
        evals.resolve("evaluator", "mm-vet").build({})
    spec = {"name": "x", "model": {"name": "tiny-llava"},
            "stages": [{"type": "align", "data": {"name": "shapes-pairs"}},
                       {"type": "evaluate", "evaluators": [{"name": "mm-vet", "config": {"data_dir": str(tmp_path)}}]}]}
    validated, problems = check_spec(spec)
    assert validated is None
    paths = {p.path: p for p in problems}
    assert "stages[1].evaluators[0].config.judge" in paths
    # In a spec that trains first, missing data is only a warning.
    assert paths["stages[1].evaluators[0]"].severity == "warning"


def test_judge_reference_is_validated_against_the_registry(tmp_path: Path) -> None:
    from mmalign_core.spec import check_spec

    def spec(judge):
        return {"name": "x", "model": {"name": "tiny-llava"},
                "stages": [{"type": "evaluate", "evaluators": [{"name": "mmhal-bench", "config": {"judge": judge}}]}]}

    _, problems = check_spec(spec({"name": "scripted-judgee"}))
    assert any(p.path == "stages[0].evaluators[0].config.judge" and "Did you mean 'scripted-judge'" in p.message for p in problems), problems
    _, problems = check_spec(spec({"name": "scripted-judge", "config": {"replys": {}}}))
    # Reported at the nested field itself and owned by the judge's plugin (issue 12: not at `config.judge`).
    assert any(p.path == "stages[0].evaluators[0].config.judge.config.replys" and p.plugin == "evals"
               and "Did you mean 'replies'" in p.message for p in problems), problems
    # A valid reference resolves with the judge's defaults written out (what the manifest records).
    from mmalign_evals.config import MMHalConfig

    cfg = MMHalConfig.model_validate({"judge": {"name": "scripted-judge"}})
    assert cfg.judge.config == {"replies": {}, "match": "substring", "default": "", "label": "scripted"}


# ----------------------------------------------------------------------- LLaVA-Bench-in-the-Wild
@pytest.mark.parametrize("writer", [write_llava_w_parquet, write_llava_w_original])
def test_llava_wild_relative_score(evals, ctx, tmp_path: Path, writer) -> None:
    root = writer(tmp_path / "llava-w")
    replies = {item[4]: item[5] for item in LLAVA_W_ITEMS}  # model answer -> "ref model\n..."
    config = {"data_dir": str(root), "judge": scripted_judge(replies)}
    result = check_evaluator(evals.resolve("evaluator", "llava-bench-wild"), model_for(LLAVA_W_ITEMS, 1, 4), config, ctx)
    # Scores (reference, model): (8, 6), (7, 7), (9, 3): 100 * mean(6, 7, 3) / mean(8, 7, 9).
    assert result.metrics["llava_w"] == pytest.approx(100 * (16 / 3) / 8)
    assert result.metrics["llava_w_model_score"] == pytest.approx(16 / 3) and result.metrics["llava_w_reference_score"] == 8.0
    assert result.details["relative_by_category"] == {"conv": 75.0, "detail": 100.0, "complex": pytest.approx(100 / 3)}
    # The reference answer is Assistant 1, the model Assistant 2, with the caption as context.
    example = result.details["judge"]["example_prompt"]
    assert "[Context]\nA plate of pasta." in example and "[Assistant 1]\nPasta with tomato sauce." in example
    assert "[Assistant 2]\nSome pasta." in example


# --------------------------------------------------------------------------------- MM-Vet
def test_mmvet_mean_times_100(evals, ctx, tmp_path: Path) -> None:
    root = write_mmvet(tmp_path / "mmvet")
    replies = {item[4]: item[5] for item in MMVET_ITEMS}
    config = {"data_dir": str(root), "judge": scripted_judge(replies)}
    result = check_evaluator(evals.resolve("evaluator", "mm-vet"), model_for(MMVET_ITEMS, 2, 4), config, ctx)
    assert result.metrics == {"mmvet": pytest.approx(50.0)}
    assert result.details["score_by_capability"] == {"rec": 25.0, "ocr": 100.0, "know": 0.0, "math": 100.0}
    assert result.details["sample_ids"] == ["v1_0", "v1_1", "v1_2"]
    assert result.details["judge"]["example_prompt"].endswith("\nWhat is the total? | 14 | The total is 14. |")
    assert [r["correctness"] for r in result.records] == [1.0, 0.5, 0.0]


def test_mmvet_judge_row_spaces_the_and_or_markers(ctx, tmp_path: Path) -> None:
    from mmalign_evals.config import MMVetConfig
    from mmalign_evals.judged import MMVetEvaluator

    judge = RecordingJudge()
    MMVetEvaluator(MMVetConfig(data_dir=str(write_mmvet(tmp_path / "mmvet")), ids=["v1_1"]), judge).evaluate(
        ScriptedModel("A cat\nand more."), ctx)
    assert judge.requests[0].prompt.endswith("\nWhich animals are shown? | cat  <AND>  dog | A cat and more. |")


def test_judge_reply_parsers() -> None:
    from mmalign_evals.parsing import parse_correctness, parse_pair_scores, parse_rating

    assert parse_rating("blah\nRating: 4") == 4 and parse_rating("rating: 7") is None and parse_rating("**Rating**: 2") == 2
    assert parse_rating("Rating: 1 ... on reflection, Rating: 3") == 3
    assert parse_pair_scores("\n8 7\nbecause") == (8.0, 7.0) and parse_pair_scores("8 out of 10") is None
    assert parse_correctness("0.7") == 0.7 and parse_correctness("Score: 0.4 overall") == 0.4 and parse_correctness("2") is None


# --------------------------------------------------------------------------------- the cache
def test_judge_replies_are_cached_and_reused(evals, ctx, tmp_path: Path) -> None:
    root = write_mmhal(tmp_path / "mmhal")
    entry = evals.resolve("evaluator", "mmhal-bench")
    config = {"data_dir": str(root), "judge": scripted_judge(mmhal_judge_replies()), "judge_batch_size": 3}
    model = model_for(MMHAL_ITEMS, 1, 3)
    first_eval = entry.build(config)
    first = first_eval.evaluate(model, ctx)
    assert first.details["judge"]["judge_calls"] == 4 and first.details["judge"]["cache_hits"] == 0
    cache = Path(first.details["judge"]["cache"])
    assert cache.parent == ctx.cache_dir / "judge-cache" and len(cache.read_text().splitlines()) == 4
    # A torn last line (an interrupted write) is ignored.
    with open(cache, "a") as fh:
        fh.write('{"key": "abc", "rep')
    second_eval = entry.build(config)
    second = second_eval.evaluate(model, ctx)
    assert second.details["judge"]["cache_hits"] == 4 and second.details["judge"]["judge_calls"] == 0
    assert second_eval.judge.prompts == [] and second.metrics == first.metrics
    # Another judge identity (a different mapping) does not reuse them.
    third = entry.build({**config, "judge": scripted_judge({}, default="Rating: 1")}).evaluate(model, ctx)
    assert third.details["judge"]["judge_calls"] == 4 and third.metrics["mmhal_score"] == 1.0
    # Switching the cache off asks again and writes nothing.
    off = entry.build({**config, "judge_cache": False}).evaluate(model, ctx)
    assert off.details["judge"]["judge_calls"] == 4 and off.details["judge"]["cache"] is None


def test_cache_key_covers_prompt_and_images(ctx) -> None:
    from mmalign_core.testing import make_image_ref
    from mmalign_core.types import GenerationRequest
    from mmalign_evals.judging import CachedJudge

    client = CachedJudge(RecordingJudge(), ctx)
    a = GenerationRequest("judge this")
    assert client.key(a) == client.key(GenerationRequest("judge this"))
    assert client.key(a) != client.key(GenerationRequest("judge that"))
    assert client.key(GenerationRequest("judge this", [make_image_ref(0)])) != client.key(GenerationRequest("judge this", [make_image_ref(1)]))


def test_records_and_details_serialise(evals, ctx, tmp_path: Path) -> None:
    root = write_mmvet(tmp_path / "mmvet")
    result = evals.resolve("evaluator", "mm-vet").build({"data_dir": str(root), "judge": scripted_judge({}, default="0.5")}).evaluate(
        model_for(MMVET_ITEMS, 2, 4), ctx)
    json.dumps(result.details)
    for rec in result.records:
        json.dumps(rec)
    assert result.metrics["mmvet"] == 50.0
