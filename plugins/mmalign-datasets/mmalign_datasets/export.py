"""Writers for ``mmalign data convert``: the canonical format and TRL's vision preference format.

Output kind follows the suffix of the output path:

* ``.parquet``: image bytes embedded as ``{bytes, path}`` structs, with
  Hugging Face ``datasets`` feature metadata so ``load_dataset("parquet", ...)``
  returns PIL images (``images`` is a ``Sequence(Image())``);
* ``.arrow`` (canonical only): the same columns as an Arrow IPC file;
* ``.jsonl``: one JSON object per line; images become file paths, embedded
  bytes are written to ``<out stem>_images/`` next to the file.

TRL rows are ``{"id", "images", "prompt", "chosen", "rejected"}`` with the
conversational prompt TRL's vision DPO examples use
(``[{"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": ...}]}]``).
``id`` is an extra column (TRL ignores it) that keeps round trips exact.
"""
from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional

from mmalign_core.types import ImageRef, PreferencePair

from .errors import DataError
from .store import canonical_schema, image_raw, image_type

Target = Literal["canonical", "trl"]
_BATCH_ROWS = 128
_BATCH_BYTES = 64 << 20
_VALUE = {"dtype": "string", "_type": "Value"}
_IMAGES = {"feature": {"_type": "Image"}, "_type": "Sequence"}
_MESSAGES = [{"role": _VALUE, "content": [{"type": _VALUE, "text": _VALUE}]}]


def _features(target: Target) -> dict[str, Any]:
    if target == "trl":
        return {"id": _VALUE, "images": _IMAGES, "prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES}
    return {
        "id": _VALUE,
        "prompt": _VALUE,
        "chosen": _VALUE,
        "rejected": _VALUE,
        "images": _IMAGES,
        "rejected_images": _IMAGES,
        "extra_rejected": {"feature": _VALUE, "_type": "Sequence"},
        "source": _VALUE,
        "meta": _VALUE,
    }


def trl_schema() -> Any:
    import pyarrow as pa

    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.list_(pa.struct([("type", pa.string()), ("text", pa.string())])))]))
    return pa.schema([("id", pa.string()), ("images", pa.list_(image_type())), ("prompt", message), ("chosen", message), ("rejected", message)])


def _trl_messages(role: str, text: str, n_images: int = 0) -> list[dict[str, Any]]:
    content = [{"type": "image", "text": None} for _ in range(n_images)] + [{"type": "text", "text": text}]
    return [{"role": role, "content": content}]


def _image_ext(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
    except Exception:  # noqa: BLE001
        return "bin"
    return {"jpeg": "jpg", "": "bin"}.get(fmt, fmt)


class _JsonlImages:
    """Writes embedded image bytes as files beside a JSONL output and returns their relative paths."""

    def __init__(self, out: Path):
        self.folder = out.parent / f"{out.stem}_images"
        self.rel = self.folder.name
        self.n = 0

    def path_for(self, ref: ImageRef, pair_id: str, j: int, side: str) -> str:
        data, path = image_raw(ref)
        if data is None:
            if not path:
                raise DataError(f"pair {pair_id!r}: image {j + 1} has neither bytes nor a path")
            return str(Path(path).resolve())
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id)[:80]
        name = f"{self.n:07d}_{safe}_{side}{j}.{_image_ext(data)}"
        (self.folder / name).write_bytes(data)
        self.n += 1
        return f"{self.rel}/{name}"


def _struct(ref: ImageRef) -> dict[str, Any]:
    data, path = image_raw(ref)
    if data is None and path:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot embed image {path}: {exc.strerror or exc}") from None
    return {"bytes": data, "path": path}


def _row(pair: PreferencePair, target: Target, image: Callable[[ImageRef, int, str], Any], meta_as_text: bool = True) -> dict[str, Any]:
    images = [image(r, j, "") for j, r in enumerate(pair.images)]
    if target == "trl":
        return {
            "id": pair.id,
            "images": images,
            "prompt": _trl_messages("user", pair.prompt, len(pair.images)),
            "chosen": _trl_messages("assistant", pair.chosen),
            "rejected": _trl_messages("assistant", pair.rejected),
        }
    rejected_images = None if pair.rejected_images is None else [image(r, j, "r") for j, r in enumerate(pair.rejected_images)]
    return {
        "id": pair.id,
        "prompt": pair.prompt,
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "images": images,
        "rejected_images": rejected_images,
        "extra_rejected": list(pair.extra_rejected),
        "source": pair.source,
        "meta": json.dumps(pair.meta, ensure_ascii=False, default=str, sort_keys=True) if meta_as_text else pair.meta,
    }


def write_pairs(pairs: Iterable[PreferencePair], out: Path, target: Target, *, progress: Optional[Callable[..., Iterable]] = None) -> dict[str, Any]:
    """Write ``pairs`` to ``out`` in the ``target`` format; returns counts (``pairs``, ``images``, ``not_representable``).

    TRL's format has no place for ``rejected_images`` or ``extra_rejected``;
    pairs that use them are written without and counted in ``not_representable``.
    """
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".arrow"):
        raise DataError(f"{out}: the output must end in .parquet, .jsonl or .arrow")
    if suffix == ".arrow" and target == "trl":
        raise DataError(f"{out}: TRL output is .parquet or .jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"pairs": 0, "images": 0, "not_representable": 0}
    items = progress(pairs, desc=f"writing {out.name}") if progress else pairs
    if suffix == ".jsonl":
        images = _JsonlImages(out)
        if images.folder.exists():
            shutil.rmtree(images.folder)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for pair in items:
                row = _row(pair, target, lambda r, j, side, p=pair: images.path_for(r, p.id, j, side), meta_as_text=False)
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                _count(counts, pair, target)
        tmp.replace(out)
        return counts
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = (trl_schema() if target == "trl" else canonical_schema()).with_metadata(
        {"huggingface": json.dumps({"info": {"features": _features(target)}})}
    )
    tmp = out.with_name(out.name + ".tmp")
    writer: Any = pq.ParquetWriter(str(tmp), schema) if suffix == ".parquet" else pa.ipc.new_file(str(tmp), schema)
    rows: list[dict[str, Any]] = []
    size = 0
    try:
        for pair in items:
            row = _row(pair, target, lambda r, j, side: _struct(r))
            rows.append(row)
            size += sum(len(im["bytes"] or b"") for im in row["images"])
            _count(counts, pair, target)
            if len(rows) >= _BATCH_ROWS or size >= _BATCH_BYTES:
                _write(writer, rows, schema, suffix)
                rows, size = [], 0
        _write(writer, rows, schema, suffix)
    finally:
        writer.close()
    tmp.replace(out)
    return counts


def _write(writer: Any, rows: list[dict[str, Any]], schema: Any, suffix: str) -> None:
    import pyarrow as pa

    if not rows:
        return
    batch = pa.RecordBatch.from_pylist(rows, schema=schema)
    if suffix == ".parquet":
        writer.write_table(pa.Table.from_batches([batch]))
    else:
        writer.write_batch(batch)


def _count(counts: dict[str, int], pair: PreferencePair, target: Target) -> None:
    counts["pairs"] += 1
    counts["images"] += len(pair.images)
    if target == "trl" and (pair.rejected_images is not None or pair.extra_rejected):
        counts["not_representable"] += 1
