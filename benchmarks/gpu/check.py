"""The GPU check: correctness of the CUDA paths, mmalign vs TRL at 7B shape, lean sampling, FSDP (see run.sh).

    python benchmarks/gpu/check.py --out DIR              # the real check (one CUDA GPU)
    python benchmarks/gpu/check.py --out DIR --dry-run    # the same code on CPU with tiny sizes (a test runs it)
    python benchmarks/gpu/check.py --out DIR --parts correctness,dpo

Each part runs in its own process under a time budget (time a part leaves unused carries over to the next),
so a part that fails, hangs or crashes the interpreter is recorded and the others still run. Writes
``gpu-check.json`` (every figure, check and error), ``gpu-check.txt`` (a short summary) and
``gpu-check.log`` (the parts' output) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from gpucheck.record import Recorder, write_json  # noqa: E402
from gpucheck.sizes import PARTS, PROFILES, Profile  # noqa: E402

LOG_CAP = 200_000  # characters of each part's output kept in gpu-check.log


def inject_fault(name: str) -> None:
    """The tests' way to prove that one part's failure or hang stops nothing else:
    ``GPU_CHECK_INJECT=environment:fail,correctness:hang``."""
    faults = dict(item.split(":", 1) for item in os.environ.get("GPU_CHECK_INJECT", "").split(",") if ":" in item)
    if faults.get(name) == "fail":
        raise RuntimeError(f"failure injected into part {name!r} (GPU_CHECK_INJECT)")
    if faults.get(name) == "hang":
        time.sleep(3600)


def run_part_here(name: str, profile: Profile, result: Path, deadline: float, scratch: Path) -> int:
    """``--part``: run one part in this process, writing its results to ``result`` as it goes."""
    import importlib
    import traceback

    rec = Recorder(result, name, deadline)
    try:
        inject_fault(name)
        module = importlib.import_module(f"gpucheck.{name}")
        module.run(profile, rec, scratch)
    except BaseException as exc:  # noqa: BLE001 - a part's own crash is its result
        rec.data["errors"].append(f"part: {type(exc).__name__}: {str(exc)[:1000]}")
        rec.data["traceback"] = traceback.format_exc()[-6000:]
    finally:
        rec.finish()
    return 0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def spawn_part(name: str, profile: Profile, timeout: float, scratch: Path, log: Path) -> dict[str, Any]:
    """Run a part in a child process (its own process group, so launches it starts die with it)."""
    result = scratch / f"part-{name}.json"
    result.unlink(missing_ok=True)
    out_file = scratch / f"part-{name}.log"
    deadline = time.time() + timeout - 3.0  # leave the part time to save what it has
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--profile", profile.name, "--result", str(result),
           "--deadline", f"{deadline:.3f}", "--scratch", str(scratch), "--device", profile.device]
    t0 = time.perf_counter()
    status = None
    with out_file.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            status = "timeout"
    wall = time.perf_counter() - t0
    text = out_file.read_text(errors="replace")
    with log.open("a") as fh:
        fh.write(f"\n===== part {name} (rc {proc.returncode}, {wall:.1f}s) =====\n")
        fh.write(text if len(text) <= LOG_CAP else f"[... {len(text) - LOG_CAP} characters cut ...]\n" + text[-LOG_CAP:])
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        data = {"part": name, "steps": {}, "checks": [], "errors": []}
    if status == "timeout":
        data["status"] = "timeout"
        data.setdefault("errors", []).append(f"part: killed at its time budget of {timeout:.0f}s")
    elif data.get("status") in (None, "running"):
        data["status"] = "crashed"
        data.setdefault("errors", []).append(f"part: the process ended with code {proc.returncode}: {text[-1500:]}")
    data["wall_seconds"] = round(wall, 3)
    data["budget_seconds"] = round(timeout, 1)
    return data


def install_record() -> dict[str, Any]:
    """What run.sh reported about its installs (nothing when check.py was started directly)."""
    log = os.environ.get("GPU_CHECK_INSTALL_LOG")
    text = Path(log).read_text(errors="replace") if log and Path(log).is_file() else ""
    seconds = os.environ.get("GPU_CHECK_INSTALL_SECONDS")
    return {"status": os.environ.get("GPU_CHECK_INSTALL_STATUS", "not run (check.py started directly)"),
            "seconds": float(seconds) if seconds else None, "log_tail": text[-4000:]}


def orchestrate(profile: Profile, parts: list[str], out: Path, scratch: Path, total: float) -> dict[str, Any]:
    from gpucheck.summary import summarise

    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    log = out / "gpu-check.log"
    log.write_text("")
    started = time.time()
    report: dict[str, Any] = {"schema": 1, "profile": profile.as_json(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "commit": os.environ.get("MMALIGN_COMMIT") or None, "install": install_record(), "parts": {}}
    slack = 0.0
    for i, name in enumerate(parts):
        left = started + total - time.time()
        budget = profile.budgets[name] + slack
        if left < 5:
            report["parts"][name] = {"part": name, "status": "skipped", "errors": [f"part: the check's {total:.0f}s were used up"]}
            continue
        timeout = min(budget, left)
        data = spawn_part(name, profile, timeout, scratch, log)
        report["parts"][name] = data
        slack = max(0.0, budget - data["wall_seconds"])
        report["total_seconds"] = round(time.time() - started, 1)
        write_json(out / "gpu-check.json", report)
    report["total_seconds"] = round(time.time() - started, 1)
    report["summary"] = summarise(report)
    write_json(out / "gpu-check.json", report)
    (out / "gpu-check.txt").write_text("\n".join(report["summary"]["lines"]) + "\n")
    return report


def _profile(name: str, device: str | None) -> Profile:
    from dataclasses import replace

    profile = PROFILES[name]
    return replace(profile, device=device) if device and device != profile.device else profile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the same code as on the GPU")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")), help="where the JSON, summary and log go")
    p.add_argument("--scratch", type=Path, default=None, help="work folder (models, runs); default: a temporary folder")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--total-seconds", type=float, default=None,
                   help="wall-clock budget of the whole check, run.sh's installs included (default: the profile's)")
    p.add_argument("--device", default=None, help="override the profile's device (e.g. the GPU sizes of a small part on cpu)")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--profile", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:
        return run_part_here(args.part, _profile(args.profile, args.device), args.result, args.deadline, args.scratch)
    profile = _profile("dry-run" if args.dry_run else "gpu", args.device)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    if args.scratch is None:
        import tempfile

        args.scratch = Path(tempfile.mkdtemp(prefix="mmalign-gpu-check-"))
    total = args.total_seconds or profile.total_seconds
    total -= float(os.environ.get("GPU_CHECK_INSTALL_SECONDS") or 0.0)  # run.sh's installs count against the budget
    report = orchestrate(profile, parts, args.out, args.scratch, total)
    print("\n".join(report["summary"]["lines"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
