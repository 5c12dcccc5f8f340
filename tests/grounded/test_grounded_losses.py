"""Each image-grounded loss against its formula computed independently (plain floats) on fixed inputs."""
from __future__ import annotations

import math

import pytest
import torch

from mmalign_core.protocols import LossInputs, PairLogps
from mmalign_grounded.chip import CHiPLoss
from mmalign_grounded.config import CHiPConfig, MDPOConfig, SymMPOConfig, TPOConfig
from mmalign_grounded.contrast import MissingConditionError
from mmalign_grounded.mdpo import MDPOLoss
from mmalign_grounded.symmpo import SymMPOLoss
from mmalign_grounded.tpo import TPOLoss

# Per pair: policy and reference log-probs of y+ and y- under the clean (m) and corrupted (m') image.
POL = {"w": [-3.0, -5.5], "l": [-4.0, -5.0], "wc": [-6.0, -5.8], "lc": [-4.5, -7.0]}
REF = {"w": [-3.5, -5.0], "l": [-3.8, -5.6], "wc": [-5.0, -6.1], "lc": [-4.9, -6.2]}
TOKENS = [4.0, 5.0]


def _logps(d: dict[str, list[float]], clean: bool, grad: bool = False) -> PairLogps:
    w, l = ("w", "l") if clean else ("wc", "lc")
    n = torch.tensor(TOKENS)
    return PairLogps(chosen=torch.tensor(d[w], requires_grad=grad), rejected=torch.tensor(d[l], requires_grad=grad),
                     chosen_tokens=n, rejected_tokens=n)


def _inputs(pol=POL, ref=REF) -> LossInputs:
    return LossInputs(policy=_logps(pol, True, grad=True), reference=_logps(ref, True), pairs=[],
                      corrupted=_logps(pol, False, grad=True), corrupted_reference=_logps(ref, False))


def h(key: str, i: int, pol=POL, ref=REF) -> float:
    return pol[key][i] - ref[key][i]


def nls(x: float) -> float:  # -log sigmoid(x)
    return math.log1p(math.exp(-x))


def contrast(i: int, variant: str, pol=POL, ref=REF) -> float:
    c = h("w", i, pol, ref) - h("wc", i, pol, ref)
    if variant == "consistent":
        c -= h("l", i, pol, ref) - h("lc", i, pol, ref)
    return c


@pytest.mark.parametrize("variant", ["naive", "consistent"])
def test_mdpo_equals_its_three_terms(variant: str) -> None:
    b, wi, wa, delta = 0.5, 0.7, 0.3, 0.2
    out = MDPOLoss(MDPOConfig(beta=b, image_weight=wi, anchor_weight=wa, anchor_delta=delta, variant=variant))(_inputs())
    expected = sum(
        nls(b * (h("w", i) - h("l", i))) + wi * nls(b * contrast(i, variant)) + wa * nls(b * h("w", i) - delta) for i in range(2)
    ) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["image/margin"] == pytest.approx(b * (contrast(0, variant) + contrast(1, variant)) / 2, abs=1e-6)
    out.loss.backward()


def test_mean_reduction_divides_by_the_answer_tokens() -> None:
    out = MDPOLoss(MDPOConfig(beta=1.0, image_weight=0, anchor_weight=0, reduction="mean"))(_inputs())
    expected = sum(nls((h("w", i) - h("l", i)) / TOKENS[i]) for i in range(2)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("variant", ["naive", "consistent"])
def test_chip_is_response_dpo_plus_the_visual_term(variant: str) -> None:
    b, lam = 0.2, 0.6
    out = CHiPLoss(CHiPConfig(beta=b, visual_weight=lam, variant=variant))(_inputs())
    expected = sum(nls(b * (h("w", i) - h("l", i))) + lam * nls(b * contrast(i, variant)) for i in range(2)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["loss/visual"] == pytest.approx(sum(nls(b * contrast(i, variant)) for i in range(2)) / 2, rel=1e-6)


@pytest.mark.parametrize("variant", ["naive", "consistent"])
def test_symmpo_contrast_and_margin_consistency(variant: str) -> None:
    b, wc, wm = 0.3, 0.8, 0.25
    out = SymMPOLoss(SymMPOConfig(beta=b, contrast_weight=wc, consistency_weight=wm, variant=variant))(_inputs())
    expected = 0.0
    for i in range(2):
        clean = b * (h("w", i) - h("l", i))
        swapped = b * (h("lc", i) - h("wc", i))
        expected += nls(clean) + wc * nls(b * contrast(i, variant)) + wm * (clean - swapped) ** 2
    assert out.loss.item() == pytest.approx(expected / 2, rel=1e-6)


def test_naive_and_consistent_differ_unless_the_rejected_answer_ignores_the_image() -> None:
    naive = MDPOLoss(MDPOConfig(variant="naive"))
    consistent = MDPOLoss(MDPOConfig(variant="consistent"))
    assert naive(_inputs()).loss.item() != pytest.approx(consistent(_inputs()).loss.item(), rel=1e-4)
    # The limit the SymMPO paper states: when h(y-|m) = h(y-|m') the partition-function correction vanishes.
    pol = {**POL, "lc": POL["l"]}
    ref = {**REF, "lc": REF["l"]}
    assert naive(_inputs(pol, ref)).loss.item() == pytest.approx(consistent(_inputs(pol, ref)).loss.item(), rel=1e-7)


def test_the_consistent_contrast_is_invariant_to_an_image_dependent_partition_shift() -> None:
    """Adding log Z(m') - log Z(m) to every log-ratio under m' moves the naive contrast, not the consistent one."""
    shift = 1.7
    pol = {**POL, "wc": [v + shift for v in POL["wc"]], "lc": [v + shift for v in POL["lc"]]}
    for variant, moves in (("naive", True), ("consistent", False)):
        loss = CHiPLoss(CHiPConfig(variant=variant, beta=1.0))
        a, b = loss(_inputs()).loss.item(), loss(_inputs(pol)).loss.item()
        assert (abs(a - b) > 1e-4) is moves


def test_consistent_variant_asks_for_the_rejected_answer_under_the_corrupted_image() -> None:
    assert MDPOLoss(MDPOConfig(variant="consistent")).corrupted_with_rejected
    assert not MDPOLoss(MDPOConfig(variant="naive")).corrupted_with_rejected
    assert SymMPOLoss(SymMPOConfig(variant="naive")).corrupted_with_rejected


def test_missing_corrupted_log_probs_is_a_clear_error() -> None:
    inputs = _inputs()
    inputs.corrupted = None
    with pytest.raises(MissingConditionError, match="corrupted_image"):
        MDPOLoss(MDPOConfig())(inputs)


# ------------------------------------------------------------------ TPO
CLEAN_W = [[-0.5, -1.0, -2.0, 0.0], [-0.2, -0.4, -0.3, -0.9]]  # row 0 has 3 tokens, row 1 has 4
CLEAN_L = [[-1.5, -0.7, 0.0, 0.0], [-0.6, -0.8, -1.1, -0.1]]
COR_W = [[-0.9, -0.8, -3.5, 0.0], [-0.2, -1.4, -0.3, -0.5]]
COR_L = [[-1.0, -0.7, 0.0, 0.0], [-2.6, -0.8, -0.1, -0.2]]
REF_W = [[-0.6, -0.9, -2.2, 0.0], [-0.3, -0.5, -0.2, -0.7]]
REF_L = [[-1.2, -0.9, 0.0, 0.0], [-0.5, -0.9, -1.0, -0.3]]
N_W, N_L = [3, 4], [2, 4]


def _tok(w: list[list[float]], l: list[list[float]]) -> PairLogps:
    tw, tl = torch.tensor(w), torch.tensor(l)
    return PairLogps(chosen=tw.sum(-1), rejected=tl.sum(-1), chosen_tokens=torch.tensor(N_W), rejected_tokens=torch.tensor(N_L),
                     chosen_token_logps=tw, rejected_token_logps=tl)


def _tpo_inputs() -> LossInputs:
    return LossInputs(policy=_tok(CLEAN_W, CLEAN_L), reference=_tok(REF_W, REF_L), pairs=[],
                      corrupted=_tok(COR_W, COR_L), corrupted_reference=_tok(COR_W, COR_L))


def _weighted(clean, cor, ref, n, alpha, cap) -> float:
    return sum(min(max(1 + alpha * (clean[t] - cor[t]), 0.0), cap) * (clean[t] - ref[t]) for t in range(n))


def test_tpo_weights_each_token_by_its_visual_anchor() -> None:
    b, alpha, cap = 0.4, 2.0, 2.5
    out = TPOLoss(TPOConfig(beta=b, alpha=alpha, max_weight=cap))(_tpo_inputs())
    expected = sum(
        nls(b * (_weighted(CLEAN_W[i], COR_W[i], REF_W[i], N_W[i], alpha, cap) - _weighted(CLEAN_L[i], COR_L[i], REF_L[i], N_L[i], alpha, cap)))
        for i in range(2)
    ) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_tpo_without_visual_weighting_is_dpo() -> None:
    out = TPOLoss(TPOConfig(beta=0.4, alpha=0.0))(_tpo_inputs())
    expected = sum(nls(0.4 * (sum(CLEAN_W[i][:N_W[i]]) - sum(REF_W[i][:N_W[i]]) - sum(CLEAN_L[i][:N_L[i]]) + sum(REF_L[i][:N_L[i]])))
                   for i in range(2)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_tpo_without_token_log_probs_names_the_requirement() -> None:
    inputs = _inputs()
    with pytest.raises(MissingConditionError, match="token_logps"):
        TPOLoss(TPOConfig())(inputs)
