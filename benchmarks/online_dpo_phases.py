"""Where an online-DPO step goes, for both sides of ``online_dpo_vs_trl.py``: milliseconds per step by phase.

Usage (from the repository root, in the project's .venv, with trl installed):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/online_dpo_phases.py [--model DIR] [--batch 32 --steps 15 --max-new-tokens 24]

Same setup as ``online_dpo_vs_trl.py`` (its arguments, its arms, one process each). Timers wrap the
functions each side spends its step in; they start after the first optimizer step (warm-up counts for
neither), and every figure is divided by the remaining steps. The phases nest: generation includes the
processor call and, for mmalign, decoding (prefill and the lean decoding steps); "rest" is the step
minus generation, the log-prob forwards, the backward pass and the optimizer. Timers cost a few
microseconds per call, so the step times here run a little above the throughput benchmark's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import online_dpo_vs_trl as bench  # benchmarks/ is sys.path[0] when a script runs

_TIMES: dict[str, float] = defaultdict(float)
_ARMED = [False]


def _timed(owner: Any, name: str, label: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            if _ARMED[0]:
                _TIMES[label] += time.perf_counter() - t

    setattr(owner, name, wrapper)


def _arm_after_first_optimizer_step() -> None:
    import torch

    original = torch.optim.AdamW.step

    def step(self: Any, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            if _ARMED[0]:
                _TIMES["optimizer"] += time.perf_counter() - t
            _ARMED[0] = True

    torch.optim.AdamW.step = step


def _instrument(arm: str) -> list[str]:
    import torch
    import transformers.models.clip.modeling_clip as clip

    _arm_after_first_optimizer_step()
    _timed(torch.Tensor, "backward", "backward")
    _timed(clip.CLIPVisionModel, "forward", "vision tower (every pass)")
    if arm == "trl":
        from trl.experimental.online_dpo import online_dpo_trainer as trl_online
        from transformers import GenerationMixin

        _timed(trl_online.OnlineDPOTrainer, "_generate", "generation")
        _timed(GenerationMixin, "generate", "  of which generate()")
        _timed(trl_online.OnlineDPOTrainer, "_forward", "policy + reference forward")
        return ["generation", "policy + reference forward", "backward", "optimizer"]
    from mmalign_hf import model as hf_vlm, sampling
    from mmalign_online.engine import HFEngine

    _timed(HFEngine, "generate", "generation")
    _timed(hf_vlm.HFVisionLanguageModel, "_process_prompts", "  of which processor")
    _timed(sampling, "fast_sample", "  of which decoding")
    _timed(sampling.LeanDecoder, "step", "    of which lean decoding steps")
    _timed(hf_vlm.HFVisionLanguageModel, "pair_logps", "policy + reference forward")
    _timed(hf_vlm.HFVisionLanguageModel, "_logps_after_prompt_pass", "  of which after a kept prompt pass")
    return ["generation", "policy + reference forward", "backward", "optimizer"]


def arm_main(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    top = _instrument(args.arm)
    folder = bench._model_folder(args)
    prompts = bench._prompts(args.prompts)
    files, world_keys = bench._image_files(prompts, Path(args.cache) / "online-bench-images")
    if args.arm == "trl":
        result = bench._run_trl(args, folder, prompts, files)
    else:
        result = bench._run_mmalign(args, folder, prompts, files, world_keys)
    steps = result["timed_steps"]
    per_step = {k: 1000 * v / steps for k, v in _TIMES.items()}
    step_ms = 1000 * result["seconds"] / steps
    per_step["rest"] = step_ms - sum(per_step.get(k, 0.0) for k in top)
    per_step["step"] = step_ms
    return per_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench.add_arguments(p)
    p.set_defaults(steps=15, batch=32, max_new_tokens=24)
    args = p.parse_args()
    if args.arm:
        print(json.dumps(arm_main(args)))
        return
    from _arms import run_arm

    results = {arm: run_arm(__file__, arm, args.threads) for arm in ("trl", "mmalign")}
    order = ["generation", "  of which processor", "  of which generate()", "  of which decoding",
             "    of which lean decoding steps", "policy + reference forward", "  of which after a kept prompt pass",
             "backward", "optimizer"]
    labels = order + sorted({k for r in results.values() for k in r} - set(order) - {"rest", "step"})
    labels = [label for label in labels if any(label in r for r in results.values())]
    print(f"ms per step, {args.steps} steps x {args.batch} prompts x 2 samples, {args.max_new_tokens} new tokens, "
          f"model {args.model or 'default random weights'}, judge '{args.judge}' (steps 2 onward)")
    print(f"{'phase':<36}{'trl':>8}{'mmalign':>9}")
    for label in labels[: len(order)] + ["rest", "step"] + labels[len(order):]:
        cells = [f"{results[a][label]:>8.1f}" if label in results[a] else f"{'-':>8}" for a in ("trl", "mmalign")]
        print(f"{label:<36}{cells[0]}{cells[1]:>9}")


if __name__ == "__main__":
    sys.exit(main())
