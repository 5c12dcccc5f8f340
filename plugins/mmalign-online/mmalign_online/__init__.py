"""mmalign-online: online-DPO and mixed-DPO preference sources and the judges that rank policy samples.

Components (entry point ``online``):

- preference sources ``online-dpo`` and ``mixed-dpo`` (:mod:`mmalign_online.source`);
- judges ``vlm-judge``, ``shapes-oracle`` (:mod:`mmalign_online.judges`), ``reward-model``
  (:mod:`mmalign_online.reward`) and ``openai-compatible`` (:mod:`mmalign_online.openai_judge`).

Importing this package (and its ``plugin`` module) imports no torch.
"""
from __future__ import annotations

__version__ = "0.1.0"
