"""RL throughput: mmalign's rl stage (GRPO, RLOO) vs TRL's GRPOTrainer / RLOOTrainer.

Usage (from the repository root, in the project's .venv, with trl installed):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_vs_trl.py --algorithm grpo
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_vs_trl.py --algorithm rloo --steps 10 --prompts-per-step 4 --group 4

Both sides, in one invocation, each arm in its own subprocess (repeats interleaved, median reported):

- the same tiny LLaVA folder (``--model``, default: the random-weight ``tiny-llava``), full fine-tuning with a
  frozen vision tower, AdamW, constant learning rate, no weight decay, clipping at 1.0;
- the same prompts in the same order ("Describe the image." on shapes images, read from the same PNG files;
  TRL's sampler is made sequential over the rows in mmalign's batch order, each prompt repeated ``--group``
  times as TRL's own sampler does);
- the same group size, decoding (sampling at T 1.0, top-p 1.0, no top-k, ``--max-new-tokens``, the image token
  banned) and reward: the Python function ``mmalign_rl.functions:response_length`` (TRL: as a reward function;
  mmalign: the ``python-function`` reward);
- GRPO: beta 0 (no reference on either side; mmalign's ``track_kl`` off), DAPO token-sum loss (TRL's default),
  one iteration per generation; RLOO: beta 0.05 (both score the reference), one iteration.

Throughput from the end of step 1 to the end of the last step (per-step timestamps: TRL ``on_step_end``, mmalign
the metrics callback). "gen samples/s": generated responses per second spent generating (TRL: ``_generate``,
prompts in, completion ids out; mmalign: the rollout's sampling span), steps 2 onward.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from online_dpo_vs_trl import _image_files, _model_folder, _order, _prompts  # noqa: E402  (shared benchmark helpers)


def _reward(texts: list[str]) -> list[float]:
    from mmalign_rl.functions import response_length

    return response_length([""] * len(texts), [[]] * len(texts), texts, target_words=8, per_word=0.1)


def _run_mmalign(args: argparse.Namespace, folder: Path, files: Path) -> dict:
    import torch

    from mmalign_core.manager import get_plugins
    from mmalign_core.protocols import Context, RLStageInputs
    from mmalign_core.spec_models import RolloutSettings, TrainSettings
    from mmalign_rl.algorithms import GRPO, RLOO
    from mmalign_rl.config import GRPOConfig, PythonFunctionConfig, RLOOConfig
    from mmalign_rl.rewards import PythonFunctionReward
    from mmalign_tiny.model import load_tiny_llava

    work = Path(tempfile.mkdtemp(prefix="mmalign-rl-bench-"))
    ctx = Context(seed=args.seed, output_dir=work / "data", cache_dir=work, log=lambda s: None)
    ctx.output_dir.mkdir(parents=True)
    prompts = list(get_plugins().resolve("preference_source", "local").build({"path": str(files), "format": "canonical"}).pairs(ctx))
    n = args.prompts_per_step * args.group
    settings = TrainSettings(steps=args.steps, batch_size=n, lr=args.lr, schedule="constant", warmup_ratio=0.0, weight_decay=0.0,
                             max_grad_norm=1.0, log_every=1)
    rollout = RolloutSettings(prompts_per_step=args.prompts_per_step, samples_per_prompt=args.group, max_new_tokens=args.max_new_tokens,
                              temperature=1.0, top_p=1.0, generation_batch_size=args.prompts_per_step, log=not args.no_log)
    if args.algorithm == "grpo":
        algo = GRPO(GRPOConfig(beta=0.0, track_kl=False, loss_aggregation="token-sum", epochs=1, pairs_log=not args.no_log))
    else:
        algo = RLOO(RLOOConfig(beta=0.05, epochs=1, pairs_log=not args.no_log))
    reward = PythonFunctionReward(PythonFunctionConfig(function="mmalign_rl.functions:response_length",
                                                       kwargs={"target_words": 8, "per_word": 0.1}))
    torch.manual_seed(0)
    model = load_tiny_llava(folder)
    stamps: list[float] = []
    gen: list[float] = []

    def on_metrics(step: int, row: dict) -> None:
        stamps.append(time.perf_counter())
        gen.append(row.get("gen_seconds", 0.0))

    t0 = time.perf_counter()
    algo.train(RLStageInputs(model=model, prompts=prompts, reward=reward, train=settings, rollout=rollout, stage_name="rl",
                             stage_dir=work / "stage", metrics_path=work / "metrics.jsonl", seed=args.seed, ctx=ctx,
                             log=lambda s: None, on_metrics=on_metrics))
    return {"seconds": stamps[-1] - stamps[0], "timed_steps": len(stamps) - 1, "total_seconds": time.perf_counter() - t0,
            "gen_seconds": sum(gen[1:])}


def _run_trl(args: argparse.Namespace, folder: Path, files: Path) -> dict:
    import torch
    from datasets import Dataset, Image
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

    order = _order(len(_prompts(args.prompts)), args.steps, args.prompts_per_step, args.seed)
    records = [json.loads(line) for line in files.read_text().splitlines()]
    rows = [{"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": records[i]["prompt"]}]}],
             "image": records[i]["images"][0]} for i in order for _ in range(args.group)]
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(str(folder))
    for name, param in model.named_parameters():  # mmalign keeps the vision tower frozen by default
        if "vision_tower" in name:
            param.requires_grad_(False)
    processor = AutoProcessor.from_pretrained(str(folder))
    processor.chat_template = "{{ bos_token }}" + processor.chat_template  # TRL expects the template to write BOS
    image_token_id = model.config.image_token_id

    def reward(prompts, completions, **kw):
        return _reward([c if isinstance(c, str) else c[0]["content"] for c in completions])

    n = args.prompts_per_step * args.group
    common = dict(output_dir=tempfile.mkdtemp(prefix="trl-rl-bench-"), bf16=False, gradient_checkpointing=False, use_cpu=True,
                  report_to=[], per_device_train_batch_size=n, max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
                  warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", seed=0,
                  dataloader_num_workers=0, num_generations=args.group, max_completion_length=args.max_new_tokens, temperature=1.0,
                  top_p=1.0, top_k=0, generation_kwargs={"bad_words_ids": [[image_token_id]]}, remove_unused_columns=False)
    if args.algorithm == "grpo":
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

        config = Config(beta=0.0, loss_type="dapo", **common)
    else:
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer

        config = Config(beta=0.05, **common)
    gen_times: list[float] = []

    class Sequential(Trainer):
        def _get_train_sampler(self, *a, **k):  # same prompts, same order as mmalign
            return SequentialSampler(self.train_dataset)

        def _generate(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._generate(*a, **k)
            finally:
                gen_times.append(time.perf_counter() - t)

    stamps: list[float] = []

    class Record(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            stamps.append(time.perf_counter())

    trainer = Sequential(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows).cast_column("image", Image()),
                         processing_class=processor, callbacks=[Record()])
    t0 = time.perf_counter()
    trainer.train()
    return {"seconds": stamps[-1] - stamps[0], "timed_steps": len(stamps) - 1, "total_seconds": time.perf_counter() - t0,
            "gen_seconds": sum(gen_times[1:])}


def arm_main(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    folder = _model_folder(args)
    files, _ = _image_files(_prompts(args.prompts), Path(args.cache) / "online-bench-images")
    return _run_trl(args, folder, files) if args.arm == "trl" else _run_mmalign(args, folder, files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algorithm", choices=["grpo", "rloo"], default="grpo")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--group", type=int, default=4, help="samples per prompt")
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default=None, help="a saved tiny-llava folder (default: the random-weight tiny-llava)")
    p.add_argument("--no-log", action="store_true", help="mmalign: do not write the rollout log (on by default, and timed)")
    p.add_argument("--repeat", type=int, default=1, help="runs per arm (interleaved); the median is reported")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "mmalign-bench-models"))
    p.add_argument("--arm", choices=["trl", "mmalign"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        result = arm_main(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.steps * args.prompts_per_step > args.prompts:
        raise SystemExit("--steps x --prompts-per-step must not exceed --prompts (one pass, identical order on both sides)")
    from _arms import run_arm

    arms = ("trl", "mmalign")
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for _ in range(args.repeat):
        for arm in arms:
            runs[arm].append(run_arm(__file__, arm, args.threads))
    results: dict[str, Any] = {}
    for arm, rs in runs.items():
        rs = sorted(rs, key=lambda r: r["seconds"] / r["timed_steps"])
        results[arm] = rs[len(rs) // 2]
    n = args.prompts_per_step * args.group
    print(f"{args.algorithm}: tiny LLaVA ({args.model or 'random weights'}), {args.steps} steps x {args.prompts_per_step} prompts x "
          f"{args.group} samples, {args.max_new_tokens} new tokens, T 1.0, python-function reward, {args.threads} thread(s)")
    print(f"{'arm':<10}{'steps/s':>9}{'vs trl':>8}{'samples/s':>11}{'gen samples/s':>15}{'vs trl':>8}{'peak RSS MB':>13}{'loop s':>8}")
    base = results["trl"]["timed_steps"] / results["trl"]["seconds"]
    gen_base = results["trl"]["timed_steps"] / max(results["trl"]["gen_seconds"], 1e-9)
    for arm, r in results.items():
        steps_s = r["timed_steps"] / r["seconds"]
        gen_s = r["timed_steps"] / max(r["gen_seconds"], 1e-9)
        print(f"{arm:<10}{steps_s:>9.2f}{steps_s / base:>7.2f}x{n * steps_s:>11.1f}{n * gen_s:>15.1f}{gen_s / gen_base:>7.2f}x"
              f"{r['peak_rss_mb']:>13.0f}{r['total_seconds']:>8.1f}")


if __name__ == "__main__":
    main()
