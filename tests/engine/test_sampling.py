"""The lean decoding loop (mmalign_core.engine.sampling) against transformers' generate and the sampling maths."""
from __future__ import annotations

import torch

from mmalign_core.engine.sampling import _choose, decode_parts, fast_sample
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
        inputs = m._generation_inputs([r])
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

    from mmalign_core.engine import sampling

    monkeypatch.setattr(sampling, "FAST_DECODE_MODEL_TYPES", frozenset())
    m = tiny_model
    assert decode_parts(m.model) is None
    with pytest.raises(ValueError, match="generate"):
        fast_sample(m.model, m._generation_inputs(_requests(1)), n=1, max_new_tokens=2, do_sample=False)
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
    # What is unsafe to remember is refused.
    assert not m.remember_answer_tokens("x", [m.image_token_id]) and not m.remember_answer_tokens("", [5])


def test_a_generation_config_the_loop_does_not_implement_falls_back_to_generate(tiny_model) -> None:
    m = tiny_model
    assert decode_parts(m.model) is not None
    m.model.generation_config.repetition_penalty = 1.3
    assert decode_parts(m.model) is None  # generate() applies the penalty; the lean loop would not
    reqs = _requests(2)
    inputs = m._generation_inputs(reqs)
    width = inputs["input_ids"].shape[1]
    expected = m.model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=m.pad_token_id,
                                eos_token_id=m.eos_token_id, bad_words_ids=[[m.image_token_id]],
                                temperature=None, top_p=None, top_k=None)[:, width:]
    got = m.sample_tokens(reqs, n=1, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, expected)
    m.model.generation_config.repetition_penalty = 1.0
    assert decode_parts(m.model) is not None
