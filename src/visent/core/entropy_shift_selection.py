"""CPPO's token selection: tokens whose entropy rises most when the image's information is removed.

Per token, from the entropies of the clean pass and of the information-removing pass (no gradient)::

    ΔH_t = H_removing,t − H_clean,t
    r_t  = relu(ΔH_t) / (H_removing,t + 1e-6)
    k_i  = max(1, floor(ratio · #{t : ΔH_t > 0}))          per response
    keep t  iff  ΔH_t > 0  and  r_t ≥ (k_i-th largest r of the response among ΔH > 0)
           and (with ``positive_advantage_only``) A_i > 0

Every token tied with the threshold is kept (the count can exceed k_i). A response without a token of
positive ΔH keeps nothing.

Reference: ``vbdi/cppo`` @ cb1da3eb84dba0abb7dcdf127ec9be056cb5b34c, ``verl/recipe/cppo/cppo_dp_actor.py``,
``update_policy``, the ``cpl_use_vision_mask`` and ``cpl_use_advantage_gating`` blocks. One departure: the
authors count and select over every position of the padded response (their mask is not multiplied by the
response mask); here padding is never counted or selected.
"""

from __future__ import annotations

import torch

__all__ = ["DEFAULT_CPPO_RATIO", "entropy_shift_selection"]

#: CPPO's ``cpl_vision_top_percent``.
DEFAULT_CPPO_RATIO = 0.5
_EPS = 1e-6


def entropy_shift_selection(
    entropy: torch.Tensor,
    entropy_removing: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor | None = None,
    ratio: float = DEFAULT_CPPO_RATIO,
    positive_advantage_only: bool = True,
) -> torch.Tensor:
    """CPPO's vision-token mask.

    Args:
        entropy: ``(B, T)`` entropy of the clean pass (detached here).
        entropy_removing: ``(B, T)`` entropy with the information-removing image (detached here).
        mask: ``(B, T)`` 1 for valid response tokens.
        advantages: ``(B,)`` or ``(B, T)``; needed when ``positive_advantage_only``.
        ratio: fraction of the positive-ΔH tokens kept, in (0, 1].
        positive_advantage_only: keep tokens only where the advantage is > 0 (CPPO's advantage gating).

    Returns:
        ``(B, T)`` float32 0/1 mask, never 1 at padding.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1]; got {ratio}")
    if entropy.shape != mask.shape or entropy_removing.shape != mask.shape or mask.dim() != 2:
        raise ValueError(
            f"entropy {tuple(entropy.shape)}, entropy_removing {tuple(entropy_removing.shape)} and mask "
            f"{tuple(mask.shape)} must all be (B, T)"
        )
    h = entropy.detach().float()
    h_rm = entropy_removing.detach().float()
    valid = mask.bool() & torch.isfinite(h) & torch.isfinite(h_rm)
    delta = torch.where(valid, h_rm - h, torch.zeros_like(h))
    rising = valid & (delta > 0)
    r = torch.relu(delta) / (h_rm + _EPS)
    ranked = torch.where(rising, r, torch.full_like(r, float("-inf")))
    ordered = torch.sort(ranked, dim=1, descending=True).values  # (B, T)
    counts = rising.sum(dim=1)  # (B,)
    k = torch.floor(counts.float() * ratio).clamp_min(1).long()
    if ordered.shape[1] == 0:
        return torch.zeros_like(h)
    threshold = ordered.gather(1, (k - 1).clamp(0, ordered.shape[1] - 1)[:, None])  # (B, 1)
    keep = rising & (r >= threshold)
    if positive_advantage_only:
        if advantages is None:
            raise ValueError("positive_advantage_only needs the advantages")
        adv = advantages.reshape(advantages.shape[0], -1) if advantages.dim() == 2 else advantages[:, None]
        keep = keep & (adv.detach() > 0)
    return keep.float()
