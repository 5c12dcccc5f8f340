"""Online-DPO throughput: mmalign's online-dpo source + training loop vs TRL's OnlineDPOTrainer.

Usage (from the repository root, in the project's .venv, with trl installed):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/online_dpo_vs_trl.py                  # random tiny LLaVA, hash judge
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/online_dpo_vs_trl.py --judge oracle \\
        --model runs/online-exp/sft-s0/stages/0-sft/model                               # an SFT checkpoint, oracle judge

Both sides, in one invocation, each arm in its own subprocess, repeats interleaved (median reported):

- the same tiny LLaVA folder (``--model``, default: the default random-weight ``tiny-llava``), full fine-tuning
  with a frozen vision tower, AdamW, constant learning rate, no weight decay, clipping at 1.0, DPO beta 0.1;
- the same prompts in the same order: "Describe the image." on shapes-world images, read by both sides from
  the same PNG files (TRL: a ``datasets`` Image column; mmalign: the ``local`` source), as data on disk would
  be (TRL's sampler is made sequential over the rows in mmalign's batch order);
- the same batch (``--batch`` prompts per step), 2 samples per prompt, the same decoding: sampling at
  temperature 1.0, top-p 1.0, no top-k, ``--max-new-tokens`` new tokens, the image token banned
  (TRL: ``generation_kwargs={"bad_words_ids": [[image_token_id]]}``, platform-notes pitfall 5);
- the same judge, as TRL needs it -- a Python reward function -- and as mmalign needs it -- a judge
  object with ``compare``: ``hash`` scores a response by a CRC32 of its text (pseudo-random, so there
  are no ties and both sides train on every pair: equal work per step), ``oracle`` by the shapes
  ground truth (mmalign drops ties, TRL trains on them: its work per step is then larger; the table
  shows the pairs each side trained on).

Throughput is measured from the end of step 1 to the end of the last step, from per-step timestamps
(TRL: ``on_step_end``; mmalign: the training loop's per-step metrics callback), so one-off warm-up counts
for neither. "samples/s" counts generated responses (2 per prompt) per second of the whole loop; "gen
samples/s" per second spent generating (TRL: ``_generate``, from the prompts to the decoded texts, its
processor call included; mmalign: the online engine's ``generate``, the same span), steps 2 onward.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any


def _prompts(n: int) -> list:
    from mmalign_core.protocols import Context
    from mmalign_shapes.config import ShapesPairsConfig
    from mmalign_shapes.sources import make_pairs_source

    src = make_pairs_source(ShapesPairsConfig(n_pairs=n, yes_no_fraction=0.0, seed=0))
    return list(src.pairs(Context()))


def _image_files(prompts: list, folder: Path) -> tuple[Path, dict[str, str]]:
    """Write the prompts' images as PNG files (once) and the prompts as a canonical JSONL file next to them.

    Both sides read the same files: TRL through a ``datasets`` Image column, mmalign through the ``local``
    source, as real preference data on disk would be read. Returns the JSONL path and a map from each
    file's image key (as mmalign sees it) to the shapes-world key the oracle judge needs.
    """
    import hashlib

    from mmalign_core.types import ImageRef

    folder.mkdir(parents=True, exist_ok=True)
    rows, keys = [], {}
    for p in prompts:
        world_key = p.images[0].key
        path = folder / (hashlib.sha1(world_key.encode()).hexdigest()[:16] + ".png")
        if not path.is_file():
            tmp = path.with_suffix(".tmp.png")
            p.images[0].load().save(tmp, format="PNG")
            tmp.replace(path)
        keys[ImageRef(str(path)).key] = world_key
        rows.append({"id": p.id, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "images": [str(path)],
                     "meta": {"world_key": world_key}})
    jsonl = folder / f"prompts-{len(prompts)}.jsonl"
    tmp = jsonl.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(jsonl)
    return jsonl, keys


def _order(n: int, steps: int, batch: int, seed: int) -> list[int]:
    from mmalign_core.runner.training import BatchOrder

    order = BatchOrder(n, seed)
    return [i for s in range(steps) for i in order.batch(s, batch)[0]]


def _score_fn(kind: str):
    """``score(image_key, text) -> float`` shared by both sides."""
    if kind == "hash":
        return lambda key, text: float(zlib.crc32(text.encode("utf-8")) % 100003)
    from mmalign_shapes.world import ShapesWorld

    world = ShapesWorld()

    def oracle(key: str, text: str) -> float:
        ts = world.score_text(key, text)
        hallucinated = len(set(ts.hallucinated))
        correct = len(set(ts.mentioned) - set(ts.hallucinated))
        return -10.0 * hallucinated + correct  # hallucination first, then correct objects (shapes-oracle's default)

    return oracle


class _ScoreJudge:
    """The benchmark's judge on the mmalign side: the same score as TRL's reward function."""

    max_answers = None

    def __init__(self, kind: str, world_keys: dict[str, str]):
        self.kind = kind
        self.score = _score_fn(kind)
        self.world_keys = world_keys

    def describe(self) -> dict:
        return {"judge": f"bench-{self.kind}"}

    def complete(self, requests, ctx):  # pragma: no cover - not used
        return ["" for _ in requests]

    def compare(self, items, ctx, *, policy=None):
        from mmalign_online.verdict import verdict_from_scores

        return [verdict_from_scores([self.score(self.world_keys[c.request.images[0].key], a) for a in c.answers]) for c in items]


def _model_folder(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    from mmalign_tiny.config import TinyLlavaConfig
    from mmalign_tiny.model import ensure_built

    return ensure_built(TinyLlavaConfig(cache_dir=args.cache))


def _run_mmalign(args: argparse.Namespace, folder: Path, prompts: list, files: Path, world_keys: dict[str, str]) -> dict:
    import torch

    from mmalign_core.protocols import Context
    from mmalign_core.runner.training import StageData, run_training
    from mmalign_core.spec_models import TrainSettings
    from mmalign_losses.config import DPOConfig
    from mmalign_losses.dpo import DPOLoss
    from mmalign_online.config import OnlineDPOConfig
    from mmalign_online.source import OnlineDPOSource
    from mmalign_tiny.model import load_tiny_llava

    settings = TrainSettings(steps=args.steps, batch_size=args.batch, lr=args.lr, schedule="constant", warmup_ratio=0.0,
                             weight_decay=0.0, max_grad_norm=1.0, log_every=1)
    cfg = OnlineDPOConfig.model_validate({
        "prompts": {"name": "local", "config": {"path": str(files), "format": "canonical"}},
        "judge": {"name": "shapes-oracle"}, "samples_per_prompt": 2, "max_new_tokens": args.max_new_tokens,
        "temperature": 1.0, "top_p": 1.0, "generation_batch_size": args.batch, "log": not args.no_log,
        "engine": {"name": "hf", "reuse_prompt_pass": args.reuse_prompt_pass},
    })
    source = OnlineDPOSource(cfg, judge=_ScoreJudge(args.judge, world_keys))
    work = Path(tempfile.mkdtemp(prefix="mmalign-online-bench-"))
    torch.manual_seed(0)
    model = load_tiny_llava(folder)
    ctx = Context(seed=args.seed, output_dir=work / "data", cache_dir=work)
    ctx.output_dir.mkdir(parents=True)
    pool = source.pairs(ctx)
    if [p.id for p in pool] != [p.id for p in prompts]:
        raise SystemExit("the local source changed the prompt order; the two sides would not see the same prompts")
    stamps: list[float] = []
    kept: list[float] = []
    gen_times: list[float] = []
    generate = source.engine.generate

    def timed_generate(*a, **k):  # the same span as TRL's _generate: prompts in, texts out
        t = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            gen_times.append(time.perf_counter() - t)

    source.engine.generate = timed_generate

    def on_metrics(step: int, row: dict) -> None:
        stamps.append(time.perf_counter())
        kept.append(row.get("online/kept", 0.0))

    t0 = time.perf_counter()
    run_training(model=model, data=StageData(pool, "pairs", online=source, online_ctx=ctx), loss_fn=DPOLoss(DPOConfig(beta=0.1)),
                 loss_requires=frozenset({"reference", "rejected"}), settings=settings, stage_name="online", stage_dir=work / "stage",
                 metrics_path=work / "metrics.jsonl", seed=args.seed, progress=lambda it, **k: it, log=lambda s: None,
                 on_metrics=on_metrics)
    total = time.perf_counter() - t0
    steps_logged = len(stamps)
    return {"seconds": stamps[-1] - stamps[0], "timed_steps": steps_logged - 1, "total_seconds": total,
            "pairs_trained": sum(kept[1:]), "gen_seconds": sum(gen_times[1:])}


def _run_trl(args: argparse.Namespace, folder: Path, prompts: list, files: Path) -> dict:
    import copy

    import torch
    from datasets import Dataset, Image
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    order = _order(len(prompts), args.steps, args.batch, args.seed)
    records = [json.loads(line) for line in files.read_text().splitlines()]
    rows = [{"prompt": [{"role": "user", "content": records[i]["prompt"]}], "image": records[i]["images"][0],
             "key": records[i]["meta"]["world_key"]} for i in order]
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(str(folder))
    for name, param in model.named_parameters():  # mmalign keeps the vision tower frozen by default
        if "vision_tower" in name:
            param.requires_grad_(False)
    processor = AutoProcessor.from_pretrained(str(folder))
    # TRL tokenizes prompts without special tokens and expects the template to write BOS.
    processor.chat_template = "{{ bos_token }}" + processor.chat_template
    image_token_id = model.config.image_token_id
    score = _score_fn(args.judge)
    trained: list[int] = []

    def reward(prompts, completions, key, **kw):
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return [score(k, t) for k, t in zip(key, texts)]

    config = OnlineDPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-online-bench-"), bf16=False, gradient_checkpointing=False, use_cpu=True,
        report_to=[], per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=args.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, beta=[0.1],
        save_strategy="no", seed=0, dataloader_num_workers=0, max_new_tokens=args.max_new_tokens, temperature=1.0,
        top_p=1.0, top_k=0, generation_kwargs={"bad_words_ids": [[image_token_id]]}, remove_unused_columns=False,
        max_length=4096,
    )

    gen_times: list[float] = []

    class Sequential(OnlineDPOTrainer):
        def _get_train_sampler(self, *a, **k):  # same prompts, same order as mmalign
            return SequentialSampler(self.train_dataset)

        def _generate(self, *a, **k):  # processor call + generate + decoding, per step
            t = time.perf_counter()
            try:
                return super()._generate(*a, **k)
            finally:
                gen_times.append(time.perf_counter() - t)

    stamps: list[float] = []

    class Record(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            stamps.append(time.perf_counter())
            trained.append(args.batch)  # TRL trains on every pair (a tie puts the first sample first)

    trainer = Sequential(model=model, ref_model=copy.deepcopy(model), reward_funcs=reward, args=config,
                         train_dataset=Dataset.from_list(rows).cast_column("image", Image()), processing_class=processor, callbacks=[Record()])
    t0 = time.perf_counter()
    trainer.train()
    return {"seconds": stamps[-1] - stamps[0], "timed_steps": len(stamps) - 1, "total_seconds": time.perf_counter() - t0,
            "pairs_trained": sum(trained[1:]), "gen_seconds": sum(gen_times[1:])}


def arm_main(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    folder = _model_folder(args)
    prompts = _prompts(args.prompts)
    files, world_keys = _image_files(prompts, Path(args.cache) / "online-bench-images")
    return _run_trl(args, folder, prompts, files) if args.arm == "trl" else _run_mmalign(args, folder, prompts, files, world_keys)


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    from _arms import run_arm as run  # benchmarks/ is sys.path[0] when a script runs

    return run(__file__, arm, args.threads)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared with ``online_dpo_phases.py``)."""
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8, help="prompts per step (2 samples each)")
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--judge", choices=["hash", "oracle"], default="hash")
    p.add_argument("--model", default=None, help="a saved tiny-llava folder (default: the default random-weight tiny-llava)")
    p.add_argument("--no-log", action="store_true", help="mmalign: do not write the JSONL log (it is on by default, and timed)")
    p.add_argument("--reuse-prompt-pass", action="store_true",
                   help="mmalign: the engine's reuse_prompt_pass (sampling's prompt pass kept, with gradients, for the training pass)")
    p.add_argument("--repeat", type=int, default=3, help="runs per arm (interleaved); the median is reported")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "mmalign-bench-models"))
    p.add_argument("--arm", choices=["trl", "mmalign"], help=argparse.SUPPRESS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args()
    if args.arm:
        result = arm_main(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.steps * args.batch > args.prompts:
        raise SystemExit("--steps x --batch must not exceed --prompts (one pass, identical order on both sides)")
    arms = ("trl", "mmalign")
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every arm
        for arm in arms:
            runs[arm].append(run_arm(arm, args))
    results: dict[str, Any] = {}
    for arm, rs in runs.items():
        rs = sorted(rs, key=lambda r: r["seconds"] / r["timed_steps"])
        results[arm] = dict(rs[len(rs) // 2], all_seconds=[round(r["seconds"], 3) for r in runs[arm]])
    print(f"tiny LLaVA ({args.model or 'default random weights'}), {args.steps} steps x {args.batch} prompts x 2 samples, "
          f"{args.max_new_tokens} new tokens, T 1.0, judge '{args.judge}', {args.threads} thread(s)")
    print(f"{'arm':<10}{'steps/s':>9}{'samples/s':>11}{'pairs/s':>9}{'vs trl':>8}{'gen samples/s':>15}{'vs trl':>8}"
          f"{'peak RSS MB':>13}{'loop s':>8}")
    base = results["trl"]["timed_steps"] / results["trl"]["seconds"]
    gen_base = results["trl"]["timed_steps"] / results["trl"]["gen_seconds"]
    for arm, r in results.items():
        steps_s = r["timed_steps"] / r["seconds"]
        gen_s = r["timed_steps"] / r["gen_seconds"]  # generation calls per second of generation time
        print(f"{arm:<10}{steps_s:>9.2f}{2 * args.batch * steps_s:>11.1f}{r['pairs_trained'] / r['seconds']:>9.1f}"
              f"{steps_s / base:>7.2f}x{2 * args.batch * gen_s:>15.1f}{gen_s / gen_base:>7.2f}x"
              f"{r['peak_rss_mb']:>13.0f}{r['total_seconds']:>8.1f}")
    print(f"median of {args.repeat} interleaved runs per arm (by seconds per step); timed seconds per run: "
          + "; ".join(f"{a} {r['all_seconds']}" for a, r in results.items()))


if __name__ == "__main__":
    main()
