"""online-dpo pair construction: judged pairs, drops and their counts, random order, position bias."""
from __future__ import annotations

import json

import pytest

from online_helpers import FirstJudge, PlannedPolicy, ScoreJudge, online_source, prompt_pairs
from mmalign_online.source import OnlineDPOSource

PLAN = {
    "q-good-first": ["good answer A", "bad answer A"],
    "q-good-second": ["bad answer B", "good answer B"],
    "q-identical": ["same words.", "Same words"],  # identical after normalisation
    "q-tie": ["tie one", "tie two"],
    "q-junk": ["junk one", "junk two"],
    "q-default": ["plain one", "plain two"],  # the judge's default reply names no response: unparsable
}


def test_pairs_are_judged_and_drops_counted(ctx) -> None:
    src = online_source()
    policy = PlannedPolicy(PLAN)
    batch = prompt_pairs(list(PLAN))
    out, stats = src.prepare_batch(batch, policy, ctx, step=0)
    assert [(p.prompt, p.chosen, p.rejected) for p in out] == [
        ("q-good-first", "good answer A", "bad answer A"),
        ("q-good-second", "good answer B", "bad answer B"),
    ]
    assert all(p.source == "online-dpo" and p.meta["step"] == 0 and [i.key for i in p.images] == [i.key for i in b.images]
               for p, b in zip(out, batch))
    assert len({p.id for p in out}) == 2
    assert stats["online"] == 6 and stats["offline"] == 0
    assert stats["generated"] == 12
    assert stats["kept"] == 2
    assert stats["dropped_identical"] == 1
    assert stats["dropped_tie"] == 1
    assert stats["dropped_unparsable"] == 2
    assert stats["reused"] == 0
    # every value is a float the runner can average
    assert all(isinstance(v, float) for v in stats.values())
    # Samples were generated in one batched call: 6 prompts x 2 samples.
    assert [c[:2] for c in policy.calls] == [("generate", 12)]
    assert policy.calls[0][2]["do_sample"] is True and policy.calls[0][2]["max_new_tokens"] == 8
    # The identical pair never reached the judge.
    judged = [p for p in src.judge.prompts]
    assert not any("same words" in p.lower() for p in judged)
    assert len(judged) == 5


def test_responses_are_shown_in_random_order_and_position_rate_is_logged(ctx) -> None:
    src = online_source()
    plan = {f"q{i}": ["good", "bad"] for i in range(40)}
    policy = PlannedPolicy(plan)
    out, stats = src.prepare_batch(prompt_pairs(list(plan)), policy, ctx, step=0)
    assert len(out) == 40 and all(p.chosen == "good" for p in out)
    first = sum("Response 1: good" in p for p in src.judge.prompts)
    assert 8 <= first <= 32  # shown first about half of the time
    assert stats["position1_rate"] == pytest.approx(first / 40)
    rows = [json.loads(x) for x in (ctx.output_dir / "online" / "samples.jsonl").read_text().splitlines()]
    assert {tuple(r["shown"]) for r in rows} == {(0, 1), (1, 0)}
    # Same seed and step -> same order; another step -> another order.
    again = online_source()
    again.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx.__class__(seed=0, output_dir=ctx.output_dir / "x"), step=0)
    assert again.judge.prompts == src.judge.prompts


def test_without_randomisation_the_generation_order_is_shown(ctx) -> None:
    src = online_source(randomize_order=False)
    plan = {f"q{i}": ["good", "bad"] for i in range(6)}
    src.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=0)
    assert all("Response 1: good" in p for p in src.judge.prompts)


def test_a_position_biased_judge_shows_up_in_the_rate_and_the_swap_check(ctx) -> None:
    plan = {f"q{i}": ["alpha", "beta"] for i in range(20)}
    src = online_source(judge=FirstJudge())
    out, stats = src.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=0)
    assert stats["position1_rate"] == 1.0
    assert len(out) == 20  # without a swap check the biased verdicts are used
    checked = online_source(judge=FirstJudge(), swap_check=1.0)
    out, stats = checked.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=1)
    assert out == []
    assert stats["dropped_inconsistent"] == 20 and stats["swap_inconsistency"] == 1.0
    kept = online_source(judge=FirstJudge(), swap_check=1.0, drop_inconsistent=False)
    out, _ = kept.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=2)
    assert len(out) == 20


def test_a_consistent_judge_passes_the_swap_check(ctx) -> None:
    plan = {f"q{i}": ["good", "bad"] for i in range(10)}
    src = online_source(swap_check=1.0)
    out, stats = src.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=0)
    assert len(out) == 10 and stats["swap_inconsistency"] == 0.0 and stats["dropped_inconsistent"] == 0
    assert len(src.judge.prompts) == 20


def test_more_samples_with_a_scoring_judge_pick_best_and_worst(ctx) -> None:
    plan = {"q": ["good good", "bad", "good"], "r": ["x", "x", "y"], "s": ["z", "z", "z"]}
    judge = ScoreJudge()
    src = online_source(judge=judge, samples_per_prompt=3)
    out, stats = src.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=0)
    assert [(p.chosen, p.rejected) for p in out] == [("good good", "bad")]
    assert stats["generated"] == 9 and stats["dropped_tie"] == 1 and stats["dropped_identical"] == 1
    assert sorted(map(len, judge.seen)) == [2, 3]  # duplicates removed before judging


def test_more_samples_with_a_pairwise_judge_run_a_knockout(ctx) -> None:
    plan = {f"q{i}": ["bad one", "good one", "bad two"] for i in range(6)}
    src = online_source(samples_per_prompt=3)
    out, stats = src.prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=0)
    assert len(out) == 6
    assert all(p.chosen == "good one" and p.rejected.startswith("bad") for p in out)
    assert len(src.judge.prompts) == 12  # two matches per prompt


def test_prompts_from_an_sft_source(ctx) -> None:
    from mmalign_online.config import OnlineDPOConfig

    cfg = OnlineDPOConfig.model_validate({"prompts": {"name": "shapes-sft", "config": {"n_examples": 8}},
                                         "judge": {"name": "shapes-oracle"}, "max_new_tokens": 4})
    src = OnlineDPOSource(cfg)
    pool = src.pairs(ctx)
    assert len(pool) == 8 and all(p.meta["prompt_only"] for p in pool)


def test_nested_online_sources_and_bad_refs_are_refused() -> None:
    from pydantic import ValidationError

    from mmalign_online.config import MixedDPOConfig, OnlineDPOConfig

    with pytest.raises(ValidationError, match="nesting online sources"):
        OnlineDPOConfig.model_validate({"prompts": {"name": "online-dpo", "config": {}}, "judge": {"name": "shapes-oracle"}})
    with pytest.raises(ValidationError, match="Did you mean|Unknown|unknown"):
        OnlineDPOConfig.model_validate({"prompts": {"name": "shapes-pairz"}, "judge": {"name": "shapes-oracle"}})
    with pytest.raises(ValidationError, match="invalid config for judge 'online:vlm-judge'"):
        OnlineDPOConfig.model_validate({"prompts": {"name": "shapes-pairs"}, "judge": {"name": "vlm-judge", "config": {"self": True, "model": {"name": "tiny-llava"}}}})
    with pytest.raises(ValidationError, match="capability 'pairs'"):
        MixedDPOConfig.model_validate({"base": {"name": "shapes-sft"}, "judge": {"name": "shapes-oracle"}})
    cfg = OnlineDPOConfig.model_validate({"prompts": {"name": "shapes-pairs"}, "judge": {"name": "shapes-oracle"}})
    assert cfg.prompts.config["n_pairs"] == 2000  # defaults written out
    assert cfg.judge.config["criterion"] == "hallucination-first"
    defaults = OnlineDPOConfig()  # the CPU demo: shapes prompts judged by the oracle
    assert (defaults.prompts.name, defaults.judge.name) == ("shapes:shapes-pairs", "online:shapes-oracle")  # stored qualified


class _Unfinished(PlannedPolicy):
    """A planned policy whose responses ending in '...' reached the token limit."""

    def answer_ended(self, text: str) -> bool:
        return not text.endswith("...")


def test_unfinished_responses_are_dropped_before_judging_when_asked(ctx) -> None:
    plan = {
        "q-one-unfinished": ["good answer A", "bad answer A", "good but cut..."],
        "q-all-unfinished": ["good B...", "bad B..."],
        "q-finished": ["good C", "bad C"],
    }
    src = online_source(drop_unfinished=True, samples_per_prompt=3)
    out, stats = src.prepare_batch(prompt_pairs(list(plan)), _Unfinished(plan), ctx, step=0)
    assert {(p.prompt, p.chosen, p.rejected) for p in out} == {
        ("q-one-unfinished", "good answer A", "bad answer A"),  # the cut response never competed
        ("q-finished", "good C", "bad C"),
    }
    assert stats["dropped_unfinished"] == 1 and stats["kept"] == 2
    assert not any("..." in prompt for prompt in src.judge.prompts)  # unfinished responses never reach the judge
    rows = [json.loads(x) for x in (ctx.output_dir / "online" / "samples.jsonl").read_text().splitlines()]
    assert {r["prompt"]: r["status"] for r in rows}["q-all-unfinished"] == "unfinished"
    assert all(len(r["responses"]) == 3 for r in rows)  # still logged
    # Off (the default), unfinished responses are judged like any other.
    out, stats = online_source(samples_per_prompt=3).prepare_batch(prompt_pairs(list(plan)), _Unfinished(plan), ctx, step=1)
    assert stats["dropped_unfinished"] == 0 and any(p.chosen.endswith("...") for p in out)


def test_drop_unfinished_needs_a_model_that_reports_it(ctx) -> None:
    plan = {"q": ["good", "bad"]}
    with pytest.raises(ValueError, match="drop_unfinished needs a model"):
        online_source(drop_unfinished=True).prepare_batch(prompt_pairs(list(plan)), PlannedPolicy(plan), ctx, step=0)
