"""The policy losses of VPPO (top-40% mask, all-token denominator, dual clip, entropy penalty) and VEPO's
``weight`` mode, built from visent.core, against float64 re-implementations of the authors' code as written."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visent.core.kl_scores import perception_kl_score
from visent.core.perception_loss import negative_logp_mean
from visent.core.policy_loss import policy_loss
from visent.core.selection import select_tokens, selection_weights
from visent.core.surrogates import Surrogate
from visent.core.trajectory_shaping import trajectory_alpha


def _masked_mean(v, m):
    return (v * m).sum() / (m.sum() + 1e-8)


def _vppo_loss_as_written(lp, old, aug, adv, m, top_p, beta_min, eps_low, eps_high, dual, ent_coef):
    """``huaixuheqing/VPPO-RL`` @ a23c54b83565c48e9e1fb54cc1e18a1c63557c99, float64, one micro-batch = one
    mini-batch: score and top-p mask ``dp_actor.py:402-431``; TAS ``dp_actor.py:266-300, 483-535``;
    ``compute_policy_loss`` ``core_algos.py:458-499`` (dual clip, mask × loss, token mean over all response
    tokens); entropy penalty ``dp_actor.py:563-566``."""
    diff = (aug - old).clamp(-20.0, 20.0)
    kl = (diff.exp() - diff - 1).clamp(0.0, 10.0)
    srt = kl.clone()
    srt[~m.bool()] = -torch.inf
    k = torch.ceil(m.sum(1) * top_p).int()
    _, idx = torch.sort(srt, dim=1, descending=True)
    rank = torch.arange(srt.size(1)).expand_as(srt) < k.unsqueeze(1)
    top = torch.zeros_like(srt, dtype=torch.bool).scatter_(1, idx, rank)
    tmask = (top & m.bool()).double()
    n = m.sum(1)
    sens = (kl * m).sum(1) / n.clamp(min=1)
    valid = n > 0
    lo, hi = torch.quantile(sens[valid], 0.0), torch.quantile(sens[valid], 1.0)
    scale = torch.ones_like(sens)
    if hi - lo > 1e-6:
        norm = ((sens[valid] - lo) / (hi - lo)).clamp(0, 1)
        tmax = beta_min + (1 - beta_min) / (norm.mean() + 1e-8)
        scale[valid] = beta_min + norm * (tmax - beta_min)
    a = adv[:, None] * scale[:, None]
    log_ratio = lp - old
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    clipped = torch.exp(log_ratio.clamp(np.log(1 - eps_low), np.log(1 + eps_high)))
    l1, l2, l3 = -a * ratio, -a * clipped, -a * dual
    higher = torch.max(l1, l2)
    final = torch.where(a < 0, torch.min(higher, l3), higher) * tmask
    pg = _masked_mean(final, m)
    return pg + ent_coef * (-_masked_mean(lp, m))


def _inputs(mask, seed):
    g = torch.Generator().manual_seed(seed)
    B, T = mask.shape
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4
    lp = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.6  # some ratios beyond the clips
    aug = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 1.5
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    return lp, old, aug, adv


def test_vppo_loss_parity_odd_shapes(odd_mask):
    lp, old, aug, adv = _inputs(odd_mask, 11)
    m = odd_mask.double()
    score = perception_kl_score(old, aug, m)
    tmask = select_tokens(score, m, 0.4, "response", "top")
    alpha = trajectory_alpha(score, m, 0.9)
    ours, _ = policy_loss(
        lp, old, adv * alpha.double(), m, tmask, eps_low=0.2, eps_high=0.28, aggregation="token_mean", surrogate=Surrogate(dual_clip=3.0)
    )
    ours = ours + 0.06 * negative_logp_mean(lp, m)
    ref = _vppo_loss_as_written(lp, old, aug, adv, m, 0.4, 0.9, 0.2, 0.28, 3.0, 0.06)
    assert abs(ours.item() - ref.item()) < 1e-6


def test_vppo_keep_count_matches_float_ceil_for_realistic_lengths():
    # VPPO computes k = ceil(float32(n) · 0.4); visent takes ceil on the exact rational 2n/5. They agree for
    # every response length up to 8192 (so parity holds at the lengths anyone trains with).
    from visent.core.selection import keep_count

    n = torch.arange(1, 8193)
    theirs = torch.ceil(n * 0.4).long()
    assert torch.equal(keep_count(n, 0.4), theirs)


def _vepo_weight_as_written(lp, old, adv, m, jsd_mask, lam, clip):
    """``Leonnnnnn929/VEPO`` @ 42473082dd59815ea636e7bb627f63f2772ca891, ``verl/trainer/core_algos.py:321-347``:
    ``per_token_loss = max(−A·ratio, −A·clipped)``; ``weight`` mode: ``masked_mean(loss · (1 + λ·mask), eos_mask)``."""
    nk = lp - old
    ratio = torch.exp(nk)
    clipped = torch.exp(nk.clamp(np.log(1 - clip), np.log(1 + clip)))
    per_token = torch.max(-adv[:, None] * ratio, -adv[:, None] * clipped)
    return _masked_mean(per_token * (1.0 + lam * jsd_mask), m)


@pytest.mark.parametrize("lam", [1.0, 0.5, 0.0])
def test_vepo_weight_mode_parity_odd_shapes(odd_mask, make_stats, lam):
    lp, old, _, adv = _inputs(odd_mask, 12)
    m = odd_mask.double()
    scores = make_stats(odd_mask, 3).jsd
    sel = select_tokens(scores, m, 0.2, "response", "top")
    w = selection_weights(sel, m, lam)
    ours, _ = policy_loss(lp, old, adv, m, w, eps_low=0.2, eps_high=0.2, aggregation="token_mean")
    ref = _vepo_weight_as_written(lp, old, adv, m, sel.double(), lam, 0.2)
    assert abs(ours.item() - ref.item()) < 1e-6


def test_weights_hand_computed_and_gradient(odd_mask):
    sel = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert selection_weights(sel, m, 0.5).tolist() == [[1.5, 1.0, 1.5, 0.0]]
    # on-policy, A = 1: ℓ = −1 per token, loss = −(1.5 + 1 + 1.5) / 3
    lp = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    loss, _ = policy_loss(lp, None, torch.ones(1, dtype=torch.float64), m, selection_weights(sel, m, 0.5), aggregation="token_mean")
    assert math.isclose(loss.item(), -4.0 / 3.0, rel_tol=1e-9)
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.5, -1 / 3, -0.5, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="lam"):
        selection_weights(sel, m, -1.0)


def test_dual_clip_hand_computed_and_gradcheck():
    # A = −1, ratio e^2 ≈ 7.39 > 3: clipped loss is −A·3 = 3 (without the dual clip: 7.39)
    lp = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    adv = torch.tensor([-1.0], dtype=torch.float64)
    m = torch.ones(1, 1)
    loss, _ = policy_loss(lp, old, adv, m, surrogate=Surrogate(dual_clip=3.0))
    assert math.isclose(loss.item(), 3.0)
    loss.backward()
    assert lp.grad.item() == 0.0
    loss2, _ = policy_loss(lp.detach(), old, adv, m)
    assert math.isclose(loss2.item(), math.exp(2.0), rel_tol=1e-9)
    with pytest.raises(ValueError, match="dual_clip"):
        Surrogate(dual_clip=0.5)
    x = (torch.randn(3, 4, dtype=torch.float64) * 0.3).requires_grad_()
    a = torch.tensor([1.0, -1.0, -2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: policy_loss(v, torch.zeros(3, 4, dtype=torch.float64), a, torch.ones(3, 4), surrogate=Surrogate(dual_clip=1.2))[0], (x,)
    )
