"""The shapes-world experiment of docs/bdhs.md: SFT once per seed, then one align arm per method.

Usage (from the repository root; every run writes under --out, default runs/bdhs-exp)::

    python plugins/mmalign-bdhs/scripts/shapes_experiment.py sft --seeds 0 1 2
    python plugins/mmalign-bdhs/scripts/shapes_experiment.py arms --seeds 0 1 2
    python plugins/mmalign-bdhs/scripts/shapes_experiment.py table --seeds 0 1 2

``sft`` trains, per seed, a text-only prior stage (the language model learns the co-occurrence prior
from captions alone) followed by image SFT, and evaluates it. ``arms`` loads each seed's SFT model
(``tiny-llava`` with ``path``) and runs every alignment arm from it, each followed by the same
evaluation. ``table`` prints the mean and spread over seeds. Specs are written next to the runs, so
each run can be repeated with ``mmalign run <spec>``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
MMALIGN = [sys.executable, "-m", "mmalign_core.cli"]

SFT_STEPS = 2000
PRIOR_STEPS = 1500
ALIGN_STEPS = 100
EVAL = {
    "type": "evaluate",
    "name": "eval",
    "evaluators": [
        {"name": "shapes-chair", "config": {"n_images": 500, "n_absent_images": 1000, "seed": 7}},
        {"name": "shapes-pope", "config": {"n_images": 200, "seed": 7}},
    ],
}
ALIGN_TRAIN = {"steps": ALIGN_STEPS, "batch_size": 32, "lr": 1e-05, "schedule": "cosine", "warmup_ratio": 0.03, "log_every": 10}
# The caption pairs every arm aligns on: the natural distribution plus 50% absent-partner images.
PAIRS = {"n_pairs": 3200, "mode": "partner", "absent_fraction": 0.5}

# SFT recipes for the "why" study of docs/bdhs.md: each changes one thing of "base" (model size, steps).
# A recipe other than "base" writes under <out>/<recipe>/.
RECIPES: dict[str, dict[str, Any]] = {
    "base": {},
    "long": {"sft_steps": 4000},
    "vis64": {"model": {"vision_hidden_size": 64}},
    "vis64-long": {"model": {"vision_hidden_size": 64}, "sft_steps": 4000},
    "h128": {"model": {"hidden_size": 128, "num_layers": 4, "intermediate_size": 256, "vision_hidden_size": 64}},
    # The vision tower trains during SFT (it starts from random weights; align stages keep it frozen).
    "trainvis": {"sft_train": {"freeze_vision": False}},
    "trainvis-long": {"sft_train": {"freeze_vision": False}, "sft_steps": 4000},
    # A stronger co-occurrence bias (partner forced in with probability 0.97 instead of 0.9), in every
    # shapes component of every stage (SFT data, pairs, BDHS bases, evaluators).
    "bias97": {"world": {"cooccurrence": 0.97}},
    "bias97-long": {"world": {"cooccurrence": 0.97}, "sft_steps": 4000},
}
SHAPES_COMPONENTS = ("shapes-sft", "shapes-pairs", "shapes-chair", "shapes-pope")


def with_world(obj: Any, world: dict[str, Any]) -> Any:
    """A copy of a spec (part) with ``world`` set in the config of every shapes component in it."""
    if isinstance(obj, list):
        return [with_world(x, world) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: with_world(v, world) for k, v in obj.items()}
    if out.get("name") in SHAPES_COMPONENTS:
        out["config"] = {**out.get("config", {}), "world": world}
    return out
RECIPE = "base"


def sft_spec(seed: int) -> dict:
    recipe = RECIPES[RECIPE]
    text_only = {"caption_fraction": 0, "yes_no_fraction": 0, "count_fraction": 0, "text_only_fraction": 1.0}
    return {
        "name": f"sft-s{seed}",
        "description": "Text-only prior stage, then image SFT with 25% text-only captions; evaluated.",
        "seed": seed,
        "device": "cpu",
        "threads": 1,
        "model": {"name": "tiny-llava", "config": {"seed": seed, **recipe.get("model", {})}},
        "stages": [
            {"type": "sft", "name": "prior", "data": {"name": "shapes-sft", "config": {"n_examples": 20000, "seed": seed, **text_only}},
             "train": {"steps": PRIOR_STEPS, "batch_size": 64, "lr": 0.001, "log_every": 100}},
            {"type": "sft", "name": "sft", "data": {"name": "shapes-sft", "config": {"n_examples": 40000, "seed": seed}},
             "train": {"steps": recipe.get("sft_steps", SFT_STEPS), "batch_size": 64, "lr": 0.001, "log_every": 100,
                       **recipe.get("sft_train", {})}},
            EVAL,
        ],
    }


def arms(seed: int) -> dict[str, dict]:
    pairs = {"name": "shapes-pairs", "config": {**PAIRS, "seed": seed}}
    bdhs = {"base": pairs, "seed": seed}
    return {
        "dpo-injected": {"data": pairs, "loss": {"name": "dpo", "config": {"beta": 0.1}}},
        "bdhs-attn-offline": {"data": {"name": "bdhs", "config": {**bdhs, "variant": "attn"}}, "loss": {"name": "dpo", "config": {"beta": 0.1}}},
        "bdhs-noise-offline": {"data": {"name": "bdhs", "config": {**bdhs, "variant": "noise"}}, "loss": {"name": "dpo", "config": {"beta": 0.1}}},
        "bdhs-attn-online": {"data": {"name": "bdhs-online", "config": {**bdhs, "variant": "attn"}}, "loss": {"name": "dpo", "config": {"beta": 0.1}}},
        "nll-control": {"data": pairs, "loss": {"name": "sft"}},
        # Ablation (not the paper's cut): keep at least the first object ("a red circle") before each cut.
        "bdhs-attn-head3": {"data": {"name": "bdhs", "config": {**bdhs, "variant": "attn", "min_head_words": 3}},
                            "loss": {"name": "dpo", "config": {"beta": 0.1}}},
    }


def arm_spec(seed: int, arm: str, out: Path, steps: int = ALIGN_STEPS) -> dict:
    a = arms(seed)[arm]
    stage = {"type": "align", "name": "align", "data": a["data"], "loss": a["loss"], "train": {**ALIGN_TRAIN, "steps": steps}}
    suffix = "" if steps == ALIGN_STEPS else f"-{steps}"
    return {
        "name": f"{arm}{suffix}-s{seed}",
        "seed": seed,
        "device": "cpu",
        "threads": 1,
        "model": {"name": "tiny-llava", "config": {"path": str(out / f"sft-s{seed}" / "stages" / "1-sft" / "model")}},
        "stages": [stage, EVAL],
    }


def run(spec: dict, out: Path) -> Path:
    if "world" in RECIPES[RECIPE]:
        spec = with_world(spec, RECIPES[RECIPE]["world"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{spec['name']}.json"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    run_dir = out / spec["name"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMALIGN_PROGRESS": "0"}
    args = [*MMALIGN, "run", str(path), "--output-dir", str(run_dir)]
    args.append("--resume" if run_dir.exists() else "--overwrite")
    with open(out / f"{spec['name']}.log", "w") as log:
        subprocess.run(args, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return run_dir


def metrics(run_dir: Path, stage: str = "eval") -> dict[str, float]:
    man = json.loads((run_dir / "manifest.json").read_text())
    for ev in man["evaluations"]:
        if ev["stage"] == stage:
            out = {}
            for res in ev["results"].values():
                out.update(res["metrics"])
            return out
    raise KeyError(f"{run_dir}: no evaluation stage {stage!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["sft", "arms", "table", "diagnose", "cuts"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=None, help="arms to run (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bdhs-exp")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="base", help="SFT recipe (see RECIPES); not base: runs go to <out>/<recipe>")
    ap.add_argument("--steps", type=int, default=ALIGN_STEPS, help="align steps of the arms (other than 100: run names get a -<steps> suffix)")
    args = ap.parse_args()
    out = args.out.resolve()
    global RECIPE
    RECIPE = args.recipe
    if RECIPE != "base":
        out = out / RECIPE
    if args.what == "sft":
        with ThreadPoolExecutor(args.jobs) as ex:
            list(ex.map(lambda s: run(sft_spec(s), out), args.seeds))
    elif args.what == "arms":
        names = args.arms or list(arms(0))
        jobs = [(s, a) for a in names for s in args.seeds]
        with ThreadPoolExecutor(args.jobs) as ex:
            list(ex.map(lambda sa: run(arm_spec(sa[0], sa[1], out, args.steps), out), jobs))
    elif args.what == "diagnose":
        for s in args.seeds:
            diagnose(out, s)
    elif args.what == "cuts":
        for s in args.seeds:
            cuts(out, s)
    else:
        table(out, args.seeds, args.steps)


def diagnose(out: Path, seed: int, n: int = 800) -> None:
    """How often rejected answers name the absent partner of a present anchor (absent-set images of the
    arms' pairs): BDHS datasets (from the offline arms' caches) vs the SFT model's own greedy captions
    with the whole image visible and with every image token hidden (unguided)."""
    import numpy as np

    from mmalign_bdhs.generation import Row, generate_rows
    from mmalign_core.manager import get_plugins
    from mmalign_shapes.config import WorldConfig
    from mmalign_shapes.world import ShapesWorld

    world = ShapesWorld(WorldConfig())

    def rate(truths: list[list[str]], texts: list[str]) -> tuple[float, int]:
        hits = trials = 0
        for truth, text in zip(truths, texts):
            named = {o.name for o in world.parse(text)}
            for anchor, partner in world.partner_of.items():
                if anchor.name in truth and partner.name not in truth:
                    trials += 1
                    hits += partner.name in named
        return hits / max(trials, 1), trials

    result: dict[str, Any] = {"seed": seed}
    for arm in ("bdhs-attn-offline", "bdhs-noise-offline"):
        man = out / f"{arm}-s{seed}" / "manifest.json"
        if not man.is_file():
            continue
        data = Path(json.loads(man.read_text())["stages"][0]["data"]["stats"]["dataset"])
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        absent = [r for r in rows if r["meta"].get("absent_set")][:n]
        result[arm] = rate([r["meta"]["truth"] for r in absent], [r["rejected"] for r in absent])
        result[arm + "/external"] = rate([r["meta"]["truth"] for r in absent], [r["meta"]["bdhs"].get("external_rejected", "") for r in absent])
    plugins = get_plugins()
    model = plugins.resolve("model", "tiny-llava").build({"path": str(out / f"sft-s{seed}" / "stages" / "1-sft" / "model")})
    src = plugins.resolve("preference_source", "shapes-pairs").build({**PAIRS, "seed": seed})
    pairs = [p for p in src.pairs(None) if p.meta.get("absent_set")][:n]
    truths = [p.meta["truth"] for p in pairs]
    plain = generate_rows(model, [Row(p.prompt, p.images, "", None) for p in pairs], method=None, max_new_tokens=24)
    hidden = generate_rows(model, [Row(p.prompt, p.images, "", lambda k: np.ones(k, dtype=bool)) for p in pairs], max_new_tokens=24)
    result["sft-greedy"] = rate(truths, plain)
    result["sft-all-hidden-unguided"] = rate(truths, hidden)
    result["all-hidden-distinct-captions"] = len(set(hidden))
    print(json.dumps(result))


def cuts(out: Path, seed: int) -> None:
    """Per offline BDHS arm: where the split point fell on absent-set pairs (before the anchor object, or with
    the anchor kept) and how often the absent partner was then named; the most common rejected answer; and
    objects named by the chosen vs the rejected answers (the length difference DPO can learn instead)."""
    from collections import Counter

    from mmalign_shapes.world import ShapesWorld

    world = ShapesWorld()
    for arm in ("bdhs-attn-offline", "bdhs-noise-offline", "bdhs-attn-head3"):
        man = out / f"{arm}-s{seed}" / "manifest.json"
        if not man.is_file():
            continue
        data = Path(json.loads(man.read_text())["stages"][0]["data"]["stats"]["dataset"])
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        classes: dict[str, list[int]] = {}
        common: Counter = Counter()
        fewer = more = 0
        for r in rows:
            n_c, n_r = len(world.parse(r["chosen"])), len(world.parse(r["rejected"]))
            fewer += n_r < n_c
            more += n_r > n_c
            if not r["meta"].get("absent_set"):
                continue
            common[r["rejected"]] += 1
            truth = set(r["meta"]["truth"])
            cw, rw = r["chosen"].split(), r["rejected"].split()
            k = 0
            while k < min(len(cw), len(rw)) and cw[k] == rw[k]:
                k += 1
            kept = {o.name for o in world.parse(" ".join(cw[:k]) + ".")} if k else set()
            named = {o.name for o in world.parse(r["rejected"])}
            for anchor, partner in world.partner_of.items():
                if anchor.name in truth and partner.name not in truth:
                    c = classes.setdefault("anchor kept" if anchor.name in kept else "cut before anchor", [0, 0])
                    c[0] += 1
                    c[1] += partner.name in named
        total = sum(c[0] for c in classes.values()) or 1
        top, n_top = common.most_common(1)[0] if common else ("", 0)
        print(json.dumps({
            "seed": seed, "arm": arm,
            "cuts": {k: {"share": round(v[0] / total, 3), "partner_named": round(v[1] / max(v[0], 1), 3)} for k, v in classes.items()},
            "most_common_absent_set_rejection": [top, n_top, sum(common.values())],
            "rejected_names_fewer_objects": round(fewer / len(rows), 3), "rejected_names_more_objects": round(more / len(rows), 3),
        }))


KEYS = ("partner_hallucination", "control_hallucination", "absent_recall", "recall", "chair_i", "absent_objects_per_caption", "pope_f1")


def table(out: Path, seeds: list[int], steps: int = ALIGN_STEPS) -> None:
    suffix = "" if steps == ALIGN_STEPS else f"-{steps}"
    rows = [("sft", [out / f"sft-s{s}" for s in seeds])]
    rows += [(a + suffix, [out / f"{a}{suffix}-s{s}" for s in seeds]) for a in arms(0)]
    print("| arm | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for name, dirs in rows:
        ms = []
        for d in dirs:
            try:
                ms.append(metrics(d))
            except (KeyError, OSError, ValueError):
                continue
        if not ms:
            continue
        cells = []
        for k in KEYS:
            vals = [100 * m[k] if k != "absent_objects_per_caption" else m[k] for m in ms]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.2f} ± {sd:.2f}")
        print(f"| {name} (n={len(ms)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
