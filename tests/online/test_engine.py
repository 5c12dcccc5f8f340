"""The HF generation engine on the tiny LLaVA: batching, the image-token ban, and weight sync after optimizer steps."""
from __future__ import annotations

import torch
from PIL import Image

from mmalign_core.types import GenerationRequest, ImageRef
from mmalign_online.config import EngineConfig
from mmalign_online.engine import EngineUnavailable, HFEngine, make_engine, vllm_unavailable_reason

import pytest


def _requests(n: int = 3) -> list[GenerationRequest]:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    return [GenerationRequest("Describe the image.", [ImageRef(Image.new("RGB", (48, 48), colours[i % 4]), key=f"c{i}")]) for i in range(n)]


GREEDY = dict(max_new_tokens=6, do_sample=False, temperature=1.0, top_p=1.0, batch_size=2)


def _step(model, text: str = "star star star star star.", lr: float = 0.05) -> None:
    """One optimizer step of SFT towards ``text`` (moves greedy outputs of a random tiny model)."""
    from mmalign_core.types import SFTExample

    model.module.train()
    opt = torch.optim.SGD([p for p in model.module.parameters() if p.requires_grad], lr=lr)
    reqs = _requests()
    examples = [SFTExample(id=str(i), prompt=r.prompt, response=text, images=r.images) for i, r in enumerate(reqs)]
    loss = -model.sft_logps(examples).chosen.mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.module.eval()


def test_batched_samples_match_the_model_and_never_hold_the_image_token(tiny_model, monkeypatch) -> None:
    engine = HFEngine(EngineConfig())
    reqs = _requests(3)
    greedy = engine.generate(tiny_model, reqs, n=2, **GREEDY)
    assert [len(x) for x in greedy] == [2, 2, 2]
    assert all(a == b for a, b in greedy)  # greedy samples of one prompt agree
    assert [x[0] for x in greedy] == tiny_model.generate(reqs, max_new_tokens=6, do_sample=False)
    # Make the image token the model's favourite; generation must still never emit it.
    image_id = tiny_model.image_token_id
    with torch.no_grad():
        tiny_model.module.lm_head.weight[image_id] *= 0
        tiny_model.module.lm_head.weight[image_id] += 5 * tiny_model.module.lm_head.weight.abs().max()
    seen = []
    original = tiny_model.sample_tokens

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(tiny_model, "sample_tokens", spy)
    torch.manual_seed(0)
    engine.generate(tiny_model, _requests(4), n=2, max_new_tokens=12, do_sample=True, temperature=1.0, top_p=1.0, batch_size=4)
    assert seen and all(int((new == image_id).sum()) == 0 for new in seen)
    assert engine.stats["sequences"] == 8


def test_generation_after_an_optimizer_step_uses_the_new_weights(tiny_model) -> None:
    engine = HFEngine(EngineConfig())
    reqs = _requests()
    engine.sync(tiny_model, 0)
    before = engine.generate(tiny_model, reqs, n=1, **GREEDY)
    _step(tiny_model)
    engine.sync(tiny_model, 1)
    after = engine.generate(tiny_model, reqs, n=1, **GREEDY)
    assert after != before
    assert [x[0] for x in after] == tiny_model.generate(reqs, max_new_tokens=6, do_sample=False)


def test_an_engine_with_its_own_copy_is_stale_until_synced(tiny_model) -> None:
    engine = HFEngine(EngineConfig(device="cpu", sync_every=1))
    reqs = _requests()
    engine.sync(tiny_model, 0)
    assert engine.syncs == 1 and engine.generator(tiny_model) is not tiny_model
    before = engine.generate(tiny_model, reqs, n=1, **GREEDY)
    _step(tiny_model)
    fresh = [x[0] for x in HFEngine(EngineConfig()).generate(tiny_model, reqs, n=1, **GREEDY)]
    assert engine.generate(tiny_model, reqs, n=1, **GREEDY) == before  # not synced yet: old weights
    engine.sync(tiny_model, 1)
    assert [x[0] for x in engine.generate(tiny_model, reqs, n=1, **GREEDY)] == fresh != [x[0] for x in before]
    # sync_every=2: the copy follows every second step only.
    lazy = HFEngine(EngineConfig(device="cpu", sync_every=2))
    lazy.sync(tiny_model, 0)
    lazy.sync(tiny_model, 1)
    assert lazy.syncs == 1
    lazy.sync(tiny_model, 2)
    assert lazy.syncs == 2


def test_the_copy_follows_adapters_added_later(tiny_model) -> None:
    engine = HFEngine(EngineConfig(device="cpu"))
    engine.sync(tiny_model, 0)
    tiny_model.enable_lora(4, 8, 0.0, r".*language_model.*\.(q_proj|v_proj)$")
    engine.sync(tiny_model, 1)  # the structure changed: copied anew
    assert engine.syncs == 2 and engine.generator(tiny_model).is_peft


def test_vllm_engine_fails_clearly() -> None:
    with pytest.raises(EngineUnavailable, match="vllm"):
        make_engine(EngineConfig(name="vllm"))
    reason = vllm_unavailable_reason()
    assert "engine 'hf'" in reason and ("not installed" in reason or "CUDA" in reason or "not implemented" in reason)


def test_drop_unfinished_with_the_tiny_model(tiny_model, ctx) -> None:
    """hf-vlm models report which samples reached max_new_tokens; with 2 new tokens a random model's samples all do."""
    from online_helpers import FirstJudge, online_source

    src = online_source(judge=FirstJudge(), drop_unfinished=True, max_new_tokens=2)
    batch = src.pairs(ctx)[:4]
    out, stats = src.prepare_batch(batch, tiny_model, ctx, step=0)
    assert out == [] and stats["dropped_unfinished"] + stats["dropped_identical"] == 4 and stats["dropped_unfinished"] > 0
    src = online_source(judge=FirstJudge(), max_new_tokens=2)
    out, stats = src.prepare_batch(batch, tiny_model, ctx, step=1)
    assert stats["dropped_unfinished"] == 0 and len(out) + stats["dropped_identical"] == 4
