"""What every loader shares: locating the files, indexing them once into an
on-disk canonical store (read row by row), validation and skip accounting, the seeded
subsample, fingerprints and statistics.

A loader subclasses :class:`DatasetSource` and implements :meth:`convert`
(one raw record -> candidate pairs, or :class:`~mmalign_datasets.errors.Skip`).

Indexing happens on the first ``pairs(ctx)`` call and is cached under
``<cache>/datasets/<loader>-<key>/`` (``pairs.arrow``, ``images.bin``, ``build.json``). The
key covers the file fingerprints and every setting that changes the rows, so a
second run (or ``mmalign data check`` before a run) reuses it; the subsample
size and seed are applied on top and do not re-index.
"""
from __future__ import annotations

import hashlib
import heapq
import io
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from mmalign_core.protocols import Context

from .config import DatasetConfig
from .errors import DataError, Skip
from .files import Record, data_files, default_cache_root, files_fingerprint, iter_records
from .store import STORE_VERSION, PairSequence, Store, StoreWriter, decode_image

#: Skip reasons that come from a pairing policy, not from bad data: counted, never fatal under ``on_error: fail``.
POLICY_REASONS = frozenset({"tie", "unparsable_rating", "pope_correct", "too_few_completions", "incomplete_ratings"})
MAX_EXAMPLES = 5  # examples kept per skip reason
WATCH_FILE = "watch.json"  # image files the skipped rows depend on (a cached index is stale once they change)
MAX_WATCHED = 10_000  # watched paths per kind: bounds the file and the stat calls of each cache hit


def describe_image_error(exc: BaseException) -> str:
    """``Type: message`` without the in-memory buffer reprs PIL puts in its messages."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc))
    return f"{type(exc).__name__}: {text}"


def strip_placeholder(text: str, placeholder: str) -> str:
    """Remove every ``placeholder``: a line holding only it disappears, one at a line's start or end goes with its
    spaces, one inside a line becomes a single space."""

    def repl(m: re.Match) -> str:
        at_start = m.start() == 0 or text[m.start() - 1] == "\n"
        newline = m.group(1)
        at_end = bool(newline) or m.end() == len(text)
        if at_start:
            return ""
        if at_end:
            return newline or ""
        return " "

    return re.sub(r"[ \t]*" + re.escape(placeholder) + r"[ \t]*(\n)?", repl, text)


def _stamp(path: str) -> Optional[list[int]]:
    """``[size, mtime_ns]`` of a file, ``None`` when it is gone: what tells a replaced image apart."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _log_default(msg: str) -> None:
    print(f"[mmalign-datasets] {msg}", flush=True)


class DatasetSource:
    """Base class of the loaders (capabilities ``pairs`` and ``static``).

    Subclasses set :attr:`name`, :attr:`layout` (what to place where, shown
    when the data cannot be found) and :attr:`hub_patterns`, and implement
    :meth:`convert`.
    """

    name = ""
    #: Human-readable description of the published files, used in "not found" messages.
    layout = ""
    #: ``allow_patterns`` for a Hub download (``None``: everything).
    hub_patterns: Optional[list[str]] = None
    #: File patterns picked from a folder (empty: every parquet/Arrow/JSON/JSONL file).
    file_patterns: tuple[str, ...] = ()
    #: Published file names: when a folder holds one of them, only those are read (other JSON files are not data).
    preferred_files: tuple[str, ...] = ()
    #: Config fields that change neither the rows nor their content (left out of fingerprints).
    _location_fields = ("path", "hub_id", "revision", "cache_dir", "image_root", "on_error", "reindex")
    #: Folders under the data folder tried for images when ``image_root`` is not set (besides the data folder itself).
    default_image_dirs: tuple[str, ...] = ()

    def __init__(self, config: DatasetConfig):
        self.config = config
        self._root: Optional[Path] = None
        self._files: Optional[list[Path]] = None
        self._file_fps: Optional[list[dict[str, Any]]] = None
        self._build: Optional[dict[str, Any]] = None
        self._store: Optional[Store] = None
        self._seq: Optional[PairSequence] = None
        self._selection: dict[str, Any] = {}
        self._dropped: Counter = Counter()
        self._flags: list[tuple[str, str]] = []

    # ------------------------------------------------------------------------ location
    def root(self) -> Path:
        """The configured path, or the Hub snapshot folder when ``path`` is null."""
        if self._root is None:
            cfg = self.config
            if cfg.path:
                p = Path(cfg.path).expanduser()
                if not p.exists():
                    raise DataError(f"{self.name}: {p} does not exist. {self.where_to_place()}")
                self._root = p.resolve()
            else:
                self._root = self._from_hub()
        return self._root

    def where_to_place(self) -> str:
        return f"Expected layout: {self.layout} Set \"path\" to the local copy." if self.layout else "Set \"path\" to the local copy."

    def _from_hub(self) -> Path:
        cfg = self.config
        if not cfg.hub_id:
            raise DataError(f"{self.name}: set \"path\" to a local copy (no Hub id is configured)")
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise DataError(
                f"{self.name}: `path` is null, so the data would come from the Hub ({cfg.hub_id}), but huggingface_hub is not "
                f"installed (pip install 'mmalign-datasets[hub]'). {self.where_to_place()}"
            ) from None
        try:
            folder = snapshot_download(cfg.hub_id, repo_type="dataset", revision=cfg.revision, allow_patterns=self.hub_patterns)
        except Exception as exc:  # noqa: BLE001 - offline, unreachable, gated, missing: all end here
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            why = "offline mode (HF_HUB_OFFLINE) and the files are not in the Hugging Face cache" if offline else f"{type(exc).__name__}: {exc}"
            raise DataError(
                f"{self.name}: cannot fetch the Hub dataset {cfg.hub_id!r}"
                + (f" at revision {cfg.revision!r}" if cfg.revision else "")
                + f" ({why}). Download it where a network exists, e.g. `huggingface-cli download {cfg.hub_id} --repo-type dataset "
                f"--local-dir DIR`, copy DIR here and set \"path\": \"DIR\". {self.where_to_place()}"
            ) from None
        return Path(folder)

    def files(self) -> list[Path]:
        """The data files read, in order."""
        if self._files is None:
            self._files = self.select_files(self.root())
        return self._files

    def select_files(self, root: Path) -> list[Path]:
        """Which files of ``root`` hold the records (override for releases with several parts)."""
        if root.is_dir() and self.preferred_files:
            for name in self.preferred_files:
                found = sorted(p for p in root.rglob(name) if p.is_file())
                if found:
                    return found
        return data_files(root, self.config.split, self.file_patterns)

    def image_roots(self, record: Optional[Record] = None) -> list[Path]:
        """Folders image paths are resolved against: ``image_root``, else the data file's folder, the data root and the
        loader's :attr:`default_image_dirs` under it that exist.

        Raises:
            DataError: ``image_root`` is set but is not a folder.
        """
        if self.config.image_root:
            given = Path(self.config.image_root).expanduser()
            if not given.is_dir():
                what = "is a file, not a folder" if given.exists() else "does not exist"
                raise DataError(f"{self.name}: image_root {str(given)[:500]!r} {what}. {self.where_to_place()}")
            return [given.resolve()]
        roots = []
        if record is not None:
            roots.append(record.file.parent)
        root = self.root()
        base = root if root.is_dir() else root.parent
        roots.append(base)
        roots += [base / d for d in self.default_image_dirs if (base / d).is_dir()]
        return list(dict.fromkeys(roots))

    def _inside(self, candidate: Path, roots: Sequence[Path]) -> bool:
        return self.config.allow_outside_images or any(candidate == r or candidate.is_relative_to(r) for r in roots)

    def find_image(self, names: Sequence[str], record: Record) -> dict[str, Any]:
        """An image struct for the first of ``names`` that exists under an image root (each tried as given, then by basename)."""
        names = [n for n in names if isinstance(n, str) and n]
        if not names:
            raise Skip("missing_image", "the record names no image")
        roots = self.image_roots(record)
        candidates: list[Path] = []
        outside: list[str] = []
        for name in names:
            p = Path(name)
            joined = [Path(os.path.normpath(p))] if p.is_absolute() else [Path(os.path.normpath(r / name)) for r in roots]
            for c in joined:
                (candidates.append(c) if self._inside(c, roots) else outside.append(name))
        for name in names:
            candidates += [r / Path(name).name for r in roots if Path(name).name not in ("", ".", "..")]
        candidates = list(dict.fromkeys(candidates))
        if self.config.verify_images == "none" and candidates and not outside:
            return {"bytes": None, "path": str(candidates[0])}
        for c in candidates:
            if c.is_file():
                return {"bytes": None, "path": str(c)}
        if outside:
            raise Skip(
                "image_outside_root",
                f"image path {outside[0][:300]!r} leaves the image folders ({', '.join(str(r) for r in roots[:3])}); it was not "
                "opened. Set `image_root` to the folder that holds the images, or `allow_outside_images: true` to trust the data's paths",
            )
        tried = ", ".join(str(c) for c in candidates[:4]) + (" ..." if len(candidates) > 4 else "")
        raise Skip("missing_image", f"image {names[0][:300]!r} not found (tried {tried}); set `image_root`",
                   watch={"missing": [str(c) for c in candidates]})

    def image_value(self, value: Any, record: Record, fallback_names: Sequence[str] = ()) -> dict[str, Any]:
        """An image struct from a data value: ``{bytes, path}`` (the HF Image layout), a path string, or nothing."""
        if isinstance(value, dict):
            data = value.get("bytes")
            if isinstance(data, str):  # JSON copies sometimes hold latin-1 or base64 text; only raw bytes are supported
                data = None
            if data:
                return {"bytes": bytes(data), "path": value.get("path") if isinstance(value.get("path"), str) else None}
            path = value.get("path")
            return self.find_image([path, *fallback_names] if isinstance(path, str) else list(fallback_names), record)
        if isinstance(value, (bytes, bytearray)) and value:
            return {"bytes": bytes(value), "path": None}
        if isinstance(value, str) and value:
            return self.find_image([value, *fallback_names], record)
        if fallback_names:
            return self.find_image(list(fallback_names), record)
        raise Skip("missing_image", "the record has no image")

    # ---------------------------------------------------------------------- conversion
    def convert(self, record: Record) -> list[dict[str, Any]]:
        """Candidate pairs of one record: dicts with ``prompt``, ``chosen``, ``rejected``, ``images`` (image structs) and
        optionally ``key`` (the data set's own id), ``suffix`` (tells several pairs of one record apart),
        ``rejected_images``, ``extra_rejected`` and ``meta``. Raise :class:`Skip` for an unusable record."""
        raise NotImplementedError

    def drop(self, reason: str, n: int = 1) -> None:
        """Count candidates left out inside a record that still yields pairs (e.g. tied completions)."""
        self._dropped[reason] += n

    def flag(self, reason: str, detail: str, counted_as: Optional[str] = None) -> None:
        """Note bad data inside a record (e.g. an empty completion among rated ones): counted like :meth:`drop` (under
        ``counted_as``, default ``reason``), and an error under ``on_error: fail`` (named by file and row), whether the
        index is built now or was cached."""
        self._dropped[counted_as or reason] += 1
        self._flags.append((reason, detail))

    def _clean_prompt(self, text: Any) -> tuple[str, int]:
        if not isinstance(text, str):
            raise Skip("missing_field", "the prompt is missing or not text")
        ph = self.config.image_placeholder
        if not ph:
            return text.strip(), 0
        count = text.count(ph)
        if count:
            text = strip_placeholder(text, ph)
        return text.strip(), count

    def _finish(self, cand: dict[str, Any], record: Record, verified: dict[int, Optional[list[int]]]) -> dict[str, Any]:
        prompt, placeholders = self._clean_prompt(cand.get("prompt"))
        answers = []
        for side in ("chosen", "rejected"):
            value = cand.get(side)
            if not isinstance(value, str):
                raise Skip("missing_field", f"the {side} answer is missing or not text")
            answers.append(value.strip())
        chosen, rejected = answers
        if not prompt:
            raise Skip("empty_prompt", "the prompt is empty")
        if not chosen or not rejected:
            raise Skip("empty_response", "the " + ("chosen" if not chosen else "rejected") + " answer is empty")
        images = list(cand.get("images") or [])
        rejected_images = cand.get("rejected_images")
        if chosen == rejected and rejected_images is None:
            raise Skip("identical", "chosen and rejected are the same text")
        sizes = []
        for im in images + list(rejected_images or []):
            if id(im) not in verified:
                verified[id(im)] = self._verify_image(im)
            sizes.append(verified[id(im)])
        extra = [t.strip() for t in cand.get("extra_rejected") or [] if isinstance(t, str) and t.strip()]
        if isinstance(cand.get("id"), str) and cand["id"]:
            pair_id = cand["id"]  # a canonical file's own id, kept as is
        else:
            pair_id = f"{self.name}/{record.row}"
            if cand.get("key") not in (None, ""):
                pair_id += f":{cand['key']}"
            if cand.get("suffix") not in (None, ""):
                pair_id += f"#{cand['suffix']}"
        meta = {"file": self._file_label(record.file), "row": record.row if record.file_row is None else record.file_row,
                "n_images": len(images), "image_placeholders": placeholders}
        if record.line is not None:
            meta["line"] = record.line
        if images and all(sizes[: len(images)]):
            meta["image_sizes"] = sizes[: len(images)]  # [width, height] from the header: lengths without decoding
        meta.update(cand.get("meta") or {})
        return {
            "id": pair_id,
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "images": images,
            "rejected_images": rejected_images,
            "extra_rejected": extra,
            "source": cand.get("source") or self.name,
            "meta": json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True),
        }

    def _file_label(self, f: Path) -> str:
        root = self.root()
        try:
            return str(f.relative_to(root)) if root.is_dir() else f.name
        except ValueError:
            return str(f)

    def _verify_image(self, im: dict[str, Any]) -> Optional[list[int]]:
        """Check one image at the ``verify_images`` level; returns ``[width, height]`` when the header was read."""
        level = self.config.verify_images
        if level == "none":
            return None
        data, path = im.get("bytes"), im.get("path")
        if not data:
            if not path or not Path(path).is_file():
                raise Skip("missing_image", f"image file not found: {path}" if path else "the image has no bytes and no path",
                           watch={"missing": [path]} if path else None)
        if level == "exists":
            return None
        from PIL import Image, UnidentifiedImageError

        what = f"the image file {path}" if path and not data else f"the embedded image ({len(data)} bytes)"
        watch = {"bad": [path]} if path and not data else None
        limit = self.config.max_image_pixels
        try:
            with (Image.open(io.BytesIO(data)) if data else Image.open(path)) as opened:
                size = [int(opened.width), int(opened.height)]
                if size[0] * size[1] > limit:
                    raise Skip("image_too_large", f"{what} is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over "
                               f"max_image_pixels {limit:,} (raise it to accept such images)", watch=watch)
                if level == "decode":
                    opened.load()
                return size
        except Image.DecompressionBombError as exc:
            raise Skip("image_too_large", f"{what} is a decompression bomb: {describe_image_error(exc)}", watch=watch) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            raise Skip("bad_image", f"{what} does not decode: {describe_image_error(exc)}", watch=watch) from None

    # --------------------------------------------------------------------------- index
    def cache_key(self) -> str:
        """Hash of the file fingerprints, the image roots and every row-affecting setting."""
        payload = {
            "store": STORE_VERSION,
            "component": self.name,
            "files": self.file_fingerprints(),
            "image_roots": [str(p) for p in self.image_roots()],
            "config": self.config.model_dump(mode="json", exclude={"n_pairs", "seed", "on_error", "cache_dir", "path", "hub_id", "revision", "reindex"}),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def file_fingerprints(self) -> list[dict[str, Any]]:
        if self._file_fps is None:
            self._file_fps = files_fingerprint(self.files(), self.root())
        return self._file_fps

    def cache_folder(self, ctx: Optional[Context]) -> Path:
        if self.config.cache_dir:
            base = Path(self.config.cache_dir).expanduser()
        elif ctx is not None and getattr(ctx, "cache_dir", None):
            base = Path(ctx.cache_dir) / "datasets"
        else:
            base = default_cache_root() / "datasets"
        return base / f"{self.name}-{self.cache_key()[:20]}"

    def store(self, ctx: Optional[Context] = None) -> Store:
        """The canonical store, indexed on first use, or found in the cache when it is still current (see
        :meth:`stale_reason`; ``reindex: true`` always rebuilds)."""
        if self._store is None:
            log = getattr(ctx, "log", None) or _log_default
            folder = self.cache_folder(ctx)
            info_path = folder / "build.json"
            cached = info_path.is_file() and (folder / "pairs.arrow").is_file() and (folder / "images.bin").is_file()
            stale = "reindex is set" if cached and self.config.reindex else self.stale_reason(folder) if cached else None
            if cached and stale is None:
                self._build = json.loads(info_path.read_text())
                self._build["from_cache"] = True
                log(f"{self.name}: using the cached index {folder} ({self._build.get('pairs_available')} pairs, built from "
                    f"{self._build.get('records')} records); set \"reindex\": true (or `mmalign data check --reindex`) to rebuild it")
            else:
                if stale:
                    log(f"{self.name}: rebuilding the cached index ({stale})")
                self._build = self._index(folder, ctx, log)
            self._build["cache"] = str(folder)
            if self.config.on_error == "fail" and self._build["errors"]:
                raise DataError(self._fail_message(self._build["first_error"]))
            self._store = Store(folder, label=self.name, batch_rows=self._build.get("batch_rows"), max_pixels=self.config.max_image_pixels)
        return self._store

    def stale_reason(self, folder: Path) -> Optional[str]:
        """Why a cached index no longer matches what it read, or ``None``: an image it could not find now exists, or an
        image it could not decode has changed (size or modification time)."""
        try:
            watch = json.loads((folder / WATCH_FILE).read_text())
        except (OSError, ValueError):
            return None
        for path in watch.get("missing") or []:
            if os.path.isfile(path):
                return f"image {path} was missing when the index was built and exists now"
        for path, stamp in (watch.get("bad") or {}).items():
            if _stamp(path) != stamp:
                return f"image {path} failed when the index was built and has changed since"
        return None

    def _fail_message(self, example: dict[str, Any]) -> str:
        hint = f" {example['hint']}" if example.get("hint") else ""
        return (
            f"{self.name}: {example['where']}: {example['reason']}: {example['detail']}{hint} "
            "(on_error is 'fail'; set \"on_error\": \"skip\" to skip and count such rows, or run `mmalign data check`)"
        )

    def format_hint(self, record: Record) -> Optional[str]:
        """When a record's fields are those of another loader's published layout: a sentence naming that loader."""
        from .detect import format_of_fields

        if not isinstance(record.data, dict):
            return None
        other = format_of_fields(set(record.data), record.data)
        if other is None or other == self.name:
            return None
        return f"The file looks like the '{other}' layout (fields: {', '.join(sorted(record.data)[:8])}): use \"name\": \"{other}\"."

    def _hints(self, skipped: Counter, n_used: int, n_pairs: int, format_hint: Optional[str]) -> list[str]:
        """Sentences that say what is probably wrong when most rows were skipped (``n_used``: records that gave pairs)."""
        hints = []
        if n_pairs == 0 and format_hint:
            hints.append(format_hint)
        missing = skipped.get("missing_image", 0)
        if missing and missing >= n_used:
            found, looked = n_used, n_used + missing
            where = f"image_root {self.config.image_root!r}" if self.config.image_root else "the data folder (image_root is not set)"
            hints.append(f"{found} of {looked} images found: image_root is probably wrong (images were looked for under {where}). "
                         f"{self.where_to_place()}")
        return hints

    def _index(self, folder: Path, ctx: Optional[Context], log: Callable[[str], None]) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f".tmp-{os.getpid()}"
        t0 = time.perf_counter()
        writer = StoreWriter(folder, suffix)
        skipped: Counter = Counter()
        examples: dict[str, list[dict[str, Any]]] = {}
        first_error: Optional[dict[str, Any]] = None
        self._dropped = Counter()
        n_records = 0
        records: Iterable[Record] = iter_records(self.files())
        progress = getattr(ctx, "progress", None)
        if progress is not None:
            records = progress(records, desc=f"indexing {self.name}")
        fail = self.config.on_error == "fail"
        watch: dict[str, Any] = {"missing": [], "bad": {}}
        n_used = n_flagged = 0
        format_hint: Optional[str] = None
        try:
            for rec in records:
                n_records += 1
                self._flags = []
                try:
                    rows = self._rows_of(rec)
                except Skip as skip:
                    skip_of_record: Optional[Skip] = skip
                else:
                    skip_of_record = None
                for reason, detail in self._flags:  # bad data inside a record, whether or not it still gave pairs
                    example = {"where": f"{self._file_label(rec.file)} {rec.where}", "reason": reason, "detail": detail}
                    if fail:
                        raise DataError(self._fail_message(example))
                    first_error = first_error or example
                    n_flagged += 1
                if skip_of_record is not None:
                    skip = skip_of_record
                    where = f"{self._file_label(rec.file)} {rec.where}"
                    example = {"where": where, "reason": skip.reason, "detail": skip.detail}
                    if skip.reason in ("missing_field", "bad_preference") and n_records <= 20:
                        format_hint = format_hint or self.format_hint(rec)
                        if format_hint:
                            example["hint"] = format_hint
                    if len(watch["missing"]) < MAX_WATCHED:
                        watch["missing"] += [p for p in skip.watch.get("missing", []) if p][:8]
                    if len(watch["bad"]) < MAX_WATCHED:
                        watch["bad"].update({p: _stamp(p) for p in skip.watch.get("bad", []) if p})
                    if skip.reason not in POLICY_REASONS:
                        if fail:
                            raise DataError(self._fail_message(example)) from None
                        first_error = first_error or example
                    skipped[skip.reason] += 1
                    bucket = examples.setdefault(skip.reason, [])
                    if len(bucket) < MAX_EXAMPLES:
                        bucket.append(example)
                    continue
                n_used += 1
                for row in rows:
                    writer.add(row)
        except BaseException:
            writer.discard()
            raise
        writer.close()
        # images first: a reader that finds pairs.arrow and build.json also finds matching image bytes
        os.replace(writer.images_path, folder / "images.bin")
        os.replace(writer.pairs_path, folder / "pairs.arrow")
        tmp_watch = folder / f"{WATCH_FILE}.tmp-{os.getpid()}"
        tmp_watch.write_text(json.dumps(watch))
        os.replace(tmp_watch, folder / WATCH_FILE)
        hints = self._hints(skipped, n_used, writer.n, format_hint)
        build = {
            "component": self.name,
            "records": n_records,
            "pairs_available": writer.n,
            "skipped": dict(sorted(skipped.items())),
            "dropped": dict(sorted(self._dropped.items())),
            "skip_examples": examples,
            "errors": sum(n for r, n in skipped.items() if r not in POLICY_REASONS) + n_flagged,
            "first_error": first_error,
            "files": self.file_fingerprints(),
            "index_seconds": round(time.perf_counter() - t0, 3),
            "batch_rows": writer.batch_rows,
            "hints": hints,
        }
        tmp_info = folder / f"build.json.tmp-{os.getpid()}"
        tmp_info.write_text(json.dumps(build, indent=1))
        os.replace(tmp_info, folder / "build.json")
        shown = ", ".join(f"{k} {v}" for k, v in build["skipped"].items()) or "none"
        log(f"{self.name}: indexed {n_records} records into {writer.n} pairs in {build['index_seconds']:.1f}s (skipped: {shown}); cache {folder}")
        for reason, rows in examples.items():
            for ex in rows[:3]:
                log(f"{self.name}:   {reason}: {ex['where']}: {ex['detail'][:300]}")
        for hint in hints:
            log(f"{self.name}: {hint}")
        return {**build, "from_cache": False}

    def _rows_of(self, rec: Record) -> list[dict[str, Any]]:
        if rec.error is not None:
            raise Skip("bad_json", rec.error)
        if not isinstance(rec.data, dict):
            raise Skip("missing_field", f"the record is a JSON {type(rec.data).__name__}, not an object")
        cands = self.convert(rec)
        rows, reasons = [], []
        verified: dict[int, Optional[list[int]]] = {}
        for cand in cands:
            try:
                rows.append(self._finish(cand, rec, verified))
            except Skip as skip:
                reasons.append(skip)
        if not rows:
            if reasons:
                raise reasons[0]
            raise Skip("no_pairs", "the record yields no pair")
        for skip in reasons:
            self.drop(skip.reason)
        return rows

    # --------------------------------------------------------------------------- pairs
    def pairs(self, ctx: Optional[Context] = None) -> PairSequence:
        """The pairs: a lazy sequence read from the index row by row (after the seeded subsample when ``n_pairs`` is set)."""
        if self._seq is None:
            store = self.store(ctx)
            rows = self._subsample(store, ctx)
            self._seq = PairSequence(store, rows, self.name)
        return self._seq

    def _subsample(self, store: Store, ctx: Optional[Context]) -> Optional[list[int]]:
        cfg = self.config
        n = store.n_rows
        self._selection = {"n_pairs": cfg.n_pairs, "seed": cfg.seed, "pairs_available": n}
        if cfg.n_pairs is None or cfg.n_pairs >= n:
            if cfg.n_pairs is not None and cfg.n_pairs > n:
                msg = f"{self.name}: asked for {cfg.n_pairs} pairs but only {n} are available; using all of them"
                self._selection["warning"] = msg
                (getattr(ctx, "log", None) or _log_default)(msg)
            self._selection["pairs"] = n
            return None
        seed = str(cfg.seed).encode()

        def rank(item: tuple[int, str]) -> bytes:
            return hashlib.blake2b(seed + b"\x00" + item[1].encode(), digest_size=8).digest()

        chosen = heapq.nsmallest(cfg.n_pairs, enumerate(store.iter_column("id")), key=rank)
        rows = sorted(r for r, _ in chosen)
        self._selection["pairs"] = len(rows)
        return rows

    def fingerprint(self) -> str:
        """Hash of the data files (size + head/tail sha256 each) and the whole config except locations."""
        payload = {
            "store": STORE_VERSION,
            "component": self.name,
            "files": [{k: f[k] for k in ("size", "sha256_head_tail")} for f in self.file_fingerprints()],
            "config": self.config.model_dump(mode="json", exclude=set(self._location_fields)),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        """What the manifest records: files, counts, skips by reason, the subsample (seed, N) and the cache used."""
        out: dict[str, Any] = {"component": self.name, "fingerprint": self.fingerprint(), "files": self.file_fingerprints()}
        if self._build is not None:
            for k in ("records", "pairs_available", "skipped", "dropped", "index_seconds", "from_cache", "cache", "hints"):
                out[k] = self._build.get(k)
        out.update(self._selection)
        out["seed"] = self.config.seed
        out["n_pairs"] = self.config.n_pairs
        return out

    def skip_examples(self) -> dict[str, list[dict[str, Any]]]:
        """A few examples (file, row, detail) per skip reason, from the last indexing."""
        return dict((self._build or {}).get("skip_examples") or {})

    # ---------------------------------------------------------------------- full check
    def decode_all(self, ctx: Optional[Context] = None, limit_examples: int = MAX_EXAMPLES) -> dict[str, Any]:
        """Decode every image of the pairs in use (after the subsample), as training would: what ``mmalign data check``
        does. Failures are listed, not raised."""
        seq = self.pairs(ctx)
        store = seq.store
        n_images = failures = 0
        examples: list[dict[str, Any]] = []
        rows: Iterable[int] = seq.rows if seq.rows is not None else range(store.n_rows)
        progress = getattr(ctx, "progress", None)
        if progress is not None:
            rows = progress(rows, desc=f"decoding {self.name}", total=len(seq))
        for row in rows:
            for column in ("images", "rejected_images"):
                fields = store.image_fields(row, column) or []
                for span, path in fields:
                    n_images += 1
                    try:
                        decode_image(store.read_bytes(span) if span is not None else None, path, store.max_pixels)
                    except Exception as exc:  # noqa: BLE001
                        failures += 1
                        exc_text = describe_image_error(exc)
                        if len(examples) < limit_examples:
                            meta = json.loads(store.value(row, "meta") or "{}")
                            examples.append(
                                {
                                    "id": store.value(row, "id"),
                                    "where": f"{meta.get('file')} row {meta.get('row')}",
                                    "detail": exc_text + (f" ({path})" if path and span is None else ""),
                                }
                            )
        return {"images": n_images, "failed": failures, "examples": examples}
