"""What ``accelerate launch`` runs in the ``fsdp`` part: ``mmalign run`` with a record of what accelerate set up.

    accelerate launch --config_file examples/accelerate/fsdp-gpus.yaml --num_processes 1 \\
        benchmarks/gpu/fsdp_entry.py --facts F.json [--crash-after N] -- run SPEC --output-dir DIR

Before the run it writes to ``--facts`` the distributed type, world size and FSDP version accelerate
reports, and whether the training loop's ``Dist.prepare`` wraps a model at all (it leaves a model alone in
a one-process world). ``--crash-after N`` ends the process at once (``os._exit``, no clean-up, like a
kill) right after step N's metrics row, to leave a checkpoint to resume from. Peak CUDA memory is added
to the facts at the end (or at the crash).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

CRASH_CODE = 75


def _write(path: Path, facts: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts, indent=1, default=str))
    os.replace(tmp, path)


def _peak() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / float(1 << 30) if torch.cuda.is_available() else None


def accelerate_facts(device: str) -> dict[str, Any]:
    import torch

    from mmalign_core.runner.run import make_accelerator
    from mmalign_core.runner.training import Dist

    acc = make_accelerator(device)  # the state mmalign run will build (accelerate keeps one per process)
    plugin = getattr(acc.state, "fsdp_plugin", None)
    probe = torch.nn.Linear(4, 4).to(acc.device)
    wrapped = Dist(acc).prepare(probe)
    return {
        "distributed_type": str(acc.distributed_type).split(".")[-1],
        "num_processes": acc.num_processes,
        "process_index": acc.process_index,
        "mixed_precision": acc.mixed_precision,
        "fsdp_version": getattr(plugin, "fsdp_version", None),
        "loop_wraps_model": wrapped is not probe,
        "wrapped_type": type(wrapped).__name__,
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("FSDP_", "ACCELERATE_")) or k in ("WORLD_SIZE", "LOCAL_RANK")},
    }


def crash_plugin(after: int, facts: dict[str, Any], path: Path) -> Any:
    """An observer plugin that ends the process right after step ``after``'s metrics were logged."""
    from mmalign_core import hookimpl

    class CrashAfter:
        @hookimpl
        def mmalign_on_metrics(self, run_dir: Any, stage: str, step: int, metrics: dict) -> None:
            if step == after:
                facts.update(crashed_at_step=step, peak_gib=_peak())
                _write(path, facts)
                sys.stdout.flush()
                os._exit(CRASH_CODE)

    return CrashAfter()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--facts", type=Path, required=True)
    p.add_argument("--crash-after", type=int, default=0)
    p.add_argument("cli", nargs=argparse.REMAINDER, help="arguments of the mmalign CLI, after --")
    args = p.parse_args(argv)
    cli_args = args.cli[1:] if args.cli[:1] == ["--"] else args.cli
    import torch

    from mmalign_core.cli import main as cli_main
    from mmalign_core.manager import get_plugins

    facts = accelerate_facts("cuda" if torch.cuda.is_available() else "cpu")
    if args.crash_after:
        get_plugins().register(crash_plugin(args.crash_after, facts, args.facts), name="gpu-check-crash")
    _write(args.facts, facts)
    rc = cli_main(cli_args)
    facts.update(exit_code=rc, peak_gib=_peak())
    _write(args.facts, facts)
    return rc


if __name__ == "__main__":
    sys.exit(main())
