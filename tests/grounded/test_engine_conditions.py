"""The engine's second image condition and per-token log-probs on the tiny LLaVA."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmalign_core.runner.training import StageData, run_training
from mmalign_core.spec_models import TrainSettings
from mmalign_core.testing import make_pairs
from mmalign_grounded.config import MDPOConfig, TPOConfig
from mmalign_grounded.corruption import corrupt_pairs
from mmalign_grounded.mdpo import MDPOLoss
from mmalign_grounded.plugin import CONTRAST_REQUIRES
from mmalign_grounded.tpo import TPOLoss


def test_per_token_log_probs_add_up_to_the_prefix_shared_sums(tiny_model) -> None:
    pairs = make_pairs(3, image_size=32)
    with torch.no_grad():
        shared = tiny_model.pair_logps(pairs)
        tokens = tiny_model.pair_logps(pairs, token_logps=True)
    assert torch.allclose(tokens.chosen, shared.chosen, atol=1e-4) and torch.allclose(tokens.rejected, shared.rejected, atol=1e-4)
    assert torch.equal(tokens.chosen_tokens.cpu(), shared.chosen_tokens.cpu())
    for values, counts, sums in ((tokens.chosen_token_logps, tokens.chosen_tokens, tokens.chosen),
                                 (tokens.rejected_token_logps, tokens.rejected_tokens, tokens.rejected)):
        assert values.shape[0] == 3 and torch.allclose(values.sum(-1), sums, atol=1e-5)
        for i, n in enumerate(counts.tolist()):
            assert (values[i, :n] < 0).all() and (values[i, n:] == 0).all()


def test_the_reference_gives_per_token_log_probs_too(tiny_model) -> None:
    pairs = make_pairs(2, image_size=32)
    ref = tiny_model.frozen_reference()
    with torch.no_grad():
        out = ref.pair_logps(pairs, with_rejected=False, token_logps=True)
    assert out.rejected is None and out.chosen_token_logps is not None


class _Spy:
    """Records what the runner hands the loss, and checks the corrupted log-probs against a direct scoring."""

    def __init__(self, loss, model) -> None:
        self.loss, self.model, self.seen = loss, model, []

    corrupted_with_rejected = property(lambda self: self.loss.corrupted_with_rejected)

    def corrupted_pairs(self, pairs):
        return self.loss.corrupted_pairs(pairs)

    def __call__(self, inputs):
        with torch.no_grad():
            direct = self.model.pair_logps(corrupt_pairs(inputs.pairs, self.loss.config.corruption), with_rejected=False)
        self.seen.append((inputs, direct))
        return self.loss(inputs)


def _settings(**kw) -> TrainSettings:
    return TrainSettings(steps=2, batch_size=2, lr=1e-3, warmup_ratio=0.0, log_every=1, **kw)


def _train(model, loss_fn, requires, tmp: Path, **kw) -> list[dict]:
    metrics = tmp / "metrics.jsonl"
    run_training(model=model, data=StageData(make_pairs(4, image_size=32), "pairs"), loss_fn=loss_fn, loss_requires=requires,
                 settings=_settings(**kw), stage_name="g", stage_dir=tmp, metrics_path=metrics, seed=0,
                 progress=lambda it, **k: it, log=lambda s: None, on_metrics=lambda *a: None)
    return [json.loads(x) for x in metrics.read_text().splitlines()]


def test_the_runner_scores_the_chosen_answer_under_the_corrupted_image(tiny_model, tmp_path: Path) -> None:
    spy = _Spy(MDPOLoss(MDPOConfig(beta=0.1)), tiny_model)
    rows = _train(tiny_model, spy, CONTRAST_REQUIRES, tmp_path)
    assert len(rows) == 2 and all("image/margin" in r and "loss/anchor" in r for r in rows)
    inputs, direct = spy.seen[0]
    assert inputs.corrupted.rejected is None  # the naive variant scores the chosen answer only
    assert torch.allclose(inputs.corrupted.chosen.detach(), direct.chosen, atol=1e-4)
    assert inputs.corrupted.chosen.requires_grad and not inputs.corrupted_reference.chosen.requires_grad
    # The corrupted image changes the score: the condition is really a different image.
    assert not torch.allclose(inputs.corrupted.chosen.detach(), inputs.policy.chosen.detach(), atol=1e-3)


def test_tpo_trains_with_per_token_and_corrupted_log_probs(tiny_model, tmp_path: Path) -> None:
    rows = _train(tiny_model, TPOLoss(TPOConfig(beta=0.1)), CONTRAST_REQUIRES | {"token_logps"}, tmp_path)
    assert len(rows) == 2 and all(r["weights/chosen"] > 0 for r in rows)


def test_the_reference_cache_is_refused_with_a_second_condition(tiny_model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache_reference"):
        _train(tiny_model, MDPOLoss(MDPOConfig()), CONTRAST_REQUIRES, tmp_path, cache_reference=True)


def test_a_loss_without_the_capability_is_named(tiny_model, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="corrupted_pairs"):
        _train(tiny_model, lambda inputs: None, CONTRAST_REQUIRES, tmp_path)
