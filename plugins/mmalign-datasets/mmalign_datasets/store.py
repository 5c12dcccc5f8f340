"""The canonical pair store: pairs indexed once, read back one row at a time.

Each loader converts its records into canonical rows and writes them here
once, as two files in a cache folder:

* ``pairs.arrow``: an Arrow IPC file of small record batches (64 rows) with the
  text columns and, per image, a path or an ``(offset, length)`` into
* ``images.bin``: the encoded image bytes, back to back.

:class:`PairSequence` is the lazy ``collections.abc.Sequence`` the runner
indexes: ``seq[i]`` reads the one small batch that holds row ``i`` (the last
one is kept) and builds one :class:`~mmalign_core.types.PreferencePair`; its
images are :class:`~mmalign_core.types.ImageRef` objects whose bytes are read
with one ``pread`` only when ``load()`` is called. Both files are read with
plain reads rather than a memory map, so pages of the data set never count in
the process's resident memory: it stays flat whatever the size of the set and
the access pattern. What grows with the rows is the list of batch offsets
(8 bytes per 64 rows) and the selected row indices of a subsample.
"""
from __future__ import annotations

import bisect
import io
import json
import os
import re
from array import array
from collections import abc
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union, overload

from mmalign_core.types import ImageRef, PreferencePair

from .errors import DataError

#: Version of the canonical store layout; part of every cache key and fingerprint.
STORE_VERSION = 2  # 2: meta rows count within their own file (and JSONL lines); image size limit
_BATCH_ROWS = 64
_BATCH_BYTES = 4 << 20


def image_type() -> Any:
    import pyarrow as pa

    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def canonical_schema() -> Any:
    """Columns of the canonical format (parquet/Arrow files and the store).

    ``images`` and ``rejected_images`` are lists of ``{bytes, path}`` structs
    (the Hugging Face ``Image`` layout): encoded bytes, or a path when the
    bytes are not embedded. ``rejected_images`` is null unless the rejected
    answer goes with other images. ``meta`` is a JSON object as a string.
    """
    import pyarrow as pa

    img = pa.list_(image_type())
    return pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            ("images", img),
            ("rejected_images", img),
            ("extra_rejected", pa.list_(pa.string())),
            ("source", pa.string()),
            ("meta", pa.string()),
        ]
    )


CANONICAL_COLUMNS = ("id", "prompt", "chosen", "rejected", "images", "rejected_images", "extra_rejected", "source", "meta")


# -------------------------------------------------------------------------------- writer
def store_schema() -> Any:
    """The store's own layout: :func:`canonical_schema` with images as ``{path, offset, length}`` into ``images.bin``."""
    import pyarrow as pa

    ref = pa.list_(pa.struct([("path", pa.string()), ("offset", pa.int64()), ("length", pa.int64())]))
    fields = [pa.field(f.name, ref) if f.name in ("images", "rejected_images") else f for f in canonical_schema()]
    return pa.schema(fields)


class StoreWriter:
    """Appends canonical rows to ``pairs.arrow`` (small batches) and their image bytes to ``images.bin``."""

    def __init__(self, folder: Path, suffix: str = ""):
        import pyarrow as pa

        self.folder = folder
        self.pairs_path = folder / f"pairs.arrow{suffix}"
        self.images_path = folder / f"images.bin{suffix}"
        self.batch_rows: list[int] = []
        self._schema = store_schema()
        self._sink = pa.OSFile(str(self.pairs_path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self._schema)
        self._blob = open(self.images_path, "wb")
        self._offset = 0
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self.n = 0

    def _refs(self, images: Optional[list[dict[str, Any]]]) -> Optional[list[dict[str, Any]]]:
        if images is None:
            return None
        out = []
        for im in images:
            data = im.get("bytes")
            if data:
                self._blob.write(data)
                out.append({"path": im.get("path"), "offset": self._offset, "length": len(data)})
                self._offset += len(data)
            else:
                out.append({"path": im.get("path"), "offset": None, "length": None})
        return out

    def add(self, row: dict[str, Any]) -> None:
        row = dict(row)
        row["images"] = self._refs(row["images"]) or []
        row["rejected_images"] = self._refs(row.get("rejected_images"))
        self._rows.append(row)
        self._bytes += sum(len(row[k] or "") for k in ("prompt", "chosen", "rejected", "meta"))
        self.n += 1
        if len(self._rows) >= _BATCH_ROWS or self._bytes >= _BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        self._writer.write_batch(pa.RecordBatch.from_pylist(self._rows, schema=self._schema))
        self.batch_rows.append(len(self._rows))
        self._rows, self._bytes = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()
        self._blob.close()

    def discard(self) -> None:
        for closer in (self._writer.close, self._sink.close, self._blob.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort on an aborted build
                pass
        self.pairs_path.unlink(missing_ok=True)
        self.images_path.unlink(missing_ok=True)


# -------------------------------------------------------------------------------- reader
class Store:
    """A store opened for reading: batches and image bytes are read on demand (no memory map)."""

    def __init__(self, folder: Path, label: str = "", batch_rows: Optional[Sequence[int]] = None, max_pixels: Optional[int] = None):
        #: Largest image decoded (width x height); a larger one fails with a message instead of taking the memory.
        self.max_pixels = max_pixels
        self._open(folder, label, batch_rows)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its folder (data-loader workers reopen the files)."""
        return {"folder": self.folder, "label": self.label, "batch_rows": self._batch_rows, "max_pixels": self.max_pixels}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_pixels = state.get("max_pixels")
        self._open(state["folder"], state["label"], state.get("batch_rows"))

    def _open(self, folder: Path, label: str, batch_rows: Optional[Sequence[int]] = None) -> None:
        import pyarrow as pa

        self.folder = folder
        self.path = folder / "pairs.arrow"
        self.label = label or folder.name
        self._reader = pa.ipc.open_file(pa.OSFile(str(self.path), "r"))
        self._fd = os.open(folder / "images.bin", os.O_RDONLY)
        n_batches = self._reader.num_record_batches
        if batch_rows is None or len(batch_rows) != n_batches:  # not recorded: count (reads every batch once)
            batch_rows = [self._reader.get_batch(i).num_rows for i in range(n_batches)]
        self._batch_rows = list(batch_rows)
        self._starts: list[int] = []
        total = 0
        for rows in self._batch_rows:
            self._starts.append(total)
            total += rows
        self.n_rows = total
        self._cached: tuple[int, Any] = (-1, None)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _locate(self, row: int) -> tuple[Any, int]:
        if not 0 <= row < self.n_rows:
            raise IndexError(row)
        b = bisect.bisect_right(self._starts, row) - 1
        cached = self._cached
        if cached[0] != b:
            cached = (b, self._reader.get_batch(b))
            self._cached = cached
        return cached[1], row - self._starts[b]

    def value(self, row: int, column: str) -> Any:
        batch, off = self._locate(row)
        return batch.column(column)[off].as_py()

    def image_fields(self, row: int, column: str) -> Optional[list[tuple[Optional[tuple[int, int]], Optional[str]]]]:
        """``((offset, length) or None, path)`` per image of a row (``None`` for a null list)."""
        refs = self.value(row, column)
        if refs is None:
            return None
        return [((r["offset"], r["length"]) if r["length"] is not None else None, r["path"]) for r in refs]

    def read_bytes(self, span: tuple[int, int]) -> bytes:
        offset, length = span
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise OSError(f"{self.folder / 'images.bin'} is truncated (wanted {length} bytes at {offset})")
        return data

    def iter_column(self, column: str) -> Iterable[Any]:
        """Every value of one column, batch by batch."""
        for i in range(self._reader.num_record_batches):
            yield from self._reader.get_batch(i).column(column).to_pylist()

    def pair(self, row: int, source: str) -> PreferencePair:
        batch, off = self._locate(row)
        get = lambda name: batch.column(name)[off].as_py()  # noqa: E731
        meta = json.loads(get("meta") or "{}")
        pair_id = get("id")
        images = self._image_refs(row, "images", pair_id, meta)
        rejected_images = self._image_refs(row, "rejected_images", pair_id, meta)
        return PreferencePair(
            id=pair_id,
            prompt=get("prompt"),
            chosen=get("chosen"),
            rejected=get("rejected"),
            images=images or [],
            rejected_images=rejected_images,
            extra_rejected=get("extra_rejected") or [],
            source=get("source") or source,
            meta=meta,
        )

    def _image_refs(self, row: int, column: str, pair_id: str, meta: dict[str, Any]) -> Optional[list[ImageRef]]:
        fields = self.image_fields(row, column)
        if fields is None:
            return None
        refs = []
        for j, (span, path) in enumerate(fields):
            lazy = LazyImage(self, span, path, pair_id, j, where(meta))
            refs.append(ImageRef(lazy, key=lazy.key))
        return refs


def where(meta: dict[str, Any]) -> str:
    """``file row N`` of a pair's origin, from its meta."""
    origin = meta.get("file")
    row = meta.get("row")
    if origin is None:
        return ""
    return f"{origin} row {row}" if row is not None else str(origin)


class LazyImage:
    """A zero-argument callable for :class:`ImageRef`: reads and decodes one image only when called.

    A failure raises :class:`~mmalign_datasets.errors.DataError` naming the
    data set, the pair, and the file and row it came from.
    """

    __slots__ = ("store", "span", "path", "pair_id", "j", "origin")

    def __init__(self, store: Store, span: Optional[tuple[int, int]], path: Optional[str], pair_id: str, j: int, origin: str):
        self.store, self.span, self.path = store, span, path
        self.pair_id, self.j, self.origin = pair_id, j, origin

    @property
    def key(self) -> str:
        """A stable identity: the image file for path images, else the (content-keyed) store and the bytes' place in it."""
        if self.span is None and self.path:
            return f"path:{self.path}"
        return f"{self.store.folder.name}:{self.span[0] if self.span else 'none'}"

    def raw(self) -> tuple[Optional[bytes], Optional[str]]:
        """The encoded bytes (or ``None``) and the path (or ``None``), undecoded."""
        data = self.store.read_bytes(self.span) if self.span is not None else None
        return data, self.path

    def __call__(self) -> Any:
        data: Optional[bytes] = None
        try:
            data, path = self.raw()
            return decode_image(data, path, self.store.max_pixels)
        except Exception as exc:  # noqa: BLE001 - any decoder failure: name the row
            what = f"image {self.j + 1} of pair {self.pair_id!r}"
            if self.origin:
                what += f" ({self.origin})"
            if self.path and not data:
                what += f", file {self.path}"
            detail = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc))
            raise DataError(
                f"{self.store.label}: {what} cannot be loaded: {type(exc).__name__}: {detail}. "
                "`mmalign data check` finds such rows up front; `verify_images: \"decode\"` skips them while indexing."
            ) from exc


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the limit (it is not decoded)."""


def decode_image(data: Optional[bytes], path: Optional[str], max_pixels: Optional[int] = None) -> Any:
    """Decode encoded bytes, or else the file at ``path``, to an RGB PIL image.

    Raises:
        ImageTooLarge: the header declares more than ``max_pixels`` pixels (checked before decoding).
    """
    from PIL import Image

    if not data and not path:
        raise ValueError("the image has neither bytes nor a path")
    with (Image.open(io.BytesIO(data)) if data else Image.open(path)) as im:
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise ImageTooLarge(f"{im.width}x{im.height} = {im.width * im.height:,} pixels, over max_image_pixels {max_pixels:,}")
        return im.convert("RGB")


def image_raw(ref: ImageRef) -> tuple[Optional[bytes], Optional[str]]:
    """Encoded bytes and/or path behind any ImageRef (PIL images and other callables are encoded as PNG)."""
    src = ref.source
    if isinstance(src, LazyImage):
        return src.raw()
    if isinstance(src, (bytes, bytearray)):
        return bytes(src), None
    if isinstance(src, (str, os.PathLike)):
        return None, str(src)
    buf = io.BytesIO()
    ref.load().save(buf, format="PNG")
    return buf.getvalue(), None


# ------------------------------------------------------------------------------ sequence
class PairSequence(abc.Sequence):
    """The pairs of a store (optionally a selection of its rows), built one at a time on indexing."""

    def __init__(self, store: Store, rows: Optional[Sequence[int]], source: str):
        self.store = store
        self.rows = array("q", rows) if rows is not None else None
        self.source = source

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else self.store.n_rows

    def row_of(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        return self.rows[i] if self.rows is not None else i

    @overload
    def __getitem__(self, i: int) -> PreferencePair: ...

    @overload
    def __getitem__(self, i: slice) -> list[PreferencePair]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[PreferencePair, list[PreferencePair]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.store.pair(self.row_of(i), self.source)

    def __repr__(self) -> str:
        return f"PairSequence({self.source}, {len(self)} pairs, {self.store.folder})"
