"""Reference log-probs computed once and cached on disk.

DPO-style losses need log pi_ref(y|x) for every pair, and the reference never
changes during a stage. Computing it once (one no-grad pass) removes the
reference forward from every later step and every later run with the same
key, and the reference model need not be held in memory at all.

The key covers everything the numbers depend on: the reference weights and
processor settings (``model.fingerprint()``), the data (source fingerprint and
the ids of the examples in order), and the shape of what is scored (rejected,
number of extra rejected answers).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..lazy_import import torch_on_first_use

if TYPE_CHECKING:  # pragma: no cover
    import torch
else:
    torch = torch_on_first_use(globals())  # imported at first use, inside a run: the core imports no torch

from ..protocols import PairLogps

FORMAT = 1


def cache_key(model_fingerprint: str, data_fingerprint: str | None, examples: Sequence[Any], with_rejected: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "model": model_fingerprint, "data": data_fingerprint, "rejected": with_rejected}).encode())
    for ex in examples:
        h.update(str(ex.id).encode())
        h.update(b"\0")
        h.update(str(len(getattr(ex, "extra_rejected", ()) or ())).encode())
    return h.hexdigest()[:32]


class ReferenceCache:
    """Per-example reference log-prob sums and token counts, indexed by position in the stage's data."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.t = tensors

    def batch(self, idx: Sequence[int]) -> PairLogps:
        i = torch.as_tensor(list(idx), dtype=torch.long)
        n_extra = sum(1 for k in self.t if k.startswith("extra_rejected_") and not k.endswith("_tokens"))
        return PairLogps(
            chosen=self.t["chosen"][i],
            rejected=self.t["rejected"][i] if "rejected" in self.t else None,
            chosen_tokens=self.t["chosen_tokens"][i],
            rejected_tokens=self.t["rejected_tokens"][i] if "rejected_tokens" in self.t else None,
            extra_rejected=[self.t[f"extra_rejected_{k}"][i] for k in range(n_extra)],
            extra_rejected_tokens=[self.t[f"extra_rejected_{k}_tokens"][i] for k in range(n_extra)],
        )


def _collect(parts: list[PairLogps]) -> dict[str, torch.Tensor]:
    out: dict[str, list[torch.Tensor]] = {}
    for p in parts:
        fields = {"chosen": p.chosen, "chosen_tokens": p.chosen_tokens, "rejected": p.rejected, "rejected_tokens": p.rejected_tokens}
        for k, (v, t) in enumerate(zip(p.extra_rejected, p.extra_rejected_tokens)):
            fields[f"extra_rejected_{k}"] = v
            fields[f"extra_rejected_{k}_tokens"] = t
        for name, v in fields.items():
            if v is not None:
                out.setdefault(name, []).append(v.detach().to("cpu", torch.float64 if v.is_floating_point() else torch.long))
    return {k: torch.cat(v) for k, v in out.items()}


def load_or_compute(
    *,
    key: str,
    cache_dir: Path,
    examples: Sequence[Any],
    reference_fn: Callable[[], Any],
    batch_size: int,
    with_rejected: bool,
    progress: Callable[..., Any],
    log: Callable[[str], None],
) -> tuple[ReferenceCache, bool]:
    """Return the cache and whether it was a hit. ``reference_fn`` builds the reference only on a miss."""
    path = cache_dir / f"{key}.pt"
    if path.is_file():
        tensors = torch.load(path, weights_only=True)
        if len(tensors["chosen"]) == len(examples):
            log(f"reference log-probs: cache hit {path}")
            return ReferenceCache(tensors), True
        log(f"reference log-probs: ignoring {path} (holds {len(tensors['chosen'])} rows, expected {len(examples)})")
    reference = reference_fn()
    parts = []
    starts = range(0, len(examples), batch_size)
    with torch.no_grad():
        for s in progress(starts, desc="reference log-probs", total=len(starts)):
            parts.append(reference.pair_logps([examples[i] for i in range(s, min(s + batch_size, len(examples)))], with_rejected=with_rejected))
    tensors = _collect(parts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    torch.save(tensors, tmp)
    os.replace(tmp, path)
    log(f"reference log-probs: computed {len(examples)} rows, cached at {path}")
    return ReferenceCache(tensors), False
