"""Generation engines for online sampling: Hugging Face ``generate`` (default) and the vLLM extension point.

An engine turns prompts into ``n`` sampled responses each, from the *current* policy::

    engine.sync(model, step)                       # before generating at optimizer step `step`
    engine.generate(model, requests, n=..., max_new_tokens=..., do_sample=..., temperature=..., top_p=...,
                    batch_size=...) -> list[list[str]]   # n responses per request
    engine.describe() -> dict                      # for the log and the manifest
    engine.stats -> dict                           # counters of the last generate call

``sync`` is where an engine that holds its own weights (a vLLM server, a copy on another GPU)
takes the policy's weights; it is called once per step, i.e. after every optimizer step.
The HF engine generates with the policy itself, so sync is a no-op unless it is told to keep a
copy on another ``device`` -- that mode exercises the same sync path an external engine needs
and is what the weight-sync test checks.

Generation never emits the image token: it is banned through ``bad_words_ids`` (a random or
weak model otherwise emits it, and the next forward pass with images then fails; platform
notes, pitfall 5).
"""
from __future__ import annotations

import copy
import time
from typing import Any, Optional, Sequence

from mmalign_core.types import GenerationRequest

from .config import EngineConfig


class EngineUnavailable(RuntimeError):
    """The configured generation engine cannot run here (package missing, no GPU, not implemented)."""


def _is_hf(model: Any) -> bool:
    """Whether ``model`` is mmalign-hf's HF wrapper (or a subclass), whose methods the fast path uses."""
    return all(hasattr(model, a) for a in ("sample_tokens", "texts_from_samples", "stop_ids", "tokenizer", "model"))


class HFEngine:
    """Sampling with the model's own decoding (KV cache), batched over prompts.

    For the core's HF wrapper that is ``sample_tokens``: each prompt is encoded once and its KV cache
    shared by its ``n`` samples, decoded by mmalign's lean loop where the family allows it and by
    ``transformers``' ``generate`` otherwise; prompts are left-padded into batches of ``batch_size``.
    Any :class:`~mmalign_core.protocols.GenerativeModel` works: models other than the core's HF
    wrapper are asked through their own ``generate`` with each request repeated ``n`` times.
    """

    name = "hf"

    def __init__(self, config: EngineConfig):
        self.config = config
        self._copy: Any = None
        self._synced_step: Optional[int] = None
        self.syncs = 0
        self.stats: dict[str, float] = {}

    def describe(self) -> dict[str, Any]:
        return {"engine": "hf", "device": self.config.device, "sync_every": self.config.sync_every}

    # ------------------------------------------------------------------ weights
    @property
    def holds_copy(self) -> bool:
        return self.config.device is not None

    def sync(self, model: Any, step: int) -> None:
        """Bring the engine's weights to the policy's (only when it holds its own copy)."""
        if not self.holds_copy:
            self._synced_step = step
            return
        if self._copy is not None and self._synced_step is not None and step - self._synced_step < self.config.sync_every:
            return
        if not _is_hf(model):
            raise EngineUnavailable("engine 'hf' with a 'device' copies the policy's weights, which needs a Hugging Face model (mmalign_hf.model)")
        src = model.model
        if self._copy is not None:
            try:
                self._copy.model.load_state_dict(src.state_dict(), strict=True)
            except (RuntimeError, KeyError):  # the policy's structure changed (e.g. adapters were added): copy anew
                self._copy = None
        if self._copy is None:
            clone = copy.copy(model)
            clone.model = copy.deepcopy(src)
            clone.forward_module = clone.model
            clone.to(self.config.device)
            clone.model.eval()
            for p in clone.model.parameters():
                p.requires_grad_(False)
            self._copy = clone
        self._synced_step = step
        self.syncs += 1

    def generator(self, model: Any) -> Any:
        """The model that generates: the engine's copy, or the policy itself."""
        return self._copy if self._copy is not None else model

    # --------------------------------------------------------------- generation
    def generate(
        self,
        model: Any,
        requests: Sequence[GenerationRequest],
        *,
        n: int,
        max_new_tokens: int,
        do_sample: bool,
        temperature: float,
        top_p: float,
        batch_size: int,
    ) -> list[list[str]]:
        gen = self.generator(model)
        t0 = time.perf_counter()
        self.stats = {"sequences": 0.0, "truncated": 0.0}
        out: list[list[str]] = []
        if not _is_hf(gen):
            flat = [r for r in requests for _ in range(n)]
            texts = gen.generate(flat, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                                 top_p=top_p, batch_size=batch_size * n)
            out = [list(texts[i * n : (i + 1) * n]) for i in range(len(requests))]
            self.stats["sequences"] = float(len(flat))
        else:
            module = gen.model
            was_training = module.training
            module.eval()
            try:
                import torch

                with torch.no_grad():
                    for s in range(0, len(requests), batch_size):
                        out.extend(self._hf_batch(gen, requests[s : s + batch_size], n, max_new_tokens, do_sample, temperature, top_p))
            finally:
                module.train(was_training)
        self.stats["seconds"] = time.perf_counter() - t0
        return out

    def _hf_batch(self, m: Any, reqs: Sequence[GenerationRequest], n: int, max_new_tokens: int, do_sample: bool,
                  temperature: float, top_p: float) -> list[list[str]]:
        import torch

        copies = n if do_sample else 1  # greedy samples of one prompt are all the same: decode once
        # Each prompt is processed (images included) once; its samples share that prefix (the model's
        # sample_tokens: mmalign's lean loop where the family allows it, else generate()).
        keep = {"keep_prompt_pass": True} if self.config.reuse_prompt_pass and self._copy is None else {}
        new = m.sample_tokens(reqs, n=copies, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              temperature=temperature, top_p=top_p, **keep)
        stop = m.stop_ids()
        if stop:
            finished = torch.isin(new, torch.tensor(stop, device=new.device)).any(dim=1)
            self.stats["truncated"] += float((~finished).sum())
        self.stats["sequences"] += float(new.shape[0])
        texts = m.texts_from_samples(new)  # trained on as the very tokens sampled
        if copies != n:
            return [[texts[i]] * n for i in range(len(reqs))]
        return [texts[i * n : (i + 1) * n] for i in range(len(reqs))]


class VLLMEngine:
    """Extension point for a vLLM engine on GPUs (not implemented in this version).

    Building it raises :class:`EngineUnavailable` with the reason: vLLM not installed, no CUDA GPU (vLLM
    does not run on CPU here), or -- where both are present -- that this version ships no vLLM engine.
    A real implementation keeps an ``LLM`` instance, implements ``sync`` by loading the policy's state
    dict into it (``llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(...)``,
    merged LoRA weights first) every ``sync_every`` steps, and ``generate`` with ``SamplingParams(n=...,
    temperature=..., top_p=..., max_tokens=...)`` and the image token banned.
    """

    name = "vllm"

    def __init__(self, config: EngineConfig):
        self.config = config
        raise EngineUnavailable(vllm_unavailable_reason())


def vllm_unavailable_reason() -> str:
    """Why the vllm engine cannot be used on this machine (always a reason in this version)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return ("generation engine 'vllm' needs the optional vllm package and a CUDA GPU; vllm is not installed "
                "(and it is not available on CPU). Use engine 'hf', which runs everywhere.")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        cuda = False
    if not cuda:
        return "generation engine 'vllm' needs a CUDA GPU; none is available here (vLLM is not available on CPU). Use engine 'hf'."
    return ("generation engine 'vllm' is declared but not implemented in this version of mmalign-online; use engine 'hf' "
            "(see docs/online.md, 'Generation engines', for the interface a vLLM engine implements).")


def make_engine(config: EngineConfig) -> Any:
    """The engine a config names."""
    if config.name == "vllm":
        return VLLMEngine(config)
    return HFEngine(config)


__all__ = ["EngineUnavailable", "HFEngine", "VLLMEngine", "make_engine", "vllm_unavailable_reason"]
