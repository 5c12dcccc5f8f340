"""Sentence splitting, cutting and the yes/no flip; the diffusion-noise schedule (no model)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmalign_bdhs.noise import add_noise, alpha_bar, noise_coefficients
from mmalign_bdhs.text import cut_at_stop, cut_sentence, flip_yes_no, join_sentences, plan_sentence, split_sentences


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("a red circle and a blue square.", ["a red circle and a blue square."]),
        ("Yes. There is a cat. It sleeps!", ["Yes.", "There is a cat.", "It sleeps!"]),
        ("Is it red? Yes, it is.", ["Is it red?", "Yes, it is."]),
        ("Steps:\n1. Open it. 2. Close it.\nDone", ["Steps:", "1. Open it.", "2. Close it.", "Done"]),
        ("a) first. b) second.", ["a) first.", "b) second."]),
        ("The value is 3.5 m. Done.", ["The value is 3.5 m.", "Done."]),
        ("No", ["No"]),
    ],
)
def test_split_sentences_keeps_separators_and_list_markers(text: str, sentences: list[str]) -> None:
    pieces = split_sentences(text)
    assert [s for s, _ in pieces] == sentences
    assert join_sentences(pieces) == text


def test_cut_sentence_at_word_boundaries() -> None:
    s = "a red  circle and a square."
    assert cut_sentence(s, 0) == ""
    assert cut_sentence(s, 1) == "a"
    assert cut_sentence(s, 3) == "a red  circle"  # original spacing kept, no trailing space
    assert cut_sentence(s, 6) == s
    assert cut_sentence(s, 99) == s


def test_flip_yes_no_keeps_case_and_needs_a_whole_word() -> None:
    assert flip_yes_no("Yes.") == "No."
    assert flip_yes_no("no, it is not.") == "yes, it is not."
    assert flip_yes_no("  No, there is a dog.") == "  Yes, there is a dog."
    assert flip_yes_no("yes") == "no"
    for unchanged in ("Nothing is there.", "Yesterday it rained.", "Is it? Yes.", "NO."):
        assert flip_yes_no(unchanged) == unchanged


def test_plan_sentence_split_points_are_uniform_over_word_boundaries() -> None:
    rng = np.random.default_rng(0)
    heads = [plan_sentence("a red circle and a blue square.", rng, 0.5).head for _ in range(2000)]
    counts = {h: heads.count(h) for h in set(heads)}
    # 7 words: 0..6 words kept, each about 1/7 of the time; the whole sentence is never kept
    assert len(counts) == 7 and "a red circle and a blue square." not in counts
    assert all(abs(c / 2000 - 1 / 7) < 0.03 for c in counts.values())


def test_min_head_words_keeps_a_prefix_and_still_regenerates_the_last_word() -> None:
    rng = np.random.default_rng(0)
    heads = {plan_sentence("a red circle and a blue square.", rng, 0.5, min_head_words=3).head for _ in range(500)}
    assert heads == {"a red circle", "a red circle and", "a red circle and a", "a red circle and a blue"}
    short = {plan_sentence("a red circle.", rng, 0.5, min_head_words=3).head for _ in range(100)}
    assert short == {"a red"}  # at most n - 1 words are kept
    # The default draws exactly as before (same generator stream).
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [plan_sentence("a b c d.", a, 0.5).head for _ in range(50)] == \
        [plan_sentence("a b c d.", b, 0.5, min_head_words=0).head for _ in range(50)]


def test_plan_sentence_flip_rate_and_flipped_head_keeps_the_flip() -> None:
    rng = np.random.default_rng(1)
    plans = [plan_sentence("Yes, there is a blue square.", rng, 0.5) for _ in range(4000)]
    flipped = [p for p in plans if p.flipped]
    assert abs(len(flipped) / len(plans) - 0.5) < 0.03
    assert all(p.head.startswith("No") for p in flipped)
    assert all(not p.head or p.head.startswith("Yes") for p in plans if not p.flipped)
    # a one-word answer: flipped and kept whole (nothing to generate), or regenerated from scratch
    one = [plan_sentence("Yes.", rng, 0.5) for _ in range(200)]
    assert {(p.flipped, p.head, p.complete) for p in one} == {(True, "No.", True), (False, "", False)}
    # probability 0 never flips, 1 always does
    assert not any(plan_sentence("No.", rng, 0.0).flipped for _ in range(50))
    assert all(plan_sentence("No.", rng, 1.0).head == "Yes." for _ in range(50))


def test_cut_at_stop() -> None:
    assert cut_at_stop(" and a blue square. The end.", ["."]) == " and a blue square."
    assert cut_at_stop(" and a blue square", ["."]) == " and a blue square"
    assert cut_at_stop("a! b.", [".", "!"]) == "a!"


# ----------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("step, signal, std", [(100, 0.998, 0.058), (200, 0.994, 0.110), (300, 0.981, 0.194),
                                               (400, 0.945, 0.327), (500, 0.863, 0.505)])
def test_noise_schedule_matches_the_reference_values(step: int, signal: float, std: float) -> None:
    for schedule in ("linspace", "paper"):
        a, s = noise_coefficients(step, schedule)
        assert a == pytest.approx(signal, abs=1e-3) and s == pytest.approx(std, abs=1.5e-3)
        assert a * a + s * s == pytest.approx(1.0)


def test_noise_schedule_equals_the_povid_code() -> None:
    import torch

    betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5
    prod = torch.cumprod(1 - betas, dim=0)
    assert np.allclose(alpha_bar("linspace"), prod.double().numpy(), atol=1e-6)
    assert abs(alpha_bar("paper")[500] - alpha_bar("linspace")[500]) < 1e-3


def test_add_noise_clamps_by_default_and_wraps_like_povid_when_asked() -> None:
    img = Image.new("RGB", (16, 16), (250, 5, 128))
    clamped = np.asarray(add_noise(img, 500, np.random.default_rng(0)), dtype=np.int64)
    wrapped = np.asarray(add_noise(img, 500, np.random.default_rng(0), pixels="povid_exact"), dtype=np.int64)
    # The same draws: inside [0, 1] the two agree; outside, clamping saturates while POVID's byte() wraps.
    x = np.asarray(img, dtype=np.float32) / 255
    a, s = noise_coefficients(500)
    noisy = np.float32(a) * x + np.float32(s) * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    inside = (noisy >= 0) & (noisy <= 1)
    assert (clamped[inside] == wrapped[inside]).all()
    assert ((clamped[noisy > 1] == 255).all() and (clamped[noisy < 0] == 0).all())
    import torch

    expect = torch.from_numpy(noisy).mul(255).byte().numpy()  # what ToPILImage does to an unclamped tensor
    assert (wrapped == expect).all()
    assert not (wrapped[~inside] == clamped[~inside]).all()
    # deterministic given the generator; a different generator gives other noise
    again = np.asarray(add_noise(img, 500, np.random.default_rng(0)))
    other = np.asarray(add_noise(img, 500, np.random.default_rng(1)))
    assert (again == clamped).all() and not (other == clamped).all()
    assert (np.asarray(add_noise(img, 0, np.random.default_rng(0)), dtype=np.int64) - np.asarray(img, dtype=np.int64)).std() < 3
