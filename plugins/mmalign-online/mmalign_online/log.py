"""The on-disk record of an online run: every sample and verdict, and the kept pairs in the canonical format.

Layout (under the stage's data folder, ``<run>/stages/<i>-<name>/data/online/``)::

    samples.jsonl   one row per example of every step: step, slot, prompt id, side (online/offline),
                    the responses, the order shown to the judge, the verdicts, the outcome
    pairs.jsonl     the kept online pairs in the canonical pair format (id, prompt, chosen, rejected,
                    images, source, meta) -- readable by the datasets plugin's ``local`` source
    images/         PNG copies of in-memory prompt images referenced by pairs.jsonl
    summary.json    cumulative counts, rewritten after every step

A step's rows are appended with one ``write`` once the step is judged, each row carrying the
step's row count, so a step cut short by a crash is recognised (incomplete) and generated again.
Under a multi-process launch each process writes ``samples.rank<N>.jsonl`` / ``pairs.rank<N>.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from mmalign_core.types import ImageRef

ROW_FORMAT = 1


def _rank_suffix() -> str:
    rank = os.environ.get("RANK")
    return f".rank{rank}" if rank not in (None, "", "0") else ""


def _append(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows).encode("utf-8")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as fh:  # a write torn by a crash left no newline: start on a fresh line
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                data = b"\n" + data
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class OnlineLog:
    """Appends and reads back the records of one online source in one stage."""

    def __init__(self, root: Path, *, images: bool = True):
        self.root = Path(root)
        suffix = _rank_suffix()
        self.samples_path = self.root / f"samples{suffix}.jsonl"
        self.pairs_path = self.root / f"pairs{suffix}.jsonl"
        self.summary_path = self.root / f"summary{suffix}.json"
        self.images_dir = self.root / "images"
        self.write_images = images
        self._written_images: set[str] = set()
        self._steps: Optional[dict[int, list[dict[str, Any]]]] = None

    # ---------------------------------------------------------------- reading
    def steps(self) -> dict[int, list[dict[str, Any]]]:
        """Complete steps found on disk: step -> its rows in slot order (the last complete copy of a step wins)."""
        if self._steps is not None:
            return self._steps
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        done: dict[int, list[dict[str, Any]]] = {}
        if self.samples_path.is_file():
            with open(self.samples_path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        step, n, write_id = int(row["step"]), int(row["n_slots"]), str(row["write_id"])
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # a torn line
                    rows = groups.setdefault((step, write_id), [])
                    rows.append(row)
                    if len(rows) == n:
                        done[step] = sorted(rows, key=lambda r: r["slot"])
        self._steps = done
        return done

    def lookup(self, step: int, prompt_ids: Sequence[str], settings: str) -> Optional[list[dict[str, Any]]]:
        """The logged rows of ``step`` if they cover exactly these prompts under these settings."""
        rows = self.steps().get(step)
        if rows is None or len(rows) != len(prompt_ids):
            return None
        if any(r.get("settings") != settings or r.get("prompt_id") != pid for r, pid in zip(rows, prompt_ids)):
            return None
        return rows

    # ---------------------------------------------------------------- writing
    def write_step(self, step: int, rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> None:
        write_id = hashlib.sha1(f"{step}:{os.getpid()}:{id(rows)}:{len(rows)}".encode()).hexdigest()[:12]
        for r in rows:
            r["format"] = ROW_FORMAT
            r["write_id"] = write_id
            r["n_slots"] = len(rows)
        _append(self.samples_path, rows)
        _append(self.pairs_path, pairs)
        if self._steps is not None:
            self._steps[step] = rows

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.summary_path)

    def image_entries(self, images: Sequence[ImageRef], loaded: Optional[Sequence[ImageRef]] = None) -> list[str]:
        """What a canonical row's ``images`` holds: a file path for path-backed images, else a PNG written once
        under ``images/`` (path relative to the log folder, which the ``local`` source resolves against).
        ``loaded``: the same images already decoded (saves decoding or rendering them again)."""
        out = []
        for n, image in enumerate(images):
            src = image.source
            if isinstance(src, (str, Path)) and Path(src).is_file():
                out.append(str(Path(src).resolve()))
                continue
            key = image.key  # a lazy reference to an image file (e.g. a dataset's): point at the file
            if key.startswith("path:") and Path(key[5:]).is_file():
                out.append(str(Path(key[5:]).resolve()))
                continue
            if not self.write_images:
                out.append(image.key)
                continue
            name = hashlib.sha1(image.key.encode()).hexdigest()[:20] + ".png"
            if name not in self._written_images:
                target = self.images_dir / name
                if not target.is_file():
                    self.images_dir.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_suffix(".tmp.png")
                    (loaded[n] if loaded is not None else image).load().save(tmp, format="PNG", compress_level=1)
                    tmp.replace(target)
                self._written_images.add(name)
            out.append(f"images/{name}")
        return out


__all__ = ["OnlineLog"]
