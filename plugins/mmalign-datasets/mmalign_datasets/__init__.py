"""mmalign-datasets: published preference datasets as mmalign preference sources.

Every loader reads a local copy in its published layout (or a Hugging Face Hub
id when a network or the Hub cache has it), converts each record to the
canonical :class:`~mmalign_core.types.PreferencePair`, and keeps the result in
an indexed Arrow file read row by row, so memory stays flat as the data set grows.

Importing this package (or :mod:`.plugin`) imports neither torch nor pyarrow.
"""
from __future__ import annotations

__version__ = "0.1.0"
