"""Persistence: saving weights (or adapters) with the processor, loading them back, and the weight fingerprint
that keys the reference cache."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch


class Persistence:
    """Saving, loading and fingerprinting (a part of :class:`~mmalign_hf.model.HFVisionLanguageModel`)."""

    model: Any
    processor: Any
    name_or_path: str

    def save_pretrained(self, path: Path | str) -> None:
        """Model (or adapter) and processor, loadable with plain transformers / peft."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    def mark_saved(self, path: Path | str) -> None:
        """Record ``path`` as where these weights live now, so adapters of a later LoRA stage name it
        (not the original checkpoint) as their base model."""
        self.name_or_path = str(path)
        if not self.is_peft:
            self.model.config._name_or_path = str(path)

    def load_checkpoint(self, path: Path | str) -> None:
        """Load weights saved by :meth:`save_pretrained` into this (identically structured) model."""
        path = Path(path)
        if self.is_peft:
            import peft
            from safetensors.torch import load_file

            state = load_file(str(path / "adapter_model.safetensors"))
            peft.set_peft_model_state_dict(self.model, state)
            return
        # transformers may store weights under a different key layout than the module uses
        # (e.g. LLaVA's original names) and converts on load, so load through from_pretrained.
        dtype = next(self.model.parameters()).dtype
        fresh = type(self.model).from_pretrained(str(path), dtype=dtype)
        self.model.load_state_dict(fresh.state_dict())
        del fresh

    def fingerprint(self) -> str:
        """A cheap but weight-sensitive digest: per tensor its shape, sum and a strided sample of 64 values.

        Sums are reduced where the weights live and only the samples are copied to the CPU, so a
        large model on a GPU is not copied to host memory (the runner calls this at every run start).
        """
        h = hashlib.sha256()
        with torch.no_grad():
            for name, p in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                flat = p.detach().reshape(-1)
                total = float(flat.sum(dtype=torch.float64))
                sample = flat[:: max(1, flat.numel() // 64)].to("cpu", torch.float32)
                h.update(str((tuple(p.shape), round(total, 6))).encode())
                h.update(sample.numpy().tobytes())
        h.update(json.dumps(self.processor.to_dict() if hasattr(self.processor, "to_dict") else {}, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]
