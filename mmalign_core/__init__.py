"""mmalign core: hook specs, plugin manager, run specs, runner and CLI.

Importing this package never imports torch or transformers.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .config import ComponentConfig
from .entries import (EmbedderEntry, EvaluatorEntry, JudgeEntry, LossEntry, ModelEntry, RewardEntry, RLAlgorithmEntry, SourceEntry,
                      TrackerEntry)
from .hookspecs import hookimpl
from .refs import NestedComponent
from .types import EvalResult, GenerationRequest, ImageRef, PreferencePair, SFTExample

__all__ = [
    "NestedComponent",
    "__version__",
    "hookimpl",
    "ComponentConfig",
    "ModelEntry",
    "SourceEntry",
    "LossEntry",
    "EvaluatorEntry",
    "JudgeEntry",
    "EmbedderEntry",
    "RewardEntry",
    "RLAlgorithmEntry",
    "TrackerEntry",
    "PreferencePair",
    "SFTExample",
    "ImageRef",
    "GenerationRequest",
    "EvalResult",
]
