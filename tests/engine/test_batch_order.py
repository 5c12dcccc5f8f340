"""Batch order: deterministic, resumable by step, every example once per epoch; length grouping cuts padding."""
from __future__ import annotations

import numpy as np

from mmalign_core.runner.training import BatchOrder, lr_lambda, total_steps
from mmalign_core.spec_models import TrainSettings


def test_each_epoch_is_a_permutation_and_steps_are_pure() -> None:
    order = BatchOrder(10, seed=1)
    first = [order.batch(s, 5)[0] for s in range(4)]
    again = BatchOrder(10, seed=1)
    assert [again.batch(s, 5)[0] for s in (3, 0, 2, 1)] == [first[3], first[0], first[2], first[1]]
    assert sorted(first[0] + first[1]) == list(range(10)) == sorted(first[2] + first[3])
    assert first[0] + first[1] != first[2] + first[3]  # a new permutation for epoch 2
    assert BatchOrder(10, seed=2).batch(0, 5)[0] != first[0]


def test_length_grouping_reduces_padding_and_keeps_every_example() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=1024).tolist()
    plain, grouped = BatchOrder(1024, 0), BatchOrder(1024, 0, lengths, batch_size=8)

    def padding(order: BatchOrder) -> int:
        total = 0
        for s in range(128):
            idx, _ = order.batch(s, 8)
            ls = [lengths[i] for i in idx]
            total += max(ls) * len(ls) - sum(ls)
        return total

    assert sorted(i for s in range(128) for i in grouped.batch(s, 8)[0]) == list(range(1024))
    assert padding(grouped) < padding(plain) / 4
    # Still shuffled: consecutive batches are not in length order.
    maxima = [max(lengths[i] for i in grouped.batch(s, 8)[0]) for s in range(64)]
    assert maxima != sorted(maxima)


def test_schedules_and_step_count() -> None:
    s = TrainSettings(epochs=2, batch_size=4, warmup_ratio=0.1, schedule="linear")
    assert total_steps(s, 10) == 5
    f = lr_lambda(TrainSettings(steps=10, warmup_ratio=0.2, schedule="cosine"), 10)
    assert f(0) == 0.5 and f(1) == 1.0 and abs(f(9) - 0.5 * (1 + np.cos(np.pi * 7 / 8))) < 1e-12
    assert lr_lambda(TrainSettings(steps=10, warmup_ratio=0.0, schedule="constant"), 10)(7) == 1.0
