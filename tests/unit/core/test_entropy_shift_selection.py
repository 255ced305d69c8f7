"""entropy_shift_selection: CPPO's vision-token mask — hand case and float64 parity with the authors' code."""

from __future__ import annotations

import pytest
import torch

from visent.core.entropy_shift_selection import entropy_shift_selection


def _cppo_mask_as_written(h_full, h_noimg, adv, top_percent):
    """``vbdi/cppo`` @ cb1da3eb84dba0abb7dcdf127ec9be056cb5b34c, ``verl/recipe/cppo/cppo_dp_actor.py``,
    ``update_policy`` (``cpl_use_vision_mask`` then ``cpl_use_advantage_gating``), float64, as written."""
    delta_H = h_noimg - h_full
    norm_delta = torch.relu(delta_H) / (h_noimg + 1e-6)
    masked_vals = norm_delta.masked_fill(delta_H <= 0, float("-inf"))
    bsz, seqlen = masked_vals.shape
    sorted_vals, _ = torch.sort(masked_vals, dim=1, descending=True)
    counts = (delta_H > 0).sum(dim=1)
    ks = (counts.float() * top_percent).clamp(min=1).long()
    thresholds = sorted_vals[torch.arange(bsz), (ks - 1).clamp(min=0)].unsqueeze(1).expand(-1, seqlen)
    vision_mask = ((norm_delta >= thresholds) & (delta_H > 0)).float()
    return torch.where(adv > 0, vision_mask, 0)


def test_hand_computed():
    h = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0]])
    h_rm = torch.tensor([[3.0, 1.5, 0.5, 2.0, 2.0]])
    # ΔH = [2, .5, −.5, 1, 0]; r = [2/3, .5/1.5, 0, .5, 0]; 3 rising → k = floor(1.5) = 1 → keep token 0
    m = torch.ones(1, 5)
    assert torch.equal(entropy_shift_selection(h, h_rm, m, torch.tensor([1.0])), torch.tensor([[1.0, 0, 0, 0, 0]]))
    assert entropy_shift_selection(h, h_rm, m, torch.tensor([-0.5])).sum() == 0  # gated by A > 0
    assert entropy_shift_selection(h, h_rm, m, ratio=1.0, positive_advantage_only=False).sum() == 3


@pytest.mark.parametrize("ratio", [0.5, 0.3, 1.0])
def test_parity_with_cppo_odd_shapes(odd_mask, ratio):
    g = torch.Generator().manual_seed(int(ratio * 10))
    h = torch.rand(odd_mask.shape, generator=g, dtype=torch.float64) * 3
    h_rm = (h + torch.randn(odd_mask.shape, generator=g, dtype=torch.float64)).clamp_min(0)
    # the authors' mask is not restricted to valid tokens: make padding non-rising so both agree there
    h_rm = torch.where(odd_mask.bool(), h_rm, h - 1)
    adv = torch.randn(odd_mask.shape[0], generator=g, dtype=torch.float64)
    ours = entropy_shift_selection(h.float(), h_rm.float(), odd_mask, adv, ratio)
    ref = _cppo_mask_as_written(h.float().double(), h_rm.float().double(), adv[:, None], ratio)
    assert torch.equal(ours.double(), ref)
    assert (ours[odd_mask == 0] == 0).all()


def test_padding_never_selected():
    h = torch.zeros(1, 4)
    h_rm = torch.full((1, 4), 5.0)
    m = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    out = entropy_shift_selection(h, h_rm, m, ratio=1.0, positive_advantage_only=False)
    assert torch.equal(out, m)
