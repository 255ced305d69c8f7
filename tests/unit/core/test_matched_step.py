"""VEPO's matched-step option (`loss_aggregation: token_mean` with a token mask), against a float64 reference.

With a selection keeping a fraction ρ = N_selected / N_valid of the valid tokens:

- ``selected_mean`` (VEPO's default) gives each selected token the weight 1 / N_selected;
- GRPO (no mask; the trainer passes ``normalizer = Σ valid`` = ``visent_selected_count`` summed) gives
  every token 1 / N_valid;
- ``token_mean`` with the mask gives each selected token 1 / N_valid: GRPO's per-token step on the
  selected tokens, i.e. ρ × the ``selected_mean`` gradient. docs/lab-step-size.md.
"""

from __future__ import annotations

import math

import pytest
import torch

from visent.core.policy_loss import policy_loss
from visent.core.selection import select_tokens

EPS_LOW, EPS_HIGH = 0.2, 0.28


def _batch(seed: int, B: int = 7, T: int = 23, ratio: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, T + 1, (B,), generator=g)
    valid = (torch.arange(T)[None, :] < lengths[:, None]).float()  # (B, T), right padding
    logps = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4
    # Old log-probs up to ±0.5 away: a good share of ratios fall outside [1 - ε_low, 1 + ε_high] (clipped).
    old = logps + (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    scores = torch.rand(B, T, generator=g)
    token_mask = select_tokens(scores, valid, ratio, "response", "top")
    return logps, old, adv, valid, token_mask


def _grad(logps, old, adv, valid, token_mask, aggregation, normalizer=None, dtype=torch.float32):
    x = logps.to(dtype).clone().requires_grad_(True)
    loss, _ = policy_loss(
        x, old.to(dtype), adv.to(dtype), valid, token_mask,
        eps_low=EPS_LOW, eps_high=EPS_HIGH, aggregation=aggregation, normalizer=normalizer,
    )
    loss.backward()
    return x.grad.double()


def _reference_grad(logps, old, adv, valid, token_mask, denominator: float) -> torch.Tensor:
    """d loss / d logp, token by token in Python floats: ``-A·r`` where the unclipped branch is the min."""
    B, T = valid.shape
    out = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        a = float(adv[b])
        for t in range(T):
            if valid[b, t] == 0 or token_mask[b, t] == 0:
                continue
            r = math.exp(float(logps[b, t]) - float(old[b, t]))
            clipped = (a > 0 and r > 1 + EPS_HIGH) or (a < 0 and r < 1 - EPS_LOW)
            out[b, t] = 0.0 if clipped else -a * r / denominator
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matched_step_is_grpo_per_token_weight_and_rho_times_selected_mean(seed):
    logps, old, adv, valid, token_mask = _batch(seed)
    w = valid * token_mask
    n_valid, n_selected = float(valid.sum()), float(w.sum())
    rho = n_selected / n_valid
    assert 0.15 < rho < 0.4  # a real selection, so "ρ ×" below is not a no-op

    matched = _grad(logps, old, adv, valid, token_mask, "token_mean")
    selected = _grad(logps, old, adv, valid, token_mask, "selected_mean")
    # GRPO as the trainer computes it: no mask, normaliser = Σ of the rows' selected counts = Σ valid.
    grpo = _grad(logps, old, adv, valid, None, "selected_mean", normalizer=valid.sum())

    # The float64 references: GRPO's 1/N_valid on the selected tokens; VEPO's 1/N_selected.
    ref_matched = _reference_grad(logps, old, adv, valid, token_mask, n_valid)
    ref_selected = _reference_grad(logps, old, adv, valid, token_mask, n_selected)
    assert int((ref_matched != 0).sum()) > 5  # some selected tokens are inside the clip range
    torch.testing.assert_close(matched, ref_matched, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(selected, ref_selected, rtol=1e-5, atol=1e-8)

    # matched = ρ · selected_mean, exactly the ratio of the denominators.
    torch.testing.assert_close(matched, rho * selected, rtol=1e-5, atol=1e-9)
    # On the selected tokens the matched step equals GRPO's; elsewhere it is exactly zero.
    sel = w.bool()
    torch.testing.assert_close(matched[sel], grpo[sel], rtol=1e-6, atol=1e-10)
    assert torch.all(matched[~sel] == 0)
    # ...and it is not what selected_mean gives (the test can tell the two apart).
    assert not torch.allclose(selected[sel], grpo[sel], rtol=1e-2)


def test_matched_step_weight_does_not_depend_on_the_selection_ratio():
    # Same tokens, two selection ratios: a token selected under both gets the same gradient from
    # token_mean (GRPO's 1/N_valid), while selected_mean's gradient grows as the selection shrinks.
    logps, old, adv, valid, _ = _batch(5, ratio=0.2)
    scores = torch.rand(valid.shape, generator=torch.Generator().manual_seed(9))
    small = select_tokens(scores, valid, 0.1, "response", "top")
    large = select_tokens(scores, valid, 0.5, "response", "top")
    both = (small * large * valid).bool()
    assert both.any()
    m_small = _grad(logps, old, adv, valid, small, "token_mean", dtype=torch.float64)
    m_large = _grad(logps, old, adv, valid, large, "token_mean", dtype=torch.float64)
    torch.testing.assert_close(m_small[both], m_large[both], rtol=1e-12, atol=1e-15)
    s_small = _grad(logps, old, adv, valid, small, "selected_mean", dtype=torch.float64)
    s_large = _grad(logps, old, adv, valid, large, "selected_mean", dtype=torch.float64)
    expect = float((large * valid).sum() / (small * valid).sum())
    nz = both & (s_large != 0)
    torch.testing.assert_close(s_small[nz] / s_large[nz], torch.full_like(s_small[nz], expect), rtol=1e-10, atol=0)
