"""Bias-Driven Hallucination Sampling (BDHS) and POVID-style distortion for mmalign (plugin ``bdhs``).

Components: the preference sources ``bdhs`` (offline, cached on disk), ``bdhs-online`` (regenerated
with the current policy every step) and ``povid-distortion``; the loss ``povid-dpo``; the sentence
embedders ``minilm``, ``sentence-transformers`` and ``bag-of-words``. See ``docs/bdhs.md``.

Importing this package (and :mod:`mmalign_bdhs.plugin`, :mod:`mmalign_bdhs.config`,
:mod:`mmalign_bdhs.text`) imports no torch.
"""
__version__ = "0.1.0"
