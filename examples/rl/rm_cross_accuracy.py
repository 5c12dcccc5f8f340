"""The paper's reward-model finding in miniature: a Bradley-Terry reward model trained on one kind of constructed
shapes pairs, scored on held-out pairs of another kind (pairwise accuracy; a tie counts one half).

    OMP_NUM_THREADS=1 .venv/bin/python examples/rl/rm_cross_accuracy.py [--seeds 0 1 2] [--steps 60] [--out rm-cross.json]

Kinds (mmalign-shapes ``shapes-pairs`` modes): ``partner`` -- the rejected caption adds the absent partner of a
present anchor (one more object); ``swap`` -- the rejected caption changes one object's colour or shape (the same
number of objects). Backbone: the random-weight tiny LLaVA, trained with the head (``train_backbone``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--kinds", nargs="+", default=["partner", "swap"])
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import torch

    from mmalign_core.manager import get_plugins
    from mmalign_online.config import ModelRef, RewardTrainConfig
    from mmalign_online.reward import load_reward_model, train_reward_model
    from mmalign_tiny.config import TinyLlavaConfig
    from mmalign_tiny.model import ensure_built, load_tiny_llava

    torch.set_num_threads(1)
    plugins = get_plugins()
    pairs = lambda mode, n, seed, split: list(plugins.resolve("preference_source", "shapes-pairs").build(  # noqa: E731
        {"n_pairs": n, "mode": mode, "seed": seed, "split": split}).pairs(None))
    cache = str(Path(tempfile.gettempdir()) / "mmalign-rm-cross")
    folder = ensure_built(TinyLlavaConfig(cache_dir=cache))
    model_ref = ModelRef(name="tiny-llava", config={"cache_dir": cache})
    evals = {k: pairs(k, args.n_eval, 100, "rm-eval") for k in args.kinds}
    rows = []
    for seed in args.seeds:
        for train_kind in args.kinds:
            torch.manual_seed(seed)
            backbone = load_tiny_llava(folder)
            out = Path(tempfile.mkdtemp(prefix=f"rm-{train_kind}-{seed}-"))
            cfg = RewardTrainConfig(steps=args.steps, batch_size=16, heldout_fraction=0.1, lr=1e-3, head_lr=1e-2, seed=seed)
            t0 = time.perf_counter()
            result = train_reward_model(backbone, pairs(train_kind, args.n_train, seed, "rm-train"), cfg, out, model_ref=model_ref, log=lambda s: None)
            rm, _ = load_reward_model(out)
            row = {"seed": seed, "trained_on": train_kind, "heldout_same_kind": round(result.heldout_accuracy, 4),
                   "seconds": round(time.perf_counter() - t0, 1)}
            for k, ev in evals.items():
                row[f"acc_on_{k}"] = round(rm.pair_accuracy(ev), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
