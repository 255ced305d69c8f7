"""kl_scores: k3 and VPPO's perception score — hand case, float64 parity with the authors' code, gradients."""

from __future__ import annotations

import math

import torch

from visent.core.kl_scores import k3, perception_kl_score


def _vppo_score_as_written(old, aug, mask):
    """``huaixuheqing/VPPO-RL`` @ a23c54b83565c48e9e1fb54cc1e18a1c63557c99, ``verl/workers/actor/dp_actor.py:402-405``,
    in float64, line by line: diff = (aug − old).clamp(−20, 20); kl = exp(diff) − diff − 1; clamp(0, 10)."""
    diff = (aug.double() - old.double()).clamp(-20.0, 20.0)
    low_var_kl = (diff.exp() - diff - 1).clamp(min=0.0, max=10.0)
    return low_var_kl * mask.double()  # padding never read by VPPO (sorted to −inf); ours is 0 there


def test_k3_hand_computed():
    # d = log(2): k3 = 2 − log 2 − 1 = 0.30685...; d = 0: 0; d = 30 → clamped to 20 → e^20 − 21 → clamp 10.
    lp = torch.tensor([[0.0, -1.0, -30.0]])
    other = torch.tensor([[math.log(2.0), -1.0, 0.0]])
    out = k3(lp, other)
    assert math.isclose(out[0, 0].item(), 1.0 - math.log(2.0), rel_tol=1e-6)
    assert out[0, 1].item() == 0.0
    assert out[0, 2].item() == 10.0


def test_perception_score_parity_with_vppo_odd_shapes(odd_mask):
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(odd_mask.shape, generator=g, dtype=torch.float64) * 6
    aug = old + torch.randn(odd_mask.shape, generator=g, dtype=torch.float64) * 2.5
    aug[0, 0] = old[0, 0] + 25.0  # exercises both clamps
    ours = perception_kl_score(old.float(), aug.float(), odd_mask)
    ref = _vppo_score_as_written(old.float(), aug.float(), odd_mask)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=1e-6)
    assert (ours[odd_mask == 0] == 0).all()


def test_perception_score_no_gradient_and_nonfinite_is_zero():
    old = torch.tensor([[-1.0, float("nan")]], requires_grad=True)
    aug = torch.tensor([[-2.0, -1.0]])
    s = perception_kl_score(old, aug, torch.ones(1, 2))
    assert not s.requires_grad
    assert s[0, 1].item() == 0.0 and s[0, 0].item() > 0


def test_k3_gradcheck():
    g = torch.Generator().manual_seed(0)
    a = (-torch.rand(3, 5, generator=g, dtype=torch.float64)).requires_grad_()
    b = (a.detach() + 0.3 * torch.randn(3, 5, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: k3(x, y), (a, b))
