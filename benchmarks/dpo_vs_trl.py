"""DPO training throughput: mmalign vs TRL's DPOTrainer on the same tiny LLaVA, data, batches and optimizer.

Usage (from the repository root, in the project's .venv, with trl installed):

    .venv/bin/python benchmarks/dpo_vs_trl.py                 # full fine-tuning, default tiny LLaVA
    .venv/bin/python benchmarks/dpo_vs_trl.py --lora          # LoRA r=8 on the language model
    .venv/bin/python benchmarks/dpo_vs_trl.py --hidden 128 --layers 4

Each arm runs in its own subprocess (so peak RSS is its own) on identical batches in identical order:
TRL's sampler is replaced by a sequential one over the rows in mmalign's order. Both use AdamW with the
same learning rate, constant schedule, no weight decay and gradient clipping at 1.0, so the losses of the
first steps must agree (the first is log 2 for both, since policy = reference; later ones test that the
updates agree). Throughput is measured from the end of step 1 to the end of the last step, from
per-step timestamps on both sides, so one-off warm-up (lazy imports, first allocations) counts for
neither; TRL's collation and mmalign's processor calls are inside the steps and count.

Arms:
  trl            DPOTrainer with ref_model = a deep copy (or the adapter-disabled model with --lora)
  mmalign        mmalign's training loop with a live reference forward every step
  mmalign-cached mmalign with reference log-probs cached on disk: one cold run fills the cache (its time
                 is reported separately), then the timed run reuses it and never runs the reference
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def _pairs(n: int):
    from mmalign_core.protocols import Context
    from mmalign_shapes.config import ShapesPairsConfig
    from mmalign_shapes.sources import make_pairs_source

    # One prompt for all pairs: TRL left-pads prompts without position ids, so equal prompt lengths keep
    # both sides' positions identical.
    src = make_pairs_source(ShapesPairsConfig(n_pairs=n, yes_no_fraction=0.0, seed=0))
    return list(src.pairs(Context()))


def _order(n: int, steps: int, batch: int, seed: int) -> list[int]:
    from mmalign_core.runner.training import BatchOrder

    order = BatchOrder(n, seed)
    return [i for s in range(steps) for i in order.batch(s, batch)[0]]


def arm_main(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from mmalign_tiny.config import TinyLlavaConfig
    from mmalign_tiny.model import ensure_built

    cfg = TinyLlavaConfig(hidden_size=args.hidden, num_layers=args.layers, intermediate_size=2 * args.hidden, cache_dir=args.cache)
    folder = ensure_built(cfg)
    pairs = _pairs(args.pairs)
    if args.arm == "trl":
        return _run_trl(args, folder, pairs)
    return _run_mmalign(args, folder, pairs)


def _run_mmalign(args: argparse.Namespace, folder: Path, pairs: list) -> dict:
    import torch

    from mmalign_core.runner.training import StageData, run_training
    from mmalign_core.spec_models import LoraSettings, TrainSettings
    from mmalign_losses.config import DPOConfig
    from mmalign_losses.dpo import DPOLoss
    from mmalign_tiny.model import load_tiny_llava

    cached = args.arm == "mmalign-cached"
    settings = TrainSettings(
        steps=args.steps, batch_size=args.batch, lr=args.lr, schedule="constant", warmup_ratio=0.0, weight_decay=0.0,
        max_grad_norm=1.0, log_every=1, cache_reference=cached,
        lora=LoraSettings(r=8, alpha=16, dropout=0.0) if args.lora else None,
    )
    work = Path(tempfile.mkdtemp(prefix="mmalign-bench-"))

    def once(tag: str) -> tuple[float, float, list[float]]:
        torch.manual_seed(0)
        model = load_tiny_llava(folder)
        metrics = work / f"{tag}.jsonl"
        stamps: list[float] = []
        t0 = time.perf_counter()
        run_training(model=model, data=StageData(pairs, "pairs"), loss_fn=DPOLoss(DPOConfig(beta=0.1)),
                     loss_requires=frozenset({"reference", "rejected"}), settings=settings, stage_name=tag,
                     stage_dir=work / tag, metrics_path=metrics, seed=args.seed, progress=lambda it, **k: it,
                     log=lambda s: None, on_metrics=lambda *a: stamps.append(time.perf_counter()),
                     data_fingerprint="bench", cache_dir=work)
        total = time.perf_counter() - t0
        losses = [json.loads(x)["loss"] for x in metrics.read_text().splitlines()]
        return stamps[-1] - stamps[0], total, losses

    out: dict = {}
    if cached:
        _, cold_total, _ = once("cold")
        out["cold_seconds"] = cold_total
    secs, total, losses = once("timed")
    out.update(seconds=secs, total_seconds=total, losses=losses[:3])
    return out


def _run_trl(args: argparse.Namespace, folder: Path, pairs: list) -> dict:
    import copy

    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    order = _order(len(pairs), args.steps, args.batch, args.seed)
    rows = [
        {
            "images": [pairs[i].images[0].load()],
            "prompt": [{"role": "user", "content": pairs[i].prompt}],
            "chosen": [{"role": "assistant", "content": pairs[i].chosen}],
            "rejected": [{"role": "assistant", "content": pairs[i].rejected}],
        }
        for i in order
    ]
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(str(folder))
    for name, param in model.named_parameters():  # mmalign keeps the vision tower frozen by default
        if "vision_tower" in name:
            param.requires_grad_(False)
    processor = AutoProcessor.from_pretrained(str(folder))
    # TRL tokenizes prompts without special tokens and expects the template to write BOS (see
    # tests/losses/test_trl_parity.py): this makes both sides' token ids identical.
    processor.chat_template = "{{ bos_token }}" + processor.chat_template
    peft_config = None
    ref_model = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                 target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$",
                                 modules_to_save=["multi_modal_projector"])
    else:
        ref_model = copy.deepcopy(model)
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), bf16=False, gradient_checkpointing=False, use_cpu=True,
        report_to=[], max_length=None, per_device_train_batch_size=args.batch, max_steps=args.steps,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=1, beta=0.1, save_strategy="no", seed=0, dataloader_num_workers=0,
    )

    class Sequential(DPOTrainer):
        def _get_train_sampler(self, *a, **k):  # same batches, same order as mmalign
            return SequentialSampler(self.train_dataset)

    losses: list[float] = []
    stamps: list[float] = []

    class Record(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            stamps.append(time.perf_counter())

        def on_log(self, _args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = Sequential(model=model, ref_model=ref_model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=processor, peft_config=peft_config, callbacks=[Record()])
    t0 = time.perf_counter()
    trainer.train()
    return {"seconds": stamps[-1] - stamps[0], "total_seconds": time.perf_counter() - t0, "losses": losses[:3]}


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    from _arms import run_arm as run  # benchmarks/ is sys.path[0] when a script runs

    return run(__file__, arm, args.threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lora", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="runs per arm (interleaved); the median is reported")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "mmalign-bench-models"))
    p.add_argument("--arm", choices=["trl", "mmalign", "mmalign-cached"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        result = arm_main(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.steps * args.batch > args.pairs:
        raise SystemExit("--steps x --batch must not exceed --pairs (one epoch, identical order on both sides)")
    arms = ("trl", "mmalign", "mmalign-cached")
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every arm
        for arm in arms:
            runs[arm].append(run_arm(arm, args))
    results = {}
    for arm, rs in runs.items():
        rs = sorted(rs, key=lambda r: r["seconds"])
        results[arm] = dict(rs[len(rs) // 2], all_seconds=[round(r["seconds"], 3) for r in runs[arm]])
    pairs = (args.steps - 1) * args.batch  # timed from the end of step 1
    print(f"tiny LLaVA h{args.hidden} x{args.layers} layers, {'LoRA r8' if args.lora else 'full fine-tuning'}, "
          f"{args.steps} steps x {args.batch} pairs, {args.threads} threads")
    print(f"{'arm':<16}{'pairs/s':>10}{'vs trl':>9}{'peak RSS MB':>13}{'loop s':>8}  first losses")
    base = pairs / results["trl"]["seconds"]
    for arm, r in results.items():
        rate = pairs / r["seconds"]
        print(f"{arm:<16}{rate:>10.1f}{rate / base:>8.2f}x{r['peak_rss_mb']:>13.0f}{r['total_seconds']:>8.1f}  "
              f"{[round(x, 6) for x in r['losses']]}")
    if "cold_seconds" in results["mmalign-cached"]:
        print(f"(mmalign-cached: the cold run that filled the cache, warm-up included, took "
              f"{results['mmalign-cached']['cold_seconds']:.1f}s; 'loop s' is each timed run's whole loop, warm-up included)")
    d = max(abs(a - b) for a, b in zip(results["trl"]["losses"][:1], results["mmalign"]["losses"][:1]))
    print(f"first-step loss |mmalign - trl| = {d:.2e}")
    print(f"median of {args.repeat} interleaved runs per arm; timed seconds per run: "
          + "; ".join(f"{a} {r['all_seconds']}" for a, r in results.items()))


if __name__ == "__main__":
    main()
