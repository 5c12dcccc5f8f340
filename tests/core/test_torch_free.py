"""The core is torch-free: importing every module of ``mmalign_core``, ``mmalign --help`` and validating the
quickstart spec import none of torch, transformers, accelerate, peft or datasets (the runner imports torch
inside a run only). Checked in a fresh interpreter whose import system refuses those packages."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "accelerate", "peft", "datasets")

PROBE = textwrap.dedent(
    """
    import contextlib, importlib, io, json, pkgutil, sys, traceback

    HEAVY = set(sys.argv[1].split(","))
    attempts = []

    class RefuseHeavy:
        '''A meta-path finder that records and refuses every import of a heavy package.'''

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                where = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-1]
                         if "importlib" not in f.filename and "<frozen" not in f.filename]
                attempts.append({"module": name, "from": where[-6:]})
                raise ImportError(f"{name} is refused in this test")
            return None

    sys.meta_path.insert(0, RefuseHeavy())
    import mmalign_core

    failed = {}
    modules = sorted({m.name for m in pkgutil.walk_packages(mmalign_core.__path__, "mmalign_core.")})
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    from mmalign_core.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        help_rc = main(["--help"])
        validate_rc = main(["validate", sys.argv[2]])
    print(json.dumps({"modules": modules, "failed": failed, "attempts": attempts, "help_rc": help_rc,
                      "validate_rc": validate_rc, "output": out.getvalue()[-2000:]}))
    """
)


def test_the_core_cli_and_validation_import_no_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, ",".join(HEAVY), str(ROOT / "examples" / "quickstart.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 20 and "mmalign_core.runner.training" in report["modules"]
    assert report["attempts"] == [], "heavy imports:\n" + "\n".join(
        f"  {a['module']} from {' <- '.join(reversed(a['from']))}" for a in report["attempts"])
    assert report["failed"] == {}
    assert report["help_rc"] == 0, report["output"]
    assert report["validate_rc"] == 0, report["output"]


def test_the_probe_catches_a_heavy_import() -> None:
    """The same refusing finder reports a module that does import torch (so the test above can fail)."""
    script = PROBE.split("failed = {}")[0] + textwrap.dedent(
        """
        try:
            import torch.nn
        except ImportError:
            pass
        print(json.dumps(attempts))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, ",".join(HEAVY), "unused"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    attempts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [a["module"] for a in attempts] == ["torch"]
