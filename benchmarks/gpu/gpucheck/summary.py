"""The short text summary of a check's JSON report, and the targets the issue sets."""
from __future__ import annotations

from typing import Any

TARGET_SPEEDUP = 1.5  # mmalign pairs/s >= 1.5 x TRL's
TARGET_MEMORY = 0.8  # mmalign peak memory <= 0.8 x TRL's


def _fmt(value: Any, spec: str = ".2f", unit: str = "") -> str:
    """``value`` formatted with its unit, or "n/a" (without the unit) when there is no number."""
    return format(value, spec) + unit if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def targets(report: dict[str, Any]) -> dict[str, Any]:
    figs = (report.get("parts", {}).get("dpo") or {}).get("figures", {})
    out: dict[str, Any] = {}
    for arm in ("mmalign", "mmalign-cached"):
        speed, memory = figs.get(f"{arm}/speedup_vs_trl"), figs.get(f"{arm}/memory_vs_trl")
        out[arm] = {
            "speedup_vs_trl": speed, "speedup_target": TARGET_SPEEDUP,
            "speedup_met": None if speed is None else speed >= TARGET_SPEEDUP,
            "memory_vs_trl": memory, "memory_target": TARGET_MEMORY,
            "memory_met": None if memory is None else memory <= TARGET_MEMORY,
        }
    return out


def _part_line(name: str, data: dict[str, Any]) -> str:
    checks = data.get("checks", [])
    passed = sum(1 for c in checks if c.get("ok"))
    errors = len(data.get("errors", []))
    line = f"{name:<12}{data.get('status', '?'):<9}{_fmt(data.get('wall_seconds'), '.0f', unit='s'):>6}"
    line += f"  (budget {_fmt(data.get('budget_seconds'), '.0f', unit='s')})"
    if checks:
        line += f"  checks {passed}/{len(checks)} passed"
    if errors:
        line += f"  {errors} error(s)"
    return line


def _dpo_lines(figs: dict[str, Any]) -> list[str]:
    if not figs:
        return []
    lines = [f"  TRL DPOTrainer: {_fmt(figs.get('trl/pairs_per_s'))} pairs/s, peak {_fmt(figs.get('trl/peak_gib'), '.1f')} GiB"]
    for arm, label in (("mmalign", "live reference"), ("mmalign-cached", "cached reference")):
        lines.append(f"  mmalign, {label}: {_fmt(figs.get(f'{arm}/pairs_per_s'))} pairs/s "
                     f"({_fmt(figs.get(f'{arm}/speedup_vs_trl'), unit='x')} TRL), peak {_fmt(figs.get(f'{arm}/peak_gib'), '.1f')} GiB "
                     f"({_fmt(figs.get(f'{arm}/memory_vs_trl'), unit='x')} TRL)")
    return lines


def _sampling_lines(figs: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(k for k in figs if k.endswith("/speedup")):
        stem = key[: -len("/speedup")]
        lines.append(f"  {stem}: lean {_fmt(figs.get(stem + '/lean/samples_per_s'), '.1f')} samples/s, generate "
                     f"{_fmt(figs.get(stem + '/generate/samples_per_s'), '.1f')} ({_fmt(figs[key], unit='x')})")
    return lines


def _fsdp_lines(figs: dict[str, Any]) -> list[str]:
    if not figs:
        return []
    return [f"  accelerate: {figs.get('distributed_type')}, {figs.get('num_processes')} process(es); "
            f"model wrapped by the loop: {figs.get('loop_wraps_model')}; resumed from step {figs.get('resumed_from_step')}; "
            f"loss after resume equal: {figs.get('resume_loss_equal')}"]


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    parts = report.get("parts", {})
    env = (parts.get("environment") or {}).get("steps", {})
    versions = (env.get("versions") or {}).get("result") or {}
    device = (env.get("device") or {}).get("result") or {}

    def v(name: str) -> str:
        return (versions.get(name) or {}).get("version", "-")

    lines = [f"mmalign GPU check ({report.get('profile', {}).get('name')}) at {report.get('commit') or '?'}, {report.get('started')}, "
             f"{report.get('total_seconds')}s; device {device.get('name', 'cpu')}; torch {v('torch')}, "
             f"transformers {v('transformers')}, trl {v('trl')}, peft {v('peft')}, accelerate {v('accelerate')}"]
    install = report.get("install") or {}
    lines.append(f"{'install':<12}{install.get('status', '?'):<9}{_fmt(install.get('seconds'), '.0f', unit='s'):>6}")
    for name, data in parts.items():
        lines.append(_part_line(name, data))
        figs = data.get("figures", {})
        lines += {"dpo": _dpo_lines, "sampling": _sampling_lines, "fsdp": _fsdp_lines}.get(name, lambda f: [])(figs)
        failed = [c["name"] for c in data.get("checks", []) if not c.get("ok")]
        lines += [f"  FAILED: {n}" for n in failed[:20]]
        lines += [f"  ERROR: {e[:240]}" for e in data.get("errors", [])[:10]]
        skipped = [k for k, s in data.get("steps", {}).items() if s.get("status") == "skipped"]
        if skipped:
            lines.append(f"  SKIPPED (out of time): {', '.join(skipped[:12])}{' ...' if len(skipped) > 12 else ''}")
    t = targets(report)
    for arm, row in t.items():
        lines.append(f"target {arm}: pairs/s >= {TARGET_SPEEDUP}x TRL: {row['speedup_met']} ({_fmt(row['speedup_vs_trl'], unit='x')}); "
                     f"peak memory <= {TARGET_MEMORY}x TRL: {row['memory_met']} ({_fmt(row['memory_vs_trl'], unit='x')})")
    return {"lines": lines, "targets": t}
