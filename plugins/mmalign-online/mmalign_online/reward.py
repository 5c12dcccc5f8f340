"""A reward model: a scalar head on a vision-language backbone, trained with the Bradley-Terry loss (method spec 4).

Training is a self-contained function, :func:`train_reward_model`, callable from Python (tests,
notebooks) and used by the ``reward-model`` judge when the folder it is given holds no trained
model yet. No CLI and no run stage are involved::

    from mmalign_online.reward import train_reward_model, load_reward_model
    result = train_reward_model(backbone, pairs, RewardTrainConfig(data=..., steps=200), out_dir)
    result.heldout_accuracy          # pairwise accuracy on the held-out split
    rm = load_reward_model(out_dir)  # RewardModel; rm.rewards(requests, answers) -> list[float]

Architecture: the backbone's last-layer hidden state at the final token of (prompt + answer + eos)
feeds a linear head with one output (the paper's final-token head, spec 10 #19). Loss:
``-log sigmoid(r(x, y+) - r(x, y-))`` (Eq. 1). A held-out split (``heldout_fraction``, at most
``max_heldout`` pairs, seeded) is scored before and after training by pairwise accuracy
(``r(x, y+) > r(x, y-)``; a tie counts one half, and the head starts at zero, so training starts at exactly 0.5). A folder holds ``reward.json`` (metrics, the
backbone reference, training settings), ``head.pt`` and, when the backbone was trained,
``backbone/`` (a ``save_pretrained`` folder).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from mmalign_core.protocols import Context
from mmalign_core.types import GenerationRequest, PreferencePair

from .config import ModelRef, RewardModelConfig, RewardTrainConfig
from .verdict import Comparison, Verdict, extract_pairwise, render_verdict, verdict_from_scores
from mmalign_core.paths import cache_root

FORMAT = 1


@dataclass
class RewardTrainResult:
    """What :func:`train_reward_model` measured."""

    path: str
    heldout_accuracy: float
    initial_heldout_accuracy: float
    train_accuracy: float
    n_train: int
    n_heldout: int
    steps: int
    final_loss: float
    seconds: float


class RewardModel:
    """Backbone (an HF vision-language model wrapper) + linear head; :meth:`rewards` scores responses."""

    def __init__(self, backbone: Any, head: Any = None):
        import torch

        self.backbone = backbone
        base = backbone.model
        cfg = base.config
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else getattr(cfg, "text_config", cfg)
        self.hidden_size = int(text.hidden_size)
        if head is None:  # a zero head scores every answer alike: held-out accuracy starts at exactly chance (0.5)
            head = torch.nn.Linear(self.hidden_size, 1)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        self.head = head
        self.head.to(backbone.device)

    def _hidden(self, inputs: dict[str, Any]) -> Any:
        base = self.backbone.model
        inner = getattr(base, "model", None)
        if inner is not None and callable(inner):
            return inner(**inputs, use_cache=False).last_hidden_state
        return base(**inputs, use_cache=False, output_hidden_states=True).hidden_states[-1]

    def score_tensor(self, prompts: Sequence[str], images: Sequence[Sequence[Any]], answers: Sequence[str]) -> Any:
        """Rewards with gradients (shape [N])."""
        bb = self.backbone
        enc = bb.encode(list(prompts), list(images), list(answers))
        inputs = bb.inputs_to_device(enc.inputs)
        hidden = self._hidden(inputs)
        last = inputs["attention_mask"].sum(-1) - 1  # right padding: the eos token of each row
        h = hidden[range(hidden.shape[0]), last]
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1)

    def rewards(self, requests: Sequence[GenerationRequest], answers: Sequence[str], *, batch_size: int = 16) -> list[float]:
        """The reward of each (request, answer), without gradients."""
        import torch

        module = self.backbone.model
        was = module.training
        module.eval()
        out: list[float] = []
        try:
            with torch.no_grad():
                for s in range(0, len(requests), batch_size):
                    reqs = requests[s : s + batch_size]
                    out.extend(self.score_tensor([r.prompt for r in reqs], [r.images for r in reqs], answers[s : s + batch_size]).float().tolist())
        finally:
            module.train(was)
        return out

    def pair_accuracy(self, pairs: Sequence[PreferencePair], batch_size: int = 16) -> float:
        """Share of pairs whose chosen answer gets the higher reward (a tie counts one half)."""
        if not pairs:
            return float("nan")
        reqs = [GenerationRequest(p.prompt, list(p.images)) for p in pairs]
        rc = self.rewards(reqs, [p.chosen for p in pairs], batch_size=batch_size)
        rr = self.rewards(reqs, [p.rejected for p in pairs], batch_size=batch_size)
        return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(rc, rr)) / len(pairs)


def split_pairs(pairs: Sequence[PreferencePair], cfg: RewardTrainConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out): a seeded permutation; held-out = round(fraction * n), at least 1, at most max_heldout."""
    import numpy as np

    n = len(pairs)
    if n < 2:
        raise ValueError(f"a reward model needs at least 2 pairs (got {n})")
    k = min(cfg.max_heldout, max(1, int(round(cfg.heldout_fraction * n))), n - 1)
    perm = np.random.default_rng([cfg.seed, 17]).permutation(n)
    held = [pairs[int(i)] for i in perm[:k]]
    train = [pairs[int(i)] for i in perm[k:]]
    return train, held


def train_reward_model(
    backbone: Any,
    pairs: Sequence[PreferencePair],
    cfg: RewardTrainConfig,
    out_dir: str | Path,
    *,
    model_ref: Optional[ModelRef] = None,
    log: Any = print,
) -> RewardTrainResult:
    """Train a reward head (and, with ``train_backbone``, the backbone's language model) on ``pairs``; save to ``out_dir``.

    Args:
        backbone: an HF wrapper (:class:`mmalign_hf.model.HFVisionLanguageModel`), e.g. a built
            ``tiny-llava`` or ``hf-vlm`` component. It is trained in place when ``train_backbone``.
        pairs: preference pairs; the first ``max_pairs`` are used.
        model_ref: the backbone's component reference, recorded so :func:`load_reward_model` can rebuild it.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    out = Path(out_dir)
    if cfg.max_pairs is not None:
        pairs = [pairs[i] for i in range(min(cfg.max_pairs, len(pairs)))]
    train, held = split_pairs(pairs, cfg)
    torch.manual_seed(cfg.seed)
    rm = RewardModel(backbone)
    backbone.freeze_vision(True)
    initial = rm.pair_accuracy(held)
    module = backbone.model
    groups = [{"params": list(rm.head.parameters()), "lr": cfg.head_lr}]
    if cfg.train_backbone:
        groups.append({"params": [p for p in module.parameters() if p.requires_grad], "lr": cfg.lr})
    else:
        for p in module.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 23])
    order: list[int] = []
    loss_value = float("nan")
    module.train(cfg.train_backbone)
    with torch.enable_grad():
        for step in range(cfg.steps):
            if len(order) < cfg.batch_size:
                order.extend(int(i) for i in rng.permutation(len(train)))
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            batch = [train[i] for i in idx]
            prompts = [p.prompt for p in batch] * 2
            images = [p.images for p in batch] * 2
            answers = [p.chosen for p in batch] + [p.rejected for p in batch]
            r = rm.score_tensor(prompts, images, answers)
            rc, rr = r[: len(batch)], r[len(batch) :]
            loss = -F.logsigmoid(rc - rr).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
            if (step + 1) % max(1, cfg.steps // 5) == 0:
                log(f"[reward-model] step {step + 1}/{cfg.steps}: loss {loss_value:.4f}")
    module.eval()
    heldout = rm.pair_accuracy(held)
    train_acc = rm.pair_accuracy(train[: max(len(held), 64)])
    out.mkdir(parents=True, exist_ok=True)
    ref = model_ref.model_dump(mode="json") if model_ref is not None else None
    if cfg.train_backbone:
        backbone.save_pretrained(out / "backbone")
    torch.save(rm.head.state_dict(), out / "head.pt")
    result = RewardTrainResult(
        path=str(out), heldout_accuracy=heldout, initial_heldout_accuracy=initial, train_accuracy=train_acc,
        n_train=len(train), n_heldout=len(held), steps=cfg.steps, final_loss=loss_value, seconds=time.perf_counter() - t0,
    )
    meta = {
        "format": FORMAT,
        "model": ref,
        "backbone_trained": cfg.train_backbone,
        "hidden_size": rm.hidden_size,
        "train": cfg.model_dump(mode="json"),
        **asdict(result),
    }
    tmp = out / "reward.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(out / "reward.json")  # written last: its presence marks a complete folder
    log(f"[reward-model] held-out pairwise accuracy {initial:.3f} -> {heldout:.3f} ({len(held)} pairs); saved to {out}")
    return result


def load_reward_model(path: str | Path, *, model_ref: Optional[ModelRef] = None, device: str = "cpu") -> tuple[RewardModel, dict[str, Any]]:
    """Load a folder written by :func:`train_reward_model`: ``(RewardModel, reward.json contents)``."""
    import torch

    path = Path(path)
    meta = json.loads((path / "reward.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported reward model format {meta.get('format')!r}")
    ref_data = meta.get("model") or (model_ref.model_dump(mode="json") if model_ref is not None else None)
    if ref_data is None:
        raise ValueError(f"{path}: reward.json names no backbone; pass the model reference")
    ref_data = dict(ref_data)
    if meta.get("backbone_trained"):
        ref_data["config"] = {**ref_data.get("config", {}), "path": str((path / "backbone").resolve())}
    backbone = ModelRef.model_validate(ref_data).build()
    backbone.to(device)
    head = torch.nn.Linear(int(meta["hidden_size"]), 1)
    head.load_state_dict(load_head_state(path / "head.pt"))
    rm = RewardModel(backbone, head)
    backbone.model.eval()
    return rm, meta


def load_head_state(path: Path) -> dict[str, Any]:
    """The reward head's weights, read with ``weights_only=True``: a file holding anything but tensors is refused, unrun."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: refusing to load the reward head: it holds more than tensors ({first[:300]}); nothing in it was run. "
                         "Retrain the reward model (delete its folder) or restore head.pt from a trusted copy.") from None


def default_reward_dir(config: RewardModelConfig) -> Path:
    """Where an unnamed reward model of ``config`` lives: the run cache, keyed by backbone and training settings."""
    payload = {"model": config.model.model_dump(mode="json") if config.model else None,
               "train": config.train.model_dump(mode="json") if config.train else None, "format": FORMAT}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_root()
    return root / "reward-models" / digest


class RewardModelJudge:
    """Component ``reward-model``: ranks answers by a trained reward model (trains one first if needed)."""

    max_answers: Optional[int] = None

    def __init__(self, config: RewardModelConfig, *, log: Any = print):
        self.config = config
        self.path = Path(config.path) if config.path else default_reward_dir(config)
        if not (self.path / "reward.json").is_file():
            if config.train is None:
                raise FileNotFoundError(f"reward-model: {self.path} holds no trained reward model (reward.json) and no 'train' settings are given")
            self.train_result = self._train(log)
        else:
            self.train_result = None
        self.model, self.meta = load_reward_model(self.path, model_ref=config.model, device=config.device)
        acc = float(self.meta.get("heldout_accuracy", float("nan")))
        if config.min_heldout_accuracy is not None and not (acc >= config.min_heldout_accuracy):
            raise ValueError(f"reward-model at {self.path}: held-out accuracy {acc:.3f} is below min_heldout_accuracy {config.min_heldout_accuracy}")
        self._identity = {
            "judge": "reward-model",
            "head_sha256": hashlib.sha256((self.path / "head.pt").read_bytes()).hexdigest()[:16],
            "heldout_accuracy": round(acc, 6) if not math.isnan(acc) else None,
            "tie_margin": config.tie_margin,
        }

    def _train(self, log: Any) -> RewardTrainResult:
        cfg = self.config
        assert cfg.train is not None and cfg.model is not None
        backbone = cfg.model.build()
        backbone.to(cfg.device)
        source = cfg.train.data.build()
        ctx = Context(seed=cfg.train.seed, output_dir=self.path / "data", cache_dir=cache_root(), log=log)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        pairs = source.pairs(ctx)
        if not isinstance(pairs, Sequence):
            pairs = list(pairs)
        return train_reward_model(backbone, pairs, cfg.train, self.path, model_ref=cfg.model, log=log)

    def describe(self) -> dict[str, Any]:
        return dict(self._identity)

    def compare(self, items: Sequence[Comparison], ctx: Context, *, policy: Any = None) -> list[Verdict]:
        reqs = [c.request for c in items for _ in c.answers]
        answers = [a for c in items for a in c.answers]
        scores = self.model.rewards(reqs, answers, batch_size=self.config.batch_size)
        out, k = [], 0
        for c in items:
            s = scores[k : k + len(c.answers)]
            k += len(c.answers)
            v = verdict_from_scores(s, margin=self.config.tie_margin)
            v.reply = render_verdict(None if v.best is None else v.best + 1, "It has the higher reward.") if len(c.answers) == 2 else ""
            out.append(v)
        return out

    def complete(self, requests: Sequence[GenerationRequest], ctx: Context) -> list[str]:
        """Verdict texts for pairwise prompts in the default layout; other prompts get their reward as text."""
        replies = []
        for request in requests:
            parsed = extract_pairwise(request.prompt)
            if parsed is None:
                replies.append(f"{self.model.rewards([request], [request.answer_prefix or ''])[0]:.6f}")
                continue
            q, a, b = parsed
            replies.append(self.compare([Comparison(GenerationRequest(q, list(request.images)), [a, b])], ctx)[0].reply)
        return replies


def make_reward_model_judge(config: RewardModelConfig) -> RewardModelJudge:
    """Factory of ``reward-model``."""
    return RewardModelJudge(config)


__all__ = ["RewardModel", "RewardModelJudge", "RewardTrainResult", "load_reward_model", "make_reward_model_judge", "split_pairs", "train_reward_model"]
