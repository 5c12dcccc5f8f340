"""The per-run report: ``report.md`` with PNG line plots and the evaluation table.

Plots are drawn with Pillow alone, so the report needs no plotting library.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

from .io import atomic_write_text, read_jsonl

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2e}"
    return f"{v:.3g}"


def line_plot(series: dict[str, Sequence[tuple[float, float]]], title: str, path: Path, xlabel: str = "step") -> Path:
    """Draw one or more (x, y) series into a PNG and return its path."""
    W, H, L, R, T, B = 640, 360, 70, 20, 36, 46
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    d.text((L, 10), title, fill="black")
    if not pts:
        d.text((L, H // 2), "no data", fill="grey")
        img.save(path)
        return path
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * (W - L - R)

    def sy(y: float) -> float:
        return H - B - (y - y0) / (y1 - y0) * (H - T - B)

    d.rectangle([L, T, W - R, H - B], outline=(180, 180, 180))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        d.line([L, sy(yv), W - R, sy(yv)], fill=(235, 235, 235))
        d.text((4, sy(yv) - 6), _fmt(yv), fill="black")
        xv = x0 + (x1 - x0) * i / 4
        d.text((sx(xv) - 10, H - B + 6), _fmt(xv), fill="black")
    d.text(((W - L) // 2 + L - 10, H - 18), xlabel, fill="black")
    for k, (name, s) in enumerate(series.items()):
        col = PALETTE[k % len(PALETTE)]
        good = [(sx(x), sy(y)) for x, y in s if math.isfinite(y)]
        if len(good) == 1:
            x, y = good[0]
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
        elif good:
            d.line(good, fill=col, width=2)
        d.text((W - R - 150, T + 6 + 14 * k), name, fill=col)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


PLOTS = [
    ("loss", "loss"),
    ("rewards/margin", "reward margin (chosen - rejected)"),
    ("rewards/accuracy", "preference accuracy"),
]


def _eval_table(evaluations: list[dict[str, Any]]) -> list[str]:
    """Rows: metric; columns: evaluate stages (e.g. before / after alignment)."""
    if not evaluations:
        return ["_No evaluation stage in this run._"]
    cols = [e["stage"] for e in evaluations]
    metrics: list[tuple[str, str]] = []
    for e in evaluations:
        for ev, res in e["results"].items():
            for m in res["metrics"]:
                if (ev, m) not in metrics:
                    metrics.append((ev, m))
    lines = ["| evaluator | metric | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for ev, m in metrics:
        cells = []
        for e in evaluations:
            res = e["results"].get(ev)
            v = None if res is None else res["metrics"].get(m)
            cells.append("–" if v is None else f"{v:.4g}")
        hib = None
        for e in evaluations:
            res = e["results"].get(ev)
            if res and m in res.get("higher_is_better", {}):
                hib = res["higher_is_better"][m]
        arrow = "" if hib is None else (" ↑" if hib else " ↓")
        lines.append(f"| {ev} | {m}{arrow} | " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """(Re)write ``report.md`` and its plots from the metrics log and the manifest."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    plots_dir = run_dir / "plots"
    lines = [f"# Run report: {manifest['spec']['name']}", ""]
    if manifest["spec"].get("description"):
        lines += [manifest["spec"]["description"], ""]
    lines += [
        f"- status: **{manifest.get('status')}**",
        f"- spec hash: `{manifest.get('spec_hash', '')[:16]}`",
        f"- mmalign {manifest.get('mmalign_version')}, git commit `{manifest.get('git_commit') or 'n/a'}`",
        f"- seed {manifest['spec'].get('seed')}, device {manifest.get('device')}",
        "",
        "## Stages",
        "",
        "| stage | type | status | seconds | details |",
        "|---|---|---|---|---|",
    ]
    for st in manifest.get("stages", []):
        det = []
        if st.get("steps"):
            det.append(f"{st['steps']} steps")
        if st.get("data"):
            det.append(f"{st['data'].get('n_examples')} examples from `{st['data'].get('source')}`")
        if st.get("loss"):
            det.append(f"loss `{st['loss']}`")
        secs = st.get("seconds")
        lines.append(
            f"| {st['name']} | {st['type']} | {st.get('status')} | {'' if secs is None else f'{secs:.1f}'} | {', '.join(det)} |"
        )
    lines += ["", "## Evaluation", ""]
    lines += _eval_table(manifest.get("evaluations", []))
    lines += ["", "## Training curves", ""]
    stages = []
    for r in rows:
        if r["stage"] not in stages:
            stages.append(r["stage"])
    any_plot = False
    for key, title in PLOTS:
        series = {s: [(r["step"], float(r[key])) for r in rows if r["stage"] == s and key in r] for s in stages}
        series = {s: v for s, v in series.items() if v}
        if not series:
            continue
        fname = key.replace("/", "_") + ".png"
        line_plot(series, title, plots_dir / fname)
        lines += [f"![{title}](plots/{fname})", ""]
        any_plot = True
    if not any_plot:
        lines.append("_No training stage in this run._")
    lines.append("")
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
