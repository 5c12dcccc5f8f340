"""The HF vision-language model adapter on the tiny LLaVA."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmalign_core.spec_models import LoraSettings, TrainSettings
from mmalign_core.types import GenerationRequest, ImageRef, PreferencePair
from mmalign_losses.config import DPOConfig
from mmalign_losses.dpo import DPOLoss


def _img(colour) -> ImageRef:
    return ImageRef(Image.new("RGB", (48, 48), colour), key=str(colour))


def _pairs() -> list[PreferencePair]:
    return [
        PreferencePair(id="a", prompt="Describe the image.", chosen="a red circle.", rejected="a red circle and a blue square.", images=[_img((200, 0, 0))]),
        PreferencePair(id="b", prompt="Is there a green star in the image?", chosen="No.", rejected="Yes.", images=[_img((0, 200, 0))]),
        PreferencePair(id="c", prompt="Describe a typical scene.", chosen="a blue square.", rejected="two blue squares and a star.", images=[]),
    ]


def _independent_logp(m, prompt: str, images: list[ImageRef], answer: str) -> float:
    """Score one sequence alone, without the adapter's batching, padding or masks."""
    text = m.format_prompt(prompt, len(images))
    kw = {"text": [text], "return_tensors": "pt"}
    if images:
        kw["images"] = [i.load() for i in images]
    enc = m.processor(**kw)
    ans = m.tokenizer(answer, add_special_tokens=False)["input_ids"] + [m.tokenizer.eos_token_id]
    ids = torch.cat([enc["input_ids"], torch.tensor([ans])], dim=1)
    extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = m.model(input_ids=ids, **extra).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    p = enc["input_ids"].shape[1]
    return sum(lp[p - 1 + k, ans[k]].item() for k in range(len(ans)))


def test_pair_logps_equal_per_sequence_scores(tiny_model) -> None:
    pairs = _pairs()
    with torch.no_grad():
        out = tiny_model.pair_logps(pairs)
    for i, p in enumerate(pairs):
        assert out.chosen[i].item() == pytest.approx(_independent_logp(tiny_model, p.prompt, p.images, p.chosen), abs=1e-4)
        assert out.rejected[i].item() == pytest.approx(_independent_logp(tiny_model, p.prompt, p.images, p.rejected), abs=1e-4)
    n_tok = len(tiny_model.tokenizer("a red circle.", add_special_tokens=False)["input_ids"]) + 1
    assert out.chosen_tokens[0].item() == n_tok


def test_prompt_is_prefix_of_conversation(tiny_model) -> None:
    prompt = tiny_model.format_prompt("Describe the image.", 1)
    full = tiny_model.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
         {"role": "assistant", "content": "a red circle."}], tokenize=False)
    assert full.startswith(prompt)


def test_generation_never_emits_image_token(tiny_model) -> None:
    lm_head = tiny_model.model.get_output_embeddings()
    with torch.no_grad():
        lm_head.weight[tiny_model.image_token_id] *= 0
        lm_head.weight[tiny_model.image_token_id] += 50.0  # make <image> the favourite token
    reqs = [GenerationRequest("Describe the image.", [_img((9, 9, 9))]), GenerationRequest("Say something.")]
    prompt_ids, _ = tiny_model.prompt_batch([r.prompt for r in reqs], [r.images for r in reqs])
    texts = tiny_model.generate(reqs, max_new_tokens=6)
    assert len(texts) == 2 and all("<image>" not in t for t in texts)


def test_continuation_logprobs_match_pair_scores(tiny_model) -> None:
    p = _pairs()[1]
    scores = tiny_model.continuation_logprobs([GenerationRequest(p.prompt, p.images)] * 2, [p.chosen, p.rejected])
    with torch.no_grad():
        out = tiny_model.pair_logps([p])
    assert scores == pytest.approx([out.chosen.item(), out.rejected.item()], abs=1e-5)


def _one_step(model, lora: LoraSettings | None, tmp_path: Path):
    from mmalign_core.runner.training import StageData, run_training

    settings = TrainSettings(steps=1, batch_size=3, lr=1e-2, warmup_ratio=0.0, lora=lora)
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    pairs = _pairs()
    with torch.no_grad():
        ref_before = model.pair_logps(pairs)
    captured = {}

    def loss_fn(inputs):
        captured["ref"] = inputs.reference
        return DPOLoss(DPOConfig(beta=0.1))(inputs)

    run_training(model=model, data=StageData(pairs, "pairs"), loss_fn=loss_fn, loss_requires=frozenset({"reference", "rejected"}),
                 settings=settings, stage_name="t", stage_dir=tmp_path, metrics_path=tmp_path / "m.jsonl", seed=0,
                 progress=lambda it, **k: it, log=lambda s: None, on_metrics=lambda *a: None)
    return before, ref_before, captured


def test_one_full_step_changes_trainables_not_reference(tiny_model, tmp_path: Path) -> None:
    before, ref_before, captured = _one_step(tiny_model, None, tmp_path)
    after = dict(tiny_model.model.named_parameters())
    changed = [n for n, p in after.items() if not torch.equal(before[n], p.detach())]
    assert any("language_model" in n for n in changed)
    assert any("multi_modal_projector" in n for n in changed)
    assert not any("vision_tower" in n for n in changed), "vision tower must stay frozen"
    ref = tiny_model.frozen_reference()
    with torch.no_grad():
        now = tiny_model.pair_logps(_pairs())
    assert not torch.allclose(now.chosen, ref_before.chosen)
    assert all(not p.requires_grad for p in ref.model.parameters())


def test_lora_step_reference_is_adapters_disabled(tiny_model, tmp_path: Path) -> None:
    before, ref_before, _ = _one_step(tiny_model, LoraSettings(r=4, alpha=8, dropout=0.0), tmp_path)
    names = [n for n, _ in tiny_model.model.named_modules() if "lora_A" in n]
    assert names and all("language_model" in n for n in names), "LoRA must not touch the vision tower"
    ref = tiny_model.frozen_reference()
    with torch.no_grad():
        ref_now = ref.pair_logps(_pairs())
        pol_now = tiny_model.pair_logps(_pairs())
    torch.testing.assert_close(ref_now.chosen, ref_before.chosen, atol=1e-5, rtol=0)
    assert not torch.allclose(pol_now.chosen, ref_before.chosen)
    # Base weights untouched; the adapter and the projector copy carry the update.
    for n, p in tiny_model.model.named_parameters():
        if "lora_" not in n and "modules_to_save" not in n:
            base = n.replace("base_model.model.", "").replace(".base_layer", "")
            if base in before:
                assert torch.equal(before[base], p.detach()), n


def test_save_and_reload_roundtrip(tiny_model, tmp_path: Path) -> None:
    from mmalign_tiny.model import load_tiny_llava

    tiny_model.save_pretrained(tmp_path / "m")
    again = load_tiny_llava(tmp_path / "m")
    with torch.no_grad():
        a = tiny_model.pair_logps(_pairs()[:1])
        b = again.pair_logps(_pairs()[:1])
    torch.testing.assert_close(a.chosen, b.chosen)
    assert tiny_model.fingerprint() == again.fingerprint()


def _grads(model, pairs) -> dict[str, torch.Tensor]:
    model.model.zero_grad(set_to_none=True)
    out = model.pair_logps(pairs)
    (out.chosen.sum() - 0.5 * out.rejected.sum()).backward()
    return {n: p.grad.clone() for n, p in model.model.named_parameters() if p.grad is not None}


def _mode(model, pairs, prefix_sharing: bool, shared_vision: bool):
    """Log-probs, gradients and the image counts the vision tower saw, in one engine mode."""
    model.prefix_sharing = prefix_sharing
    model.SHARED_VISION_MODEL_TYPES = frozenset({"llava"}) if shared_vision else frozenset()
    seen: list[int] = []
    hook = model.model.model.vision_tower.embeddings.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    try:
        grads = _grads(model, pairs)
        with torch.no_grad():
            out = model.pair_logps(pairs)
    finally:
        hook.remove()
    return out, grads, seen


@pytest.mark.parametrize("extra", [False, True])
def test_prefix_sharing_and_single_image_encoding_equal_the_plain_computation(tiny_model, extra: bool) -> None:
    pairs = _pairs()  # two pairs with an image, one text-only
    if extra:
        for p in pairs:
            p.extra_rejected = [p.rejected + " It is blurry."]
    tiny_model.freeze_vision(False)  # gradients must reach a trainable tower too
    packed = _mode(tiny_model, pairs, prefix_sharing=True, shared_vision=True)
    tiled = _mode(tiny_model, pairs, prefix_sharing=False, shared_vision=True)
    plain = _mode(tiny_model, pairs, prefix_sharing=False, shared_vision=False)
    n_answers = 3 if extra else 2
    # Two calls each (the gradient pass and the no-grad pass); images per call:
    assert packed[2] == [2, 2] and tiled[2] == [2, 2], "the 2 images must be encoded once per call"
    assert plain[2] == [2 * n_answers] * 2
    for out, grads, _ in (packed, tiled):
        ref_out, ref_grads, _ = plain
        torch.testing.assert_close(out.chosen, ref_out.chosen, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(out.rejected, ref_out.rejected, atol=1e-5, rtol=1e-6)
        assert len(out.extra_rejected) == len(ref_out.extra_rejected)
        for a, b in zip(out.extra_rejected, ref_out.extra_rejected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(out.chosen_tokens, ref_out.chosen_tokens)
        assert grads.keys() == ref_grads.keys() and any("vision_tower" in k for k in grads)
        for key in grads:
            torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-5, rtol=1e-4)


def test_prefix_sharing_under_eager_attention_equals_the_plain_computation(tiny_model) -> None:
    """Eager attention adds a 4-D mask to the scores: the packed mask must be additive there, not boolean."""
    tiny_model.model.set_attn_implementation("eager")
    try:
        assert tiny_model._text_attn_implementation() == "eager"
        pairs = _pairs()
        tiny_model.freeze_vision(False)
        packed = _mode(tiny_model, pairs, prefix_sharing=True, shared_vision=True)
        plain = _mode(tiny_model, pairs, prefix_sharing=False, shared_vision=False)
    finally:
        tiny_model.model.set_attn_implementation("sdpa")
    torch.testing.assert_close(packed[0].chosen, plain[0].chosen, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(packed[0].rejected, plain[0].rejected, atol=1e-5, rtol=1e-6)
    for key in plain[1]:
        torch.testing.assert_close(packed[1][key], plain[1][key], atol=1e-5, rtol=1e-4)


def test_rejected_images_use_their_own_images(tiny_model) -> None:
    p = _pairs()[0]
    alt = PreferencePair(id=p.id, prompt=p.prompt, chosen=p.chosen, rejected=p.chosen, images=p.images,
                         rejected_images=[_img((0, 0, 0))])
    with torch.no_grad():
        out = tiny_model.pair_logps([alt])
    # Same text, different image: the scores differ, and the rejected side equals scoring it alone.
    assert out.chosen.item() != pytest.approx(out.rejected.item(), abs=1e-6)
    assert out.rejected.item() == pytest.approx(_independent_logp(tiny_model, p.prompt, alt.rejected_images, p.chosen), abs=1e-4)


def test_template_that_writes_bos_gets_a_single_bos(tiny_model) -> None:
    bos_id = tiny_model.tokenizer.bos_token_id
    plain_ids, _ = tiny_model.prompt_batch(["Describe the image."], [[]])
    tiny_model.processor.chat_template = "{{ bos_token }}" + tiny_model.processor.chat_template
    ids, _ = tiny_model.prompt_batch(["Describe the image."], [[]])
    assert ids[0][0] == bos_id and ids[0][1] != bos_id
    assert ids == plain_ids


def test_policy_and_reference_share_one_processor_call(tiny_model) -> None:
    calls = []
    proc = tiny_model.processor
    original = type(proc).__call__

    class Counting(type(proc)):
        def __call__(self, *a, **k):
            calls.append(1)
            return original(self, *a, **k)

    proc.__class__ = Counting
    pairs = _pairs()  # images with explicit keys, and a text-only pair
    ref = tiny_model.frozen_reference()
    with torch.no_grad():
        a = tiny_model.pair_logps(pairs)
        b = ref.pair_logps(pairs)
    assert len(calls) == 1
    torch.testing.assert_close(a.chosen, b.chosen)
    # Images without a stable key (identified by object id only) are never served from the cache.
    loose = [PreferencePair(id="x", prompt="Describe the image.", chosen="a.", rejected="b.",
                            images=[ImageRef(Image.new("RGB", (48, 48), (1, 2, 3)))])]
    with torch.no_grad():
        tiny_model.pair_logps(loose)
        tiny_model.pair_logps(loose)
    assert len(calls) == 3


def test_a_subset_of_a_processed_batch_is_cut_from_it_and_equals_processing_it_alone(tiny_model, monkeypatch) -> None:
    """Online DPO trains on the pairs its judge kept: their prompts are rows of the batch it sampled for."""
    m = tiny_model
    prompts = ["Describe the image.", "Compare the two images.", "Describe a typical scene.", "Is there a star?"]
    images = [[_img((200, 0, 0))], [_img((0, 0, 200)), _img((0, 200, 0))], [], [_img((9, 9, 9))]]
    calls: list[int] = []
    process = m._process_prompts
    monkeypatch.setattr(m, "_process_prompts", lambda p, i: (calls.append(len(p)), process(p, i))[1])
    m.prompt_batch(prompts, images)
    for rows in ([3, 1], [2, 0], [2], [1, 1, 3]):
        sub_prompts, sub_images = [prompts[r] for r in rows], [images[r] for r in rows]
        ids, inputs = m.prompt_batch(sub_prompts, sub_images)
        want_ids, want_inputs = process(sub_prompts, sub_images)
        assert ids == want_ids
        assert inputs.keys() == want_inputs.keys()
        for name in inputs:
            assert torch.equal(inputs[name], want_inputs[name]), name
    assert calls == [4], "every subset must come from the cached batch"
    # A row the cache has not seen: processed afresh.
    m.prompt_batch(["Describe the image.", "A new question?"], [images[0], [_img((1, 2, 3))]])
    assert calls == [4, 2]


def _sampled_pairs(m, reqs, seed: int = 3, **kw):
    torch.manual_seed(seed)
    new = m.sample_tokens(reqs, n=2, max_new_tokens=8, do_sample=True, **kw)
    texts = m.texts_from_samples(new)
    return [PreferencePair(id=f"p{i}", prompt=r.prompt, images=r.images, chosen=texts[2 * i], rejected=texts[2 * i + 1])
            for i, r in enumerate(reqs)]


@pytest.mark.parametrize("lean", [True, False])
def test_a_kept_prompt_pass_gives_the_training_pass_its_log_probs_and_gradients(tiny_model, tiny_dir, lean, monkeypatch) -> None:
    """keep_prompt_pass: sampling's prefill keeps its graph and the training pass scores only the answers
    after it. Log-probs and gradients equal the plain packed pass; the prompts and images are not run again.
    Decoding through the decoder's own forward (not the lean decoder) leaves the kept pass intact too."""
    from mmalign_hf import sampling
    from mmalign_tiny.model import load_tiny_llava

    if not lean:
        monkeypatch.setattr(sampling, "LEAN_DECODER_MODEL_TYPES", frozenset())

    reqs = [GenerationRequest("Describe the image." + " Be brief." * (i % 2), [_img((40 * i, 90, 200 - 30 * i))]) for i in range(4)]
    kept = tiny_model
    plain = load_tiny_llava(tiny_dir)  # the same weights
    for m in (kept, plain):
        m.model.train()
        m.freeze_vision(True)
    pairs = _sampled_pairs(kept, reqs, keep_prompt_pass=True)
    assert _sampled_pairs(plain, reqs) == pairs  # keeping the pass does not change what is sampled
    assert "_prompt_pass" in kept.__dict__
    seen: list[int] = []
    hook = kept.model.model.vision_tower.register_forward_pre_hook(lambda mod, args, kw: seen.append(1), with_kwargs=True)
    sub = [pairs[2], pairs[0]]  # a subset, in another order (the pairs a judge kept)
    out = kept.pair_logps(sub)
    hook.remove()
    assert seen == [] and "_prompt_pass" not in kept.__dict__  # no image encoded again; the pass is used once
    want = plain.pair_logps(sub)
    for a, b in ((out.chosen, want.chosen), (out.rejected, want.rejected)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert out.chosen_tokens.tolist() == want.chosen_tokens.tolist()
    (out.chosen.sum() - 0.7 * out.rejected.sum()).backward()
    (want.chosen.sum() - 0.7 * want.rejected.sum()).backward()
    grads = {n: p.grad for n, p in kept.model.named_parameters() if p.grad is not None}
    ref = {n: p.grad for n, p in plain.model.named_parameters() if p.grad is not None}
    assert grads.keys() == ref.keys() and any("multi_modal_projector" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref[name], atol=1e-5, rtol=1e-4)


def test_a_kept_prompt_pass_is_not_used_after_the_weights_change_or_with_dropout(tiny_model) -> None:
    reqs = [GenerationRequest("Describe the image.", [_img((200, 0, 0))]), GenerationRequest("Describe the image.", [_img((0, 0, 200))])]
    m = tiny_model
    m.model.train()
    pairs = _sampled_pairs(m, reqs, keep_prompt_pass=True)
    with torch.no_grad():
        next(p for p in m.model.parameters() if p.requires_grad).add_(0.01)  # an optimizer step
    calls: list[int] = []
    packed = m._packed_logps
    m._packed_logps = lambda *a, **k: (calls.append(1), packed(*a, **k))[1]
    m.pair_logps(pairs)
    assert calls == [1] and "_prompt_pass" not in m.__dict__  # stale: dropped, the plain pass ran
    # A kept pass never outlives the next sampling (e.g. an evaluation's generation).
    _sampled_pairs(m, reqs, keep_prompt_pass=True)
    assert "_prompt_pass" in m.__dict__
    m.generate(reqs, max_new_tokens=2)
    assert "_prompt_pass" not in m.__dict__
    # With dropout anywhere the sampling pass (evaluation mode) would differ from the training pass: not kept.
    m.model.model.language_model.layers[0].self_attn.attention_dropout = 0.1
    _sampled_pairs(m, reqs, keep_prompt_pass=True)
    assert "_prompt_pass" not in m.__dict__
