"""Part ``sampling``: online sampling on the LLaVA-1.5-7B-shaped model, mmalign's lean decoder vs ``generate``.

The same model, prompts (shapes-world images, one per prompt, 576 image tokens each at 7B shape) and
decoding (temperature 1.0, top-p 1.0, the image token banned) through ``sample_tokens`` with the lean loop
(``fast_decoding`` on: one prefill per prompt, then :class:`LeanDecoder` steps) and through transformers'
``generate`` (``fast_decoding`` off). Each path gets one untimed warm-up call, then ``repeats`` timed calls;
the fastest is reported. A random-weight model almost never samples the end-of-sequence token, so every
sample runs the full ``new_tokens``. Greedy tokens of both paths are compared too (bf16: near ties may part).

Not built: a static-cache / CUDA-graph decoding step.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import llava7b
from .paths import add_helpers
from .record import GIB, Recorder, free_memory, peak_bytes, reset_peak, sync
from .sizes import Profile


def _requests(profile: Profile) -> list[Any]:
    add_helpers()
    from dpo_vs_trl import _pairs

    from mmalign_core.types import GenerationRequest

    return [GenerationRequest(p.prompt, p.images) for p in _pairs(profile.sampling.prompts)]


def _time_path(m: Any, reqs: list[Any], *, lean: bool, n: int, profile: Profile) -> dict[str, Any]:
    s = profile.sampling
    m.fast_decoding = lean
    m.sample_tokens(reqs, n=n, max_new_tokens=min(4, s.new_tokens), do_sample=True)  # warm-up (and the prompt cache)
    times, tokens = [], 0
    before = reset_peak(profile.device)
    for _ in range(s.repeats):
        sync(profile.device)
        t = time.perf_counter()
        out = m.sample_tokens(reqs, n=n, max_new_tokens=s.new_tokens, do_sample=True, temperature=1.0, top_p=1.0)
        sync(profile.device)
        times.append(time.perf_counter() - t)
        tokens = int((out != m.pad_token_id).sum())
    best = min(times)
    samples = len(reqs) * n
    return {"seconds": [round(x, 4) for x in times], "samples_per_s": samples / best, "tokens_per_s": tokens / best,
            "tokens": tokens, "samples": samples, "peak_extra_gib": (peak_bytes(profile.device) - before) / GIB}


def run(profile: Profile, rec: Recorder, scratch: Path) -> None:
    from mmalign_hf.sampling import LeanDecoder, decode_parts

    holder: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        free_memory(profile.device)
        t = time.perf_counter()
        proc = llava7b.processor(profile.llava)
        model = llava7b.build_model(profile.llava, proc, device=profile.device, dtype=profile.dtype)
        m = llava7b.wrap(model, proc, profile.llava, profile.device)
        m.model.eval()
        holder["m"], holder["reqs"] = m, _requests(profile)
        parts = decode_parts(m.model)
        width = m.generation_inputs(holder["reqs"])["input_ids"].shape[1]
        eligible = parts is not None and LeanDecoder.eligible(parts[0], width + profile.sampling.new_tokens) is not None
        rec.check("sampling: the lean decoder applies to the 7B-shaped LLaVA", eligible)
        sync(profile.device)
        return {"seconds": round(time.perf_counter() - t, 2), "parameters": llava7b.parameter_count(model), "prompt_width": width,
                "prompts": len(holder["reqs"]), "new_tokens": profile.sampling.new_tokens}

    if rec.step("build", build) is None:
        return
    m, reqs = holder["m"], holder["reqs"]
    for n in profile.sampling.samples_per_prompt:
        stem = f"{len(reqs)}x{n}"
        got: dict[str, Any] = {}
        for path in ("lean", "generate"):
            res = rec.step(f"{stem}/{path}", lambda: _time_path(m, reqs, lean=path == "lean", n=n, profile=profile))
            if res is not None:
                got[path] = res
                rec.figure(f"{stem}/{path}/samples_per_s", res["samples_per_s"])
        if len(got) == 2:
            rec.figure(f"{stem}/speedup", got["lean"]["samples_per_s"] / got["generate"]["samples_per_s"])

    def greedy() -> dict[str, Any]:
        m.fast_decoding = True
        lean = m.sample_tokens(reqs, n=1, max_new_tokens=profile.sampling.new_tokens, do_sample=False)
        m.fast_decoding = False
        gen = m.sample_tokens(reqs, n=1, max_new_tokens=profile.sampling.new_tokens, do_sample=False)
        width = min(lean.shape[1], gen.shape[1])
        same = (lean[:, :width] == gen[:, :width]).all(dim=1)
        first = [(int((a != b).nonzero()[0]) if bool((a != b).any()) else None) for a, b in zip(lean[:, :width], gen[:, :width])]
        return {"rows": len(reqs), "rows_equal": int(same.sum()), "first_difference": first}

    res = rec.step("greedy lean vs generate", greedy)
    if res is not None and profile.dtype == "float32":
        rec.check("sampling: greedy lean tokens equal generate's", res["rows_equal"] == res["rows"], **res)
    m.fast_decoding = True
