"""The RL loop every algorithm shares; the algorithm supplies the estimator.

Per RL step ``s`` (``train.steps`` of them):

1. ``rollout.prompts_per_step`` prompts are drawn (one seeded permutation per epoch of the prompts, as
   training batches are drawn);
2. ``rollout.samples_per_prompt`` responses per prompt are sampled from the current policy (seeded by
   ``(seed, s)``), or taken from the rollout log on a resumed run, and scored by the reward;
3. raw rewards are normalised (:class:`~mmalign_rl.normalize.RewardNormalizer`); the policy's and (where
   needed) the reference's per-token log-probs, and the algorithm's values, are computed without gradients;
4. the algorithm turns them into advantages (:meth:`RLAlgorithmBase.advantages`); the rollouts, rewards and
   advantages are appended to ``rollouts.jsonl``;
5. ``epochs`` passes over the rollouts, each in a seeded order cut into minibatches of ``train.batch_size``
   rollouts (one optimizer step each, gradient accumulation over ``train.micro_batch_size``), minimise the
   algorithm's loss (:meth:`RLAlgorithmBase.loss`);
6. a metrics row; a checkpoint every ``train.checkpoint_every`` steps (model, optimizer, scheduler, RNG,
   the algorithm's state, the normaliser's state), from which a resumed run continues exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from mmalign_core.protocols import RLStageInputs
from mmalign_core.runner.training import (
    TRAINER_STATE,
    BatchOrder,
    latest_checkpoint,
    load_trainer_state,
    lr_lambda,
    rng_state,
    set_rng_state,
)
from mmalign_core.types import GenerationRequest

from .config import RLLoopConfig
from .estimators import kl_per_token, masked_sum
from .normalize import RewardNormalizer
from .rollout import RolloutLog, Rollouts, best_worst_pairs, derive_seed, from_rows, rows_for, sample, score
from .scoring import TokenScores, check_scorable, eval_mode, frozen_copy, response_mask, token_scores


@dataclass
class RolloutBatch:
    """A step's rollouts with everything the estimator reads (tensors ``[N, T]`` over response tokens)."""

    rollouts: Rollouts
    requests: list[GenerationRequest]  # one per response
    rewards: torch.Tensor  # [N] normalised rewards
    old: TokenScores
    ref_logps: Optional[torch.Tensor]
    max_new_tokens: int
    advantages: Optional[torch.Tensor] = None  # [N, T] or [N, 1]
    returns: Optional[torch.Tensor] = None  # [N, T] (PPO)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> torch.Tensor:
        return self.old.mask


@dataclass
class Totals:
    """Normalisers of one minibatch: its responses and tokens, its micro-batches, and the token limit."""

    sequences: int
    tokens: float
    micro_batches: int
    max_new_tokens: int


def _slice(scores: TokenScores, idx: torch.Tensor) -> TokenScores:
    return TokenScores(logps=scores.logps[idx], mask=scores.mask[idx],
                       entropy=None if scores.entropy is None else scores.entropy[idx],
                       values=None if scores.values is None else scores.values[idx])


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (or cut) the token dimension of ``x`` to ``width``."""
    if x.shape[1] >= width:
        return x[:, :width]
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


class RLAlgorithmBase:
    """The shared loop (:meth:`train`); subclasses implement the estimator hooks.

    Hooks: :meth:`setup` (extra trainable modules, e.g. PPO's value head), :meth:`advantages`,
    :meth:`loss`, :meth:`after_step`, :meth:`state`/:meth:`load`, :meth:`sequence_advantages`;
    ``needs_reference`` says whether the reference's log-probs are needed.
    """

    name = "rl"

    def __init__(self, config: RLLoopConfig):
        self.config = config

    # ----------------------------------------------------------------------- estimator hooks
    @property
    def needs_reference(self) -> bool:
        return self.config.track_kl

    @property
    def needs_old_scores(self) -> bool:
        """Whether the rollout policy's log-probs are needed (not for one on-policy pass without a KL in the reward)."""
        return True

    def value_head(self) -> Any:
        return None

    def setup(self, model: Any, lr: float) -> list[dict[str, Any]]:
        """Extra optimizer parameter groups (none by default)."""
        return []

    def advantages(self, batch: RolloutBatch) -> None:
        raise NotImplementedError

    def loss(self, batch: RolloutBatch, idx: torch.Tensor, now: TokenScores, totals: Totals) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, batch: RolloutBatch, metrics: dict[str, float]) -> dict[str, float]:
        return {}

    def sequence_advantages(self, batch: RolloutBatch) -> list[float]:
        adv = batch.advantages
        if adv.shape[1] == 1:
            return adv[:, 0].tolist()
        return (masked_sum(adv, batch.mask) / batch.mask.sum(-1).clamp(min=1)).tolist()

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, state: dict[str, Any]) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"algorithm": self.name, "config": self.config.model_dump(mode="json")}

    # ---------------------------------------------------------------------------- the loop
    def train(self, st: RLStageInputs) -> dict[str, Any]:
        return _Loop(self, st).run()


class _Loop:
    """One run of the shared loop (state of a stage in progress)."""

    def __init__(self, algo: RLAlgorithmBase, st: RLStageInputs):
        self.algo, self.st = algo, st
        self.model = st.model
        check_scorable(self.model)
        self.cfg = algo.config
        self.ro = st.rollout
        self.settings = st.train
        if st.train.epochs is not None and st.train.steps is None:
            self.steps = max(1, math.ceil(st.train.epochs * len(st.prompts) / self.ro.prompts_per_step))
        else:
            self.steps = st.train.steps or max(1, math.ceil(len(st.prompts) / self.ro.prompts_per_step))
        self.n_rollouts = self.ro.prompts_per_step * self.ro.samples_per_prompt
        self.micro = st.train.micro_batch_size or st.train.batch_size
        self.minibatch = min(st.train.batch_size, self.n_rollouts)
        self.updates_per_step = self.cfg.epochs * math.ceil(self.n_rollouts / self.minibatch)
        self.normalizer = RewardNormalizer(self.cfg.normalization)
        self.log = RolloutLog(Path(st.ctx.output_dir) / "rl") if self.ro.log else None
        self.rollout_settings = hashlib.sha256(json.dumps({
            "rollout": self.ro.model_dump(mode="json", exclude={"log", "reuse_log"}),
            "reward": st.reward.describe(), "seed": st.seed}, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.reference: Any = None

    # -------------------------------------------------------------------------- pieces
    def _prompt_request(self, item: Any) -> GenerationRequest:
        return GenerationRequest(prompt=item.prompt, images=list(item.images))

    def _score_ref(self, requests: list[GenerationRequest], responses: list[str]) -> torch.Tensor:
        out = []
        for s in range(0, len(responses), self.micro):
            if self.reference is None:  # LoRA: the adapter-disabled policy
                with self.model.model.disable_adapter():
                    out.append(token_scores(self.model, requests[s : s + self.micro], responses[s : s + self.micro]).logps)
            else:
                out.append(token_scores(self.reference, requests[s : s + self.micro], responses[s : s + self.micro]).logps)
        width = max(o.shape[1] for o in out)
        return torch.cat([pad_to(o, width) for o in out])

    def _score_old(self, requests: list[GenerationRequest], responses: list[str]) -> TokenScores:
        parts = [token_scores(self.model, requests[s : s + self.micro], responses[s : s + self.micro],
                              value_head=self.algo.value_head(), entropy=True) for s in range(0, len(responses), self.micro)]
        width = max(p.logps.shape[1] for p in parts)
        cat = lambda xs: torch.cat([pad_to(x, width) for x in xs])  # noqa: E731
        return TokenScores(logps=cat([p.logps for p in parts]), mask=cat([p.mask for p in parts]),
                           entropy=cat([p.entropy for p in parts]),
                           values=cat([p.values for p in parts]) if parts[0].values is not None else None)

    def _base_statistics(self) -> None:
        """Mode 'base-policy': one sample of the stage-start policy per prompt on the first n prompts."""
        n = min(self.cfg.normalization.n_prompts, len(self.st.prompts))
        reqs = [self._prompt_request(self.st.prompts[i]) for i in range(n)]
        with eval_mode(self.model):
            texts, _, _ = sample(self.model, reqs, k=1, max_new_tokens=self.ro.max_new_tokens, temperature=self.ro.temperature,
                                 top_p=self.ro.top_p, batch_size=self.ro.generation_batch_size, seed=derive_seed(self.st.seed, "base-policy"))
        out = self.st.reward.score(reqs, texts, self.st.ctx)
        self.normalizer.set_statistics([float(x) for x in out.scores])
        mean, std = self.normalizer.statistics()
        self.st.log(f"[{self.st.stage_name}] reward normalisation from {n} base-policy samples: mean {mean:.4f}, std {std:.4f}")

    def _rollouts(self, step: int, items: list[Any]) -> Rollouts:
        ids = [str(getattr(it, "id", i)) for i, it in enumerate(items)]
        reqs = [self._prompt_request(it) for it in items]
        k = self.ro.samples_per_prompt
        if self.log is not None and self.ro.reuse_log:
            rows = self.log.lookup(step, ids, k, self.rollout_settings)
            if rows is not None:
                return from_rows(self.model, rows, ids, reqs, k)
        t0 = time.perf_counter()
        with eval_mode(self.model):
            texts, tok, ended = sample(self.model, reqs, k=k, max_new_tokens=self.ro.max_new_tokens, temperature=self.ro.temperature,
                                       top_p=self.ro.top_p, batch_size=self.ro.generation_batch_size,
                                       seed=derive_seed(self.st.seed, step, "rollout"))
        ro = Rollouts(prompt_ids=ids, requests=reqs, k=k, responses=texts, token_ids=tok, ended=ended)
        ro.gen_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        score(self.st.reward, ro, self.st.ctx)
        ro.reward_seconds = time.perf_counter() - t1
        return ro

    def _save(self, optimizer: Any, scheduler: Any, step: int) -> None:
        root = self.st.stage_dir / "checkpoints"
        final, tmp = root / f"step-{step:07d}", root / f".tmp-step-{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "algorithm": self.algo.state(), "normalizer": self.normalizer.state()}, tmp / TRAINER_STATE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(root.glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))[: -self.settings.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    # ---------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        st, model, settings = self.st, self.model, self.settings
        if len(st.prompts) == 0:
            raise ValueError(f"stage {st.stage_name!r}: the data source produced no prompts")
        model.module.train()
        if settings.lora is not None:
            lo = settings.lora
            model.enable_lora(lo.r, lo.alpha, lo.dropout, lo.target_modules)
        model.freeze_vision(settings.freeze_vision)
        if self.algo.needs_reference and not getattr(model, "is_peft", False):
            self.reference = frozen_copy(model)
        groups = model.trainable_parameter_groups(settings.lr, settings.projector_lr)
        groups += self.algo.setup(model, settings.lr)
        optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "name"} for g in groups], lr=settings.lr,
                                      betas=settings.betas, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings, self.steps * self.updates_per_step))
        order = BatchOrder(len(st.prompts), st.seed)
        start = 0
        ckpt = latest_checkpoint(st.stage_dir)
        if ckpt is not None:
            state = load_trainer_state(ckpt / TRAINER_STATE)  # weights_only: a planted pickle is refused
            model.load_checkpoint(ckpt)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self.algo.load(state["algorithm"])
            self.normalizer.load(state["normalizer"])
            start = int(state["step"])
            st.log(f"[{st.stage_name}] resuming from {ckpt.name} (step {start}/{self.steps})")
        elif self.normalizer.needs_base_statistics:
            self._base_statistics()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        t_start = time.perf_counter()
        generated, last = 0, {}
        window: dict[str, list[float]] = {}
        for step in st.progress(range(start, self.steps), desc=st.stage_name, total=self.steps - start):
            t_step = time.perf_counter()
            idx, _ = order.batch(step, self.ro.prompts_per_step)
            batch = self._batch(step, [st.prompts[i] for i in idx])
            metrics = self._update(batch, optimizer, scheduler, params, step)
            metrics.update(self.algo.after_step(batch, metrics))
            metrics.update(self._rollout_metrics(batch))
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            metrics["step_seconds"] = time.perf_counter() - t_step
            generated += 0 if batch.rollouts.reused else batch.rollouts.n
            for k, v in metrics.items():
                window.setdefault(k, []).append(float(v))
            done = step + 1
            if done % settings.log_every == 0 or done == self.steps:
                row = {k: sum(v) / len(v) for k, v in window.items()}
                row["generated_per_s"] = generated / max(1e-9, time.perf_counter() - t_start)
                from mmalign_core.runner.io import append_jsonl

                append_jsonl(st.metrics_path, {"stage": st.stage_name, "step": done, **row})
                st.on_metrics(done, row)
                last, window = row, {}
            if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < self.steps:
                self._save(optimizer, scheduler, done)
        model.module.eval()
        return {"steps": self.steps, "examples_seen": self.steps * self.n_rollouts, "seconds": time.perf_counter() - t_start,
                "last_metrics": last}

    def _batch(self, step: int, items: list[Any]) -> RolloutBatch:
        ro = self._rollouts(step, items)
        normed = self.normalizer(ro.rewards)
        requests = ro.response_requests()
        with torch.no_grad(), eval_mode(self.model):
            ref = self._score_ref(requests, ro.responses) if self.algo.needs_reference else None
            if self.algo.needs_old_scores:
                old = self._score_old(requests, ro.responses)
            else:  # only the mask: the training pass is the first and only one (its entropy is logged instead)
                width = max(1, max(len(self.model.answer_tokens(r)) + 1 for r in ro.responses))
                mask = response_mask(self.model, ro.responses, width)
                used = int(mask.sum(-1).max())
                mask = mask[:, :used].to(ref.device if ref is not None else next(self.model.module.parameters()).device)
                old = TokenScores(logps=torch.zeros_like(mask), mask=mask)
        if ref is not None:
            ref = pad_to(ref, old.logps.shape[1])
        batch = RolloutBatch(rollouts=ro, requests=requests, rewards=torch.tensor(normed, dtype=torch.float32, device=old.logps.device),
                             old=old, ref_logps=ref, max_new_tokens=self.ro.max_new_tokens)
        self.algo.advantages(batch)
        if self.log is not None and not ro.reused:
            rows = rows_for(step, ro, self.rollout_settings, self.algo.sequence_advantages(batch), normed)
            pairs = best_worst_pairs(step, ro, self._image_entries) if self.cfg.pairs_log else []
            self.log.write_step(step, rows, pairs)
        return batch

    def _image_entries(self, images: Sequence[Any]) -> list[str]:
        from mmalign_online.log import OnlineLog

        if not hasattr(self, "_images_log"):
            self._images_log = OnlineLog(self.log.root)
        return self._images_log.image_entries(images)

    def _update(self, batch: RolloutBatch, optimizer: Any, scheduler: Any, params: list[Any], step: int) -> dict[str, float]:
        n = batch.rollouts.n
        sums: dict[str, float] = {}
        updates = 0
        for epoch in range(self.cfg.epochs):
            gen = torch.Generator().manual_seed(derive_seed(self.st.seed, step, epoch, "minibatches") % (2**63))
            perm = torch.randperm(n, generator=gen)
            for m0 in range(0, n, self.minibatch):
                mb = perm[m0 : m0 + self.minibatch]
                micro = [mb[j : j + self.micro] for j in range(0, len(mb), self.micro)]
                totals = Totals(sequences=len(mb), tokens=float(batch.mask[mb.to(batch.mask.device)].sum()), micro_batches=len(micro),
                                max_new_tokens=batch.max_new_tokens)
                optimizer.zero_grad(set_to_none=True)
                for part in micro:
                    pi = part.tolist()
                    now = token_scores(self.model, [batch.requests[i] for i in pi], [batch.rollouts.responses[i] for i in pi],
                                       value_head=self.algo.value_head(), entropy=batch.old.entropy is None)
                    width = batch.old.logps.shape[1]
                    if now.entropy is not None:
                        m_ent = float((now.entropy * now.mask).sum() / now.mask.sum().clamp(min=1))
                        sums["entropy"] = sums.get("entropy", 0.0) + m_ent * len(part) / len(mb)
                    now = TokenScores(logps=pad_to(now.logps, width), mask=pad_to(now.mask, width),
                                      values=None if now.values is None else pad_to(now.values, width))
                    loss, m = self.algo.loss(batch, part.to(batch.mask.device), now, totals)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"stage {self.st.stage_name!r}: non-finite RL loss at step {step}")
                    loss.backward()
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * len(part) / len(mb)
                if self.settings.max_grad_norm is not None:
                    gn = float(torch.nn.utils.clip_grad_norm_(params, self.settings.max_grad_norm))
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + gn
                optimizer.step()
                scheduler.step()
                updates += 1
        optimizer.zero_grad(set_to_none=True)
        return {k: v / max(updates, 1) for k, v in sums.items()}

    def _rollout_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        ro = batch.rollouts
        out: dict[str, float] = {
            "reward/mean": statistics.fmean(ro.rewards),
            "reward/std": statistics.pstdev(ro.rewards) if ro.n > 1 else 0.0,
            "reward/normalized_mean": float(batch.rewards.mean()),
            "response_length": float(batch.mask.sum(-1).mean()),
            "truncated": sum(not e for e in ro.ended) / ro.n,
            "reused": float(ro.reused),
            "generated": float(0 if ro.reused else ro.n),
            "gen_seconds": ro.gen_seconds,
            "reward_seconds": ro.reward_seconds,
        }
        if batch.old.entropy is not None:
            out["entropy"] = float((batch.old.entropy * batch.mask).sum() / batch.mask.sum().clamp(min=1))
        for name, values in ro.components.items():
            out[f"reward/{name}/mean"] = statistics.fmean(values)
        if batch.ref_logps is not None:
            out["kl"] = float(masked_sum(kl_per_token(batch.old.logps, batch.ref_logps, "k1"), batch.mask).mean())
        return out


__all__ = ["RLAlgorithmBase", "RolloutBatch", "Totals", "pad_to"]
