"""Every supported family, on a tiny random-weight checkpoint loaded through the ``hf-vlm`` component:
generation, log-probs, one DPO step (full and LoRA), and outputs that load with plain transformers / peft."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_families import BUILDERS

from mmalign_core.spec_models import LoraSettings, TrainSettings
from mmalign_core.types import GenerationRequest, ImageRef, PreferencePair, SFTExample
from mmalign_losses.config import DPOConfig
from mmalign_losses.dpo import DPOLoss

FAMILIES = list(BUILDERS)
PROJECTOR = {"llava": "multi_modal_projector", "llava-next": "multi_modal_projector", "qwen2-vl": "visual.merger",
             "qwen2.5-vl": "visual.merger", "idefics3": "connector", "paligemma": "multi_modal_projector"}
VISION = {"llava": "vision_tower", "llava-next": "vision_tower", "qwen2-vl": "visual", "qwen2.5-vl": "visual",
          "idefics3": "vision_model", "paligemma": "vision_tower"}
LANGUAGE = {"idefics3": "text_model"}


def _img(colour, size=(48, 48)) -> ImageRef:
    return ImageRef(Image.new("RGB", size, colour), key=f"{colour}{size}")


def _pairs() -> list[PreferencePair]:
    return [
        PreferencePair(id="a", prompt="Describe the image.", chosen="a red circle.", rejected="a red circle and a blue square.",
                       images=[_img((200, 0, 0))]),
        PreferencePair(id="b", prompt="Is there a green star in the image?", chosen="No.", rejected="Yes.",
                       images=[_img((0, 200, 0), (64, 32))]),  # another size: AnyRes / dynamic resolution rows differ
        PreferencePair(id="c", prompt="Describe a typical scene.", chosen="a blue square.", rejected="two blue squares and a star.",
                       images=[]),
    ]


def _independent_logp(m, prompt: str, images: list[ImageRef], answer: str) -> float:
    """Score one sequence alone with the processor and the bare model: no batching, padding or masks."""
    pil = [i.load() for i in images]
    extra: dict = {}
    ans = m.tokenizer(m.answer_lead + answer, add_special_tokens=False)["input_ids"] + [m.eos_token_id]
    if m.family == "paligemma":
        if pil:  # the processor's own prefix/suffix layout, token types included
            enc = m.processor(text=[m.format_prompt(prompt, len(pil))], images=pil, suffix=[answer], return_tensors="pt")
            ids, extra = enc["input_ids"], {"pixel_values": enc["pixel_values"], "token_type_ids": enc["token_type_ids"]}
            assert ids[0, -len(ans):].tolist() == ans
        else:
            p_ids = m.tokenizer(m.tokenizer.bos_token + prompt + "\n", add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + ans])
            extra = {"token_type_ids": torch.tensor([[0] * len(p_ids) + [1] * len(ans)])}
    else:
        kw = {"text": [m.format_prompt(prompt, len(pil))], "return_tensors": "pt"}
        if pil:
            kw["images"] = [pil] if m.family == "idefics3" else pil
        enc = m.processor(**kw)
        ids = torch.cat([enc["input_ids"], torch.tensor([ans])], dim=1)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}
        if "mm_token_type_ids" in extra:  # the processor's own token types, extended over the answer
            extra["mm_token_type_ids"] = torch.cat([extra["mm_token_type_ids"], torch.zeros(1, len(ans), dtype=torch.long)], 1)
    with torch.no_grad():
        logits = m.model(input_ids=ids, **extra).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    p = ids.shape[1] - len(ans)
    return sum(lp[p - 1 + k, ans[k]].item() for k in range(len(ans)))


@pytest.mark.parametrize("family", FAMILIES)
def test_pair_logps_equal_per_sequence_scores(load_family, family) -> None:
    m = load_family(family)
    assert m.family == family
    pairs = _pairs()
    with torch.no_grad():
        out = m.pair_logps(pairs)
    for i, p in enumerate(pairs):
        assert out.chosen[i].item() == pytest.approx(_independent_logp(m, p.prompt, p.images, p.chosen), abs=1e-4), (family, p.id)
        assert out.rejected[i].item() == pytest.approx(_independent_logp(m, p.prompt, p.images, p.rejected), abs=1e-4), (family, p.id)
    n_tok = len(m.tokenizer(m.answer_lead + "a red circle.", add_special_tokens=False)["input_ids"]) + 1
    assert out.chosen_tokens[0].item() == n_tok
    scores = m.continuation_logprobs([GenerationRequest(pairs[1].prompt, pairs[1].images)] * 2, [pairs[1].chosen, pairs[1].rejected])
    assert scores == pytest.approx([out.chosen[1].item(), out.rejected[1].item()], abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_never_emits_vision_tokens(load_family, family) -> None:
    m = load_family(family)
    assert m.image_token_id in m.vision_token_ids
    boost = torch.zeros(m.model.get_output_embeddings().weight.shape[0])
    boost[m.vision_token_ids] = 100.0  # every vision token is the favourite, the image token most of all
    boost[m.image_token_id] = 200.0
    m.model.get_output_embeddings().register_forward_hook(lambda mod, inp, out: out + boost)
    seen = []
    orig = m.sample_tokens

    def spy(*a, **kw):
        out = orig(*a, **kw)
        seen.append(out)
        return out

    m.sample_tokens = spy
    reqs = [GenerationRequest("Describe the image.", [_img((9, 9, 9), (40, 56))]), GenerationRequest("Say something."),
            GenerationRequest("Is it red?", [_img((200, 9, 9))], answer_prefix="It")]
    texts = m.generate(reqs, max_new_tokens=4)
    sampled = m.generate(reqs[:1], max_new_tokens=4, do_sample=True, temperature=1.0)
    assert len(texts) == 3 and len(sampled) == 1 and all(isinstance(t, str) for t in texts)
    new = torch.cat([s.flatten() for s in seen]).tolist()
    assert not set(new) & set(m.vision_token_ids)



@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_plain_generate_one_at_a_time(load_family, family) -> None:
    """Greedy decoding of a left-padded batch through the wrapper (mmalign's lean loop where the family
    allows it) gives, row by row, the tokens of transformers' own generate() on that request alone:
    left padding, mRoPE positions, PaliGemma's prefix types and the shared-prefill cache change nothing."""
    from mmalign_hf.sampling import decode_parts

    m = load_family(family)
    fast = decode_parts(m.model) is not None
    assert fast == (family in ("llava", "llava-next", "idefics3")), family  # the lean loop covers these
    reqs = [GenerationRequest("Describe the image in one sentence please.", [_img((9, 99, 9), (40, 56))]),
            GenerationRequest("Say."), GenerationRequest("Is it red?", [_img((200, 9, 9))], answer_prefix="It")]
    batched = m.sample_tokens(reqs, n=1, max_new_tokens=6, do_sample=False).tolist()
    for r, row in zip(reqs, batched):
        inputs = m.generation_inputs([r])
        width = inputs["input_ids"].shape[1]
        alone = m.model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=m.pad_token_id,
                                 eos_token_id=m.stop_token_ids, bad_words_ids=[[t] for t in m.vision_token_ids],
                                 temperature=None, top_p=None, top_k=None)[0, width:].tolist()
        assert row[: len(alone)] == alone, family
    texts = m.generate(reqs, max_new_tokens=6)
    assert texts == [t.strip() for t in m.tokenizer.batch_decode(torch.tensor(batched), skip_special_tokens=True)]


def _one_step(model, lora: LoraSettings | None, tmp_path: Path, projector_lr: float = 1e-2):
    from mmalign_core.runner.training import StageData, run_training

    settings = TrainSettings(steps=1, batch_size=3, lr=1e-2, projector_lr=projector_lr, warmup_ratio=0.0, lora=lora)
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    pairs = _pairs()
    with torch.no_grad():
        ref_before = model.pair_logps(pairs)
    made = model.frozen_reference
    refs = []

    def capture():  # keep the reference the loop trains against
        refs.append(made())
        return refs[-1]

    model.frozen_reference = capture
    run_training(model=model, data=StageData(pairs, "pairs"), loss_fn=DPOLoss(DPOConfig(beta=0.1)),
                 loss_requires=frozenset({"reference", "rejected"}), settings=settings, stage_name="t", stage_dir=tmp_path,
                 metrics_path=tmp_path / "m.jsonl", seed=0, progress=lambda it, **k: it, log=lambda s: None,
                 on_metrics=lambda *a: None)
    del model.frozen_reference
    assert len(refs) == 1
    return before, ref_before, refs[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_full_dpo_step(load_family, family, tmp_path: Path) -> None:
    m = load_family(family)
    groups = {g["name"]: g for g in m.trainable_parameter_groups(1e-3, 5e-3)}
    assert groups["projector"]["lr"] == 5e-3 and groups["language_model"]["lr"] == 1e-3
    before, ref_before, ref = _one_step(m, None, tmp_path)
    changed = [n for n, p in m.model.named_parameters() if not torch.equal(before[n], p.detach())]
    lm = LANGUAGE.get(family, "language_model")
    assert any(f".{lm}." in n for n in changed), family
    assert any(PROJECTOR[family] in n for n in changed), f"{family}: the projector must train"
    vision = [n for n in changed if f".{VISION[family]}." in n and PROJECTOR[family] not in n]
    assert not vision, f"{family}: vision tower must stay frozen, changed {vision[:3]}"
    assert type(ref) is type(m) and all(not p.requires_grad for p in ref.model.parameters())
    with torch.no_grad():
        now = m.pair_logps(_pairs())
        ref_now = ref.pair_logps(_pairs())
    assert not torch.allclose(now.chosen, ref_before.chosen)
    torch.testing.assert_close(ref_now.chosen, ref_before.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_now.rejected, ref_before.rejected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_dpo_step_and_peft_reload(load_family, family_dir, family, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    m = load_family(family)
    base_dir = family_dir(family)
    n_params = sum(p.numel() for p in m.model.parameters())
    before, ref_before, ref = _one_step(m, LoraSettings(r=4, alpha=8, dropout=0.0), tmp_path)
    lora_modules = [n for n, _ in m.model.named_modules() if n.endswith("lora_A")]
    lm = LANGUAGE.get(family, "language_model")
    assert lora_modules and all(f".{lm}." in n for n in lora_modules), f"{family}: LoRA must stay in the language model"
    assert not [n for n in lora_modules if f".{VISION[family]}." in n]
    trainable = [n for n, p in m.model.named_parameters() if p.requires_grad]
    assert any(PROJECTOR[family] in n and "modules_to_save" in n for n in trainable), f"{family}: projector trains with LoRA"
    assert not [n for n in trainable if f".{VISION[family]}." in n and PROJECTOR[family] not in n and "lora_" not in n]
    # The reference is the same weights with adapters disabled: no second copy.
    assert not hasattr(ref, "model"), "LoRA reference must be the policy with adapters disabled"
    base_params = sum(p.numel() for n, p in m.model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)
    assert base_params == n_params
    with torch.no_grad():
        ref_now = ref.pair_logps(_pairs())
        pol_now = m.pair_logps(_pairs())
    torch.testing.assert_close(ref_now.chosen, ref_before.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_now.rejected, ref_before.rejected, atol=1e-5, rtol=0)
    assert not torch.allclose(pol_now.chosen, ref_before.chosen)
    # Outputs load with plain transformers + peft and score the same.
    out = tmp_path / "adapter"
    m.save_pretrained(out)
    assert (out / "adapter_config.json").is_file()
    plain = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(str(base_dir)), str(out))
    again = m._clone(plain)
    with torch.no_grad():
        reloaded = again.pair_logps(_pairs())
    torch.testing.assert_close(reloaded.chosen, pol_now.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(reloaded.rejected, pol_now.rejected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_default_lora_targets_only_the_language_model(load_family, family) -> None:
    import re

    m = load_family(family)
    rx = re.compile(m.default_lora_targets())
    names = [n for n, _ in m.model.named_modules()]
    hits = [n for n in names if rx.fullmatch(n)]
    lm = LANGUAGE.get(family, "language_model")
    assert hits and all(f".{lm}." in n for n in hits)
    vision_attn = [n for n in names if f".{VISION[family]}." in n and re.search(r"(q_proj|v_proj|qkv)$", n)]
    assert vision_attn, "the tiny vision tower has attention projections that a loose regex would hit"
    assert not set(vision_attn) & set(hits)


@pytest.mark.parametrize("family", ["llava", "llava-next", "paligemma"])
def test_each_image_is_encoded_once_per_pair(load_family, family) -> None:
    """Chosen and rejected share the prompt's vision features (the base adapter's shared-vision path)."""
    m = load_family(family)
    seen: list[int] = []
    m.model.model.vision_tower.embeddings.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(
        (args[0] if args else kwargs["pixel_values"]).shape[0]), with_kwargs=True)
    pairs = _pairs()[:2]
    with torch.no_grad():
        m.sft_logps([SFTExample(id=p.id, prompt=p.prompt, response=p.chosen, images=p.images) for p in pairs])
        once = seen.pop()
        m.pair_logps(pairs)
    assert seen == [once], f"{family}: the tower saw {seen} images for 2 pairs, {once} for their 2 prompts"
