"""One run per folder: the run-folder lock, what --overwrite and --resume accept, and failing components.

The lock tests hold the lock from a helper process (as a live run does) and check what a second
`mmalign run` is told; a SIGKILLed holder leaves no lock behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from mmalign_core.errors import RunError
from mmalign_core.runner.lock import LOCK_NAME, RunDirError, RunLock, holds_run, probe

ROOT = Path(__file__).resolve().parents[2]

_HOLD = """
import sys, time
from pathlib import Path
from mmalign_core.runner.lock import RunLock
lock = RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _prepare(run_dir: Path, **kw: Any) -> None:
    from mmalign_core.runner.run import prepare_run_dir

    prepare_run_dir(run_dir, spec_hash=kw.pop("spec_hash", "h" * 64), **kw)


# ------------------------------------------------------------------------------ the lock
def test_second_process_is_refused_while_a_run_holds_the_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    try:
        with pytest.raises(RunDirError, match=rf"in use by a running mmalign \(pid {proc.pid} on host"):
            RunLock(run_dir).acquire()
        with pytest.raises(RunDirError, match="in use"):
            probe(run_dir)
        assert RunDirError.exit_code == 2
    finally:
        proc.kill()
        proc.wait()


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run_dir / LOCK_NAME).is_file()  # the file stays (it marks a run); the lock does not
    probe(run_dir)
    with RunLock(run_dir) as lock:
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid()
    assert (run_dir / LOCK_NAME).read_text() == ""  # released: the holder record is gone


def test_stale_record_without_kernel_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where flock is unsupported, a record of this host naming a dead pid is stale; a live pid is not."""
    import errno
    import fcntl
    import socket

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    RunLock(run_dir).acquire()  # stale: taken over
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK_NAME).write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        with pytest.raises(RunDirError, match=f"pid {live.pid}"):
            RunLock(run_dir).acquire()
    finally:
        live.kill()
        live.wait()


def test_a_file_or_unwritable_place_is_refused_cleanly(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        RunLock(tmp_path / "f").acquire()
    with pytest.raises(RunDirError, match="cannot use output directory"):
        RunLock(tmp_path / "f" / "below").acquire()


# ----------------------------------------------------------------- what the flags touch
def test_overwrite_refuses_a_folder_that_holds_no_run(tmp_path: Path) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{article}")
    for flags in ({"overwrite": True, "resume": False}, {"overwrite": False, "resume": True}, {"overwrite": False, "resume": False}):
        with pytest.raises(RunDirError, match="holds no mmalign run") as err:
            _prepare(thesis, **flags)
        assert err.value.exit_code == 2
    assert (thesis / "thesis.tex").is_file()
    assert not holds_run(thesis)


def test_overwrite_clears_a_run_and_refusal_exits_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "stages").mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"spec_hash": "h" * 64}))
    (run_dir / "stages" / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="already holds a run") as err:
        _prepare(run_dir, resume=False, overwrite=False)
    assert err.value.exit_code == 2
    with RunLock(run_dir):
        _prepare(run_dir, resume=False, overwrite=True)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]


def _spec_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_resume_after_a_kill_before_the_first_manifest_still_checks_the_spec(tmp_path: Path) -> None:
    """Killed between writing spec.json and manifest.json: the recorded spec.json decides."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recorded = {"name": "a", "seed": 1, "stages": []}
    (run_dir / "spec.json").write_text(json.dumps(recorded, indent=2))
    with pytest.raises(RunError, match="spec changed"):
        _prepare(run_dir, resume=True, overwrite=False, spec_hash=_spec_hash({**recorded, "seed": 2}))
    _prepare(run_dir, resume=True, overwrite=False, spec_hash=_spec_hash(recorded))


# ------------------------------------------------------------------------ through the CLI
def _tiny(name: str) -> dict[str, Any]:
    return {
        "name": name, "seed": 3, "model": {"name": "tiny-llava"},
        "stages": [{"type": "align", "data": {"name": "shapes-pairs", "config": {"n_pairs": 8}}, "loss": {"name": "dpo"},
                    "train": {"steps": 2, "batch_size": 4, "log_every": 1}}],
    }


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmalign_core.cli", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_run_spec_refuses_resume_and_overwrite_of_a_live_run(tmp_path: Path, mmalign_cache: Path) -> None:
    pytest.importorskip("torch")
    from mmalign_core.manager import get_plugins
    from mmalign_core.runner.run import run_spec
    from mmalign_core.spec import check_spec

    validated, problems = check_spec(_tiny("live"), get_plugins())
    assert validated is not None, problems
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.log").write_text("a live run's log\n")
    proc = _holder(run_dir)
    try:
        for flags in ({"resume": True}, {"overwrite": True}, {}):
            with pytest.raises(RunDirError, match=f"in use by a running mmalign \\(pid {proc.pid}"):
                run_spec(validated, output_dir=run_dir, **flags)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME, "run.log"]
        assert (run_dir / "run.log").read_text() == "a live run's log\n"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_cli_refuses_resume_and_overwrite_of_a_live_run(tmp_path: Path, mmalign_cache: Path) -> None:
    env = {**os.environ, "MMALIGN_CACHE": str(mmalign_cache), "MMALIGN_PROGRESS": "0"}
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(_tiny("live")))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text("{}")
    (run_dir / "run.log").write_text("a live run's log\n")
    proc = _holder(run_dir)
    try:
        for flag in ("--resume", "--overwrite"):
            out = _cli("run", str(spec), "--output-dir", str(run_dir), flag, env=env)
            assert out.returncode == 2, out.stderr
            assert "in use by a running mmalign" in out.stderr and f"pid {proc.pid}" in out.stderr
            assert "Traceback" not in out.stderr
        assert (run_dir / "run.log").read_text() == "a live run's log\n"  # nothing deleted or appended
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ a component that fails
_BOOM = '''
from mmalign_core import ComponentConfig, LossEntry, SourceEntry, hookimpl


class BoomConfig(ComponentConfig):
    """No settings."""


def make_boom(config):
    def loss(inputs):
        raise ZeroDivisionError("the loss divided by zero")
    return loss


class BoomSource:
    def pairs(self, ctx):
        raise KeyError("the index has no row 7")


def make_boom_source(config):
    return BoomSource()


class Plugin:
    @hookimpl
    def mmalign_losses(self):
        return [LossEntry(name="boom-loss", summary="Raises.", config=BoomConfig, factory="mmalign_boom_fixture:make_boom",
                          requires={"reference", "rejected"})]

    @hookimpl
    def mmalign_preference_sources(self):
        return [SourceEntry(name="boom-pairs", summary="Raises.", config=BoomConfig, factory="mmalign_boom_fixture:make_boom_source",
                            capabilities={"pairs", "static"})]
'''


@pytest.mark.slow
@pytest.mark.parametrize("part, ref, expected", [
    ("loss", {"name": "boom-loss"}, "stages[0].loss: loss 'boom:boom-loss' failed: ZeroDivisionError: the loss divided by zero"),
    ("data", {"name": "boom-pairs"}, "stages[0].data: source 'boom:boom-pairs' failed: KeyError: 'the index has no row 7'"),
])
def test_a_failing_component_is_named_and_its_stage_marked_failed(part: str, ref: dict, expected: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, mmalign_cache: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("mmalign_tiny")
    (tmp_path / "mmalign_boom_fixture.py").write_text(textwrap.dedent(_BOOM))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    boom = importlib.import_module("mmalign_boom_fixture")
    from mmalign_core.manager import load_plugins
    from mmalign_core.runner.guard import ComponentError
    from mmalign_core.runner.run import run_spec
    from mmalign_core.spec import check_spec

    plugins = load_plugins(extra=[("boom", boom.Plugin())])
    spec = _tiny("boom")
    spec["stages"][0][part] = ref
    validated, problems = check_spec(spec, plugins)
    assert validated is not None, problems
    run_dir = tmp_path / "run"
    t0 = time.time()
    with pytest.raises(ComponentError) as err:
        run_spec(validated, output_dir=run_dir, plugins=plugins)
    msg = str(err.value)
    assert msg.startswith(expected), msg
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stages"][0]["status"] == "failed"
    assert expected.split(": ")[-2] in manifest["stages"][0]["error"]
    assert "Traceback" in (run_dir / "run.log").read_text()
    assert time.time() - t0 < 120
    # the lock was released: the folder can be resumed (and fails the same way, named again)
    probe(run_dir)
