"""The training loop shared by ``sft`` and ``align`` stages.

The loop owns the optimizer, schedule, gradient accumulation, clipping,
checkpoints and metrics; the loss only maps log-probs to a scalar. Data order
is a pure function of (seed, epoch), and the batch of step ``s`` is the slice
``[s*B, (s+1)*B)`` of the epoch-concatenated order, so a resumed run sees
exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ..lazy_import import torch_on_first_use

if TYPE_CHECKING:  # pragma: no cover
    import torch
else:
    torch = torch_on_first_use(globals())  # imported at first use, inside a run: the core imports no torch

from ..protocols import CorruptedImageLoss, LossInputs, PairLogps, Stateful
from ..types import SFTExample
from ..spec_models import TrainSettings
from .guard import unwrap
from .heap import steady_heap
from .io import append_jsonl, atomic_write_json, atomic_write_text
from .refcache import cache_key, load_or_compute

TRAINER_STATE = "trainer_state.pt"


class Dist:
    """The slice of accelerate the loop needs: rank, world size, DDP wrapping, reductions.

    With one process (no ``accelerate``/``torchrun`` launch) every operation is a no-op.
    """

    def __init__(self, accelerator: Any = None):
        self.acc = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        self.is_main = self.rank == 0

    def prepare(self, module: Any) -> Any:
        if self.world == 1 or self.acc is None:
            return module
        return self.acc.prepare_model(module)

    def no_sync(self, module: Any) -> Any:
        import contextlib

        if self.world == 1 or self.acc is None:
            return contextlib.nullcontext()
        return self.acc.no_sync(module)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def min(self, value: int) -> int:
        """The smallest of ``value`` over all processes."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def barrier(self) -> None:
        if self.world > 1 and self.acc is not None:
            self.acc.wait_for_everyone()


@dataclass
class StageData:
    """The examples of a stage (images stay lazy).

    ``online``, when set, is a source with ``prepare_batch(pairs, model, ctx, step)``: each step's
    examples (this process's shard) are handed to it with the current policy, and it returns the pairs
    to train on (e.g. with rejected answers regenerated, or pairs sampled and judged). It may return
    fewer pairs (dropped ties); a step left with none makes no update.
    """

    examples: Sequence[Any]
    kind: str  # "pairs" or "sft"
    online: Any = None
    online_ctx: Any = None


@dataclass
class TrainOutcome:
    steps: int
    examples_seen: int
    seconds: float
    last_metrics: dict[str, float] = field(default_factory=dict)


def total_steps(settings: TrainSettings, n_examples: int) -> int:
    if settings.steps is not None:
        return settings.steps
    epochs = settings.epochs if settings.epochs is not None else 1.0
    return max(1, math.ceil(epochs * n_examples / settings.batch_size))


def lr_lambda(settings: TrainSettings, steps: int) -> Callable[[int], float]:
    warmup = int(round(settings.warmup_ratio * steps))

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if settings.schedule == "constant":
            return 1.0
        span = max(1, steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        if settings.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


class BatchOrder:
    """Deterministic example order: one permutation per epoch, seeded by (seed, epoch).

    With ``lengths`` (and a ``batch_size``), each window of ``window`` batches of the permutation is
    sorted by length and cut into batches, and those batches are shuffled within the window: batches
    hold examples of similar length (less padding) while the order stays random and reproducible.
    """

    def __init__(self, n: int, seed: int, lengths: Sequence[int] | None = None, batch_size: int = 1, window: int = 64):
        self.n = n
        self.seed = seed
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.batch_size = batch_size
        self.window = window
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.n)
            if self.lengths is not None:
                perm = self._group(perm, rng)
            self._cache = {epoch: perm}
        return self._cache[epoch]

    def _group(self, perm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        span = self.window * self.batch_size
        out: list[np.ndarray] = []
        assert self.lengths is not None  # grouping is on only with lengths
        for s in range(0, len(perm), span):
            chunk = perm[s : s + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches = [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            out.extend(batches[j] for j in rng.permutation(len(batches)))
        return np.concatenate(out) if out else perm

    def batch(self, step: int, size: int) -> tuple[list[int], float]:
        start = step * size
        idx = []
        for pos in range(start, start + size):
            epoch, off = divmod(pos, self.n)
            idx.append(int(self._perm(epoch)[off]))
        return idx, (start + size) / self.n


def rng_state() -> dict[str, Any]:
    """The generators' states as tensors and plain values only, so that ``torch.load(weights_only=True)`` reads them."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (torch, Python, numpy and CUDA generators)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(stage_dir: Path) -> Path | None:
    ckpts = sorted((stage_dir / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
    ckpts = [c for c in ckpts if (c / TRAINER_STATE).is_file()]
    return ckpts[-1] if ckpts else None


def load_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's trainer state, read with ``weights_only=True``: tensors and plain values only, never code.

    Raises:
        RunError: the file holds anything else (a planted pickle, or a checkpoint of an mmalign before 0.x that
            stored numpy objects); nothing in it is executed.
    """
    import pickle

    from ..errors import RunError

    try:
        state: dict[str, Any] = torch.load(path, weights_only=True, map_location="cpu")
        return state
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(
            f"{path}: refusing to load this checkpoint: it holds more than tensors and plain values ({first[:300]}). "
            "Nothing in it was run. Delete the checkpoint folder to restart the stage from its last good checkpoint "
            "or from step 0."
        ) from None


def _save_checkpoint(model: Any, optimizer: Any, scheduler: Any, step: int, stage_dir: Path, keep: int,
                     log_window: dict[str, Any] | None = None, components: dict[str, Any] | None = None) -> Path:
    root = stage_dir / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
         "log_window": log_window or {}, "components": components or {}},
        tmp / TRAINER_STATE,
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    older = sorted(root.glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))[:-keep]
    for old in older:
        shutil.rmtree(old, ignore_errors=True)
    return final


def component_states(stateful: Mapping[str, Any] | None) -> dict[str, Any]:
    """``state_dict()`` of every component that has one (a loss with a running statistic, a source with a cursor)."""
    return {name: comp.state_dict() for name, comp in (stateful or {}).items() if isinstance(unwrap(comp), Stateful)}


def restore_component_states(stateful: Mapping[str, Any] | None, saved: Mapping[str, Any], stage_name: str) -> None:
    """Give each stateful component back the state its checkpoint holds."""
    for name, comp in (stateful or {}).items():
        if not isinstance(unwrap(comp), Stateful):
            continue
        if name not in saved:
            raise RuntimeError(
                f"stage {stage_name!r}: the checkpoint holds no state for the {name} component, which has state_dict(); "
                "it was written by a version without it -- resume with --overwrite"
            )
        comp.load_state_dict(saved[name])


def _text_length(example: Any) -> int:
    """A cheap length proxy (characters of prompt and answers; images add the same per image)."""
    if isinstance(example, SFTExample):
        return len(example.prompt) + len(example.response) + 1000 * len(example.images)
    return len(example.prompt) + max(len(example.chosen), len(example.rejected)) + 1000 * len(example.images)


def _prepare_online(data: StageData, batch: list[Any], model: Any, step: int) -> tuple[list[Any], dict[str, float]]:
    """Let an online source rebuild this step's pairs with the current policy (no gradients, eval mode)."""
    module = model.module
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = data.online.prepare_batch(batch, model, data.online_ctx, step)
    finally:
        module.train(was_training)
    pairs, stats = (out if isinstance(out, tuple) else (out, {}))
    return list(pairs), {f"online/{k}": float(v) for k, v in stats.items()}


def _null() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _like(p: PairLogps, like: torch.Tensor) -> PairLogps:
    """Move cached reference values to the policy's device and dtype."""

    def cv(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=like.device, dtype=like.dtype if t.is_floating_point() else t.dtype)

    return PairLogps(
        chosen=cv(p.chosen), rejected=cv(p.rejected), chosen_tokens=cv(p.chosen_tokens), rejected_tokens=cv(p.rejected_tokens),
        extra_rejected=[cv(t) for t in p.extra_rejected], extra_rejected_tokens=[cv(t) for t in p.extra_rejected_tokens],
    )


def _forward(model: Any, micro: Sequence[Any], kind: str, with_rejected: bool, token_logps: bool = False) -> Any:
    if kind == "sft":
        return model.sft_logps(micro)
    if token_logps:  # only asked of models when a loss needs it: other models keep the plain signature
        return model.pair_logps(micro, with_rejected=with_rejected, token_logps=True)
    return model.pair_logps(micro, with_rejected=with_rejected)


def _corrupted_logps(loss_fn: Any, model: Any, reference: Any, micro: Sequence[Any], token_logps: bool) -> tuple[Any, Any]:
    """Policy and reference log-probs of the micro-batch's answers under the loss's corrupted images.

    The second condition shares the answers but not the prompt/image prefix, so it costs one more
    (prefix + chosen answer) sequence per pair, or two with ``corrupted_with_rejected``.
    """
    loss = unwrap(loss_fn)
    if not isinstance(loss, CorruptedImageLoss):
        raise TypeError(
            f"the loss {type(loss).__name__} requires 'corrupted_image' but has no corrupted_pairs()/corrupted_with_rejected; "
            "implement mmalign_core.protocols.CorruptedImageLoss or drop the requirement"
        )
    pairs = list(loss.corrupted_pairs(micro))
    if len(pairs) != len(micro):
        raise ValueError(f"{type(loss).__name__}.corrupted_pairs returned {len(pairs)} pairs for a micro-batch of {len(micro)}")
    with_rejected = bool(loss.corrupted_with_rejected)
    policy = _forward(model, pairs, "pairs", with_rejected, token_logps)
    ref = None
    if reference is not None:
        with torch.no_grad():
            ref = _forward(reference, pairs, "pairs", with_rejected, token_logps)
    return policy, ref


def run_training(
    *,
    model: Any,
    data: StageData,
    loss_fn: Callable[[LossInputs], Any],
    loss_requires: frozenset[str],
    settings: TrainSettings,
    stage_name: str,
    stage_dir: Path,
    metrics_path: Path,
    seed: int,
    progress: Callable[..., Any],
    log: Callable[[str], None],
    on_metrics: Callable[[int, dict[str, float]], None],
    data_fingerprint: str | None = None,
    cache_dir: Path | None = None,
    dist: Dist | None = None,
    stateful: Mapping[str, Any] | None = None,
) -> TrainOutcome:
    """Train ``model`` in place; return when ``steps`` optimizer steps are done.

    Under a distributed launch every process draws the same global batch and
    trains on its own slice of it; gradients are averaged by DDP and scaled so
    the update equals one process training on the whole batch.
    """
    dist = dist or Dist()
    if settings.batch_size % dist.world:
        raise ValueError(f"stage {stage_name!r}: batch_size {settings.batch_size} must divide by the {dist.world} processes")
    n = len(data.examples)
    if n == 0:
        raise ValueError(f"stage {stage_name!r}: the data source produced no examples")
    steps = total_steps(settings, n)
    micro_size = settings.micro_batch_size or settings.batch_size
    with_rejected = data.kind == "pairs" and "rejected" in loss_requires
    model.module.train()
    use_cache = settings.cache_reference and "reference" in loss_requires and data.kind == "pairs"
    if use_cache and data.online is not None:
        raise ValueError(f"stage {stage_name!r}: cache_reference cannot be used with an online source (its pairs change every step)")
    token_logps = data.kind == "pairs" and "token_logps" in loss_requires
    corrupted_image = data.kind == "pairs" and "corrupted_image" in loss_requires
    if use_cache and (token_logps or corrupted_image):
        raise ValueError(
            f"stage {stage_name!r}: the loss needs per-token or corrupted-image reference log-probs, which the reference "
            "cache does not hold; set train.cache_reference to false"
        )
    # The reference is the model as it is now, before adapters are added.
    ref_key = cache_key(model.fingerprint(), data_fingerprint, data.examples, with_rejected) if use_cache else None
    if settings.lora is not None:
        lo = settings.lora
        model.enable_lora(lo.r, lo.alpha, lo.dropout, lo.target_modules)
    model.freeze_vision(settings.freeze_vision)
    reference = None
    ref_cache = None
    if use_cache:
        if not dist.is_main:
            dist.barrier()  # let the main process compute and store the cache first
        assert ref_key is not None  # use_cache implies a key
        ref_cache, _ = load_or_compute(
            key=ref_key,
            cache_dir=(cache_dir or stage_dir) / "ref-logps",
            examples=data.examples,
            reference_fn=model.frozen_reference,
            batch_size=micro_size,
            with_rejected=with_rejected,
            progress=progress,
            log=log,
        )
        if dist.is_main:
            dist.barrier()
    elif "reference" in loss_requires:
        reference = model.frozen_reference()
    model.forward_module = dist.prepare(model.module)
    groups = model.trainable_parameter_groups(settings.lr, settings.projector_lr)
    if not groups:
        raise ValueError(f"stage {stage_name!r}: no trainable parameters")
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "name"} for g in groups],
        lr=settings.lr,
        betas=settings.betas,
        weight_decay=settings.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings, steps))
    lengths = [_text_length(e) for e in data.examples] if settings.group_by_length else None
    order = BatchOrder(n, seed, lengths, settings.batch_size)
    start = 0
    ckpt = latest_checkpoint(stage_dir)
    if ckpt is not None:
        state = load_trainer_state(ckpt / TRAINER_STATE)
        model.load_checkpoint(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        restore_component_states(stateful, state.get("components") or {}, stage_name)
        log(f"[{stage_name}] resuming from {ckpt.name} (step {start}/{steps})")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # The logging window (sums and counts of the steps since the last metrics row) travels in the checkpoint,
    # so the first row after a resume averages the same steps as the uninterrupted run's.
    carried = (state.get("log_window") or {}) if ckpt is not None else {}
    window: dict[str, float] = {k: float(v) for k, v in (carried.get("sums") or {}).items()}
    window_n: dict[str, int] = {k: int(v) for k, v in (carried.get("counts") or {}).items()}
    t0 = time.perf_counter()
    seen = 0
    last: dict[str, float] = {}
    bar = progress(range(start, steps), desc=f"{stage_name}", total=steps - start)

    def record(step_metrics: dict[str, float], done: int, epoch: float) -> None:
        """Add a step's metrics to the logging window; write a row and checkpoint when due."""
        nonlocal window, window_n, last
        for k, v in step_metrics.items():
            window[k] = window.get(k, 0.0) + v
            window_n[k] = window_n.get(k, 0) + 1  # per key: skipped steps log no loss
        if done % settings.log_every == 0 or done == steps:
            row = {k: v / window_n[k] for k, v in window.items()}
            row["epoch"] = round(epoch, 4)
            row["examples_per_s"] = seen / max(1e-9, time.perf_counter() - t0)
            if dist.is_main:
                append_jsonl(metrics_path, {"stage": stage_name, "step": done, **row})
                on_metrics(done, row)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}")
            last = row
            window, window_n = {}, {}
        if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < steps:
            if dist.is_main:
                _save_checkpoint(model, optimizer, scheduler, done, stage_dir, settings.keep_checkpoints,
                                 {"sums": dict(window), "counts": dict(window_n)}, component_states(stateful))
            dist.barrier()
    with steady_heap():
        for step in bar:
            global_idx, epoch = order.batch(step, settings.batch_size)
            # Contiguous shards: each process's micro-batches are exactly those a single process
            # would form, so losses that average per micro-batch (token means) keep their value.
            local = len(global_idx) // dist.world
            idx = global_idx[dist.rank * local : (dist.rank + 1) * local]
            batch = [data.examples[i] for i in idx]
            step_metrics: dict[str, float] = {}
            online_stats: dict[str, float] = {}
            if data.online is not None:
                batch, online_stats = _prepare_online(data, batch, model, step)
                idx = list(range(len(batch)))  # positions no longer index the static data
            if dist.min(len(batch)) == 0:
                # Some process has no pair left (an online source dropped them all). Every process skips the
                # update together -- one skipping the backward alone would leave the others waiting in the
                # gradient all-reduce -- and the step still counts and logs its online statistics.
                log(f"[{stage_name}] step {step + 1}: the online source returned no pairs; no update")
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                seen += len(global_idx)
                record({**dist.mean(online_stats), "skipped_steps": 1.0, "lr": optimizer.param_groups[0]["lr"]}, step + 1, epoch)
                continue
            # The number of examples the step averages over. Online sources may drop pairs, so each process
            # then weighs its own pairs equally (exact when every process keeps the same number).
            global_n = len(global_idx) if data.online is None else len(batch) * dist.world
            starts = list(range(0, len(batch), micro_size))
            for m0 in starts:
                micro = batch[m0 : m0 + micro_size]
                # Each process backpropagates its share of the global mean; DDP averages over
                # processes, hence the factor world.
                weight = len(micro) / len(batch)
                scale = len(micro) * dist.world / global_n
                sync = dist.no_sync(model.forward_module) if m0 != starts[-1] else _null()
                with sync:
                    policy = _forward(model, micro, data.kind, with_rejected, token_logps)
                    ref = None
                    if ref_cache is not None:
                        ref = _like(ref_cache.batch(idx[m0 : m0 + micro_size]), policy.chosen)
                    elif reference is not None:
                        with torch.no_grad():
                            ref = _forward(reference, micro, data.kind, with_rejected, token_logps)
                    corrupted = corrupted_ref = None
                    if corrupted_image:
                        corrupted, corrupted_ref = _corrupted_logps(loss_fn, model, reference, micro, token_logps)
                    out = loss_fn(LossInputs(policy=policy, reference=ref, pairs=micro, corrupted=corrupted,
                                             corrupted_reference=corrupted_ref))
                    if not torch.isfinite(out.loss):
                        raise FloatingPointError(f"stage {stage_name!r}: non-finite loss at step {step}")
                    (out.loss * scale).backward()
                for k, v in out.metrics.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + v * weight
            grad_norm = None
            if settings.max_grad_norm is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(global_idx)
            step_metrics.update(online_stats)
            step_metrics = dist.mean(step_metrics)
            step_metrics["lr"] = optimizer.param_groups[0]["lr"]
            if grad_norm is not None:
                step_metrics["grad_norm"] = grad_norm
            record(step_metrics, step + 1, epoch)
    model.module.eval()
    model.forward_module = model.module
    return TrainOutcome(steps=steps, examples_seen=seen, seconds=time.perf_counter() - t0, last_metrics=last)


def truncate_metrics(metrics_path: Path, stage_name: str, after_step: int) -> None:
    """Drop rows of ``stage_name`` past ``after_step`` (they are re-logged on resume)."""
    import json

    if not metrics_path.is_file():
        return
    keep = []
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("stage") == stage_name and row.get("step", 0) > after_step:
            continue
        keep.append(line)
    atomic_write_text(metrics_path, "".join(k + "\n" for k in keep))


__all__ = ["run_training", "StageData", "TrainOutcome", "latest_checkpoint", "truncate_metrics", "atomic_write_json", "total_steps"]
