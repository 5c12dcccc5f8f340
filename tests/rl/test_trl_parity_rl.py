"""GRPO's and RLOO's per-step loss equal TRL's ``GRPOTrainer`` / ``RLOOTrainer`` loss on identical rollouts (skipped without trl).

Both sides score the same completions with the same weights: TRL's ``_compute_loss`` is called on a batch of
prompt/completion ids with given advantages, old and reference log-probs; mmalign's estimator gets per-token
log-probs of the same completions from the same model and the same advantages, old and reference log-probs.
A tiny random Llama (text only) stands in for the policy: the estimators never see images.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl", reason="trl is not installed")
pytest.importorskip("datasets", reason="TRL's trainers need datasets")

from mmalign_rl.algorithms import GRPO, RLOO  # noqa: E402
from mmalign_rl.config import GRPOConfig, RLOOConfig  # noqa: E402
from mmalign_rl.loop import RolloutBatch, Totals  # noqa: E402
from mmalign_rl.scoring import TokenScores  # noqa: E402

N, P, T = 8, 5, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mmalign_tiny.config import TinyLlavaConfig
    from mmalign_tiny.model import ensure_built

    folder = ensure_built(TinyLlavaConfig(cache_dir=str(tmp_path_factory.mktemp("tiny-rl-trl"))))
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    saved = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    model = LlamaForCausalLM.from_pretrained(saved)
    g = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(3, len(tok), (N, P), generator=g)
    completion_ids = torch.randint(3, len(tok), (N, T), generator=g)
    lengths = torch.tensor([6, 3, 5, 1, 6, 4, 2, 6])
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).long()
    with torch.no_grad():
        logits = model(input_ids=torch.cat([prompt_ids, completion_ids], 1)).logits[:, P - 1 : -1]
        logps = torch.log_softmax(logits.float(), -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    data = dict(prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids), completion_ids=completion_ids, completion_mask=mask,
                old=(logps + 0.3 * torch.randn(N, T, generator=g)) * mask, ref=(logps + 0.5 * torch.randn(N, T, generator=g)) * mask,
                advantages=torch.randn(N, generator=g))
    ds = Dataset.from_dict({"prompt": ["a picture"] * 8})
    return model, tok, ds, data, tmp_path_factory.mktemp("trl-out")


def _ours_now(model, d) -> torch.Tensor:
    logits = model(input_ids=torch.cat([d["prompt_ids"], d["completion_ids"]], 1)).logits[:, P - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(-1, d["completion_ids"].unsqueeze(-1)).squeeze(-1) * d["completion_mask"]


def _batch(d, advantages: torch.Tensor) -> RolloutBatch:
    mask = d["completion_mask"].float()
    return RolloutBatch(rollouts=None, requests=[], rewards=torch.zeros(N), old=TokenScores(logps=d["old"], mask=mask),
                        ref_logps=d["ref"], max_new_tokens=T, advantages=advantages)


@pytest.mark.parametrize("trl_type, ours, corrected", [("grpo", "sequence", False), ("bnpo", "token", False), ("dr_grpo", "constant", True),
                                                      ("dapo", "token-sum", True)])
def test_grpo_loss_equals_trl(setup, trl_type: str, ours: str, corrected: bool) -> None:
    from trl import GRPOConfig as TRLGRPOConfig, GRPOTrainer

    model, tok, ds, d, out = setup
    args = TRLGRPOConfig(output_dir=str(out), per_device_train_batch_size=N, num_generations=4, max_completion_length=T, beta=0.1,
                         epsilon=0.2, epsilon_high=0.28, loss_type=trl_type, use_bias_correction_kl=corrected, report_to=[], use_cpu=True, bf16=False, logging_steps=1)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **k: [0.0] * len(completions), args=args, train_dataset=ds,
                          processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1
    inputs = dict(prompt_ids=d["prompt_ids"], prompt_mask=d["prompt_mask"], completion_ids=d["completion_ids"],
                  completion_mask=d["completion_mask"], advantages=d["advantages"], old_per_token_logps=d["old"],
                  ref_per_token_logps=d["ref"], num_items_in_batch=d["completion_mask"].sum())
    trainer.model.train()
    theirs = trainer._compute_loss(trainer.model, inputs)
    algo = GRPO(GRPOConfig(beta=0.1, kl_estimator="k3", clip_low=0.2, clip_high=0.28, loss_aggregation=ours, epochs=2,
                           kl_ratio_correction=corrected))
    mask = d["completion_mask"].float()
    now = TokenScores(logps=_ours_now(trainer.model, d), mask=mask)
    totals = Totals(sequences=N, tokens=float(mask.sum()), micro_batches=1, max_new_tokens=T)
    mine, _ = algo.loss(_batch(d, d["advantages"].unsqueeze(1)), torch.arange(N), now, totals)
    assert abs(float(theirs) - float(mine)) < 1e-6, (float(theirs), float(mine))
    assert abs(float(theirs)) > 1e-3  # not a vacuous zero
    # The gradients agree too.
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    g_theirs = torch.autograd.grad(theirs, params, retain_graph=True)
    g_mine = torch.autograd.grad(mine, params)
    for a, b in zip(g_theirs, g_mine):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rloo_loss_equals_trl(setup) -> None:
    from trl import RLOOConfig as TRLRLOOConfig, RLOOTrainer

    model, tok, ds, d, out = setup
    args = TRLRLOOConfig(output_dir=str(out), per_device_train_batch_size=N, num_generations=4, max_completion_length=T, beta=0.4,
                         epsilon=0.2, report_to=[], use_cpu=True, bf16=False, logging_steps=1)
    trainer = RLOOTrainer(model=model, reward_funcs=lambda completions, **k: [0.0] * len(completions), args=args, train_dataset=ds,
                          processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1
    old_seq = (d["old"] * d["completion_mask"]).sum(1)
    inputs = dict(prompt_ids=d["prompt_ids"], prompt_mask=d["prompt_mask"], completion_ids=d["completion_ids"],
                  completion_mask=d["completion_mask"], advantages=d["advantages"], old_logps=old_seq)
    trainer.model.train()
    theirs = trainer._compute_loss(trainer.model, inputs)
    algo = RLOO(RLOOConfig(beta=0.4, clip=0.2, epochs=2))
    mask = d["completion_mask"].float()
    now = TokenScores(logps=_ours_now(trainer.model, d), mask=mask)
    mine, _ = algo.loss(_batch(d, d["advantages"].unsqueeze(1)), torch.arange(N), now,
                        Totals(sequences=N, tokens=float(mask.sum()), micro_batches=1, max_new_tokens=T))
    assert abs(float(theirs) - float(mine)) < 1e-6, (float(theirs), float(mine))
    assert abs(float(theirs)) > 1e-3


def test_rloo_advantages_follow_trls_formula() -> None:
    """TRL's RLOOTrainer: rewards - beta * sum_t (old - ref), leave-one-out baseline, optional (A - mean) / (std + 1e-4)."""
    g = torch.Generator().manual_seed(3)
    mask = (torch.arange(T).unsqueeze(0) < torch.tensor([6, 3, 5, 1, 6, 4, 2, 6]).unsqueeze(1)).float()
    old, ref = torch.randn(N, T, generator=g) * mask, torch.randn(N, T, generator=g) * mask
    rewards = torch.randn(N, generator=g)
    for normalize in (False, True):
        batch = RolloutBatch(rollouts=type("R", (), {"k": 4})(), requests=[], rewards=rewards, old=TokenScores(old, mask),
                             ref_logps=ref, max_new_tokens=T)
        RLOO(RLOOConfig(beta=0.4, normalize_advantages=normalize)).advantages(batch)
        r = rewards - 0.4 * ((old - ref) * mask).sum(-1)
        grp = r.view(-1, 4)
        want = (grp - (grp.sum(1, keepdim=True) - grp) / 3).view(-1)
        if normalize:
            want = (want - want.mean()) / (want.std() + 1e-4)
        torch.testing.assert_close(batch.advantages[:, 0], want)
