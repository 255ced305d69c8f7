"""Sampled-token k3 KL between two passes, and VPPO's per-token perception score built on it.

The k3 estimator (Schulman, "Approximating KL divergence") of KL between the policies behind two
log-probs of the *same sampled token*::

    d   = clamp(other − logp, −20, 20)
    k3  = exp(d) − d − 1                        ≥ 0, 0 iff the two log-probs agree

It needs only the log-prob of the sampled token under each pass — no full-vocabulary distribution —
which is why VPPO and PAPO can afford it. Each code base then clamps the result: VPPO to [0, 10]
(``dp_actor.py:402-405``), verl's ``low_var_kl`` (PAPO, CPPO) to [−10, 10], which is the same on the
non-negative k3 except that k3 ≥ 0 already.

``perception_kl_score`` is VPPO's token score: ``s_t = clamp(k3(old_t, perturbed_t), 0, 10)`` with ``old``
the log-prob under θ_old with the clean image and ``perturbed`` under θ_old with the blacked-out image; it is
computed once per generation batch, before the update, and carries no gradient.
Reference: ``huaixuheqing/VPPO-RL`` @ a23c54b83565c48e9e1fb54cc1e18a1c63557c99,
``verl/workers/actor/dp_actor.py:402-405`` (score) and ``:271-279`` (the same score for the shaping).
"""

from __future__ import annotations

import torch

from visent.core import guards

__all__ = ["K3_LOG_RATIO_BOUND", "k3", "perception_kl_score"]

#: |other − logp| is clamped to this before exp(), as every one of the reference code bases does.
K3_LOG_RATIO_BOUND = 20.0


def k3(
    logps: torch.Tensor, other_logps: torch.Tensor, clamp_min: float = -10.0, clamp_max: float = 10.0
) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_other) from the sampled token's log-probs.

    Args:
        logps: ``(B, T)`` log-probs of the sampled tokens under π (gradient flows if it has one).
        other_logps: ``(B, T)`` log-probs of the same tokens under the other pass (gradient flows too;
            detach it to get VPPO's / PAPO's one-sided gradient).
        clamp_min, clamp_max: clamp on the result (verl's ``low_var_kl``: −10, 10; VPPO: 0, 10).

    Returns:
        ``(B, T)`` tensor in ``logps``' dtype; padding positions are computed like any other (mask them).
    """
    if logps.shape != other_logps.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and other_logps {tuple(other_logps.shape)} differ in shape")
    d = (other_logps - logps).clamp(-K3_LOG_RATIO_BOUND, K3_LOG_RATIO_BOUND)
    return (torch.exp(d) - d - 1.0).clamp(clamp_min, clamp_max)


def perception_kl_score(
    old_logps: torch.Tensor, perturbed_logps: torch.Tensor, mask: torch.Tensor, clamp_max: float = 10.0
) -> torch.Tensor:
    """VPPO's token score ``clamp(k3(old, perturbed), 0, clamp_max)``: how much the image matters to a token.

    Args:
        old_logps: ``(B, T)`` sampled-token log-probs under θ_old with the clean image.
        perturbed_logps: ``(B, T)`` the same under θ_old with the perturbed image.
        mask: ``(B, T)`` 1 for valid response tokens.
        clamp_max: upper clamp (VPPO: 10).

    Returns:
        ``(B, T)`` float32, no gradient, 0 at padding. A non-finite log-prob at a valid token scores 0
        (counted as ``guard/nonfinite_scores``).
    """
    if mask.shape != old_logps.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and log-probs {tuple(old_logps.shape)} differ in shape")
    old, aug = old_logps.detach().float(), perturbed_logps.detach().float()
    valid = mask.bool()
    finite = torch.isfinite(old) & torch.isfinite(aug)
    guards.count("guard/nonfinite_scores", valid & ~finite)
    keep = valid & finite
    zeros = torch.zeros_like(old)
    score = k3(torch.where(keep, old, zeros), torch.where(keep, aug, zeros), 0.0, clamp_max)
    return torch.where(keep, score, zeros)
