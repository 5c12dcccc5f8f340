"""DPO vs the image-grounded objectives on the shapes world, from one shared SFT model.

Each objective of ``examples/grounded/*.json`` (its align stage and final evaluation only) is trained from
the same SFT model folder (``--base-model``: e.g. ``runs/<sft run>/stages/1-sft/model``) on the same pairs,
steps and seeds, then evaluated; a table of partner hallucination, CHAIR_i, recall and the POPE yes/no probe
(F1, and the adversarial split's F1) is printed as markdown. Usage::

    .venv/bin/python examples/grounded/compare_on_shapes.py --base-model M --seeds 0 1 2 --out runs/grounded-compare
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OBJECTIVES = ["dpo-baseline", "mdpo", "mdpo-consistent", "chip", "tpo", "symmpo", "mpo"]
COLUMNS = [("shapes-chair", "partner_hallucination"), ("shapes-chair", "chair_i"), ("shapes-chair", "recall"),
           ("shapes-pope", "pope_f1"), ("shapes-pope", "pope_adversarial_f1")]


def spec_for(objective: str, base_model: str, seed: int, steps: int | None) -> dict:
    full = json.loads((HERE / f"{objective}.json").read_text())
    align, evaluate = full["stages"][3], full["stages"][4]
    if steps is not None:
        align["train"]["steps"] = steps
    return {"name": f"{full['name']}-s{seed}", "seed": seed, "device": "cpu",
            "model": {"name": "tiny:tiny-llava", "config": {"path": base_model}}, "stages": [align, evaluate]}


def results(run: Path) -> dict[tuple[str, str], float]:
    out = {}
    for path in run.glob("stages/*/eval/*/results.json"):
        data = json.loads(path.read_text())
        name = data["evaluator"].rpartition(":")[2]
        for metric, value in data["metrics"].items():
            out[(name, metric)] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--objectives", nargs="+", default=OBJECTIVES)
    ap.add_argument("--steps", type=int, default=None, help="override the align steps (default: the specs' 100)")
    ap.add_argument("--out", default="runs/grounded-compare")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table: dict[str, list[dict[tuple[str, str], float]]] = {}
    for objective in args.objectives:
        for seed in args.seeds:
            run = out / f"{objective}-s{seed}"
            if not (run / "manifest.json").is_file() or json.loads((run / "manifest.json").read_text()).get("status") != "complete":
                spec = out / f"{objective}-s{seed}.json"
                spec.write_text(json.dumps(spec_for(objective, args.base_model, seed, args.steps), indent=1))
                done = subprocess.run([sys.executable, "-m", "mmalign_core.cli", "run", str(spec), "--output-dir", str(run), "--overwrite"],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{objective} seed {seed} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
            table.setdefault(objective, []).append(results(run))
            print(f"done {objective} seed {seed}", file=sys.stderr, flush=True)
    header = "| objective | seeds | " + " | ".join(m for _, m in COLUMNS) + " |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + 2))
    for objective, rows in table.items():
        cells = []
        for key in COLUMNS:
            values = [r[key] for r in rows if key in r]
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
        print(f"| {objective} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
