"""surrogates: CISPO, SAPO, two-sided clip and sequence-level (GSPO-token) ratios under a token mask —
hand cases, float64 parity with TRL 1.16's ``GRPOTrainer._compute_loss`` as written, gradient checks."""

from __future__ import annotations

import math

import pytest
import torch

from visent.core.policy_loss import policy_loss
from visent.core.surrogates import Surrogate


def _trl_per_token_as_written(lp, old, adv, mask, kind, eps_low, eps_high, sequence, tau_pos=1.0, tau_neg=1.05, delta=None):
    """``trl`` 1.16 ``trainer/grpo_trainer.py`` ``_compute_loss`` (lines 3083-3135): log ratio per token or
    ``(log_ratio·mask).sum(-1)/mask.sum(-1).clamp(min=1)``; cispo ``−clamp(coef_1, max=ε_high).detach()·A·logp``;
    grpo-family ``−min(coef_1·A, clamp(coef_1, 1−ε_low, 1+ε_high)·A)`` with ``coef_1`` capped at delta;
    sapo ``−σ(τ(coef_1−1))·4/τ·A``. Then ``per_token_loss · entropy_mask`` (the token mask)."""
    log_ratio = lp - old
    if sequence:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    else:
        log_w = log_ratio
    coef_1 = torch.exp(log_w)
    a = adv[:, None]
    if kind == "cispo":
        return -torch.clamp(coef_1, max=eps_high).detach() * a * lp
    if kind == "clip":
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        if delta is not None:
            coef_1 = torch.clamp(coef_1, max=delta)
        return -torch.min(coef_1 * a, coef_2 * a)
    t = torch.where(a > 0, tau_pos, tau_neg)
    return -torch.sigmoid(t * (coef_1 - 1)) * 4 / t * a


def _inputs(mask, seed):
    g = torch.Generator().manual_seed(seed)
    B, T = mask.shape
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    lp = (old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    sel = (torch.rand(B, T, generator=g) < 0.4).double() * mask
    return lp, old, adv, sel


def _token_mean(per_token, w, mask):
    return (per_token * w).sum() / mask.sum().clamp(min=1)


@pytest.mark.parametrize(
    "kind,sequence,eps_high,delta",
    [("cispo", False, 5.0, None), ("sapo", False, 0.2, None), ("sapo", True, 0.2, None), ("clip", False, 0.28, 1.5), ("clip", True, 0.2, None)],
)
def test_value_and_gradient_parity_with_trl_under_a_mask(odd_mask, kind, sequence, eps_high, delta):
    m = odd_mask.double()
    lp, old, adv, sel = _inputs(m, 7)
    ours, _ = policy_loss(
        lp, old, adv, m, sel, eps_low=0.2, eps_high=eps_high, aggregation="token_mean",
        surrogate=Surrogate(kind=kind, sequence_level=sequence, delta=delta),
    )
    (g_ours,) = torch.autograd.grad(ours, lp)
    theirs_tok = _trl_per_token_as_written(lp, old, adv, m, kind, 0.2, eps_high, sequence, delta=delta)
    if sequence:
        # GSPO-token: the same values, each token's own log-prob carrying the gradient; TRL's plain GSPO with
        # the mask moves every token of a response together, so only the value can be compared with it.
        assert abs(ours.item() - _token_mean(theirs_tok, sel, m).item()) < 1e-6  # TRL builds τ from Python floats in float32
        full, _ = policy_loss(lp, old, adv, m, None, eps_low=0.2, eps_high=eps_high, aggregation="sequence_mean",
                              surrogate=Surrogate(kind=kind, sequence_level=True))
        (g_full,) = torch.autograd.grad(full, lp)
        rows = m.sum(1) > 0
        trl_seq = ((theirs_tok.expand_as(m) * m).sum(-1)[rows] / m.sum(-1)[rows]).mean()
        (g_trl,) = torch.autograd.grad(trl_seq, lp)
        torch.testing.assert_close(g_full, g_trl, atol=1e-6, rtol=1e-6)  # no mask: GSPO's own gradient
        assert (g_ours[sel == 0] == 0).all()  # with a mask, only the selected tokens move
    else:
        theirs = _token_mean(theirs_tok, sel, m)
        assert abs(ours.item() - theirs.item()) < 1e-6  # TRL builds τ from Python floats in float32
        (g_theirs,) = torch.autograd.grad(theirs, lp)
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=1e-6)


def test_hand_computed():
    # on-policy (ρ = 1), A = 1: CISPO loss −logp; SAPO −(4/τ)·σ(0)·A = −2
    lp = torch.tensor([[math.log(0.5)]], dtype=torch.float64, requires_grad=True)
    m = torch.ones(1, 1)
    a = torch.ones(1, dtype=torch.float64)
    cispo, _ = policy_loss(lp, None, a, m, eps_high=5.0, surrogate=Surrogate(kind="cispo"))
    assert math.isclose(cispo.item(), math.log(2.0))
    sapo, _ = policy_loss(lp, None, a, m, surrogate=Surrogate(kind="sapo"))
    assert math.isclose(sapo.item(), -2.0)


def test_refusals():
    with pytest.raises(ValueError, match="CISPO"):
        Surrogate(kind="cispo", sequence_level=True)
    with pytest.raises(ValueError, match="valid: clip, cispo, sapo"):
        Surrogate(kind="vespo")
    with pytest.raises(ValueError, match="clipped objective only"):
        Surrogate(kind="sapo", dual_clip=3.0)


def test_gradcheck(odd_mask):
    m = odd_mask[:5, :6].double()
    lp, old, adv, sel = _inputs(m, 3)
    # CISPO and sequence-level ratios hold stop-gradients by design (finite differences see through them);
    # their gradients are checked against TRL's autograd above.
    for s in (Surrogate(kind="sapo"), Surrogate(delta=1.1), Surrogate(dual_clip=1.1)):
        x = lp.detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda v, s=s: policy_loss(v, old, adv, m, sel, eps_high=5.0 if s.kind == "cispo" else 0.2, surrogate=s)[0], (x,)
        )
