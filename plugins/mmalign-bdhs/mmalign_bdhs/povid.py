"""POVID-style teacher-forced image distortion (paper Sec. 3.3, App. E.1; POVID's ``dpo_trainer_inherent.py``).

The distorted "answer" y~- is not a text: at every position t of the chosen answer y+, the model's greedy
prediction under a **noised** image given the true prefix, a_t = argmax pi(. | x~, y+_<t). Its log-prob is
taken non-autoregressively under the **clean** image at the chosen answer's positions:
log pi(y~-) = sum_t log pi(a_t | x, y+_<t). The policy uses its own argmax, the reference its own, and the
loss averages two DPO terms: gamma * DPO(y+, y-) + (1 - gamma) * DPO(y+, y~-) (POVID's code; beta 0.1).

Because y~- is scored at the chosen answer's positions, the runner's ``pair_logps`` (which scores texts
autoregressively) cannot compute it. The design:

* the source ``povid-distortion`` (``requires: generate``) builds, with the stage-start model (= the
  reference), the reference side once per pair: its noisy argmax tokens and their clean-image score
  ``S_ref`` (stored in ``pair.meta["povid"]``), and attaches a handle to the model being trained;
* the loss ``povid-dpo`` computes the policy side every step: a no-grad forward under the pair's noised
  image (the same draw as the reference's) gives the policy's argmax tokens, a forward under the clean
  image (with gradients) scores them.
  The external pair (y+, y-) comes from the runner's log-probs as usual.

Costs per step beyond DPO: one no-grad forward of the chosen sequences with noised images and one forward
and backward of the chosen sequences (the runner's own chosen pass is not shared with the loss). Under a
multi-process (DDP) launch the second forward is not supported.

With ``scoring: text`` the source instead decodes the stage-start model's noisy argmax tokens into a
text answer (put in ``extra_rejected`` when the base pair has its own rejected answer, else ``rejected``)
that any loss scores autoregressively -- an approximation that works with ``dpo``/``avg-dpo``.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
import weakref
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmalign_core.errors import RunError
from mmalign_core.protocols import Context, LossInputs, LossOutput
from mmalign_core.types import ImageRef, PreferencePair

from . import __version__
from .config import POVIDDistortionConfig, POVIDLossConfig
from .noise import add_noise
from .sampler import item_hash
from .sources import BaseData, NeedsModelError

PLACEHOLDER = "(no external rejected answer: povid-dpo trains on the distortion alone)"
_MODELS: dict[str, "weakref.ReferenceType[Any]"] = {}


def _noised(images: Sequence[ImageRef], cfg: Any, rng: np.random.Generator) -> list[ImageRef]:
    return [ImageRef(add_noise(r.load(), cfg.step, rng, schedule=cfg.schedule, pixels=cfg.pixels), key=f"{r.key}#noise") for r in images]


def _logits(model: Any, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]], answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits predicting each next token, the targets (the chosen tokens) and the answer-position mask, ``[B, T-1]``."""
    enc = model.encode(list(prompts), [list(i) for i in images], list(answers))
    inputs = model.inputs_to_device(enc.inputs)
    forward = getattr(model, "forward_module", None) or model.model
    logits = forward(**inputs, use_cache=False).logits[:, :-1, :].float()
    targets = inputs["input_ids"][:, 1:]
    mask = enc.response_mask[:, 1:].to(logits.device)
    return logits, targets, mask


def noisy_argmax(model: Any, prompts: Sequence[str], noisy_images: Sequence[Sequence[ImageRef]], answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy next-token predictions teacher-forced on ``answers`` under the (noised) images: ``[B, T-1]`` ids and mask."""
    with torch.no_grad():
        logits, _, mask = _logits(model, prompts, noisy_images, answers)
        return logits.argmax(-1), mask


def score_tokens(model: Any, prompts: Sequence[str], images: Sequence[Sequence[ImageRef]], answers: Sequence[str],
                 tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the answer positions of log pi(tokens_t | x, y+_<t) under the clean images (with gradients), and counts."""
    logits, _, mask = _logits(model, prompts, images, answers)
    if tokens.shape != mask.shape:
        raise RuntimeError(f"distortion tokens {tuple(tokens.shape)} do not line up with the chosen answers {tuple(mask.shape)}")
    lp = torch.gather(F.log_softmax(logits, dim=-1), 2, tokens.to(logits.device).unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1), mask.sum(-1)


class POVIDDistortionSource:
    """Pairs for POVID-style distortion (see the module docstring); capability ``pairs``, requires ``generate``."""

    name = "povid-distortion"

    def __init__(self, config: POVIDDistortionConfig, plugins: Any = None):
        self.config = config
        self.base = BaseData(config, plugins)
        self.handle = uuid.uuid4().hex[:12]
        self._stats: dict[str, Any] = {}

    def fingerprint(self) -> str:
        payload = {"component": self.name, "version": __version__, "config": self.config.model_dump(mode="json", exclude={"batch_size"}),
                   "base": self.base.fingerprint()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        return dict(self._stats)

    def pairs(self, ctx: Context) -> list[PreferencePair]:
        model = ctx.extras.get("model")
        if model is None:
            raise NeedsModelError("povid-distortion computes its pairs with the stage-start model, which the runner passes as "
                                  "ctx.extras['model']; it has no data to show outside a run")
        cfg = self.config
        records = self.base.records(ctx)
        t0 = time.perf_counter()
        out: list[PreferencePair] = []
        was_training = model.module.training
        model.module.eval()
        try:
            for s in ctx.progress(range(0, len(records), cfg.batch_size), desc="povid-distortion", total=-(-len(records) // cfg.batch_size)):
                chunk = records[s : s + cfg.batch_size]
                prompts = [r.prompt for r in chunk]
                answers = [r.chosen for r in chunk]
                noisy = [_noised(r.images, cfg.noise, np.random.default_rng([cfg.seed & 0xFFFFFFFF, item_hash(r.id), 0])) for r in chunk]
                tokens, mask = noisy_argmax(model, prompts, noisy, answers)
                if cfg.scoring == "teacher-forced":
                    with torch.no_grad():
                        ref_scores, counts = score_tokens(model, prompts, [r.images for r in chunk], answers, tokens)
                for j, rec in enumerate(chunk):
                    meta = dict(rec.meta)
                    toks = tokens[j][mask[j].bool()].tolist()
                    text = model.tokenizer.decode(toks, skip_special_tokens=True).strip()
                    if cfg.scoring == "teacher-forced":
                        meta["povid"] = {"handle": self.handle, "ref_score": float(ref_scores[j]), "ref_tokens": len(toks),
                                         "ref_text": text, "seed": cfg.seed, "noise": cfg.noise.model_dump()}
                        rejected = rec.rejected if rec.rejected is not None else PLACEHOLDER
                        extra: list[str] = []
                    else:
                        meta["povid"] = {"text": text}
                        if rec.rejected is not None:
                            rejected, extra = rec.rejected, [*rec.extra_rejected, text or "."]
                        else:
                            rejected, extra = text or ".", []
                    out.append(PreferencePair(id=rec.id, prompt=rec.prompt, chosen=rec.chosen, rejected=rejected, images=list(rec.images),
                                              extra_rejected=extra, source=self.name, meta=meta))
        finally:
            model.module.train(was_training)
        if cfg.scoring == "teacher-forced":
            _MODELS[self.handle] = weakref.ref(model)
        self._stats = {"pairs": len(out), "skipped": dict(self.base.skipped), "seconds": round(time.perf_counter() - t0, 3),
                       "scoring": cfg.scoring}
        return out


def make_source(config: POVIDDistortionConfig, context: Any = None) -> POVIDDistortionSource:
    """Factory of ``povid-distortion``: its base source comes from the manager that validated the spec."""
    return POVIDDistortionSource(config, context.plugins if context is not None else None)


class POVIDLoss:
    """gamma * DPO(y+, y-) + (1 - gamma) * DPO(y+, y~-) with y~- scored as in POVID's code (module docstring)."""

    def __init__(self, config: POVIDLossConfig):
        self.config = config

    def _model(self, pairs: Sequence[PreferencePair]) -> Any:
        handles = {p.meta.get("povid", {}).get("handle") for p in pairs}
        if None in handles or len(handles) != 1:
            raise RunError("povid-dpo needs pairs from the 'povid-distortion' source with scoring 'teacher-forced' "
                           "(each pair's meta['povid'] names the model being trained)")
        ref = _MODELS.get(handles.pop())
        model = ref() if ref is not None else None
        if model is None:
            raise RunError("povid-dpo: the model of these pairs is gone; the pairs must come from povid-distortion in this process")
        return model

    def __call__(self, inputs: LossInputs) -> LossOutput:
        cfg = self.config
        pairs: Sequence[PreferencePair] = inputs.pairs  # type: ignore[assignment]
        pol, ref = inputs.policy, inputs.reference
        if ref is None:
            raise ValueError("povid-dpo needs reference log-probs")
        model = self._model(pairs)
        noise = [p.meta["povid"]["noise"] for p in pairs]
        seed = pairs[0].meta["povid"]["seed"]
        from .config import NoiseSettings

        # The noised image the reference side was computed with (the same draw): policy and reference take their
        # argmax on the same distorted input, so h(y~-) = 0 while the policy equals the reference.
        noisy = [_noised(p.images, NoiseSettings.model_validate(n), np.random.default_rng([seed & 0xFFFFFFFF, item_hash(p.id), 0]))
                 for p, n in zip(pairs, noise)]
        prompts, answers = [p.prompt for p in pairs], [p.chosen for p in pairs]
        tokens, _ = noisy_argmax(model, prompts, noisy, answers)
        s_pol, n_tok = score_tokens(model, prompts, [p.images for p in pairs], answers, tokens)
        s_ref = torch.tensor([p.meta["povid"]["ref_score"] for p in pairs], dtype=s_pol.dtype, device=s_pol.device)
        h_c = pol.chosen - ref.chosen.to(pol.chosen.device)
        h_d = s_pol - s_ref
        loss_d = -F.logsigmoid(cfg.beta * (h_c - h_d))
        has_external = pol.rejected is not None and ref.rejected is not None and all(p.rejected != PLACEHOLDER for p in pairs)
        if cfg.external == "use" and not has_external:
            raise RunError("povid-dpo with external 'use' needs each pair's own rejected answer; the base source has none "
                           "(set external 'ignore')")
        if cfg.external == "use":
            h_r = pol.rejected - ref.rejected.to(pol.rejected.device)
            loss_r = -F.logsigmoid(cfg.beta * (h_c - h_r))
            loss = cfg.gamma * loss_r.mean() + (1 - cfg.gamma) * loss_d.mean()
        else:
            h_r = h_d
            loss_r = loss_d
            loss = loss_d.mean()
        rc, rr, rd = (cfg.beta * h_c).detach(), (cfg.beta * h_r).detach(), (cfg.beta * h_d).detach()
        nll = -pol.chosen.sum() / pol.chosen_tokens.sum().clamp(min=1).to(pol.chosen.dtype)
        metrics = {
            "loss": float(loss.detach()),
            "rewards/chosen": float(rc.mean()),
            "rewards/rejected": float(rr.mean()),
            "rewards/margin": float((rc - rr).mean()),
            "rewards/accuracy": float((rc > rr).float().mean()),
            "logps/chosen": float(pol.chosen.detach().mean()),
            "logps/rejected": float(pol.rejected.detach().mean()) if pol.rejected is not None else float(s_pol.detach().mean()),
            "nll": float(nll.detach()),
            "rewards/distorted": float(rd.mean()),
            "rewards/distorted_margin": float((rc - rd).mean()),
            "rewards/distorted_accuracy": float((rc > rd).float().mean()),
            "logps/distorted": float(s_pol.detach().mean()),
            "loss/rejected": float(loss_r.detach().mean()),
            "loss/distorted": float(loss_d.detach().mean()),
        }
        return LossOutput(loss=loss, metrics=metrics)
