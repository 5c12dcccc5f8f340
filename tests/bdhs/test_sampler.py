"""The BDHS loop (Algorithm 1) with scripted generation and a stub embedder: iteration counts, the
unguided last iteration, batching of all sentences of all pairs, determinism, and the Figure 10 stats."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mmalign_bdhs.sampler as sampler_mod
from bdhs_helpers import ScriptedEmbedder, shapes_image
from mmalign_bdhs.config import BDHSOnlineConfig
from mmalign_bdhs.sampler import BDHSSampler, Item, summarize


def _config(**kw: Any) -> BDHSOnlineConfig:
    return BDHSOnlineConfig.model_validate({"base": {"name": "shapes-pairs"}, "embedder": {"name": "bag-of-words"}, **kw})


class FakeGenerator:
    """Replaces ``generate_rows``: records every call and continues each row with a scripted text."""

    def __init__(self, continuation="X."):
        self.calls: list[dict[str, Any]] = []
        self.continuation = continuation

    def __call__(self, model, rows, *, method=None, max_new_tokens=0, stop=None, batch_size=0, return_counts=False):
        self.calls.append({"rows": list(rows), "method": method, "stop": stop, "max_new_tokens": max_new_tokens})
        out = []
        for r in rows:
            text = self.continuation(r) if callable(self.continuation) else self.continuation
            out.append(text if stop is None else " " + text)
        counts = []
        for r in rows:
            k = 36
            counts.append((k, int(r.hide(k).sum()) if r.hide else 0))
        return (out, counts) if return_counts else out


ITEMS = [
    Item("p0", "Describe the image.", [shapes_image((200, 0, 0), "a")], "a red circle. It is big."),
    Item("p1", "Is there a red circle?", [shapes_image((0, 0, 200), "b")], "Yes."),
    Item("p2", "Describe the image.", [shapes_image((0, 200, 0), "c")], "a green square and a blue star."),
]


def test_all_sentences_of_all_pairs_generate_in_one_batch(monkeypatch) -> None:
    gen = FakeGenerator()
    monkeypatch.setattr(sampler_mod, "generate_rows", gen)
    s = BDHSSampler(_config(n_bdhs=1, flip_probability=0.0), ScriptedEmbedder(lambda t: 0.0))
    out = s.sample(object(), ITEMS)
    assert len(gen.calls) == 1  # one iteration, one batched call
    rows = gen.calls[0]["rows"]
    assert len(rows) == 2 + 1 + 1  # p0 has two sentences, p1 and p2 one each
    assert gen.calls[0]["stop"] == ["."] and gen.calls[0]["method"] == "attention"
    # the second sentence of p0 is conditioned on the true first sentence
    second = [r for r in rows if r.prefix.startswith("a red circle.")]
    assert len(second) == 1 and second[0].prompt == ITEMS[0].prompt
    # all rows of one pair share one visibility mask; different pairs draw their own
    p0 = [r for r in rows if r.images[0].key == "a"]
    assert np.array_equal(p0[0].hide(36), p0[1].hide(36))
    assert not np.array_equal(p0[0].hide(36), [r for r in rows if r.images[0].key == "c"][0].hide(36))
    assert all(o.iterations == 1 and not o.unguided for o in out)


def test_visibility_follows_rho_th(monkeypatch) -> None:
    gen = FakeGenerator()
    monkeypatch.setattr(sampler_mod, "generate_rows", gen)
    for rho, lo, hi in ((0.99, 0.97, 1.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.5, 0.45, 0.55)):
        gen.calls.clear()
        items = [Item(f"q{i}", "Describe the image.", [shapes_image((9, 9, 9), "z")], "a cat.") for i in range(200)]
        BDHSSampler(_config(n_bdhs=1, rho_th=rho), ScriptedEmbedder(lambda t: 0.0)).sample(object(), items)
        hidden = np.mean([r.hide(36).mean() for r in gen.calls[0]["rows"]])
        assert lo <= hidden <= hi, (rho, hidden)


def test_loop_resamples_similar_answers_and_the_last_iteration_is_unguided(monkeypatch) -> None:
    gen = FakeGenerator()
    # each continuation names its image and the generate call it came from: "a2." is p0's answer in iteration 2
    gen.continuation = lambda row: f"{row.images[0].key}{len(gen.calls)}."
    monkeypatch.setattr(sampler_mod, "generate_rows", gen)
    embedder = ScriptedEmbedder(lambda text: 0.5 if "a2." in text else 0.99, chosen=[it.chosen for it in ITEMS])
    s = BDHSSampler(_config(n_bdhs=5, eps_s=0.97, flip_probability=0.0), embedder)
    out = s.sample(object(), ITEMS)
    assert [o.iterations for o in out] == [2, 5, 5]  # p0 is non-similar at its 2nd try; p1, p2 never are
    assert [o.unguided for o in out] == [False, True, True]
    assert out[0].similarities == [pytest.approx(0.99), pytest.approx(0.5)]
    assert len(out[1].similarities) == 5 and out[1].similarities[-1] == pytest.approx(0.99)
    # iterations 1-4 are guided sentence regeneration (stop strings), the 5th one full answers
    assert [c["stop"] for c in gen.calls] == [["."]] * 4 + [None]
    assert all(not r.prefix for r in gen.calls[-1]["rows"]) and len(gen.calls[-1]["rows"]) == 2
    assert out[1].rejected == "b5." and out[2].rejected == "c5."  # the unguided answer is returned unchecked
    assert len(gen.calls[1]["rows"]) == 4  # iteration 2 still regenerates every sentence of the three pairs
    assert len(gen.calls[2]["rows"]) == 2  # p0 is done after iteration 2
    # every chosen answer is embedded once, in the first iteration
    assert sum(c.count(ITEMS[0].chosen) for c in embedder.calls) == 1
    stats = summarize(out, 5, 0.97)
    assert stats["nonsimilar_after_1"] == 0 and stats["nonsimilar_after_2"] == pytest.approx(1 / 3)
    assert stats["nonsimilar_after_5"] == pytest.approx(1 / 3)  # the unguided answers stay similar (unchecked)
    assert stats["iterations_mean"] == pytest.approx(4.0) and stats["unguided_share"] == pytest.approx(2 / 3)


def test_single_iteration_and_mask_only(monkeypatch) -> None:
    gen = FakeGenerator()
    monkeypatch.setattr(sampler_mod, "generate_rows", gen)
    out = BDHSSampler(_config(n_bdhs=1), ScriptedEmbedder(lambda t: 1.0)).sample(object(), ITEMS)
    assert [o.iterations for o in out] == [1, 1, 1] and not any(o.unguided for o in out)  # returned unchecked
    gen.calls.clear()
    out = BDHSSampler(_config(guided=False, n_bdhs=5), ScriptedEmbedder(lambda t: 1.0)).sample(object(), ITEMS)
    assert len(gen.calls) == 1 and gen.calls[0]["stop"] is None  # mask only: one unguided answer, no loop
    assert all(o.unguided and o.iterations == 1 for o in out)
    with pytest.raises(ValueError, match="embedder"):
        BDHSSampler(_config(n_bdhs=3), None).sample(object(), ITEMS)


def test_yes_no_flip_reaches_the_rejected_answer(monkeypatch) -> None:
    gen = FakeGenerator()
    monkeypatch.setattr(sampler_mod, "generate_rows", gen)
    items = [Item(f"y{i}", "Is there a red circle?", [shapes_image((1, 2, 3), "y")], "Yes.") for i in range(100)]
    out = BDHSSampler(_config(n_bdhs=1, flip_probability=0.5), ScriptedEmbedder(lambda t: 0.0)).sample(object(), items)
    flipped = [o for o in out if o.rejected == "No."]
    assert 30 <= len(flipped) <= 70
    assert all(o.rejected in ("No.", "X.") for o in out)  # kept whole when flipped, else regenerated


def test_draws_do_not_depend_on_batching_or_neighbours(monkeypatch) -> None:
    gen = FakeGenerator(continuation=lambda row: f"{row.prefix!r}.")
    monkeypatch.setattr(sampler_mod, "generate_rows", gen)
    s = BDHSSampler(_config(n_bdhs=1), ScriptedEmbedder(lambda t: 0.0))
    together = s.sample(object(), ITEMS)
    alone = [s.sample(object(), [it])[0] for it in reversed(ITEMS)][::-1]
    assert [o.rejected for o in together] == [o.rejected for o in alone]
    other_stream = s.sample(object(), ITEMS, stream=(7,))
    assert [o.rejected for o in other_stream] != [o.rejected for o in together]


def test_noise_variant_noises_images_and_hides_nothing(monkeypatch) -> None:
    gen = FakeGenerator()
    monkeypatch.setattr(sampler_mod, "generate_rows", gen)
    BDHSSampler(_config(n_bdhs=1, variant="noise"), ScriptedEmbedder(lambda t: 0.0)).sample(object(), ITEMS[:1])
    rows = gen.calls[0]["rows"]
    assert gen.calls[0]["method"] is None and all(r.hide is None for r in rows)
    noisy = np.asarray(rows[0].images[0].load(), dtype=float)
    clean = np.asarray(ITEMS[0].images[0].load(), dtype=float)
    assert np.abs(noisy - clean).mean() > 20
    assert rows[0].images[0] is rows[1].images[0]  # one noised image shared by the pair's sentences
