"""Figures of runs with matplotlib (Agg, no display): training curves, evaluations vs step, compare bars.

matplotlib is the optional ``report`` extra (``pip install 'mmalign[report]'``,
installed by ``scripts/setup.sh``). It is imported only when a figure is
drawn; without it :func:`require_matplotlib` raises
:class:`FiguresUnavailable`, whose message is the install command, and the
report says so instead of showing figures.

Every figure uses :class:`matplotlib.figure.Figure` directly (no pyplot, so no
global state and no GUI backend) with a constrained layout, so tick labels and
legends are never clipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .errors import MmalignError
from .tracking import stage_offsets

INSTALL_HINT = "pip install 'mmalign[report]' (or: pip install matplotlib)"

#: Keys of a metrics row that are bookkeeping, not curves worth a panel.
NOT_CURVES = frozenset({"stage", "step", "epoch", "examples_per_s", "lr"})

#: Units of well-known metric names (by the last part of the name), shown on the y axis.
UNITS: dict[str, str] = {
    "loss": "nats",
    "kl": "nats",
    "margin": "β · log-ratio",
    "chosen": "β · log-ratio",
    "rejected": "β · log-ratio",
    "accuracy": "fraction",
    "tokens": "tokens",
    "reward": "reward",
    "skipped_steps": "steps",
}

RUN_STEP_LABEL = "optimizer step (whole run)"


class FiguresUnavailable(MmalignError):
    """matplotlib is not installed; the message says how to install it."""


def require_matplotlib() -> Any:
    """Import and return ``matplotlib.figure.Figure``; :class:`FiguresUnavailable` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise FiguresUnavailable(f"figures need matplotlib, which is not installed: {INSTALL_HINT}") from None
    return Figure


def axis_label(metric: str) -> str:
    """``rewards/margin`` -> ``rewards/margin (β · log-ratio)``; unknown names stay as they are."""
    unit = UNITS.get(metric.rsplit("/", 1)[-1])
    return f"{metric} ({unit})" if unit else metric


@dataclass
class Series:
    """One line: its legend label and points."""

    label: str
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)


@dataclass
class Panel:
    """One axes: a title, a y label and its series."""

    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)


@dataclass(frozen=True)
class FigureFile:
    """A written figure: where it is and what it shows."""

    path: Path
    title: str


def wrap_label(label: str, width: int = 32) -> str:
    """Break a long metric name into lines of at most ``width`` characters, after '.', '/', '_' or '-'
    (names have no spaces to break at), so a panel title never runs into its neighbour."""
    lines, line, piece = [], "", ""
    for ch in label + "\0":
        if ch != "\0":
            piece += ch
        if ch in "./_- \0":
            if line and len(line) + len(piece) > width:
                lines.append(line)
                line = ""
            line += piece
            piece = ""
    if line:
        lines.append(line)
    return "\n".join(lines)


def _grid(n: int, per_row: int) -> tuple[int, int]:
    cols = max(1, min(per_row, n))
    return max(1, math.ceil(n / cols)), cols


def draw_panels(panels: Sequence[Panel], title: str, path: Path, *, xlabel: str, markers: bool = False,
                boundaries: Sequence[tuple[float, str]] = (),
                xticks: Optional[tuple[Sequence[float], Sequence[str]]] = None) -> Path:
    """Line panels (one per metric) in a grid, one legend per panel; writes a PNG and returns its path.

    ``boundaries`` are ``(x, stage name)`` marks drawn as dotted vertical lines; ``xticks`` fixed
    ``(positions, labels)`` for the x axis (default: integer steps).
    """
    Figure = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    rows, cols = _grid(len(panels), 2 if xticks is not None else 3)
    width = 6.4 if xticks is not None else 4.6  # room for a legend beside each panel
    fig = Figure(figsize=(width * cols, 3.3 * rows + 0.4), layout="constrained", dpi=100)
    fig.suptitle(title, fontsize=13)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        panel = panels[k]
        for series in panel.series:
            points = [(x, y) for x, y in zip(series.xs, series.ys) if math.isfinite(y)]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if markers or len(points) == 1 else None, markersize=4, linewidth=1.6,
                    label=series.label)
        for x, _name in boundaries:
            ax.axvline(x, color="0.6", linestyle=":", linewidth=1)
        ax.set_title(wrap_label(panel.title, 44), fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
        if xticks is not None:
            ax.set_xticks(list(xticks[0]), list(xticks[1]), fontsize=8)
            if len(xticks[0]) == 1:
                ax.set_xlim(xticks[0][0] - 1, xticks[0][0] + 1)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if any(s.xs for s in panel.series) and xticks is not None:  # many points per x: the legend beside the axes
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        elif any(s.xs for s in panel.series):
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- training curves
def curve_metrics(rows: Sequence[Mapping[str, Any]], stage: str, declared: Optional[Sequence[str]]) -> list[str]:
    """The metrics of ``stage`` to plot: those its loss declares (in that order) that were logged,
    else every numeric key it logged besides bookkeeping."""
    logged: list[str] = []
    for r in rows:
        if r.get("stage") != stage:
            continue
        for k, v in r.items():
            if k not in NOT_CURVES and k not in logged and isinstance(v, (int, float)) and not isinstance(v, bool):
                logged.append(k)
    if declared:
        return [m for m in declared if m in logged]
    return logged


def _group(metric: str) -> str:
    return metric.split("/", 1)[0] if "/" in metric else metric


def training_figures(rows: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]], out_dir: Path) -> list[FigureFile]:
    """One PNG per metric group (``loss``, ``rewards``, ``logps``, ``kl``, ...), a panel per metric,
    a line per training stage, on the run's step axis.

    ``stages`` are the manifest's stage records; a record's ``loss_metrics`` (the metrics its loss
    entry declares) chooses what is plotted for that stage.
    """
    offsets = stage_offsets(stages)
    order = [st["name"] for st in stages if st["name"] in {r.get("stage") for r in rows}]
    declared = {st["name"]: st.get("loss_metrics") for st in stages}
    groups: dict[str, dict[str, Panel]] = {}
    for stage in order:
        for metric in curve_metrics(rows, stage, declared.get(stage)):
            panel = groups.setdefault(_group(metric), {}).setdefault(metric, Panel(metric, axis_label(metric)))
            series = Series(stage)
            for r in rows:
                if r.get("stage") == stage and isinstance(r.get(metric), (int, float)):
                    series.xs.append(offsets.get(stage, 0) + r["step"])
                    series.ys.append(float(r[metric]))
            panel.series.append(series)
    boundaries = [(offsets[s], s) for s in order if offsets.get(s)]
    written = []
    for group, panels in groups.items():
        fname = "train_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in group) + ".png"
        title = f"training: {group}"
        draw_panels(list(panels.values()), title, out_dir / fname, xlabel=RUN_STEP_LABEL, boundaries=boundaries)
        written.append(FigureFile(out_dir / fname, title))
    return written


# ------------------------------------------------------------------------------ evaluations
#: Metrics per evaluator panel in the evaluations figure (the first ones it reports; the table has all).
EVAL_METRICS_PER_PANEL = 6


def evaluation_figure(evaluations: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]], path: Path) -> Optional[FigureFile]:
    """Each evaluator's metrics against the run step at which its evaluate stage ran: a panel per evaluator,
    a line per metric (its first :data:`EVAL_METRICS_PER_PANEL`, as it orders them), the stages as x ticks.
    ``None`` when the run has no evaluation."""
    offsets = stage_offsets(stages)
    panels: dict[str, Panel] = {}
    totals: dict[str, set[str]] = {}
    ticks: dict[int, list[str]] = {}
    for ev in evaluations:
        x = offsets.get(ev["stage"], 0)
        ticks.setdefault(x, []).append(ev["stage"])
        for key, res in ev.get("results", {}).items():
            panel = panels.setdefault(key, Panel(key, "value"))
            names = totals.setdefault(key, set())
            for metric, value in res.get("metrics", {}).items():
                if not isinstance(value, (int, float)):
                    continue
                names.add(metric)
                hib = res.get("higher_is_better", {}).get(metric)
                label = metric + {True: " ↑", False: " ↓"}.get(hib, "")
                series = next((s for s in panel.series if s.label == label), None)
                if series is None:
                    if len(panel.series) >= EVAL_METRICS_PER_PANEL:
                        continue
                    series = Series(label)
                    panel.series.append(series)
                series.xs.append(x)
                series.ys.append(float(value))
    panels = {k: p for k, p in panels.items() if p.series}
    if not panels:
        return None
    for key, panel in panels.items():
        if len(totals[key]) > len(panel.series):
            panel.title = f"{key} ({len(panel.series)} of {len(totals[key])} metrics; all in the table)"
    positions = sorted(ticks)
    labels = ["\n".join(ticks[x]) + f"\n@ {x}" for x in positions]
    draw_panels(list(panels.values()), "evaluations vs step", path, xlabel=RUN_STEP_LABEL, markers=True,
                xticks=(positions, labels))
    return FigureFile(path, "evaluations vs step")


# ---------------------------------------------------------------------------------- compare
def bar_chart(rows: Sequence[str], columns: Sequence[tuple[str, Optional[bool]]],
              values: Mapping[str, Mapping[str, float]], path: Path, decimals: Optional[int] = None) -> Path:
    """Grouped bars for ``mmalign compare``: a panel per metric (its own scale), a coloured bar per run,
    the value above each bar and one legend of runs for the figure."""
    Figure = require_matplotlib()
    n_rows, n_cols = _grid(len(columns), 4)
    fig = Figure(figsize=(3.6 * n_cols, 2.9 * n_rows + 0.5 + 0.25 * math.ceil(len(rows) / 3)), layout="constrained", dpi=100)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    colours = [f"C{k % 10}" for k in range(len(rows))]
    handles: list[Any] = []
    for k, ax in enumerate(axes.flat):
        if k >= len(columns):
            ax.set_visible(False)
            continue
        label, hib = columns[k]
        arrow = "" if hib is None else ("\n(higher is better)" if hib else "\n(lower is better)")
        ax.set_title(wrap_label(label) + arrow, fontsize=9)
        vals = [values.get(r, {}).get(label) for r in rows]
        finite = [(i, v) for i, v in enumerate(vals) if v is not None and math.isfinite(v)]
        ax.set_xticks([])
        ax.grid(True, axis="y", alpha=0.3)
        ax.axhline(0.0, color="0.4", linewidth=0.8)
        if not finite:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
            continue
        bars = ax.bar([i for i, _ in finite], [v for _, v in finite], color=[colours[i] for i, _ in finite])
        fmt = f"%.{decimals}f" if decimals is not None else "%.3g"
        ax.bar_label(bars, fmt=fmt, fontsize=8, padding=2)
        ax.margins(y=0.18)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        if not handles:
            handles = [None] * len(rows)
        for (i, _), bar in zip(finite, bars):
            handles[i] = handles[i] or bar
    legend = [(h, r) for h, r in zip(handles, rows) if h is not None]
    if legend:
        fig.legend([h for h, _ in legend], [r for _, r in legend], loc="outside upper center", ncols=min(3, len(legend)),
                   fontsize=9, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
