"""One run per folder: an exclusive lock on the run directory, and what counts as "a folder holding a run".

The lock is ``fcntl.flock`` on ``<run>/run.lock``, taken without waiting. The kernel lets go of it
when the process dies, however it dies (SIGKILL included), so a killed run never leaves a lock that
blocks its ``--resume``. The file also records who holds it (pid, host, start time): that is what a
refused second process is told, and it is the fallback where ``flock`` is not supported (some network
file systems), where a record naming this host and a pid that no longer runs is a stale lock and
is taken over. ``filelock`` would give the same kernel lock but deletes its file on release and keeps
no holder record, and the file's presence is what marks a folder as an mmalign run.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import RunError

LOCK_NAME = "run.lock"
#: Files whose presence makes a folder an mmalign run (``--overwrite`` deletes nothing else).
RUN_MARKERS = ("manifest.json", "spec.json", LOCK_NAME)


class RunDirError(RunError):
    """The output directory cannot be used as asked (holds a run, holds something else, or is in use): bad input, exit 2."""

    exit_code = 2


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds an mmalign run (a manifest, a resolved spec or a run lock)."""
    return any((run_dir / name).is_file() for name in RUN_MARKERS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_holder(run_dir: Path) -> dict[str, Any]:
    """The holder record of a run folder's lock file ({} when absent or unreadable)."""
    try:
        data = json.loads((run_dir / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    since = holder.get("started")
    return f"pid {holder.get('pid')} on host {holder.get('host')!r}" + (f" (since {since})" if since else "")


class RunLock:
    """An exclusive, non-waiting lock on one run folder; release with :meth:`release` (or use as a context manager)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock, creating the folder if needed.

        Raises:
            RunDirError: another live process holds it (named by pid and host).
        """
        import fcntl

        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"output directory {self.run_dir} is a file, not a folder; choose another output directory")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"cannot use output directory {self.run_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise RunDirError(
                    f"output directory {self.run_dir} is in use by a running mmalign ({_describe(read_holder(self.run_dir))}); "
                    "wait for it to finish or stop it, or choose another output directory"
                ) from None
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            self._check_record()  # no flock on this file system: the holder record decides
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def _check_record(self) -> None:
        holder = read_holder(self.run_dir)
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int) or pid == os.getpid():
            return
        if host == socket.gethostname() and not _pid_alive(pid):
            return  # stale: left by a run that was killed
        raise RunDirError(
            f"output directory {self.run_dir} is in use by {_describe(holder)} (this file system has no kernel locks; "
            f"if that run is gone, delete {self.path})"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)  # the file stays (it marks the folder as a run); the record goes
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def probe(run_dir: Path) -> None:
    """Raise :class:`RunDirError` when another process holds ``run_dir``'s lock; changes nothing otherwise."""
    if not (run_dir / LOCK_NAME).is_file():
        return
    import fcntl

    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirError(
                f"output directory {run_dir} is in use by a running mmalign ({_describe(read_holder(run_dir))}); "
                "wait for it to finish or stop it, or choose another output directory"
            ) from None
    finally:
        os.close(fd)
