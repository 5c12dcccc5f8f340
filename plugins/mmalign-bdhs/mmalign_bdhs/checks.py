"""Run-level checks of the ``bdhs`` components (light: no torch).

* ``povid-distortion`` with ``scoring: teacher-forced`` makes pairs only the ``povid-dpo`` loss can score,
  and ``povid-dpo`` needs those pairs: any other pairing is an error.
* ``combine: extra`` puts the BDHS answer in ``extra_rejected``: a loss that ignores it (``dpo`` and the
  other single-negative losses) is an error; use ``avg-dpo``.
"""
from __future__ import annotations

from typing import Any, Mapping

from mmalign_core.errors import Problem

PLUGIN = "bdhs"
_SINGLE_NEGATIVE = {"dpo", "ipo", "slic", "robust-dpo"}


def _bare(entry: Any, ref: Any) -> tuple[str, str]:
    if entry is not None:
        return getattr(entry, "plugin", ""), getattr(entry, "name", "")
    plugin, _, name = str(getattr(ref, "name", "")).rpartition(":")
    return plugin, name


def check_run(spec: Any, resolved: Mapping[str, Any] | None = None) -> list[Problem]:
    resolved = resolved or {}
    problems: list[Problem] = []
    for i, stage in enumerate(getattr(spec, "stages", None) or []):
        data, loss = getattr(stage, "data", None), getattr(stage, "loss", None)
        if data is None or loss is None or getattr(stage, "type", "") != "align":
            continue
        dplugin, dname = _bare(resolved.get(f"stages[{i}].data"), data)
        lplugin, lname = _bare(resolved.get(f"stages[{i}].loss"), loss)
        ours = dplugin in ("", PLUGIN)
        cfg = getattr(data, "config", None) or {}
        teacher_forced = ours and dname == "povid-distortion" and cfg.get("scoring", "teacher-forced") == "teacher-forced"
        if teacher_forced and lname != "povid-dpo":
            problems.append(Problem(f"stages[{i}].loss", f"povid-distortion with scoring 'teacher-forced' needs the loss 'povid-dpo' "
                                    f"(it scores the distortion non-autoregressively), not {lname!r}; or set scoring 'text'", plugin=PLUGIN))
        if lname == "povid-dpo" and lplugin in ("", PLUGIN) and not teacher_forced:
            problems.append(Problem(f"stages[{i}].data", f"the loss 'povid-dpo' needs the source 'povid-distortion' with scoring "
                                    f"'teacher-forced', not {dname!r}", plugin=PLUGIN))
        if ours and dname in ("bdhs", "bdhs-online") and cfg.get("combine") == "extra" and lname in _SINGLE_NEGATIVE:
            problems.append(Problem(f"stages[{i}].loss", f"{dname} with combine 'extra' puts its answer in extra_rejected, which "
                                    f"{lname!r} ignores; train with 'avg-dpo' (or combine 'replace')", plugin=PLUGIN))
    return problems
