"""perception_loss: PAPO's implicit perception loss and double entropy, VPPO's entropy penalty, CPPO's
contrastive loss — hand cases, float64 parity with the authors' code as written, gradient checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visent.core.perception_loss import (
    contrastive_perception_loss,
    double_entropy_loss,
    implicit_perception_loss,
    negative_logp_mean,
)


def _masked_mean(v, m):  # verl/utils/torch_functional.py masked_mean, eps 1e-8 (PAPO / VPPO)
    return (v * m).sum() / (m.sum() + 1e-8)


def _low_var_kl(lp, ref):  # PAPO verl/trainer/core_algos.py:597-600 (compute_kl, "low_var_kl")
    kl = (ref - lp).clamp(-20.0, 20.0)
    return (kl.exp() - kl - 1).clamp(min=-10.0, max=10.0)


def _papo_extra_terms_as_written(lp, aug, m, gamma, eta_aug, eta_ori):
    """``MikeWangWZHL/PAPO`` @ fb63bf4533b78da5a2bb17bc812375dcb620887d, ``verl/workers/actor/dp_actor.py:289,
    325-375``: ``pg_loss − kl_prcp_loss·coef + aug_coef·(−masked_mean(aug)) + ori_coef·(−masked_mean(lp))``."""
    aug_entropy_loss = -_masked_mean(aug, m)
    entropy_loss = -_masked_mean(lp, m)
    kl_prcp_loss = _masked_mean(_low_var_kl(lp, aug), m)
    return -kl_prcp_loss * gamma + eta_aug * aug_entropy_loss + eta_ori * entropy_loss


def _cppo_cpl_as_written(lp, pres, chg, vision_mask, tau):
    """``vbdi/cppo`` @ cb1da3eb84dba0abb7dcdf127ec9be056cb5b34c, ``verl/recipe/cppo/cppo_dp_actor.py``
    (``use_vision_cpl_loss`` block) with ``agg_loss(..., "token-mean")`` of ``cppo_core_algos.py``:
    ``softplus((kl_pres − kl_chg)/tau)`` summed over the mask / (mask.sum() + 1e-8)."""
    margin = _low_var_kl(lp, pres) - _low_var_kl(lp, chg)
    cpl = F.softplus(margin / tau)
    return (cpl * vision_mask).sum() / (vision_mask.sum() + 1e-8)


def _inputs(mask, seed):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(mask.shape, generator=g, dtype=torch.float64) * 5
    other = [lp + torch.randn(mask.shape, generator=g, dtype=torch.float64) * s for s in (0.5, 2.0)]
    # garbage at padding must not matter
    return [torch.where(mask.bool(), x, torch.full_like(x, -1e4)) for x in (lp, *other)]


def test_hand_computed():
    lp = torch.tensor([[math.log(0.5), 0.0]])
    aug = torch.tensor([[math.log(0.25), 5.0]])
    m = torch.tensor([[1.0, 0.0]])
    # −logp mean = log 2; k3(lp, aug): d = −log 2 → 0.5 + log 2 − 1
    assert math.isclose(negative_logp_mean(lp, m).item(), math.log(2), rel_tol=1e-6)
    term, kl = implicit_perception_loss(lp, aug, m, gamma=0.02)
    assert math.isclose(kl.item(), math.log(2) - 0.5, rel_tol=1e-5)
    assert math.isclose(term.item(), -0.02 * (math.log(2) - 0.5), rel_tol=1e-5)
    # CPPO: identical views → margin 0 → softplus(0) = log 2
    assert math.isclose(contrastive_perception_loss(lp, lp, lp, m).item(), math.log(2), rel_tol=1e-6)


@pytest.mark.parametrize("gamma,eta", [(0.02, 0.05), (0.01, 0.03)])
def test_papo_parity_odd_shapes(odd_mask, gamma, eta):
    lp, aug, _ = _inputs(odd_mask, 1)
    ours = implicit_perception_loss(lp.float(), aug.float(), odd_mask, gamma)[0] + double_entropy_loss(
        lp.float(), aug.float(), odd_mask, eta, eta
    )
    ref = _papo_extra_terms_as_written(lp.float().double(), aug.float().double(), odd_mask.double(), gamma, eta, eta)
    assert abs(ours.item() - ref.item()) < 1e-6


def test_cppo_parity_odd_shapes(odd_mask):
    lp, pres, chg = _inputs(odd_mask, 2)
    sel = (torch.rand(odd_mask.shape, generator=torch.Generator().manual_seed(5)) < 0.5).float() * odd_mask
    ours = contrastive_perception_loss(lp.float(), pres.float(), chg.float(), sel, tau=0.1)
    ref = _cppo_cpl_as_written(lp.float().double(), pres.float().double(), chg.float().double(), sel.double(), 0.1)
    assert abs(ours.item() - ref.item()) < 1e-6


def test_gradients_flow_where_the_authors_let_them(odd_mask):
    lp, aug, chg = (x.clone().requires_grad_() for x in _inputs(odd_mask, 3))
    term, _ = implicit_perception_loss(lp, aug, odd_mask, 0.02)
    (term + double_entropy_loss(lp, aug, odd_mask, 0.05, 0.05)).backward()
    assert aug.grad is None  # PAPO: the masked pass is a no-grad θ_old pass
    assert lp.grad is not None and (lp.grad[odd_mask == 0] == 0).all()
    sel = odd_mask.clone()
    contrastive_perception_loss(lp, aug, chg, sel).backward()
    assert aug.grad is not None and chg.grad is not None  # CPPO: every pass carries gradient


def test_gradcheck(odd_mask):
    m = odd_mask[:4, :7].double()
    lp, pres, chg = (x[:4, :7].detach().clone().requires_grad_() for x in _inputs(odd_mask, 4))
    assert torch.autograd.gradcheck(lambda a: implicit_perception_loss(a, pres.detach(), m, 0.3)[0], (lp,))
    assert torch.autograd.gradcheck(lambda a, b, c: contrastive_perception_loss(a, b, c, m, 0.5), (lp, pres, chg))
    assert torch.autograd.gradcheck(lambda a: negative_logp_mean(a, m), (lp,))
