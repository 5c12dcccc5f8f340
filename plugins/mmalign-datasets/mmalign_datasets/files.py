"""Finding, fingerprinting and streaming the files of a data set.

Readers yield one record (a dict) at a time and never hold a whole file:

* parquet: ``pyarrow.parquet.ParquetFile.iter_batches`` with buffered page
  reads, a few dozen rows at a time (image bytes included);
* Arrow (IPC file or stream, e.g. a ``save_to_disk`` folder): one record batch
  at a time, sliced into small pieces;
* JSONL: one line at a time; a line that is not JSON becomes a bad record;
* JSON: an incremental parser walks the top-level list (or object) element by
  element, so a 400 MB list costs one element of memory.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from .errors import DataError
from mmalign_core.paths import cache_root

MIB = 1 << 20
DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".ndjson", ".json")
SPLIT_NAMES = ("train", "test", "validation", "valid", "dev", "eval")
_READ_ROWS = 64  # rows per parquet/Arrow read: bounds memory when rows carry images


@dataclass
class Record:
    """One raw record of a data file.

    Attributes:
        file: the file it came from.
        row: its index across all files of the data set (0-based, in file order; pair ids use it).
        data: the parsed record (``None`` when ``error`` is set).
        error: why the record could not be parsed (e.g. a JSONL line that is not JSON).
        file_row: its index within its own file (0-based): what messages show.
        line: its line number in a JSONL file (1-based), else ``None``.
    """

    file: Path
    row: int
    data: Any = None
    error: Optional[str] = None
    file_row: Optional[int] = None
    line: Optional[int] = None

    @property
    def where(self) -> str:
        """``row N`` of its own file, with the line number for JSON lines (without the file name)."""
        n = self.row if self.file_row is None else self.file_row
        return f"row {n}" + (f" (line {self.line})" if self.line is not None else "")


# --------------------------------------------------------------------------- discovery
def file_kind(path: Path) -> str:
    """``parquet``, ``arrow``, ``jsonl`` or ``json`` (by suffix; ``.json`` holding JSON lines counts as ``jsonl``)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".arrow":
        return "arrow"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "jsonl" if _looks_like_jsonl(path) else "json"
    raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(DATA_SUFFIXES)}")


def _looks_like_jsonl(path: Path) -> bool:
    """A ``.json`` file whose first value is followed by another top-level value."""
    with open(path, "rb") as fh:
        head = fh.read(MIB).decode("utf-8", errors="replace")
    text = head.lstrip()
    if not text.startswith("{"):
        return False
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        return False  # the first value is longer than the probe or broken: not a line-per-record file
    return bool(text[end:].strip())  # valid JSON has nothing after its one top-level value


def hf_disk_files(folder: Path, split: str) -> Optional[list[Path]]:
    """The Arrow files of a ``datasets`` ``save_to_disk`` folder (a ``Dataset`` or a ``DatasetDict``), else ``None``."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise DataError(f"{folder}: a DatasetDict with splits {splits}; no split {split!r} (set `split`)")
        folder = folder / split
    state = folder / "state.json"
    if not state.is_file():
        return None
    names = [f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
    return [folder / n for n in names]


def data_files(path: Path, split: str, patterns: Sequence[str] = ()) -> list[Path]:
    """The data files a path stands for, in a fixed order.

    A file is itself. A folder is a ``save_to_disk`` folder, or else every file
    matching ``patterns`` (default: every parquet, Arrow, JSONL and JSON file)
    below it, restricted to ``split`` when the names carry split names
    (``data/train-00000-of-00004.parquet``).
    """
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    disk = hf_disk_files(path, split)
    if disk is not None:
        return disk
    found: list[Path] = []
    for pattern in patterns or tuple(f"*{s}" for s in DATA_SUFFIXES):
        found += [p for p in path.rglob(pattern) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    found = sorted(set(found), key=lambda p: str(p.relative_to(path)))
    named = [p for p in found if _split_of(p.relative_to(path)) is not None]
    if named:
        found = [p for p in found if _split_of(p.relative_to(path)) == split]
        if not found:
            raise DataError(f"{path}: no files of split {split!r} (files are named by split; set `split`)")
    if not found:
        wanted = ", ".join(patterns) if patterns else ", ".join(DATA_SUFFIXES)
        raise DataError(f"{path}: no data files ({wanted}) in this folder")
    return found


def _split_of(rel: Path) -> Optional[str]:
    for part in rel.parts:
        stem = part.split(".")[0].lower()
        for name in SPLIT_NAMES:
            if stem == name or stem.startswith(name + "-") or stem.startswith(name + "_"):
                return name
    return None


# ------------------------------------------------------------------------- fingerprints
def file_fingerprint(path: Path) -> dict[str, Any]:
    """Size and sha256 of the first and last MiB: cheap, content-sensitive, independent of mtime and location."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(MIB))
        if size > MIB:
            fh.seek(max(MIB, size - MIB))
            h.update(fh.read(MIB))
    h.update(str(size).encode())
    return {"size": size, "sha256_head_tail": h.hexdigest()}


def files_fingerprint(files: Sequence[Path], root: Path) -> list[dict[str, Any]]:
    """One fingerprint per file, named relative to ``root`` (the configured path)."""
    out = []
    for f in files:
        try:
            name = str(f.relative_to(root)) if f != root else f.name
        except ValueError:
            name = f.name
        out.append({"file": name, **file_fingerprint(f)})
    return out


# ------------------------------------------------------------------------------ readers
def iter_records(files: Sequence[Path]) -> Iterator[Record]:
    """Every record of ``files`` in order, with its global row index, its row in its own file and (JSONL) its line."""
    row = 0
    for f in files:
        kind = file_kind(f)
        if kind == "jsonl":
            for file_row, (data, error, line) in enumerate(_iter_jsonl_lines(f)):
                yield Record(f, row, data, error, file_row, line)
                row += 1
            continue
        reader = {"parquet": _iter_parquet, "arrow": _iter_arrow, "json": _iter_json}[kind]
        for file_row, (data, error) in enumerate(reader(f)):
            yield Record(f, row, data, error, file_row)
            row += 1


def _iter_parquet(path: Path) -> Iterator[tuple[Any, Optional[str]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(str(path), memory_map=False, buffer_size=MIB, pre_buffer=False)
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure: not a parquet file
        raise DataError(f"{path}: cannot read as parquet: {exc}") from None
    for batch in pf.iter_batches(batch_size=_READ_ROWS):
        for row in batch.to_pylist():
            yield row, None


def open_arrow(path: Path) -> Any:
    """A reader over an Arrow IPC file or stream, batch by batch (``save_to_disk`` writes streams).

    Plain reads, not a memory map: pages of a large file then never count in the process's resident memory.
    """
    import pyarrow as pa

    source = pa.OSFile(str(path), "r")
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            return pa.ipc.open_stream(source)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{path}: not an Arrow IPC file or stream: {exc}") from None


def _arrow_batches(reader: Any) -> Iterator[Any]:
    if hasattr(reader, "num_record_batches"):
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from reader


def _iter_arrow(path: Path) -> Iterator[tuple[Any, Optional[str]]]:
    for batch in _arrow_batches(open_arrow(path)):
        for start in range(0, batch.num_rows, _READ_ROWS):
            for row in batch.slice(start, _READ_ROWS).to_pylist():
                yield row, None


def _iter_jsonl_lines(path: Path) -> Iterator[tuple[Any, Optional[str], int]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                yield json.loads(line), None, lineno
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield None, f"line {lineno} is not valid JSON: {exc}", lineno


def _iter_jsonl(path: Path) -> Iterator[tuple[Any, Optional[str]]]:
    for data, error, _line in _iter_jsonl_lines(path):
        yield data, error


def _iter_json(path: Path) -> Iterator[tuple[Any, Optional[str]]]:
    for key, value in iter_json_top(path):
        if key is not None and isinstance(value, dict):
            yield {"__key__": key, **value}, None
        elif key is not None:
            yield {"__key__": key, "__value__": value}, None
        else:
            yield value, None


def iter_json_top(path: Path, chunk: int = MIB) -> Iterator[tuple[Optional[str], Any]]:
    """The elements of a top-level JSON list as ``(None, value)``, or the members of a top-level object as ``(key, value)``.

    Parses incrementally (``json.JSONDecoder.raw_decode`` on a sliding buffer),
    so memory is bounded by the largest element, not the file.

    Raises:
        DataError: the file is not a JSON list or object, or is malformed (with the byte offset).
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as fh:
        buf = fh.read(chunk)
        pos = 0
        consumed = 0  # characters dropped from the front of buf
        eof = len(buf) < chunk

        def more() -> bool:
            nonlocal buf, pos, consumed, eof
            if eof:
                return False
            data = fh.read(chunk)
            if len(data) < chunk:
                eof = True
            if pos > chunk:
                consumed += pos
                buf, pos = buf[pos:], 0
            buf += data
            return bool(data)

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not more():
                    return

        def fail(what: str) -> DataError:
            return DataError(f"{path}: malformed JSON at character {consumed + pos}: {what}")

        def value() -> Any:
            nonlocal pos
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if more():
                        continue
                    raise fail(exc.msg) from None
                # a number or literal may continue in the next chunk
                if end >= len(buf) and not eof and more():
                    continue
                pos = end
                return obj

        skip_ws()
        if pos >= len(buf):
            raise fail("the file is empty")
        opener = buf[pos]
        if opener not in "[{":
            raise fail("expected a JSON list or object at the top level")
        closer = "]" if opener == "[" else "}"
        pos += 1
        first = True
        while True:
            skip_ws()
            if pos >= len(buf):
                raise fail("the file ends inside the top-level " + ("list" if opener == "[" else "object"))
            if buf[pos] == closer:
                pos += 1
                skip_ws()
                if pos < len(buf):
                    raise fail("unexpected content after the top-level value")
                return
            if not first:
                if buf[pos] != ",":
                    raise fail(f"expected ',' or {closer!r}, found {buf[pos]!r}")
                pos += 1
                skip_ws()
            first = False
            if opener == "[":
                yield None, value()
            else:
                key = value()
                if not isinstance(key, str):
                    raise fail("object keys must be strings")
                skip_ws()
                if pos >= len(buf) or buf[pos] != ":":
                    raise fail("expected ':' after an object key")
                pos += 1
                skip_ws()
                yield key, value()


def peek_record(files: Sequence[Path]) -> Optional[dict[str, Any]]:
    """The first parseable record of ``files`` (for format detection), or ``None``."""
    for rec in iter_records(files):
        if rec.error is None and isinstance(rec.data, dict):
            return rec.data
        if rec.row > 20:
            break
    return None


def columns_of(path: Path) -> Optional[list[str]]:
    """Column names of a parquet or Arrow file without reading rows (``None`` for JSON)."""
    kind = file_kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(str(path)).names)
    if kind == "arrow":
        return list(open_arrow(path).schema.names)
    return None


def default_cache_root() -> Path:
    """The run cache the runner uses (``MMALIGN_CACHE`` or ``~/.cache/mmalign``)."""
    return cache_root()
