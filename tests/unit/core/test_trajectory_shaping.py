"""trajectory_shaping: VPPO's α_i — hand case, float64 parity with the authors' code, no gradient."""

from __future__ import annotations

import pytest
import torch

from visent.core.trajectory_shaping import (
    normalized_trajectory_scores,
    trajectory_alpha,
    trajectory_alpha_from_normalized,
)


def _vppo_alpha_as_written(scores, mask, beta_min, micro):
    """``huaixuheqing/VPPO-RL`` @ a23c54b83565c48e9e1fb54cc1e18a1c63557c99, ``verl/workers/actor/dp_actor.py``:
    mini-batch min/max with ``torch.quantile(valid_scores, 0/1)`` only when more than one valid response
    (266-300); per micro-batch ``mu_norm`` over valid rows, ``target_max = tmin + (1 − tmin)/(mu + 1e-8)``,
    ``mapped = tmin + ŝ·(target_max − tmin)``, applied only when ``max − min > 1e-6`` (483-535). float64."""
    s, m = scores.double(), mask.double()
    n = m.sum(1)
    sens = (s * m).sum(1) / n.clamp(min=1)
    valid = n > 0
    gmin = gmax = None
    if valid.sum() > 1:
        gmin, gmax = torch.quantile(sens[valid], 0.0), torch.quantile(sens[valid], 1.0)
    out = []
    for i in range(0, s.shape[0], micro):
        sc, v = sens[i : i + micro], valid[i : i + micro]
        factor = torch.ones_like(sc)
        if gmin is not None and (gmax - gmin) > 1e-6:
            norm = ((sc[v] - gmin) / (gmax - gmin)).clamp(0.0, 1.0)
            mu = norm.mean()
            tmax = beta_min + (1.0 - beta_min) / (mu + 1e-8)
            factor[v] = beta_min + norm * (tmax - beta_min)
        out.append(factor)
    return torch.cat(out)


def test_hand_computed():
    # S = [1, 3] (token means), ŝ = [0, 1], μ = 0.5: α = [0.9, 0.9 + 0.1·1/0.5] = [0.9, 1.1].
    scores = torch.tensor([[1.0, 1.0, 0.0], [2.0, 4.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    alpha = trajectory_alpha(scores, mask, beta_min=0.9)
    torch.testing.assert_close(alpha, torch.tensor([0.9, 1.1]))
    assert abs(alpha.mean().item() - 1.0) < 1e-6


@pytest.mark.parametrize("micro", [7, 3, 2])
def test_parity_with_vppo_odd_shapes(odd_mask, micro):
    g = torch.Generator().manual_seed(micro)
    scores = torch.rand(odd_mask.shape, generator=g) * 10 * odd_mask
    ours = trajectory_alpha(scores, odd_mask, beta_min=0.9, micro_batch_size=micro)
    ref = _vppo_alpha_as_written(scores, odd_mask, 0.9, micro)
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=1e-6)


def test_degenerate_batches_give_one():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    flat = torch.tensor([[2.0, 2.0], [2.0, 9.0], [5.0, 5.0]])  # equal token means (padding ignored)
    assert torch.equal(trajectory_alpha(flat, mask), torch.ones(3))
    one = torch.tensor([[1.0, 1.0]])
    assert torch.equal(trajectory_alpha(torch.tensor([[3.0, 1.0]]), one), torch.ones(1))
    # the all-padding row is never shaped
    scores = torch.tensor([[1.0, 3.0], [5.0, 0.0], [7.0, 7.0]])
    alpha = trajectory_alpha(scores, mask)
    assert alpha[2].item() == 1.0 and alpha[0].item() != 1.0


def test_two_stage_equals_one_call_and_carries_no_gradient(odd_mask):
    scores = (torch.rand(odd_mask.shape) * odd_mask).requires_grad_()
    s_hat, shaped = normalized_trajectory_scores(scores, odd_mask)
    alpha = trajectory_alpha_from_normalized(s_hat, shaped, 0.8)
    assert not alpha.requires_grad
    torch.testing.assert_close(alpha, trajectory_alpha(scores, odd_mask, 0.8))
    with pytest.raises(ValueError, match="beta_min"):
        trajectory_alpha_from_normalized(s_hat, shaped, 1.5)
