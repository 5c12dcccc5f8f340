"""Shared machinery of the benchmark evaluators: data files, sample selection, batched generation, details.

Nothing here imports torch. Evaluators only call the model protocol
(``generate``), in batches, inside ``ctx.progress``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from mmalign_core.errors import MmalignError
from mmalign_core.protocols import Context, GenerativeModel
from mmalign_core.types import GenerationRequest, ImageRef

from .config import BenchmarkConfig
from mmalign_core.paths import cache_root

#: Environment variable naming the folder that holds one sub-folder per benchmark.
DATA_ENV = "MMALIGN_DATA"
_IMAGE_FILE = re.compile(r"\.(jpe?g|png|bmp|gif|webp|tiff?)$", re.IGNORECASE)


class BenchmarkDataError(MmalignError, FileNotFoundError):
    """Benchmark files are missing or not in a layout the evaluator reads (the CLI prints it without a traceback)."""


class MissingJudgeError(MmalignError, ValueError):
    """A judge-scored evaluator was configured without a judge."""


# ------------------------------------------------------------------------------ data files
def data_root(configured: Optional[str], folder: str, ctx: Optional[Context]) -> Path:
    """The benchmark's data folder: ``configured``, else ``$MMALIGN_DATA/<folder>``, else ``<cache>/data/<folder>``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser() / folder
    cache = Path(ctx.cache_dir) if ctx is not None else cache_root()
    return cache / "data" / folder


def missing_data(benchmark: str, root: Path, wanted: Sequence[str], source: str, extra: str = "") -> BenchmarkDataError:
    """An error naming the files that were looked for, where, and where to get them."""
    where = f"{root}" + ("" if root.exists() else " (the folder does not exist)")
    lines = [
        f"{benchmark}: benchmark data not found in {where}.",
        "Expected one of these layouts:",
        *[f"  - {w}" for w in wanted],
        f"Get the files from {source} and put them there, or set the evaluator's config.data_dir "
        f"(or ${DATA_ENV}=<folder holding one sub-folder per benchmark>).",
    ]
    if extra:
        lines.append(extra)
    return BenchmarkDataError("\n".join(lines))


def find_files(root: Path, patterns: Sequence[str]) -> list[Path]:
    """Files under ``root`` matching any glob pattern (recursive ``**`` allowed), sorted, without duplicates."""
    found: dict[Path, None] = {}
    if root.is_dir():
        for pattern in patterns:
            for path in sorted(root.glob(pattern)):
                if path.is_file():
                    found[path] = None
    return list(found)


def parquet_columns(path: Path) -> list[str]:
    """Column names of a parquet file (its schema only; no data is read)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file
        raise BenchmarkDataError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None


def parquet_with(root: Path, required: Sequence[str]) -> list[Path]:
    """The parquet files under ``root`` that have every column in ``required`` (others belong to other data)."""
    files = find_files(root, ["*.parquet", "**/*.parquet"])
    return [f for f in files if set(required) <= set(parquet_columns(f))]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkDataError(f"{path}: not valid JSON ({exc})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines; a file holding one JSON list is accepted too."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return read_json(path)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BenchmarkDataError(f"{path}, line {n}: not valid JSON ({exc})") from None
    return rows


@dataclass
class ParquetRow:
    """One row of a parquet file; image cells are decoded from the table only when asked for."""

    values: dict[str, Any]
    file: Path
    _table: Any = field(repr=False, default=None)
    _index: int = -1

    def cell(self, column: str) -> Any:
        return self._table.column(column)[self._index].as_py()


def read_parquet(files: Sequence[Path], lazy_columns: Iterable[str] = ("image",)) -> list[ParquetRow]:
    """Rows of parquet files (pyarrow). ``lazy_columns`` (image bytes) stay in the table until :meth:`ParquetRow.cell`."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise BenchmarkDataError(f"reading parquet files needs pyarrow ({exc}); pip install pyarrow") from None
    lazy = set(lazy_columns)
    rows: list[ParquetRow] = []
    for path in files:
        try:
            table = pq.read_table(path, memory_map=True)
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file
            raise BenchmarkDataError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None
        eager = [c for c in table.column_names if c not in lazy]
        columns = {c: table.column(c).to_pylist() for c in eager}
        for i in range(table.num_rows):
            rows.append(ParquetRow({c: columns[c][i] for c in eager}, path, table, i))
    return rows


class CellImage(ImageRef):
    """An image stored in a parquet cell, read from the (memory-mapped) table only when needed.

    Its key is the sha1 of the encoded bytes, like an :class:`ImageRef` made from bytes, so caches
    keyed by images do not depend on where the file lives.
    """

    __slots__ = ("_row", "_column", "_what")

    def __init__(self, row: ParquetRow, column: str, what: str = "image"):
        super().__init__(b"")
        self._row, self._column, self._what = row, column, what

    def _ref(self) -> ImageRef:
        return image_ref(self._row.cell(self._column), base=self._row.file.parent, what=self._what)

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self._ref().key
        return self._key

    @property
    def source(self) -> Any:
        return self._ref().source

    def load(self) -> Any:
        return self._ref().load()

    def __repr__(self) -> str:
        return f"CellImage({self._row.file.name}#{self._row._index}:{self._column})"


def image_ref(cell: Any, *, base: Optional[Path] = None, what: str = "image") -> ImageRef:
    """An :class:`ImageRef` from a data cell: ``{"bytes", "path"}`` (Hugging Face image feature), raw bytes,
    a base64 string, or a file name resolved against ``base``."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return ImageRef(bytes(cell["bytes"]))
        if cell.get("path"):
            return image_ref(cell["path"], base=base, what=what)
        raise BenchmarkDataError(f"{what}: an image cell holds neither bytes nor a path")
    if isinstance(cell, (bytes, bytearray)):
        return ImageRef(bytes(cell))
    if isinstance(cell, str):
        if len(cell) >= 64 and not _IMAGE_FILE.search(cell[-8:]) and "/" not in cell[:64].rstrip("="):
            # Not a file name: base64-encoded image bytes (e.g. RLHF-V's Object HalBench lines).
            try:
                return ImageRef(base64.b64decode(cell, validate=True))
            except (binascii.Error, ValueError):
                if len(cell) > 1024:
                    raise BenchmarkDataError(f"{what}: a long image string that is neither a file name nor base64") from None
        path = Path(cell)
        if not path.is_absolute() and base is not None:
            candidates = [base / cell, base / path.name]
            path = next((p for p in candidates if p.is_file()), candidates[0])
        if path.is_file():
            return ImageRef(path.resolve())
        raise BenchmarkDataError(f"{what}: image file not found: {path}")
    raise BenchmarkDataError(f"{what}: cannot read an image from a {type(cell).__name__}")


def first_dir(*candidates: Path) -> Path:
    """The first existing folder among ``candidates`` (else the first one, for the error message)."""
    return next((c for c in candidates if c.is_dir()), candidates[0])


# ---------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One benchmark item: a stable ``id``, its fields and its images."""

    id: str
    fields: dict[str, Any]
    images: list[ImageRef] = field(default_factory=list)


def wanted_ids(config: BenchmarkConfig) -> Optional[list[str]]:
    """The ids named by ``ids`` and ``ids_file`` (``None`` when neither is set)."""
    if config.ids is None and config.ids_file is None:
        return None
    ids = list(config.ids or [])
    if config.ids_file:
        path = Path(config.ids_file).expanduser()
        if not path.is_file():
            raise BenchmarkDataError(f"ids_file not found: {path}")
        ids += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return ids


def select(samples: Sequence[Sample], config: BenchmarkConfig, benchmark: str, *, group: Optional[Callable[[Sample], str]] = None) -> list[Sample]:
    """Apply ``ids``/``ids_file`` then ``limit`` (per group when ``group`` is given, e.g. per POPE split)."""
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise BenchmarkDataError(f"{benchmark}: the data holds the sample id {s.id!r} twice")
        seen.add(s.id)
    chosen = list(samples)
    ids = wanted_ids(config)
    if ids is not None:
        unknown = [i for i in ids if i not in seen]
        if unknown:
            shown = ", ".join(map(repr, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise BenchmarkDataError(f"{benchmark}: ids not in the data: {shown} (ids look like {next(iter(seen), '?')!r})")
        keep = set(ids)
        chosen = [s for s in chosen if s.id in keep]
    if config.limit is not None:
        if group is None:
            chosen = chosen[: config.limit]
        else:
            counts: dict[str, int] = {}
            kept = []
            for s in chosen:
                g = group(s)
                if counts.get(g, 0) < config.limit:
                    counts[g] = counts.get(g, 0) + 1
                    kept.append(s)
            chosen = kept
    if not chosen:
        raise BenchmarkDataError(f"{benchmark}: no samples left to evaluate after 'ids'/'limit'")
    return chosen


def sample_details(samples: Sequence[Sample]) -> dict[str, Any]:
    """The evaluated sample list for ``details``: ids in order and their sha256."""
    ids = [s.id for s in samples]
    return {"n_samples": len(ids), "sample_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(), "sample_ids": ids}


# -------------------------------------------------------------------------- generation
def decoding(config: BenchmarkConfig) -> dict[str, Any]:
    """The decoding settings as recorded in ``details.decoding``."""
    out: dict[str, Any] = {
        "max_new_tokens": getattr(config, "max_new_tokens", None),
        "do_sample": config.do_sample,
        "batch_size": config.batch_size,
    }
    if config.do_sample:
        out.update(temperature=config.temperature, top_p=config.top_p)
    else:
        out["strategy"] = "greedy"
    return out


def generate(
    model: GenerativeModel, requests: Sequence[GenerationRequest], config: BenchmarkConfig, ctx: Context, desc: str
) -> list[str]:
    """Answer every request in batches of ``config.batch_size``, under a progress bar counting samples."""
    out: list[str] = []
    buffer: list[GenerationRequest] = []

    def flush() -> None:
        answers = model.generate(
            list(buffer),
            max_new_tokens=config.max_new_tokens,  # type: ignore[attr-defined]
            do_sample=config.do_sample,
            temperature=config.temperature,
            top_p=config.top_p,
            batch_size=config.batch_size,
        )
        answers = list(answers)
        if len(answers) != len(buffer):
            raise RuntimeError(f"{desc}: the model returned {len(answers)} answers for {len(buffer)} requests")
        for a in answers:
            if not isinstance(a, str):
                raise TypeError(f"{desc}: the model returned a {type(a).__name__}, not str")
        out.extend(answers)
        buffer.clear()

    for request in ctx.progress(requests, desc=f"{desc}: generating", total=len(requests)):
        buffer.append(request)
        if len(buffer) >= config.batch_size:
            flush()
    if buffer:
        flush()
    return out


def render(template: str, **values: Any) -> str:
    """``template.format(**values)`` (the templates were checked at validation)."""
    return template.format(**values)


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


__all__ = [
    "DATA_ENV",
    "BenchmarkDataError",
    "MissingJudgeError",
    "Sample",
    "data_root",
    "missing_data",
    "find_files",
    "read_json",
    "read_jsonl",
    "read_parquet",
    "parquet_columns",
    "parquet_with",
    "image_ref",
    "CellImage",
    "ParquetRow",
    "first_dir",
    "select",
    "sample_details",
    "decoding",
    "generate",
    "render",
    "mean",
]
