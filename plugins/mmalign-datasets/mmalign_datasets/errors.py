"""Errors of the data loaders (all are :class:`~mmalign_core.errors.MmalignError`: message, no traceback)."""
from __future__ import annotations

from typing import Optional

from mmalign_core.errors import MmalignError


class DataError(MmalignError):
    """A data set cannot be found or read, a row fails under ``on_error: fail``, or an image fails to decode."""

    exit_code = 2


class Skip(Exception):
    """Raised by a record converter: this record (or candidate pair) is not usable.

    Attributes:
        reason: a short snake_case key counted in ``stats()["skipped"]`` (e.g. ``missing_image``).
        detail: a human-readable explanation for error messages and ``mmalign data check``.
        watch: image files the skip depends on (a missing file that may appear, a bad one that may be replaced):
            a cached index whose watched files changed is rebuilt.
    """

    def __init__(self, reason: str, detail: str = "", watch: Optional[dict[str, list[str]]] = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        #: Files whose appearance or change would make this skip stale: ``{"missing": [paths], "bad": [paths]}``.
        self.watch = watch or {}
