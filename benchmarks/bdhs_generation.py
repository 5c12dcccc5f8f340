"""BDHS generation throughput on the tiny LLaVA: rejected answers per second, batched vs one sentence at a time.

Batched: all sentences of all pairs of a chunk continue in one decoding call per iteration (the
``bdhs`` sources' way, ``batch_size`` rows per call). Sequential: the same algorithm with
``batch_size = 1``, i.e. one sentence per call. Decoding goes through the core's lean loop
(``mmalign_hf.sampling``); ``--generate`` uses transformers' ``generate`` instead. Both produce the same answers up to padding
numerics (greedy decoding); the script reports how many differ.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/bdhs_generation.py --model runs/bdhs-exp/sft-s0/stages/1-sft/model
    python benchmarks/bdhs_generation.py --pairs 128 --embedder minilm --json out.json

Without ``--model`` a random tiny LLaVA is built (its continuations rarely end a sentence, so every row
runs to ``--max-new-tokens``: a worst case, not a realistic one). Timings are wall-clock on this machine;
compare only runs taken on the same machine and load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a saved tiny-llava folder (e.g. an SFT stage's model/); default: random weights")
    ap.add_argument("--pairs", type=int, default=96, help="shapes caption pairs to make rejected answers for")
    ap.add_argument("--variant", choices=["attn", "noise"], default="attn")
    ap.add_argument("--embedder", default="bag-of-words", help="registered embedder for the similarity loop (minilm: the paper-like setting)")
    ap.add_argument("--batch-size", type=int, default=64, help="rows per generate call in the batched mode")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions per mode (the best is reported)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--generate", action="store_true", help="decode with transformers' generate() instead of the core's lean loop")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mmalign_bdhs.config import BDHSOnlineConfig
    from mmalign_bdhs.sampler import BDHSSampler, Item, summarize
    from mmalign_bdhs.sources import build_embedder
    from mmalign_core.manager import get_plugins

    plugins = get_plugins()
    model = plugins.resolve("model", "tiny-llava").build({"path": args.model} if args.model else {})
    model.fast_decoding = not args.generate
    base = {"name": "shapes-pairs", "config": {"n_pairs": args.pairs, "mode": "partner", "absent_fraction": 0.5}}
    pairs = list(plugins.resolve("preference_source", "shapes-pairs").build(base["config"]).pairs(None))
    items = [Item(p.id, p.prompt, p.images, p.chosen) for p in pairs]
    for p in pairs:  # render once, so image drawing is not timed
        p.images[0] = type(p.images[0])(p.images[0].load(), key=p.images[0].key)
    items = [Item(p.id, p.prompt, p.images, p.chosen) for p in pairs]
    results = {}
    outputs = {}
    for mode, bs in (("batched", args.batch_size), ("sequential", 1)):
        cfg = BDHSOnlineConfig.model_validate({"base": base, "variant": args.variant, "embedder": {"name": args.embedder},
                                               "batch_size": bs, "max_new_tokens": args.max_new_tokens,
                                               "max_new_tokens_full": args.max_new_tokens})
        sampler = BDHSSampler(cfg, build_embedder(cfg, plugins))
        sampler.sample(model, items[:4])  # warm-up (stop-token table, embedder load)
        best = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = sampler.sample(model, items)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        stats = summarize(out, sampler.n_iterations, cfg.eps_s)
        outputs[mode] = [o.rejected for o in out]
        results[mode] = {"seconds": round(best, 3), "answers_per_second": round(len(out) / best, 2),
                         "iterations_mean": round(stats["iterations_mean"], 3), "batch_size": bs}
        print(f"{mode:>10}: {len(out)} answers in {best:.2f}s = {len(out) / best:.1f}/s "
              f"(batch {bs}, {stats['iterations_mean']:.2f} iterations per answer)", flush=True)
    differ = sum(a != b for a, b in zip(outputs["batched"], outputs["sequential"]))
    speedup = results["sequential"]["seconds"] / results["batched"]["seconds"]
    print(f"speed-up batched / sequential: {speedup:.1f}x; answers that differ between the modes: {differ}/{len(items)}")
    payload = {"model": args.model or "random tiny-llava", "decoding": "generate" if args.generate else "lean", "pairs": len(items), "variant": args.variant, "embedder": args.embedder,
               "max_new_tokens": args.max_new_tokens, "threads": args.threads, "results": results, "speedup": round(speedup, 2),
               "answers_differ": differ, "python": sys.version.split()[0], "platform": platform.platform(),
               "torch": torch.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
