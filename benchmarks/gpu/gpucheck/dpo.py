"""Part ``dpo``: DPO on the LLaVA-1.5-7B-shaped model, mmalign against TRL's ``DPOTrainer``.

Both sides: the same random weights (one seed), bf16 weights, LoRA (rank from the profile, alpha 2r, no
dropout) on the language model's projections with the projector fully trained, the vision tower frozen,
gradient checkpointing, AdamW at a constant learning rate, clipping at 1.0, beta 0.1, the same shapes-world
pairs in the same batches and order (TRL gets a sequential sampler over the rows in mmalign's order), one
image (576 tokens) per pair. Arms, one after another in this process, each on a freshly built model:

- ``trl``: ``DPOTrainer`` with ``peft_config`` (its reference is the model with adapters disabled).
  TRL refuses ``precompute_ref_log_probs`` for vision data, so it has no cached arm;
- ``mmalign``: the training loop with the reference (adapters disabled) run every step;
- ``mmalign-cached``: reference log-probs cached first (a one-step run fills the cache for every pair; its
  time is reported as ``cold``), then a fresh model trains on the cache without any reference pass.

pairs/s are timed from the end of step 1 to the end of the last step (CUDA synchronised), so one-off
warm-up counts for neither side. Peak memory is ``torch.cuda.max_memory_allocated`` from just before the
arm's model is built (weights, adapters, optimizer, activations), minus what was allocated then.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

from . import llava7b
from .paths import add_helpers
from .record import GIB, Recorder, free_memory, peak_bytes, reset_peak, sync
from .sizes import Profile

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
SEED = 0
MIN_ARM_SECONDS = 10.0  # an arm is not started with less of the part's budget left


def _pairs(profile: Profile) -> list[Any]:
    add_helpers()
    from dpo_vs_trl import _pairs as shapes_pairs

    return shapes_pairs(profile.dpo.batch * profile.dpo.steps)


def _rate(stamps: list[float], batch: int) -> float | None:
    if len(stamps) < 2:
        return None
    return (len(stamps) - 1) * batch / (stamps[-1] - stamps[0])


class _Arm:
    """Model building and memory accounting shared by the arms."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.device = profile.device
        self.before = 0

    def start(self) -> None:
        free_memory(self.device)
        self.before = reset_peak(self.device)

    def build(self, *, bos_in_template: bool = False) -> tuple[Any, Any]:
        proc = llava7b.processor(self.profile.llava, bos_in_template=bos_in_template)
        model = llava7b.build_model(self.profile.llava, proc, device=self.device, dtype=self.profile.dtype, seed=SEED)
        return model, proc

    def peak_gib(self) -> float:
        return (peak_bytes(self.device) - self.before) / GIB


def _mmalign_run(profile: Profile, pairs: list[Any], scratch: Path, tag: str, *, steps: int, cached: bool,
                 arm: _Arm) -> dict[str, Any]:
    from mmalign_core.runner.training import StageData, run_training
    from mmalign_core.spec_models import LoraSettings, TrainSettings
    from mmalign_losses.config import DPOConfig
    from mmalign_losses.dpo import DPOLoss

    d = profile.dpo
    t0 = time.perf_counter()
    model, proc = arm.build()
    m = llava7b.wrap(model, proc, profile.llava, profile.device)
    if d.gradient_checkpointing:
        m.enable_gradient_checkpointing()
    sync(profile.device)
    build_s = time.perf_counter() - t0
    settings = TrainSettings(steps=steps, batch_size=d.batch, lr=d.lr, schedule="constant", warmup_ratio=0.0, weight_decay=0.0,
                             max_grad_norm=1.0, log_every=1, cache_reference=cached,
                             lora=LoraSettings(r=d.lora_r, alpha=d.lora_alpha, dropout=0.0, target_modules=LORA_TARGETS))
    stamps: list[float] = []
    losses: list[float] = []
    logs: list[str] = []

    def on_metrics(step: int, row: dict[str, float]) -> None:
        sync(profile.device)
        stamps.append(time.perf_counter())
        losses.append(float(row.get("loss", math.nan)))

    t1 = time.perf_counter()
    run_training(model=m, data=StageData(pairs, "pairs"), loss_fn=DPOLoss(DPOConfig(beta=0.1)),
                 loss_requires=frozenset({"reference", "rejected"}), settings=settings, stage_name=tag,
                 stage_dir=scratch / "dpo" / tag, metrics_path=scratch / "dpo" / f"{tag}.jsonl", seed=SEED,
                 progress=lambda it, **k: it, log=logs.append, on_metrics=on_metrics, data_fingerprint="gpu-check",
                 cache_dir=scratch / "dpo" / "cache")
    sync(profile.device)
    out = {"build_seconds": round(build_s, 2), "loop_seconds": round(time.perf_counter() - t1, 2),
           "pairs_per_s": _rate(stamps, d.batch), "timed_steps": max(0, len(stamps) - 1), "losses": losses[:3],
           "peak_gib": arm.peak_gib(), "log": [x for x in logs if "reference" in x][:4]}
    del m, model
    return out


def mmalign_arm(profile: Profile, pairs: list[Any], scratch: Path, *, cached: bool) -> dict[str, Any]:
    arm = _Arm(profile)
    cold = None
    if cached:  # fill the cache: a one-step run computes the reference log-probs of every pair
        arm.start()
        t = time.perf_counter()
        first = _mmalign_run(profile, pairs, scratch, "cold", steps=1, cached=True, arm=arm)
        cold = {"seconds": round(time.perf_counter() - t, 2), "log": first["log"]}
    arm.start()
    out = _mmalign_run(profile, pairs, scratch, "cached" if cached else "live", steps=profile.dpo.steps, cached=cached, arm=arm)
    if cold is not None:
        out["cold"] = cold
    free_memory(profile.device)
    return out


def trl_arm(profile: Profile, pairs: list[Any], scratch: Path) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from dpo_vs_trl import _order

    d = profile.dpo
    arm = _Arm(profile)
    arm.start()
    t0 = time.perf_counter()
    order = _order(len(pairs), d.steps, d.batch, SEED)
    rows = [{"images": [pairs[i].images[0].load()], "prompt": [{"role": "user", "content": pairs[i].prompt}],
             "chosen": [{"role": "assistant", "content": pairs[i].chosen}],
             "rejected": [{"role": "assistant", "content": pairs[i].rejected}]} for i in order]
    # TRL tokenizes prompts without special tokens and expects the template to write BOS: both sides' ids agree.
    model, proc = arm.build(bos_in_template=True)
    for name, param in model.named_parameters():  # mmalign keeps the vision tower frozen by default
        if "vision_tower" in name:
            param.requires_grad_(False)
    peft_config = LoraConfig(r=d.lora_r, lora_alpha=d.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                             modules_to_save=["multi_modal_projector"])
    on_gpu = profile.device.startswith("cuda")
    config = DPOConfig(
        output_dir=str(scratch / "trl"), bf16=profile.trl_bf16 and on_gpu, use_cpu=not on_gpu,
        gradient_checkpointing=d.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        report_to=[], max_length=None, per_device_train_batch_size=d.batch, max_steps=d.steps, learning_rate=d.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, beta=0.1,
        save_strategy="no", seed=SEED, dataloader_num_workers=0,
    )

    class Sequential(DPOTrainer):
        def _get_train_sampler(self, *a: Any, **k: Any) -> Any:  # same batches, same order as mmalign
            return SequentialSampler(self.train_dataset)

    stamps: list[float] = []
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_step_end(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(profile.device)
            stamps.append(time.perf_counter())

        def on_log(self, _args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = Sequential(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=proc,
                         peft_config=peft_config, callbacks=[Record()])
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    trainer.train()
    sync(profile.device)
    out = {"build_seconds": round(build_s, 2), "loop_seconds": round(time.perf_counter() - t1, 2),
           "pairs_per_s": _rate(stamps, d.batch), "timed_steps": max(0, len(stamps) - 1), "losses": losses[:3],
           "peak_gib": arm.peak_gib(), "dtype": str(next(model.parameters()).dtype)}
    del trainer, model
    free_memory(profile.device)
    return out


def run(profile: Profile, rec: Recorder, scratch: Path) -> None:
    shape = profile.llava
    holder: dict[str, Any] = {}

    def data() -> dict[str, Any]:
        holder["pairs"] = _pairs(profile)
        return {"pairs": len(holder["pairs"]), "image_tokens_per_image": shape.image_tokens, "layers": shape.layers,
                "hidden": shape.hidden, "batch": profile.dpo.batch, "steps": profile.dpo.steps, "lora_r": profile.dpo.lora_r}

    if rec.step("data", data) is None:
        return
    pairs = holder["pairs"]
    # TRL first: if the part runs out of time, the baseline and the live arm are what remain.
    arms: dict[str, Callable[[], dict[str, Any]]] = {
        "trl": lambda: trl_arm(profile, pairs, scratch),
        "mmalign": lambda: mmalign_arm(profile, pairs, scratch, cached=False),
        "mmalign-cached": lambda: mmalign_arm(profile, pairs, scratch, cached=True),
    }
    results: dict[str, Any] = {}
    for name, fn in arms.items():
        res = rec.step(name, fn, need_s=MIN_ARM_SECONDS)
        if res is None:
            continue
        results[name] = res
        rec.figure(f"{name}/pairs_per_s", res["pairs_per_s"])
        rec.figure(f"{name}/peak_gib", res["peak_gib"] if profile.device.startswith("cuda") else None)
    trl = results.get("trl")
    for name in ("mmalign", "mmalign-cached"):
        res = results.get(name)
        if res is None or trl is None:
            continue
        if res["pairs_per_s"] and trl["pairs_per_s"]:
            rec.figure(f"{name}/speedup_vs_trl", res["pairs_per_s"] / trl["pairs_per_s"])
        if profile.device.startswith("cuda") and trl["peak_gib"] > 0:
            rec.figure(f"{name}/memory_vs_trl", res["peak_gib"] / trl["peak_gib"])
    log2 = math.log(2.0)
    for name, res in results.items():
        first = res["losses"][0] if res["losses"] else math.nan
        rec.check(f"dpo {name}: first-step loss is log 2 (policy = reference)", abs(first - log2) < 1e-3, loss=first)
    if "mmalign-cached" in results:
        hit = any("cache hit" in x for x in results["mmalign-cached"]["log"])
        rec.check("dpo mmalign-cached: the timed run read the cache", hit, log=results["mmalign-cached"]["log"])
