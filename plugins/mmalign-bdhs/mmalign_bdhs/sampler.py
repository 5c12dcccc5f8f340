"""The BDHS algorithm (paper Algorithm 1) over a batch of items.

For each item and iteration ``i = 1..N_BDHS``:

1. draw the restriction: a visibility mask over the image tokens (attn: token visible iff u >= rho_th,
   one mask shared by all sentences of the item) or a noised copy of the image (noise);
2. if ``N_BDHS > 1`` and ``i == N_BDHS`` (or ``guided`` is off): generate a full answer without guidance
   and return it unchecked;
3. otherwise split the chosen answer into sentences; per sentence, flip a leading yes/no with
   probability 0.5, cut it at a random word boundary, and let the restricted model continue the head,
   conditioned on the true previous sentences, until a stop string or EOS; rejoin;
4. if the cosine similarity to the chosen answer is below eps_s, stop; else go to the next iteration.

All rows of all active items of an iteration are generated in one batched pass. Every random draw of
an item comes from a generator seeded by ``(seed, *stream, hash(item key), iteration, purpose)``, so
results do not depend on batching, order or which other items are present (resume, online steps).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from mmalign_core.types import ImageRef

from .config import BDHSConfig
from .generation import Row, generate_rows
from .noise import add_noise
from .text import join_sentences, plan_sentence, split_sentences

_MASK, _NOISE, _PLAN = 0, 1, 2


@dataclass
class Item:
    """What BDHS needs of one example."""

    key: str
    prompt: str
    images: list[ImageRef]
    chosen: str


@dataclass
class Outcome:
    """The rejected answer of one item and how it was found."""

    rejected: str
    iterations: int
    similarities: list[Optional[float]]
    unguided: bool
    identical: bool
    visible_fraction: list[Optional[float]] = field(default_factory=list)

    def as_meta(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "similarities": [None if s is None else round(float(s), 6) for s in self.similarities],
            "unguided": self.unguided,
            "identical": self.identical,
            "visible_fraction": [None if v is None else round(float(v), 6) for v in self.visible_fraction],
        }


def item_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class _Draws:
    """The random draws of one item in one iteration."""

    def __init__(self, seed: int, stream: Sequence[int], key: str, iteration: int):
        base = [int(seed) & 0xFFFFFFFF, *[int(s) & 0xFFFFFFFF for s in stream], item_hash(key), iteration]
        self._rngs = {p: np.random.default_rng([*base, p]) for p in (_MASK, _NOISE, _PLAN)}
        self._hidden: dict[int, np.ndarray] = {}

    def hidden(self, k: int, rho_th: float) -> np.ndarray:
        """True where the image token is hidden (its draw u < rho_th); the same vector for every row of the item."""
        if k not in self._hidden:
            u = self._rngs[_MASK].random(k)
            self._hidden[k] = u < rho_th
        return self._hidden[k]

    @property
    def noise(self) -> np.random.Generator:
        return self._rngs[_NOISE]

    @property
    def plan(self) -> np.random.Generator:
        return self._rngs[_PLAN]


class BDHSSampler:
    """Runs BDHS on batches of :class:`Item` with a model behind mmalign's HF engine."""

    def __init__(self, config: BDHSConfig, embedder: Any = None):
        self.config = config
        self.embedder = embedder
        self._chosen: dict[str, np.ndarray] = {}

    @property
    def n_iterations(self) -> int:
        return self.config.n_bdhs if self.config.guided else 1

    def _unguided(self, iteration: int) -> bool:
        cfg = self.config
        return (not cfg.guided) or (cfg.n_bdhs > 1 and iteration == cfg.n_bdhs)

    # ------------------------------------------------------------------ one iteration
    def _restriction(self, item: Item, draws: _Draws) -> tuple[list[ImageRef], Any, Optional[str]]:
        cfg = self.config
        if cfg.variant == "noise":
            n = cfg.noise
            images = [
                ImageRef(add_noise(ref.load(), n.step, draws.noise, schedule=n.schedule, pixels=n.pixels), key=f"{ref.key}#noise")
                for ref in item.images
            ]
            return images, None, None
        return list(item.images), (lambda k, d=draws: d.hidden(k, cfg.rho_th)), cfg.mask_method

    def _iteration(self, model: Any, items: Sequence[Item], iteration: int, stream: Sequence[int]) -> tuple[list[str], list[Optional[float]]]:
        cfg = self.config
        unguided = self._unguided(iteration)
        draws = [_Draws(cfg.seed, stream, it.key, iteration) for it in items]
        restr = [self._restriction(it, d) for it, d in zip(items, draws)]
        texts: list[str]
        if unguided:
            rows = [Row(it.prompt, imgs, "", hide, tag=i) for i, (it, (imgs, hide, _)) in enumerate(zip(items, restr))]
            out, counts = generate_rows(model, rows, method=cfg.mask_method if cfg.variant == "attn" else None,
                                        max_new_tokens=cfg.max_new_tokens_full, stop=None, batch_size=cfg.batch_size, return_counts=True)
            texts = [t.strip() for t in out]
            visible = [_visible_fraction(c) if cfg.variant == "attn" else None for c in counts]
            return texts, visible
        # Guided: one row per sentence that needs generation.
        rows: list[Row] = []
        plans: list[list[tuple[str, str, bool]]] = []  # per item and sentence: (head, separator, complete)
        for i, (it, d, (imgs, hide, _)) in enumerate(zip(items, draws, restr)):
            pieces = split_sentences(it.chosen)
            per: list[tuple[str, str, bool]] = []
            for k, (sentence, sep) in enumerate(pieces):
                plan = plan_sentence(sentence, d.plan, cfg.flip_probability, cfg.min_head_words)
                if plan.complete or not sentence.strip():
                    per.append((plan.head if sentence.strip() else sentence, sep, True))
                    continue
                context = join_sentences(pieces[:k])
                lead = sentence[: len(sentence) - len(sentence.lstrip())]
                prefix = (context + lead + plan.head).rstrip()
                rows.append(Row(it.prompt, imgs, prefix, hide, tag=(i, k)))
                per.append((plan.head, sep, False))
            plans.append(per)
        out, counts = generate_rows(model, rows, method=cfg.mask_method if cfg.variant == "attn" else None,
                                    max_new_tokens=cfg.max_new_tokens, stop=cfg.stop, batch_size=cfg.batch_size, return_counts=True)
        generated = {row.tag: text for row, text in zip(rows, out)}
        visible: list[Optional[float]] = [None] * len(items)
        if cfg.variant == "attn":
            for row, c in zip(rows, counts):
                i = row.tag[0]
                if visible[i] is None:
                    visible[i] = _visible_fraction(c)
        texts = []
        for i, per in enumerate(plans):
            parts = []
            for k, (head, sep, complete) in enumerate(per):
                if complete:
                    parts.append(head + sep)
                    continue
                cont = generated[(i, k)]
                sentence = (head + cont) if head else cont.lstrip()
                parts.append(sentence.rstrip() + sep)
            texts.append("".join(parts).strip())
        return texts, visible

    # -------------------------------------------------------------------- the loop
    def similarities(self, rejected: Sequence[str], chosen: Sequence[str]) -> list[Optional[float]]:
        """Cosine similarity of each rejected answer to its chosen one (chosen embeddings are computed once)."""
        if self.embedder is None:
            return [None] * len(rejected)
        from .embedders import cosine

        missing = list(dict.fromkeys(c for c in chosen if c not in self._chosen))
        emb = self.embedder.embed(list(rejected) + missing)
        n = len(rejected)
        for text, vec in zip(missing, emb[n:]):
            self._chosen[text] = vec
        if len(self._chosen) > 100_000:  # bounded: keep the newest half
            for key in list(self._chosen)[: len(self._chosen) // 2]:
                del self._chosen[key]
        ref = np.stack([self._chosen[c] for c in chosen]) if chosen else emb[:0]
        return [float(v) for v in cosine(emb[:n], ref)]

    def sample(self, model: Any, items: Sequence[Item], *, stream: Sequence[int] = ()) -> list[Outcome]:
        """The rejected answer of every item (Algorithm 1)."""
        cfg = self.config
        if self.embedder is None and cfg.guided and cfg.n_bdhs > 1:
            raise ValueError("the similarity loop (guided, n_bdhs > 1) needs a sentence embedder")
        sims: list[list[Optional[float]]] = [[] for _ in items]
        visible: list[list[Optional[float]]] = [[] for _ in items]
        results: list[Optional[Outcome]] = [None] * len(items)
        active = list(range(len(items)))
        for iteration in range(1, self.n_iterations + 1):
            batch = [items[i] for i in active]
            texts, vis = self._iteration(model, batch, iteration, stream)
            scores = self.similarities(texts, [it.chosen for it in batch])
            unguided = self._unguided(iteration)
            for i, text, s, v in zip(active, texts, scores, vis):
                sims[i].append(s)
                visible[i].append(v)
                last = unguided or iteration == self.n_iterations
                if last or (s is not None and s < cfg.eps_s):
                    results[i] = Outcome(text, iteration, sims[i], unguided, text.strip() == items[i].chosen.strip(), visible[i])
            active = [i for i in active if results[i] is None]
            if not active:
                break
        return [r for r in results if r is not None]


def _visible_fraction(counts: tuple[int, int]) -> Optional[float]:
    """Share of a row's image tokens left visible."""
    total, n_hidden = counts
    return None if total == 0 else 1.0 - n_hidden / total


def summarize(outcomes: Sequence[Outcome], n_iterations: int, eps_s: float) -> dict[str, float]:
    """Figure 10 statistics: the share of items with a non-similar answer after each iteration, and more."""
    n = len(outcomes)
    stats: dict[str, float] = {"n": float(n)}
    if not n:
        return stats
    stats["iterations_mean"] = float(np.mean([o.iterations for o in outcomes]))
    for i in range(1, n_iterations + 1):
        done = [o for o in outcomes if o.iterations <= i]
        ok = sum(1 for o in done if o.similarities and o.similarities[-1] is not None and o.similarities[-1] < eps_s)
        stats[f"nonsimilar_after_{i}"] = ok / n
    final = [o.similarities[-1] for o in outcomes if o.similarities and o.similarities[-1] is not None]
    if final:
        stats["similarity_mean"] = float(np.mean(final))
    stats["unguided_share"] = sum(o.unguided for o in outcomes) / n
    stats["identical_share"] = sum(o.identical for o in outcomes) / n
    return stats
