"""Extra loss terms of the perception-aware baselines (PAPO, VPPO, CPPO), each a token mean.

All take sampled-token log-probs ``(B, T)`` and a ``(B, T)`` 0/1 mask and return a 0-d tensor to be *added*
to the policy loss (the sign is part of the term). ``normalizer`` replaces the denominator ``Σ mask``, so a
caller can divide a micro-batch's sum by a count taken over the whole batch (as ``policy_loss`` does).

* :func:`negative_logp_mean` — ``mean(−logp)``: the sampled-token estimate of entropy the EasyR1 forks use.
  Added with a positive coefficient it *lowers* entropy (gradient descent raises ``logp``). VPPO's
  "entropy penalty" (``c = 0.06``; ``VPPO-RL`` @ a23c54b, ``dp_actor.py:563-566``) and PAPO's η_ori term.
* :func:`implicit_perception_loss` — PAPO's ``−γ · mean k3(logp, perturbed)``: the KL between the policy
  with the clean image and with the masked image is *maximised* (``MikeWangWZHL/PAPO`` @ fb63bf4,
  ``verl/workers/actor/dp_actor.py:328-370``; ``compute_kl(..., "low_var_kl")`` clamps k3 to [−10, 10],
  ``core_algos.py:597-600``). The perturbed log-probs come from the no-grad θ_old pass
  (``RECOMPUTE_AUG_LOG_PROBS=False``), so gradient reaches the clean branch only.
* :func:`double_entropy_loss` — PAPO's ``η_ori · mean(−logp) + η_aug · mean(−perturbed)``; the second term has
  no gradient in the authors' default (the README says so) and is kept for the logged value.
* :func:`contrastive_perception_loss` — CPPO's ``mean over selected of softplus((k3(logp, preserving) −
  k3(logp, removing)) / τ)``, τ = 0.1, with gradient through **all three** passes (``vbdi/cppo`` @ cb1da3e,
  ``verl/recipe/cppo/cppo_dp_actor.py``, the ``use_vision_cpl_loss`` block of ``update_policy``; denominator
  = number of selected tokens + 1e-8, ``cppo_core_algos.py`` ``agg_loss`` ``token-mean``).

The reference codes divide by ``Σ mask + 1e-8``; here it is ``max(Σ mask, 1)`` (same value for any non-empty
mask to ~1e-8 relative; exactly 0 for an empty one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visent.core.kl_scores import k3

__all__ = [
    "DEFAULT_CPPO_TAU",
    "contrastive_perception_loss",
    "double_entropy_loss",
    "implicit_perception_loss",
    "negative_logp_mean",
]

#: CPPO's ``cpl_tau``.
DEFAULT_CPPO_TAU = 0.1


def _mean(values: torch.Tensor, mask: torch.Tensor, normalizer) -> torch.Tensor:
    w = mask.to(values.dtype)
    # torch.where, not values * w: a non-finite value at padding must not turn the sum into NaN.
    total = torch.where(w != 0, values * w, torch.zeros_like(values)).sum()
    return total / (w.sum().clamp_min(1.0) if normalizer is None else normalizer)


def _up(x: torch.Tensor) -> torch.Tensor:
    """Half precision reduced in float32 (sums over thousands of tokens round badly); float64 kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check(mask: torch.Tensor, *tensors: torch.Tensor) -> None:
    for x in tensors:
        if x.shape != mask.shape or x.dim() != 2:
            raise ValueError(f"log-probs and masks must all be (B, T) of one shape; got {tuple(x.shape)} and {tuple(mask.shape)}")


def negative_logp_mean(logps: torch.Tensor, mask: torch.Tensor, normalizer=None) -> torch.Tensor:
    """``mean(−logp)`` over the valid tokens (sampled-token entropy estimate), with gradient through ``logps``."""
    _check(mask, logps)
    return _mean(-_up(logps), mask, normalizer)


def implicit_perception_loss(
    logps: torch.Tensor, perturbed_logps: torch.Tensor, mask: torch.Tensor, gamma: float, normalizer=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PAPO's term ``−γ · mean k3(logp, perturbed)`` (k3 clamped to [−10, 10]); ``perturbed`` is detached.

    Returns:
        ``(term, kl)``: the term to add to the loss and the detached mean k3 (PAPO logs ``−kl``).
    """
    _check(mask, logps, perturbed_logps)
    kl = _mean(k3(_up(logps), _up(perturbed_logps.detach())), mask, normalizer)
    return -gamma * kl, kl.detach()


def double_entropy_loss(
    logps: torch.Tensor,
    perturbed_logps: torch.Tensor,
    mask: torch.Tensor,
    eta_clean: float,
    eta_perturbed: float,
    normalizer=None,
) -> torch.Tensor:
    """PAPO's double entropy term ``η_ori · mean(−logp) + η_aug · mean(−perturbed)`` (``perturbed`` detached)."""
    _check(mask, logps, perturbed_logps)
    clean = negative_logp_mean(logps, mask, normalizer)
    masked = negative_logp_mean(perturbed_logps.detach(), mask, normalizer)
    return eta_clean * clean + eta_perturbed * masked


def contrastive_perception_loss(
    logps: torch.Tensor,
    preserving_logps: torch.Tensor,
    removing_logps: torch.Tensor,
    token_mask: torch.Tensor,
    tau: float = DEFAULT_CPPO_TAU,
    normalizer=None,
) -> torch.Tensor:
    """CPPO's contrastive perception loss (coefficient not applied), gradient through all three passes.

    Args:
        logps: ``(B, T)`` sampled-token log-probs with the clean image.
        preserving_logps: ``(B, T)`` with the information-preserving image.
        removing_logps: ``(B, T)`` with the information-removing image.
        token_mask: ``(B, T)`` 0/1 selected tokens
            (:func:`visent.core.entropy_shift_selection.entropy_shift_selection`).
        tau: temperature of the margin (CPPO: 0.1), > 0.
        normalizer: denominator; default the number of selected tokens.

    Returns:
        0-d tensor ``mean_selected softplus((k3(logp, preserving) − k3(logp, removing)) / τ)``: pulls the
        preserving view's distribution towards the clean one and pushes the removing view's away.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    _check(token_mask, logps, preserving_logps, removing_logps)
    lp = _up(logps)
    margin = k3(lp, _up(preserving_logps)) - k3(lp, _up(removing_logps))
    return _mean(F.softplus(margin / tau), token_mask, normalizer)
