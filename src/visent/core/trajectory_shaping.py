"""VPPO's trajectory-level advantage shaping (TAS): scale each response's advantage by how visual it is.

From per-token perception scores ``s_t`` (:func:`visent.core.kl_scores.perception_kl_score`)::

    S_i  = token-mean of s_t over response i's valid tokens
    ŝ_i  = clamp((S_i − min S) / (max S − min S), 0, 1)       min/max over the PPO mini-batch
    μ    = mean of ŝ over the micro-batch's responses with a valid token
    α_i  = β_min + (1 − β_min) · ŝ_i / (μ + 1e-8)              (mean α = 1 per micro-batch; no upper clamp)
    A_i ← α_i · A_i                                            (α carries no gradient)

``α_i = 1`` for every response when the mini-batch has fewer than two responses with a valid token or
``max S − min S ≤ 1e-6``, and for a response without valid tokens.

Two stages, because in visent the mini-batch is known when the batch is generated but the micro-batch only
at the update (TRL shuffles the generation batch before splitting it): :func:`normalized_trajectory_scores`
(once per generation batch) and :func:`trajectory_alpha_from_normalized` (per update).

Reference: ``huaixuheqing/VPPO-RL`` @ a23c54b83565c48e9e1fb54cc1e18a1c63557c99,
``verl/workers/actor/dp_actor.py:266-300`` (min/max over the mini-batch with ``torch.quantile(·, 0/1)``)
and ``:483-535`` (μ, α, ``epsilon = 1e-8``).
"""

from __future__ import annotations

import torch

__all__ = [
    "DEFAULT_BETA_MIN",
    "normalized_trajectory_scores",
    "trajectory_alpha",
    "trajectory_alpha_from_normalized",
    "trajectory_scores",
]

#: VPPO's ``advantage_scaling_min``.
DEFAULT_BETA_MIN = 0.9
_RANGE_EPS = 1e-6
_MU_EPS = 1e-8


def trajectory_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``S_i``: the mean of ``scores`` over each response's valid tokens, ``(B,)`` float32 (0 without any)."""
    valid = mask.float()
    return (scores.float() * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)


def normalized_trajectory_scores(scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ŝ_i`` over one mini-batch, and which responses are shaped.

    Args:
        scores: ``(B, T)`` per-token perception scores (no gradient needed).
        mask: ``(B, T)`` 1 for valid response tokens.

    Returns:
        ``(s_hat, shaped)``: ``(B,)`` float32 in [0, 1] and ``(B,)`` bool. ``shaped`` is False for a response
        without valid tokens, and for every response when there are fewer than two with valid tokens or the
        range of ``S`` is at most 1e-6; such responses get α = 1.
    """
    s = trajectory_scores(scores.detach(), mask)
    has_valid = mask.bool().any(dim=1)
    inf = torch.full_like(s, float("inf"))
    lo = torch.where(has_valid, s, inf).amin() if s.numel() else s.new_zeros(())
    hi = torch.where(has_valid, s, -inf).amax() if s.numel() else s.new_zeros(())
    active = (has_valid.sum() > 1) & ((hi - lo) > _RANGE_EPS)
    span = torch.where(active, hi - lo, torch.ones_like(hi))
    s_hat = ((s - torch.where(active, lo, torch.zeros_like(lo))) / span).clamp(0.0, 1.0)
    shaped = has_valid & active
    return torch.where(shaped, s_hat, torch.zeros_like(s_hat)), shaped


def trajectory_alpha_from_normalized(
    s_hat: torch.Tensor, shaped: torch.Tensor, beta_min: float = DEFAULT_BETA_MIN
) -> torch.Tensor:
    """``α_i`` for one micro-batch from its rows' ``ŝ`` and ``shaped`` flags, ``(B,)`` float32, no gradient.

    μ is the mean of ``ŝ`` over the shaped rows of *this* micro-batch (VPPO's ``mu_norm``).
    """
    if not 0.0 <= beta_min <= 1.0:
        raise ValueError(f"beta_min must be in [0, 1] (the smallest advantage scale); got {beta_min}")
    s_hat, shaped = s_hat.detach().float(), shaped.bool()
    n = shaped.sum().clamp_min(1)
    mu = torch.where(shaped, s_hat, torch.zeros_like(s_hat)).sum() / n
    alpha = beta_min + s_hat * (1.0 - beta_min) / (mu + _MU_EPS)
    return torch.where(shaped, alpha, torch.ones_like(alpha))


def trajectory_alpha(
    scores: torch.Tensor, mask: torch.Tensor, beta_min: float = DEFAULT_BETA_MIN, micro_batch_size: int | None = None
) -> torch.Tensor:
    """``α_i`` for a mini-batch whose micro-batches are consecutive runs of ``micro_batch_size`` rows.

    Args:
        scores: ``(B, T)`` per-token perception scores.
        mask: ``(B, T)`` 1 for valid response tokens.
        beta_min: β_min in [0, 1] (VPPO: 0.9).
        micro_batch_size: rows per micro-batch; None = the whole mini-batch is one micro-batch.

    Returns:
        ``(B,)`` float32 advantage scales, no gradient.
    """
    s_hat, shaped = normalized_trajectory_scores(scores, mask)
    size = micro_batch_size or max(s_hat.numel(), 1)
    if size < 1:
        raise ValueError(f"micro_batch_size must be >= 1; got {micro_batch_size}")
    parts = [
        trajectory_alpha_from_normalized(s_hat[i : i + size], shaped[i : i + size], beta_min)
        for i in range(0, s_hat.numel(), size)
    ]
    return torch.cat(parts) if parts else s_hat.new_ones(0)
