"""Rollouts: sample responses from the current policy, score them with the reward, log and replay them.

Sampling goes through the model's ``sample_tokens`` (the core's lean decoder where the family allows it:
one prefill per prompt shared by its samples, finished rows leave the batch, the image token banned),
seeded by ``(seed, step)`` on a forked RNG, so a step's samples are reproducible and the training RNG
stream is untouched. Each response keeps the exact tokens it was sampled as (``remember_answer_tokens``),
so training scores what the policy produced.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import torch

from mmalign_core.protocols import Context, RewardOutput
from mmalign_core.types import GenerationRequest


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any values (stable across processes and Python versions)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


@contextlib.contextmanager
def seeded(seed: int, model: Any) -> Iterator[None]:
    """Torch's RNG seeded by ``seed`` inside, the previous state restored after."""
    devices = []
    try:
        param = next(model.module.parameters())
        if param.device.type == "cuda":
            devices = [param.device.index or 0]
    except (StopIteration, AttributeError, TypeError):
        pass
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % (2**63))
        yield


@dataclass
class Rollouts:
    """One step's responses, ``k`` per prompt, a prompt's responses adjacent."""

    prompt_ids: list[str]
    requests: list[GenerationRequest]  # one per prompt
    k: int
    responses: list[str]
    token_ids: list[list[int]]
    ended: list[bool]
    rewards: list[float] = field(default_factory=list)
    components: dict[str, list[float]] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False
    gen_seconds: float = 0.0
    reward_seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.responses)

    def response_requests(self) -> list[GenerationRequest]:
        """One request per response (its prompt's)."""
        return [self.requests[i // self.k] for i in range(self.n)]


def sample(model: Any, requests: Sequence[GenerationRequest], *, k: int, max_new_tokens: int, temperature: float, top_p: float,
           batch_size: int, seed: int) -> tuple[list[str], list[list[int]], list[bool]]:
    """``k`` responses per request (adjacent), their sampled token ids and whether each stopped by itself."""
    texts: list[str] = []
    with seeded(seed, model), torch.no_grad():
        for s in range(0, len(requests), batch_size):
            new = model.sample_tokens(list(requests[s : s + batch_size]), n=k, max_new_tokens=max_new_tokens, do_sample=True,
                                      temperature=temperature, top_p=top_p)
            texts.extend(model.texts_from_samples(new, remember=True))
    ids = [model.answer_tokens(t) for t in texts]
    ended = [model.answer_ended(t) for t in texts]
    return texts, ids, ended


def score(reward: Any, rollouts: Rollouts, ctx: Context) -> None:
    """Fill in the rewards of ``rollouts``."""
    out: RewardOutput = reward.score(rollouts.response_requests(), rollouts.responses, ctx)
    if len(out.scores) != rollouts.n:
        raise ValueError(f"the reward returned {len(out.scores)} scores for {rollouts.n} responses")
    rollouts.rewards = [float(x) for x in out.scores]
    rollouts.components = {k: [float(x) for x in v] for k, v in out.components.items()}
    rollouts.details = list(out.details)


# -------------------------------------------------------------------------------------------- log
ROW_FORMAT = 1


def _append(path: Any, rows: Sequence[dict[str, Any]]) -> None:
    import os

    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows).encode("utf-8")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as fh:  # a write torn by a crash left no newline: start on a fresh line
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                data = b"\n" + data
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class RolloutLog:
    """``<stage>/data/rl/rollouts.jsonl``: one row per response of every step (prompt, tokens, reward, advantage).

    A step's rows are appended with one write, each carrying the step's row count and a write id, so a step
    cut short by a crash is recognised and generated again; the last complete copy of a step wins.
    ``pairs.jsonl`` holds each group's best and worst response (distinct rewards) in the canonical pair format.
    """

    def __init__(self, root: Any):
        from pathlib import Path

        self.root = Path(root)
        self.path = self.root / "rollouts.jsonl"
        self.pairs_path = self.root / "pairs.jsonl"
        self._steps: Optional[dict[int, list[dict[str, Any]]]] = None

    def steps(self) -> dict[int, list[dict[str, Any]]]:
        if self._steps is not None:
            return self._steps
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        done: dict[int, list[dict[str, Any]]] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        step, n, wid = int(row["step"]), int(row["n_rows"]), str(row["write_id"])
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # a torn line
                    rows = groups.setdefault((step, wid), [])
                    rows.append(row)
                    if len(rows) == n:
                        done[step] = sorted(rows, key=lambda r: r["slot"])
        self._steps = done
        return done

    def lookup(self, step: int, prompt_ids: Sequence[str], k: int, settings: str) -> Optional[list[dict[str, Any]]]:
        rows = self.steps().get(step)
        if rows is None or len(rows) != len(prompt_ids) * k:
            return None
        for r in rows:
            if r.get("settings") != settings or r.get("prompt_id") != prompt_ids[r["slot"] // k]:
                return None
        return rows

    def write_step(self, step: int, rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> None:
        import os

        wid = hashlib.sha1(f"{step}:{os.getpid()}:{id(rows)}:{len(rows)}".encode()).hexdigest()[:12]
        for r in rows:
            r.update(format=ROW_FORMAT, write_id=wid, n_rows=len(rows))
        _append(self.path, rows)
        _append(self.pairs_path, pairs)
        if self._steps is not None:
            self._steps[step] = rows


def rows_for(step: int, rollouts: Rollouts, settings: str, advantages: Sequence[float], normalized: Sequence[float]) -> list[dict[str, Any]]:
    rows = []
    for i in range(rollouts.n):
        req = rollouts.requests[i // rollouts.k]
        rows.append({
            "step": step, "slot": i, "group": i // rollouts.k, "prompt_id": rollouts.prompt_ids[i // rollouts.k],
            "prompt": req.prompt, "images": [im.key for im in req.images], "response": rollouts.responses[i],
            "response_ids": rollouts.token_ids[i], "ended": rollouts.ended[i], "reward": rollouts.rewards[i],
            "reward_normalized": normalized[i], "components": {k: v[i] for k, v in rollouts.components.items()},
            "advantage": advantages[i], "detail": rollouts.details[i] if i < len(rollouts.details) else None,
            "settings": settings,
        })
    return rows


def from_rows(model: Any, rows: list[dict[str, Any]], prompt_ids: list[str], requests: list[GenerationRequest], k: int) -> Rollouts:
    """Rebuild a step's rollouts from its log rows; the model scores each text as the tokens it was sampled as."""
    for r in rows:
        if r["response"]:
            model.remember_answer_tokens(r["response"], r["response_ids"], ended=bool(r["ended"]))
    comps: dict[str, list[float]] = {}
    for r in rows:
        for name, v in (r.get("components") or {}).items():
            comps.setdefault(name, []).append(float(v))
    return Rollouts(prompt_ids=prompt_ids, requests=requests, k=k, responses=[r["response"] for r in rows],
                    token_ids=[list(r["response_ids"]) for r in rows], ended=[bool(r["ended"]) for r in rows],
                    rewards=[float(r["reward"]) for r in rows], components=comps,
                    details=[r.get("detail") or {} for r in rows], reused=True)


def best_worst_pairs(step: int, rollouts: Rollouts, images_of: Any) -> list[dict[str, Any]]:
    """Each group's highest- and lowest-reward responses as a canonical pair (groups with equal rewards are skipped)."""
    out = []
    for g in range(len(rollouts.requests)):
        idx = list(range(g * rollouts.k, (g + 1) * rollouts.k))
        hi = max(idx, key=lambda i: rollouts.rewards[i])
        lo = min(idx, key=lambda i: rollouts.rewards[i])
        if rollouts.rewards[hi] <= rollouts.rewards[lo] or rollouts.responses[hi] == rollouts.responses[lo]:
            continue
        req = rollouts.requests[g]
        out.append({"id": f"rl-{step}-{g}-{rollouts.prompt_ids[g]}", "prompt": req.prompt, "chosen": rollouts.responses[hi],
                    "rejected": rollouts.responses[lo], "images": images_of(req.images), "source": "rl-rollouts",
                    "meta": {"step": step, "chosen_reward": rollouts.rewards[hi], "rejected_reward": rollouts.rewards[lo]}})
    return out


__all__ = ["RolloutLog", "Rollouts", "best_worst_pairs", "derive_seed", "from_rows", "rows_for", "sample", "score", "seeded"]
