"""Which loader reads a path: inferred from its layout (file names, columns, the first record's fields)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .errors import DataError
from .files import columns_of, data_files, peek_record

#: Loaders in the order the rules below try them.
FORMATS = ("povid", "rlhf-v", "rlaif-v", "vlfeedback", "llava-rlhf", "hadpo", "local")


def format_of_fields(fields: set[str], record: Optional[dict[str, Any]] = None) -> Optional[str]:
    """The loader whose published schema has these top-level fields, or ``None``."""
    if "rejected_conversations" in fields:
        return "povid"
    if {"output_1", "output_2", "preference"} <= fields:
        return "llava-rlhf"
    if "completions" in fields and "prompt" in fields:
        return "vlfeedback"
    if "text" in fields and "image" in fields and "question" not in fields:
        return "rlhf-v"
    if {"question", "chosen", "rejected", "image"} <= fields:
        return "rlaif-v"
    if {"prompt", "chosen", "rejected"} <= fields:
        return "local"
    if {"chosen", "rejected"} <= fields and ({"__key__", "image_id"} & fields or "question" in fields):
        return "hadpo"
    return None


def detect_format(path: Path, split: str = "train") -> str:
    """Name of the loader for ``path`` (a file or folder in a published layout).

    Raises:
        DataError: nothing matched; the message lists the fields seen and the ``--format`` choices.
    """
    from .loaders import LOADERS

    path = Path(path)
    if path.is_dir() and (any(path.rglob("desc_data.json"))):
        return "hadpo"
    if path.is_file() and path.name in ("desc_data.json", "pope_data.json"):
        return "hadpo"
    for name, loader in LOADERS.items():  # a published file name decides
        for published in loader.preferred_files:
            if (path.is_file() and path.name == published) or (path.is_dir() and any(path.rglob(published))):
                return name
    files = data_files(path, split)
    fields: set[str] = set()
    columns = columns_of(files[0])
    record = None
    if columns is not None:
        fields = set(columns)
    else:
        record = peek_record(files[:1])
        if record is not None:
            fields = set(record)
    found = format_of_fields(fields, record)
    if found is None:
        shown = ", ".join(sorted(fields)[:12]) or "none readable"
        raise DataError(
            f"{path}: cannot tell which data set this is (fields: {shown}); pass --format with one of: {', '.join(FORMATS)}"
        )
    return found
