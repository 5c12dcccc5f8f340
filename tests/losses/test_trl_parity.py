"""mmalign's losses equal TRL's ``DPOTrainer`` losses on an identical batch of the tiny LLaVA (skipped without trl).

Both sides see the same model weights (policy = reference + noise), the same
images, prompt messages and answers. Token sequences are made identical
first, and the test asserts that they are:

- TRL renders the prompt with the processor's chat template and tokenizes it
  with ``add_special_tokens=False`` (it expects the template to emit BOS, as
  real chat templates do); mmalign's engine tokenizes the rendered prompt with
  the tokenizer's own special tokens, and the tiny tokenizer's post-processor
  adds BOS. The tiny chat template emits no BOS, so TRL's processor gets the
  same template prefixed with ``{{ bos_token }}``. Without that, TRL's
  sequences lack the leading ``<s>`` and the DPO loss differs by ~6e-4.
- The answers: TRL tokenizes the assistant turn's rendered text
  (``"{answer}</s>"``); mmalign appends EOS to the tokenized answer -- the same ids.
- TRL left-pads prompts without position ids, so every pair uses the same
  prompt (equal prompt lengths) and left padding never shifts positions.
"""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

pytest.importorskip("trl", reason="trl is not installed")
pytest.importorskip("datasets", reason="TRL's DPOTrainer needs datasets")

from mmalign_hf.model import HFVisionLanguageModel  # noqa: E402
from mmalign_core.protocols import LossInputs  # noqa: E402
from mmalign_core.testing import make_pairs  # noqa: E402
from mmalign_losses.config import DPOConfig, IPOConfig, RobustDPOConfig, SLiCConfig  # noqa: E402
from mmalign_losses.dpo import DPOLoss, RobustDPOLoss  # noqa: E402
from mmalign_losses.gpo import IPOLoss, SLiCLoss  # noqa: E402

TOL = 1e-5
# Sequence log-probs agree to ~1e-6 in float32, not bit for bit: TRL's fused LM head projects only the
# completion positions, in tiles, so its matmuls round differently from the full-logits path. The losses'
# sensitivity to rho is at most beta (DPO, hinge), so betas here are <= 0.5 to stay well inside TOL.


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmalign_tiny.config import TinyLlavaConfig
    from mmalign_tiny.model import ensure_built

    folder = ensure_built(TinyLlavaConfig(cache_dir=str(tmp_path_factory.mktemp("tiny-trl"))))
    torch.manual_seed(0)
    reference = AutoModelForImageTextToText.from_pretrained(folder)
    policy = copy.deepcopy(reference)
    with torch.no_grad():  # a policy that differs from the reference, so the loss is not log 2
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy.eval()
    reference.eval()
    processor = AutoProcessor.from_pretrained(folder)
    trl_processor = AutoProcessor.from_pretrained(folder)
    trl_processor.chat_template = "{{ bos_token }}" + processor.chat_template
    pairs = make_pairs(4, image_size=32)
    pairs[1].chosen = "A green square and a red circle next to it."  # answers of different lengths: padding
    pairs[2].rejected = "Two blue triangles."
    assert len({p.prompt for p in pairs}) == 1
    rows = [
        {
            "images": [p.images[0].load()],
            "prompt": [{"role": "user", "content": p.prompt}],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    pol = HFVisionLanguageModel(policy, processor)
    ref = HFVisionLanguageModel(reference, processor)
    with torch.no_grad():
        logps = LossInputs(policy=pol.pair_logps(pairs), reference=ref.pair_logps(pairs), pairs=pairs)
    return {"policy": policy, "reference": reference, "trl_processor": trl_processor, "rows": rows, "pairs": pairs,
            "mm_policy": pol, "logps": logps, "out": tmp_path_factory.mktemp("trl-out")}


def _trl(setup, **args):
    """TRL's loss (and logged metrics) on one collated batch of all rows."""
    from datasets import Dataset
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    config = TRLConfig(
        output_dir=str(setup["out"]), bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[],
        max_length=None, per_device_train_batch_size=len(setup["rows"]), logging_steps=1, **args,
    )
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:  # Trainer.__init__ reseeds every global RNG; leave them as the other tests expect
        trainer = DPOTrainer(
            model=setup["policy"], ref_model=setup["reference"], args=config,
            train_dataset=Dataset.from_list(setup["rows"]), processing_class=setup["trl_processor"],
        )
    finally:
        random.setstate(rng[0]); np.random.set_state(rng[1]); torch.set_rng_state(rng[2])  # noqa: E702
    batch = trainer.data_collator([dict(r) for r in setup["rows"]])
    setup["policy"].eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    logged = getattr(trainer, "_metrics", {}).get("eval", {})  # TRL's per-step metric lists (trl 1.16)
    metrics = {k: v[-1] for k, v in logged.items() if v}
    return float(loss), batch, metrics


def test_token_sequences_are_identical(setup) -> None:
    _, batch, _ = _trl(setup, beta=0.1)
    pairs = setup["pairs"]
    enc = setup["mm_policy"].encode(
        [p.prompt for p in pairs] * 2, [p.images for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    )
    for i in range(2 * len(pairs)):
        ours = enc.inputs["input_ids"][i][enc.inputs["attention_mask"][i].bool()].tolist()
        theirs = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        assert ours == theirs, f"row {i}"
        # the same answer tokens are scored (mmalign's mask is over targets, TRL's over positions)
        assert int(enc.response_mask[i].sum()) == int(batch["completion_mask"][i].sum())
    assert torch.equal(enc.inputs["pixel_values"], batch["pixel_values"])


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_equals_trl(setup, beta: float) -> None:
    theirs, _, metrics = _trl(setup, beta=beta)
    ours = DPOLoss(DPOConfig(beta=beta))(setup["logps"])
    print(f"dpo beta={beta}: mmalign {ours.loss.item():.8f} trl {theirs:.8f}")
    assert abs(ours.loss.item() - theirs) < TOL, (ours.loss.item(), theirs)
    assert ours.metrics["rewards/chosen"] == pytest.approx(metrics["rewards/chosen"], abs=TOL)
    assert ours.metrics["rewards/margin"] == pytest.approx(metrics["rewards/margins"], abs=TOL)
    assert ours.metrics["rewards/accuracy"] == pytest.approx(metrics["rewards/accuracies"], abs=TOL)


def test_ipo_trl_parametrisation_equals_trl(setup) -> None:
    theirs, _, _ = _trl(setup, beta=0.1, loss_type=["ipo"])
    ours = IPOLoss(IPOConfig(beta=0.1, parametrisation="trl"))(setup["logps"]).loss.item()
    print(f"ipo (trl) beta=0.1: mmalign {ours:.8f} trl {theirs:.8f}")
    assert abs(ours - theirs) < TOL * max(1.0, abs(theirs)), (ours, theirs)


def test_slic_equals_trl_hinge(setup) -> None:
    theirs, _, _ = _trl(setup, beta=0.5, loss_type=["hinge"])
    for parametrisation in ("gpo", "trl"):
        ours = SLiCLoss(SLiCConfig(beta=0.5, parametrisation=parametrisation))(setup["logps"]).loss.item()
        print(f"slic ({parametrisation}) beta=0.5: mmalign {ours:.8f} trl hinge {theirs:.8f}")
        assert abs(ours - theirs) < TOL, (parametrisation, ours, theirs)


def test_robust_form_equals_trl_robust(setup) -> None:
    theirs, _, _ = _trl(setup, beta=0.1, loss_type=["robust"], label_smoothing=0.2)
    ours = RobustDPOLoss(RobustDPOConfig(beta=0.1, label_smoothing=0.2, form="robust"))(setup["logps"]).loss.item()
    print(f"robust-dpo (robust) beta=0.1 eps=0.2: mmalign {ours:.8f} trl robust {theirs:.8f}")
    assert abs(ours - theirs) < TOL, (ours, theirs)
