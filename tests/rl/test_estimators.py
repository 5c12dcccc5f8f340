"""Each estimator against an independent computation (plain Python loops over fixed numbers)."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

from mmalign_rl.estimators import (
    AdaptiveKL, aggregate, clipped_policy_loss, clipped_value_loss, gae, group_advantages, importance_weights,
    kl_per_token, leave_one_out_advantages, masked_whiten, z_normalise,
)

LOGP = [[-1.0, -0.5, -2.0, 0.0], [-0.2, -3.0, 0.0, 0.0]]
REF = [[-1.3, -0.1, -2.0, -9.0], [-0.9, -2.0, -5.0, 0.0]]
MASK = [[1, 1, 1, 0], [1, 1, 0, 0]]


def t(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimators_match_their_formulas(kind):
    got = kl_per_token(t(LOGP), t(REF), kind)
    for i in range(2):
        for j in range(4):
            d = LOGP[i][j] - REF[i][j]
            want = {"k1": d, "k2": d * d / 2, "k3": math.exp(-d) - 1 + d}[kind]
            assert got[i, j].item() == pytest.approx(want, abs=1e-12)


def test_k3_is_nonnegative_and_unbiased_for_kl():
    # Sampling from p, the mean of k3 (and k1) estimates KL(p || q) exactly in expectation.
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = float((p * (p / q).log()).sum())
    lp, lq = p.log(), q.log()
    for kind in ("k1", "k3"):
        expectation = float((p * kl_per_token(lp, lq, kind)).sum())
        assert expectation == pytest.approx(exact, abs=1e-12)
    assert (kl_per_token(lp, lq, "k3") >= 0).all()


def test_unknown_kl_estimator_is_a_clear_error():
    with pytest.raises(ValueError, match="k1"):
        kl_per_token(t([0.0]), t([0.0]), "k4")


def test_group_advantages_and_the_no_std_variant():
    rewards = [1.0, 0.0, 3.0, 2.0, 5.0, 5.0, 5.0, 5.0]
    got = group_advantages(t(rewards), 4)
    nostd = group_advantages(t(rewards), 4, scale=False)
    for g in range(2):
        grp = rewards[4 * g : 4 * g + 4]
        mu, sd = statistics.mean(grp), statistics.stdev(grp)
        for j, r in enumerate(grp):
            assert got[4 * g + j].item() == pytest.approx((r - mu) / (sd + 1e-4), abs=1e-12)
            assert nostd[4 * g + j].item() == pytest.approx(r - mu, abs=1e-12)
    assert (got[4:] == 0).all()  # a group of equal rewards teaches nothing


def test_leave_one_out_baseline():
    rewards = [1.0, 2.0, 6.0, -1.0, 0.0, 4.0]
    got = leave_one_out_advantages(t(rewards), 3)
    for g in range(2):
        grp = rewards[3 * g : 3 * g + 3]
        for j, r in enumerate(grp):
            others = [x for m, x in enumerate(grp) if m != j]
            assert got[3 * g + j].item() == pytest.approx(r - sum(others) / len(others), abs=1e-12)
    with pytest.raises(ValueError):
        leave_one_out_advantages(t([1.0, 2.0]), 1)


def test_z_normalise():
    xs = [1.0, 4.0, -2.0, 7.0]
    got = z_normalise(t(xs))
    mu, sd = statistics.mean(xs), statistics.stdev(xs)
    assert got.tolist() == pytest.approx([(x - mu) / sd for x in xs], abs=1e-7)


def test_gae_equals_the_explicit_sum_of_discounted_deltas():
    rewards = [[0.1, -0.2, 1.5, 0.0], [0.3, 2.0, 0.0, 0.0]]
    values = [[0.5, 0.4, 0.2, 9.0], [-0.1, 0.7, 9.0, 9.0]]
    gamma, lam = 0.9, 0.8
    adv, ret = gae(t(rewards), t(values), t(MASK), gamma, lam)
    for i in range(2):
        n = sum(MASK[i])
        v = values[i][:n] + [0.0]
        deltas = [rewards[i][s] + gamma * v[s + 1] - v[s] for s in range(n)]
        for s in range(n):
            want = sum((gamma * lam) ** (u - s) * deltas[u] for u in range(s, n))
            assert adv[i, s].item() == pytest.approx(want, abs=1e-12)
            assert ret[i, s].item() == pytest.approx(want + v[s], abs=1e-12)
        assert all(adv[i, s].item() == 0 and ret[i, s].item() == 0 for s in range(n, 4))


def test_gae_with_gamma_one_lambda_one_is_return_minus_value():
    rewards = t([[0.0, 0.0, 2.0]])
    values = t([[0.5, 1.0, 1.5]])
    adv, ret = gae(rewards, values, t([[1, 1, 1]]), 1.0, 1.0)
    assert ret.tolist() == [[2.0, 2.0, 2.0]]
    assert adv.tolist() == [[1.5, 1.0, 0.5]]


def test_clipped_policy_loss_per_token():
    logp, old = [[-0.5, -1.0, -2.0]], [[-1.0, -1.0, -1.0]]
    adv = [[1.0], [-2.0]]
    for a in adv:
        loss, clipped = clipped_policy_loss(t(logp), t(old), t([a]), 0.2, 0.28)
        for j in range(3):
            r = math.exp(logp[0][j] - old[0][j])
            un, cl = r * a[0], min(max(r, 0.8), 1.28) * a[0]
            assert loss[0, j].item() == pytest.approx(-min(un, cl), abs=1e-12)
            assert clipped[0, j].item() == float(cl < un)


def test_clipped_value_loss_per_token():
    v, old, ret = [[1.0, 0.0, -1.0]], [[0.0, 0.0, 0.0]], [[2.0, 1.0, -0.5]]
    loss, clipped = clipped_value_loss(t(v), t(old), t(ret), 0.2)
    for j in range(3):
        vc = old[0][j] + min(max(v[0][j] - old[0][j], -0.2), 0.2)
        a, b = (v[0][j] - ret[0][j]) ** 2, (vc - ret[0][j]) ** 2
        assert loss[0, j].item() == pytest.approx(0.5 * max(a, b), abs=1e-12)
        assert clipped[0, j].item() == float(b > a)


def test_masked_whiten():
    x = [[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 0.0, 0.0]]
    got = masked_whiten(t(x), t(MASK))
    real = [1.0, 2.0, 3.0, 4.0, 5.0]
    mu, var = statistics.mean(real), statistics.pvariance(real)
    assert got[0, :3].tolist() == pytest.approx([(r - mu) / math.sqrt(var + 1e-8) for r in real[:3]])
    assert got[0, 3].item() == 0 and got[1, 2:].tolist() == [0, 0]


def test_aggregations():
    loss = [[1.0, 2.0, 3.0, 50.0], [4.0, 6.0, 70.0, 80.0]]
    lt, m = t(loss), t(MASK)
    assert aggregate(lt, m, "sequence").item() == pytest.approx(((1 + 2 + 3) / 3 + (4 + 6) / 2) / 2)
    assert aggregate(lt, m, "token").item() == pytest.approx((1 + 2 + 3 + 4 + 6) / 5)
    assert aggregate(lt, m, "token-sum", total_tokens=20).item() == pytest.approx(16 / 20)
    assert aggregate(lt, m, "constant", max_new_tokens=8).item() == pytest.approx(16 / (2 * 8))
    assert aggregate(lt, m, "constant", max_new_tokens=8, total_sequences=4).item() == pytest.approx(16 / 32)
    with pytest.raises(ValueError, match="total_tokens"):
        aggregate(lt, m, "token-sum")


def test_token_sum_makes_micro_batching_irrelevant_and_token_mean_does_not():
    loss, mask = t([[1.0, 2.0, 3.0, 4.0], [10.0, 0, 0, 0]]), t([[1, 1, 1, 1], [1, 0, 0, 0]])
    whole = aggregate(loss, mask, "token-sum", total_tokens=5)
    parts = sum(aggregate(loss[i : i + 1], mask[i : i + 1], "token-sum", total_tokens=5) for i in range(2))
    assert parts.item() == pytest.approx(whole.item())
    token_parts = sum(aggregate(loss[i : i + 1], mask[i : i + 1], "token") for i in range(2)) / 2
    assert token_parts.item() != pytest.approx(aggregate(loss, mask, "token").item())


def test_importance_weights_are_truncated_and_detached():
    tr = torch.tensor([[-1.0, -0.1]], requires_grad=True)
    w = importance_weights(tr, torch.tensor([[-1.5, -3.0]]), cap=2.0)
    assert w.tolist()[0] == pytest.approx([math.exp(0.5), 2.0])
    assert not w.requires_grad


def test_adaptive_kl_controller_follows_trl_legacy_rule():
    c = AdaptiveKL(0.2, target=6.0, horizon=10000)
    c.update(12.0, 32)  # error clipped to +0.2
    assert c.value == pytest.approx(0.2 * (1 + 0.2 * 32 / 10000))
    c.update(3.0, 32)  # error -0.5 -> -0.2
    assert c.value == pytest.approx(0.2 * (1 + 0.2 * 32 / 10000) * (1 - 0.2 * 32 / 10000))
    before = c.value
    c.update(6.6, 10)  # error 0.1
    assert c.value == pytest.approx(before * (1 + 0.1 * 10 / 10000))
