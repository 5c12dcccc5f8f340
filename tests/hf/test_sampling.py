"""The lean decoding loop (mmalign_hf.sampling) against transformers' generate and the sampling maths."""
from __future__ import annotations

import pytest
import torch

from mmalign_hf.sampling import _choose, decode_parts, fast_sample
from mmalign_core.types import GenerationRequest, ImageRef


def _requests(n: int) -> list[GenerationRequest]:
    from PIL import Image

    out = []
    for i in range(n):
        img = Image.new("RGB", (48, 48), (30 * i % 255, 90, 200 - 10 * i))
        prompt = "Describe the image." + " Please be brief." * (i % 3)  # different lengths: left padding
        out.append(GenerationRequest(prompt, [ImageRef(img, key=f"test:{i}")]))
    return out


def _stop_early(model) -> None:
    """Make the stop token win wherever a hidden feature is high, so rows stop at different steps."""
    head = model.model.get_output_embeddings()

    def hook(mod, inp, out):
        boost = (inp[0][..., :1] > 0.5).to(out.dtype) * 1e4
        out = out.clone()
        out[..., model.eos_token_id] += boost[..., 0]
        return out

    head.register_forward_hook(hook)


def test_greedy_equals_generate_alone_with_rows_stopping_at_different_steps(tiny_model) -> None:
    m = tiny_model
    assert decode_parts(m.model) is not None
    _stop_early(m)
    reqs = _requests(8)
    batched = m.sample_tokens(reqs, n=1, max_new_tokens=10, do_sample=False)
    lengths = set()
    for r, row in zip(reqs, batched.tolist()):
        inputs = m.generation_inputs([r])
        width = inputs["input_ids"].shape[1]
        alone = m.model.generate(**inputs, max_new_tokens=10, do_sample=False, pad_token_id=m.pad_token_id,
                                 eos_token_id=m.eos_token_id, bad_words_ids=[[m.image_token_id]],
                                 temperature=None, top_p=None, top_k=None)[0, width:].tolist()
        assert row[: len(alone)] == alone
        assert all(t == m.pad_token_id for t in row[len(alone):])  # padded after the stop token
        lengths.add(len(alone))
    assert len(lengths) > 1, "the hook should make rows stop at different steps (exercises dropping stopped rows)"


def test_samples_of_one_prompt_share_its_prefill_and_follow_the_seed(tiny_model) -> None:
    m = tiny_model
    reqs = _requests(3)
    torch.manual_seed(5)
    a = m.sample_tokens(reqs, n=4, max_new_tokens=8, do_sample=True, temperature=1.0)
    torch.manual_seed(5)
    b = m.sample_tokens(reqs, n=4, max_new_tokens=8, do_sample=True, temperature=1.0)
    assert a.shape == (12, 8) and torch.equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 3  # samples differ
    assert not (a == m.image_token_id).any()
    # n greedy samples of a prompt: all equal to the single greedy answer.
    g = m.sample_tokens(reqs, n=2, max_new_tokens=8, do_sample=False)
    one = m.sample_tokens(reqs, n=1, max_new_tokens=8, do_sample=False)
    assert torch.equal(g[0::2], one) and torch.equal(g[1::2], one)


def test_sampling_matches_the_distribution_and_never_returns_zero_probability() -> None:
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]))
    draws = _choose(logits.expand(40000, 5).clone(), True, 1.0, 1.0)
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]), atol=0.01)
    assert freq[4] == 0
    # Temperature 0.5 squares and renormalises the probabilities.
    draws = _choose(logits.expand(40000, 5).clone(), True, 0.5, 1.0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2
    freq = torch.bincount(draws, minlength=5).float()[:4] / draws.numel()
    assert torch.allclose(freq, p / p.sum(), atol=0.01)
    # top_p 0.7: the nucleus is {0, 1} (0.5 < 0.7 <= 0.8), renormalised.
    draws = _choose(logits.expand(40000, 5).clone(), True, 1.0, 0.7)
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0, 0, 0]), atol=0.01)
    # Greedy.
    assert _choose(logits[None], False, 1.0, 1.0).item() == 0


def test_fast_sample_refuses_a_family_it_does_not_cover(tiny_model, monkeypatch) -> None:
    import pytest

    from mmalign_hf import sampling

    monkeypatch.setattr(sampling, "FAST_DECODE_MODEL_TYPES", frozenset())
    m = tiny_model
    assert decode_parts(m.model) is None
    with pytest.raises(ValueError, match="generate"):
        fast_sample(m.model, m.generation_inputs(_requests(1)), n=1, max_new_tokens=2, do_sample=False)
    # The wrapper then decodes through generate() and still bans the image token.
    out = m.sample_tokens(_requests(2), n=2, max_new_tokens=4, do_sample=True)
    assert out.shape[0] == 4 and not (out == m.image_token_id).any()


def test_sampled_answers_are_scored_as_the_tokens_sampled(tiny_model, tiny_dir) -> None:
    """Decoding then re-encoding can change a sample's tokens (a random model's byte soup always does);
    remembered answers are scored as sampled, by the reference too."""
    from mmalign_tiny.model import load_tiny_llava

    m = tiny_model
    torch.manual_seed(1)
    new = m.sample_tokens(_requests(4), n=2, max_new_tokens=12, do_sample=True)
    fresh = load_tiny_llava(tiny_dir)  # never saw the samples: tokenizes the text afresh
    texts = m.texts_from_samples(new)
    changed = 0
    for text, row in zip(texts, new.tolist()):
        ids = [t for t in row if t not in (m.eos_token_id, m.pad_token_id)]
        if not text:
            continue
        assert m.answer_tokens(text) == ids
        changed += fresh.answer_tokens(text) != ids
    assert changed > 0
    ref = m.frozen_reference()
    assert all(ref.answer_tokens(t) == m.answer_tokens(t) for t in texts if t)
    assert all(ref.answer_ended(t) == m.answer_ended(t) for t in texts if t)
    # What is unsafe to remember is refused.
    assert not m.remember_answer_tokens("x", [m.image_token_id]) and not m.remember_answer_tokens("", [5])


def test_a_generation_config_the_loop_does_not_implement_falls_back_to_generate(tiny_model) -> None:
    m = tiny_model
    assert decode_parts(m.model) is not None
    m.model.generation_config.repetition_penalty = 1.3
    assert decode_parts(m.model) is None  # generate() applies the penalty; the lean loop would not
    reqs = _requests(2)
    inputs = m.generation_inputs(reqs)
    width = inputs["input_ids"].shape[1]
    expected = m.model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=m.pad_token_id,
                                eos_token_id=m.eos_token_id, bad_words_ids=[[m.image_token_id]],
                                temperature=None, top_p=None, top_k=None)[:, width:]
    got = m.sample_tokens(reqs, n=1, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, expected)
    m.model.generation_config.repetition_penalty = 1.0
    assert decode_parts(m.model) is not None


def _with_text_model(m, text_type: str, **overrides):
    """``m`` rebuilt with a random-weight text model of another Llama-style family (same sizes and vocabulary)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, MistralConfig, Qwen2Config

    from mmalign_hf.model import HFVisionLanguageModel

    if text_type == "llama":
        return m
    t = m.model.config.text_config
    common = dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                  num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                  num_key_value_heads=t.num_key_value_heads, max_position_embeddings=t.max_position_embeddings,
                  bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id)
    text = (MistralConfig if text_type == "mistral" else Qwen2Config)(**common, **overrides)
    cfg = m.model.config.to_dict()
    cfg["text_config"] = text.to_dict()
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(**cfg))
    model.generation_config.pad_token_id = m.pad_token_id
    model.generation_config.eos_token_id = m.eos_token_id
    return HFVisionLanguageModel(model, m.processor, max_length=m.max_length)


def _count_lean_steps(monkeypatch) -> list[int]:
    from mmalign_hf import sampling

    calls = [0]
    original = sampling.LeanDecoder.step

    def step(self, *a, **k):
        calls[0] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(sampling.LeanDecoder, "step", step)
    return calls


@pytest.mark.parametrize("text_type", ["llama", "mistral", "qwen2", "llama-lora"])
def test_the_lean_decoder_equals_the_models_own_decoder(tiny_model, text_type, monkeypatch) -> None:
    """Sampled and greedy tokens through LeanDecoder equal those through the decoder's forward + DynamicCache,
    with several samples per prompt, left padding and rows stopping at different steps."""
    m = _with_text_model(tiny_model, text_type.removesuffix("-lora"))
    if text_type.endswith("-lora"):  # LoRA layers in place of the projections, with non-zero updates
        m.enable_lora(r=4, alpha=8, dropout=0.0, target_modules=r".*language_model.*\.(q_proj|v_proj|down_proj)$")
        with torch.no_grad():
            for name, p in m.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    calls = _count_lean_steps(monkeypatch)
    inputs = m.generation_inputs(_requests(6))
    kw = dict(max_new_tokens=12, banned=[m.image_token_id], pad_token_id=m.pad_token_id)
    # Stop at the token sampled most often after the first step, so rows stop at different steps.
    torch.manual_seed(7)
    free = fast_sample(m.model, inputs, n=3, do_sample=True, lean_decoding=False, **kw)
    kw["stop"] = [int(free[:, 1:].flatten().mode().values)]
    for do_sample, n in ((True, 3), (False, 1)):
        torch.manual_seed(7)
        lean = fast_sample(m.model, inputs, n=n, do_sample=do_sample, **kw)
        steps = calls[0]
        torch.manual_seed(7)
        plain = fast_sample(m.model, inputs, n=n, do_sample=do_sample, lean_decoding=False, **kw)
        assert calls[0] == steps > 0  # the lean path ran, the plain one did not
        assert torch.equal(lean, plain)
        if do_sample:
            assert (lean[:, -1] == m.pad_token_id).any()  # some rows stopped early (and left the batch)
        calls[0] = 0


def test_lean_decoder_hidden_states_match_the_decoder(tiny_model) -> None:
    from transformers import DynamicCache

    from mmalign_hf.sampling import LeanDecoder

    m = _with_text_model(tiny_model, "qwen2")  # q/k/v biases, grouped key/value heads
    inputs = m.generation_inputs(_requests(4))
    attn = inputs["attention_mask"]
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    decoder = m.model.get_decoder()
    with torch.no_grad():
        out = m.model(**inputs, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        lean = LeanDecoder.build(decoder, cache, attn, copies=1, max_new_tokens=3)
        assert lean is not None
        assert isinstance(cache, DynamicCache)
        tok, nxt, mask = torch.tensor([10, 11, 12, 13]), attn.sum(-1), attn
        for _ in range(3):
            mask = torch.cat([mask, mask.new_ones((4, 1))], dim=1)
            want = decoder(input_ids=tok[:, None], attention_mask=mask, position_ids=nxt[:, None], use_cache=True,
                           past_key_values=cache).last_hidden_state
            got = lean.step(tok, nxt)
            assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
            tok, nxt = tok + 1, nxt + 1


def test_the_lean_decoder_steps_aside_where_it_would_differ(tiny_model) -> None:
    from mmalign_hf.sampling import LeanDecoder

    m = tiny_model
    decoder = m.model.get_decoder()
    assert LeanDecoder.eligible(decoder, 100) is not None
    handle = decoder.register_forward_pre_hook(lambda mod, args: None)  # e.g. BDHS's zeroed embeddings
    assert LeanDecoder.eligible(decoder, 100) is None
    handle.remove()
    text = m.model.config.text_config
    original = text._attn_implementation
    text._attn_implementation = "mmalign_bdhs_keymask"  # BDHS's key mask routes attention elsewhere
    try:
        assert LeanDecoder.eligible(decoder, 100) is None
    finally:
        text._attn_implementation = original
    mistral = _with_text_model(m, "mistral", sliding_window=8)
    assert LeanDecoder.eligible(mistral.model.get_decoder(), 100) is None  # the window would cut the context
    assert LeanDecoder.eligible(mistral.model.get_decoder(), 8) is not None
    # A short window still decodes (through the decoder's forward), and bans the image token.
    out = mistral.sample_tokens(_requests(2), n=2, max_new_tokens=4, do_sample=True)
    assert out.shape == (4, 4) and not (out == m.image_token_id).any()


def test_a_sample_that_reached_the_token_limit_is_scored_without_an_end_token(tiny_model) -> None:
    """Only samples that stopped at the end-of-sequence token are scored with it: appending one to an
    unfinished sample would train on a token the policy never produced."""
    from mmalign_core.types import PreferencePair

    m = tiny_model
    words = m.tokenizer("a red circle and a blue square", add_special_tokens=False)["input_ids"][:5]
    eos, pad = m.eos_token_id, m.pad_token_id
    rows = torch.tensor([words[:3] + [eos, pad], words])  # stopped after 3 tokens; reached the limit of 5
    stopped_text, open_text = m.texts_from_samples(rows)
    assert m.answer_ended(stopped_text) and not m.answer_ended(open_text)
    assert m.answer_ids(stopped_text) == words[:3] + [eos]
    assert m.answer_ids(open_text) == words  # as sampled, no end token
    req = _requests(1)[0]
    pair = PreferencePair(id="p", prompt=req.prompt, images=req.images, chosen=stopped_text, rejected=open_text)
    with torch.no_grad():
        out = m.pair_logps([pair])
    assert out.chosen_tokens.tolist() == [4] and out.rejected_tokens.tolist() == [5]
    # Texts never sampled (offline data) end with the end-of-sequence token, as before.
    assert m.answer_ended("a brand new answer.") and m.answer_ids("a brand new answer.")[-1] == eos
