"""mixed-dpo's Bernoulli split, and the JSONL log: contents, resume without regenerating, offline reuse."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign_core.protocols import Context
from online_helpers import PlannedPolicy, online_source


def _pool(src, ctx, n):
    return list(src.pairs(ctx))[:n]


def test_mixed_split_is_bernoulli_p_per_example_and_only_online_examples_generate(ctx) -> None:
    src = online_source(mixed=True, p=0.5)
    pool = _pool(src, ctx, 16)
    plan = {p.prompt: ["good x", "bad x"] for p in pool}  # every shapes pair has the same caption prompt
    totals = {"offline": 0, "online": 0}
    for step in range(12):
        policy = PlannedPolicy(plan)
        out, stats = src.prepare_batch(pool, policy, ctx, step)
        sides = src.sides(ctx.seed, step, len(pool))
        n_online = sides.count("online")
        assert stats["online"] == n_online and stats["offline"] == 16 - n_online
        # Only online examples were generated: one call of online x 2 samples (none when all are offline).
        assert sum(c[1] for c in policy.calls if c[0] == "generate") == 2 * n_online
        offline = [p for p, s in zip(pool, sides) if s == "offline"]
        assert [p for p in out if not p.meta.get("online")] == offline  # the offline pairs, untouched, in place
        assert sum(bool(p.meta.get("online")) for p in out) == n_online
        totals["offline"] += stats["offline"]
        totals["online"] += stats["online"]
    share = totals["offline"] / (totals["offline"] + totals["online"])
    assert 0.35 < share < 0.65  # 192 Bernoulli(0.5) draws
    summary = json.loads((ctx.output_dir / "online" / "summary.json").read_text())
    assert summary["totals"]["offline"] == totals["offline"] and summary["totals"]["online"] == totals["online"]


def test_mixed_split_is_deterministic_under_the_seed() -> None:
    a, b = online_source(mixed=True), online_source(mixed=True)
    assert [a.sides(3, s, 32) for s in range(5)] == [b.sides(3, s, 32) for s in range(5)]
    assert a.sides(3, 0, 32) != a.sides(4, 0, 32)
    assert a.sides(3, 0, 32) != a.sides(3, 1, 32)


@pytest.mark.parametrize("p, side", [(0.0, "online"), (1.0, "offline")])
def test_mixed_extremes(ctx, p: float, side: str) -> None:
    src = online_source(mixed=True, p=p)
    pool = _pool(src, ctx, 8)
    policy = PlannedPolicy({pool[0].prompt: ["good", "bad"]})
    out, stats = src.prepare_batch(pool, policy, ctx, 0)
    assert src.sides(0, 0, 8) == [side] * 8
    assert stats[side] == 8
    if side == "offline":
        assert policy.calls == [] and out == pool


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_log_records_every_sample_and_verdict_with_its_step(ctx) -> None:
    src = online_source(mixed=True, p=0.5)
    pool = _pool(src, ctx, 8)
    plan = {pool[0].prompt: ["good a", "bad a", "tie a", "tie b", "junk", "junk 2"]}
    for step in range(3):
        src.prepare_batch(pool, PlannedPolicy(plan), ctx, step)
    rows = _rows(ctx.output_dir / "online" / "samples.jsonl")
    assert len(rows) == 24 and [r["step"] for r in rows] == [0] * 8 + [1] * 8 + [2] * 8
    online = [r for r in rows if r["side"] == "online"]
    assert online and all(len(r["responses"]) == 2 and r["verdicts"] and r["prompt_id"] for r in online)
    assert {r["status"] for r in rows} <= {"offline", "kept", "tie", "unparsable", "identical"}
    kept = [r for r in rows if r["status"] == "kept"]
    pairs = _rows(ctx.output_dir / "online" / "pairs.jsonl")
    assert len(pairs) == len(kept)
    for pair, row in zip(pairs, kept):
        assert pair["chosen"] == row["responses"][row["chosen"]] and pair["meta"]["step"] == row["step"]
        assert set(pair) >= {"id", "prompt", "chosen", "rejected", "images", "source", "meta"}
        assert all((ctx.output_dir / "online" / im).is_file() for im in pair["images"])


def test_resume_takes_logged_steps_without_generating(ctx) -> None:
    plan_src = online_source()
    pool = _pool(plan_src, ctx, 6)
    plan = {pool[0].prompt: ["good 1", "bad 1", "good 2", "bad 2", "good 3", "bad 3"]}
    first = {}
    for step in range(2):
        out, _ = plan_src.prepare_batch(pool, PlannedPolicy(plan), ctx, step)
        first[step] = [(p.id, p.chosen, p.rejected) for p in out]
    resumed = online_source()
    policy = PlannedPolicy(plan)
    for step in range(2):
        out, stats = resumed.prepare_batch(pool, policy, ctx, step)
        assert [(p.id, p.chosen, p.rejected) for p in out] == first[step]
        assert stats["reused"] == 1.0 and stats["kept"] == len(first[step])
    assert policy.calls == []  # nothing generated
    assert len(_rows(ctx.output_dir / "online" / "samples.jsonl")) == 12  # nothing appended
    # A step that is not in the log is generated.
    out, stats = resumed.prepare_batch(pool, policy, ctx, 2)
    assert stats["reused"] == 0.0 and policy.calls


def test_resume_regenerates_incomplete_or_foreign_steps(ctx) -> None:
    src = online_source()
    pool = _pool(src, ctx, 4)
    plan = {pool[0].prompt: ["good", "bad"]}
    src.prepare_batch(pool, PlannedPolicy(plan), ctx, 0)
    path = ctx.output_dir / "online" / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:20])  # a crash tore the step's last row
    policy = PlannedPolicy(plan)
    _, stats = online_source().prepare_batch(pool, policy, ctx, 0)
    assert stats["reused"] == 0.0 and policy.calls
    # Once complete it is reused; other settings or other prompts are not.
    policy = PlannedPolicy(plan)
    _, stats = online_source().prepare_batch(pool, policy, ctx, 0)
    assert stats["reused"] == 1.0 and not policy.calls
    policy = PlannedPolicy(plan)
    _, stats = online_source(temperature=0.7).prepare_batch(pool, policy, ctx, 0)
    assert stats["reused"] == 0.0
    _, stats = online_source().prepare_batch(list(reversed(pool)), PlannedPolicy(plan), ctx, 0)
    assert stats["reused"] == 0.0
    _, stats = online_source(reuse_log=False).prepare_batch(pool, PlannedPolicy(plan), ctx, 0)
    assert stats["reused"] == 0.0


def test_logged_pairs_are_a_canonical_file_for_offline_training(ctx, tmp_path: Path) -> None:
    pytest.importorskip("mmalign_datasets")
    from mmalign_core.manager import get_plugins

    src = online_source()
    pool = _pool(src, ctx, 5)
    src.prepare_batch(pool, PlannedPolicy({pool[0].prompt: ["good", "bad"]}), ctx, 0)
    path = ctx.output_dir / "online" / "pairs.jsonl"
    local = get_plugins().resolve("preference_source", "local").build({"path": str(path), "format": "canonical",
                                                                     "cache_dir": str(tmp_path / "ds-cache")})
    pairs = list(local.pairs(Context(output_dir=tmp_path, cache_dir=tmp_path / "ds-cache")))
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad")] * 5
    assert pairs[0].images[0].load().size == pool[0].images[0].load().size
    assert pairs[0].meta["step"] == 0


def test_log_points_at_image_files_instead_of_copying_them(ctx, tmp_path: Path) -> None:
    """Images that are files (directly, or lazily as a dataset's references) are logged by path, not re-encoded."""
    import dataclasses

    from mmalign_core.types import ImageRef

    src = online_source()
    pool = _pool(src, ctx, 3)
    files = []
    for i, p in enumerate(pool):
        f = tmp_path / f"img{i}.png"
        p.images[0].load().save(f)
        files.append(f)
    lazy = [dataclasses.replace(p, images=[ImageRef(lambda f=f: __import__("PIL.Image").Image.open(f), key=f"path:{f}")])
            for p, f in zip(pool[:2], files)]
    direct = [dataclasses.replace(pool[2], images=[ImageRef(str(files[2]))])]
    batch = lazy + direct
    src.prepare_batch(batch, PlannedPolicy({p.prompt: ["good", "bad"] for p in batch}), ctx, 0)
    rows = [json.loads(x) for x in (ctx.output_dir / "online" / "pairs.jsonl").read_text().splitlines()]
    assert [r["images"] for r in rows] == [[str(f.resolve())] for f in files]
    assert not (ctx.output_dir / "online" / "images").exists()


def test_no_log_when_disabled(ctx) -> None:
    src = online_source(log=False)
    pool = _pool(src, ctx, 2)
    src.prepare_batch(pool, PlannedPolicy({pool[0].prompt: ["good", "bad"]}), ctx, 0)
    assert not (ctx.output_dir / "online").exists()
