"""Clipped policy-gradient loss with a token mask, optional k3 KL, and selectable aggregation (METHOD §1).

Per token (B responses, T completion positions)::

    ρ   = exp(logp - logp_old)
    ℓ   = -min(ρ A, clip(ρ, 1 - ε_low, 1 + ε_high) A)             policy term
    kl  = exp(logp_ref - logp) - (logp_ref - logp) - 1             k3 estimator, ≥ 0

The policy term acts on the *policy tokens* ``w = mask · token_mask`` (the VEPO selection); the KL term acts
on *all valid tokens* ``mask`` so that token selection never changes the KL penalty. Both are reduced with the
same aggregation (:data:`AGGREGATIONS`), each over its own tokens, and ``loss = policy + β · kl``.

Tokens outside ``w`` receive exactly zero gradient from the policy term: their log-ratio is replaced by 0
*before* the exponential (``torch.where``), so even a garbage or overflowing log-prob at an unselected or
padding position cannot leak NaN into the backward pass.

Numerical guards (each counted in :mod:`visent.core.guards`): a valid token with a non-finite log-prob,
old or reference log-prob, advantage or importance weight is left out of the loss
(``guard/nonfinite_loss_terms``); log-ratios are clamped to ``±MAX_LOG_RATIO`` before ``exp``
(``guard/log_ratio_clamped``); responses and batches without valid tokens are counted
(``guard/empty_response``, ``guard/all_padding_batch``) and contribute exactly 0. Half-precision inputs are
reduced in float32.

Aggregations (``v`` the per-token values, ``w`` their 0/1 weights, ``m`` the valid mask):

* ``selected_mean`` — ``Σ v·w / Σ w``: mean over the selected tokens (VEPO's default).
* ``token_mean`` — ``Σ v·w / Σ m``: global token mean over valid tokens (DAPO); unselected tokens count in
  the denominator, so the loss scale shrinks with the selection ratio.
* ``sequence_mean`` — per response ``Σ_t v·w / Σ_t w``, then the mean over responses with ``Σ w > 0``
  (original GRPO).
* ``dr_grpo`` — ``Σ v·w / (B · L)`` with ``L = max_completion_length`` (or T) (Dr.GRPO).

``normalizer`` replaces the denominator (``Σ w``, ``Σ m``, ``B · L``, or for ``sequence_mean`` the number of
responses), so a caller can divide a micro-batch's sum by a count taken over the whole generation batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from visent.core import guards
from visent.core.surrogates import Surrogate, per_token_surrogate

__all__ = ["AGGREGATIONS", "MAX_LOG_RATIO", "entropy_regularizer", "policy_loss"]


# --- aggregations: (values (B,T), weights (B,T), valid (B,T), normalizer, max_completion_length) -> 0-d ---


def _selected_mean(v, w, valid, normalizer, max_len):
    denom = w.sum().clamp_min(1.0) if normalizer is None else normalizer
    return (v * w).sum() / denom


def _token_mean(v, w, valid, normalizer, max_len):
    denom = valid.sum().clamp_min(1.0) if normalizer is None else normalizer
    return (v * w).sum() / denom


def _sequence_mean(v, w, valid, normalizer, max_len):
    per_row_w = w.sum(dim=1)  # (B,)
    per_row = (v * w).sum(dim=1) / per_row_w.clamp_min(1.0)  # (B,); rows with no weight give 0
    denom = (per_row_w > 0).sum().clamp_min(1) if normalizer is None else normalizer
    return per_row.sum() / denom


def _dr_grpo(v, w, valid, normalizer, max_len):
    denom = (
        v.shape[0] * (max_len if max_len is not None else v.shape[1]) if normalizer is None else normalizer
    )
    return (v * w).sum() / denom


Aggregation = Callable[..., torch.Tensor]

AGGREGATIONS: dict[str, Aggregation] = {
    "selected_mean": _selected_mean,
    "token_mean": _token_mean,
    "sequence_mean": _sequence_mean,
    "dr_grpo": _dr_grpo,
}


#: Bound on |log π − log π_old| (and |log π_ref − log π|) before exp(); e^20 ≈ 4.9e8. Only a token with
#: A < 0 and a ratio beyond e^20 loses gradient to the clamp; elsewhere the clipped surrogate already
#: gives such tokens (near-)zero gradient. verl clamps at the same bound.
MAX_LOG_RATIO = 20.0


def _clamp_log_ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    guards.count("guard/log_ratio_clamped", log_ratio.detach().abs() > MAX_LOG_RATIO)
    return log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


def _log_ratio(logps, old_logps, valid, use, sequence_level: bool) -> torch.Tensor:
    """``(B, T)`` clamped log-ratio at the policy tokens ``use`` (0 elsewhere).

    Sequence level (GSPO-token form, :mod:`visent.core.surrogates`): the mean log-ratio over each response's
    valid finite tokens as the value, with each token's own log-prob carrying the gradient.
    """
    if not sequence_level:
        return _clamp_log_ratio(torch.where(use, logps - old_logps, torch.zeros_like(logps)))
    ok = (valid != 0) & torch.isfinite(logps) & torch.isfinite(old_logps)
    diff = torch.where(ok, logps - old_logps, torch.zeros_like(logps)).detach()
    seq = diff.sum(dim=1, keepdim=True) / ok.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
    seq = _clamp_log_ratio(seq)
    token = torch.where(use, logps - logps.detach(), torch.zeros_like(logps))
    return torch.where(use, seq + token, torch.zeros_like(logps))


def _count_empty(valid: torch.Tensor) -> None:
    """Count responses without a valid token, and batches without any (their loss is exactly 0)."""
    per_row = valid.sum(dim=1)  # (B,)
    guards.count("guard/empty_response", per_row == 0)
    guards.count("guard/all_padding_batch", per_row.sum() == 0)


def _masked_fraction(indicator: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return ((indicator.to(w.dtype) * w).sum() / w.sum().clamp_min(1.0)).detach()


def _check(name: str, x: torch.Tensor | None, shape: torch.Size) -> None:
    if x is not None and x.shape != shape:
        raise ValueError(f"{name} must have the shape of logps {tuple(shape)}, got {tuple(x.shape)}")


def _checked_advantages(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    token_mask: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    importance_weights: torch.Tensor | None,
    *,
    eps_low: float,
    eps_high: float,
    aggregation: str,
    beta: float,
    normalizer: float | None,
    kl_normalizer: float | None,
    max_completion_length: int | None,
) -> torch.Tensor:
    """Validate ``policy_loss``'s arguments (one clear ``ValueError`` each); advantages as ``(B, 1)`` or ``(B, T)``."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    if logps.dim() != 2:
        raise ValueError(f"logps must be (B, T), got shape {tuple(logps.shape)}")
    shape = logps.shape
    for name, x in (
        ("old_logps", old_logps),
        ("mask", mask),
        ("token_mask", token_mask),
        ("ref_logps", ref_logps),
        ("importance_weights", importance_weights),
    ):
        _check(name, x, shape)
    if not (0.0 <= eps_low < 1.0) or eps_high < 0.0:
        raise ValueError(
            f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}"
        )
    if beta < 0.0:
        raise ValueError(f"beta (KL coefficient) must be >= 0, got {beta}")
    if beta > 0.0 and ref_logps is None:
        raise ValueError("beta > 0 needs ref_logps (log-probs of the reference policy)")
    for name, value in (("normalizer", normalizer), ("kl_normalizer", kl_normalizer)):
        # tensors (e.g. a count gathered across ranks) are trusted: checking them would sync with the host
        if isinstance(value, (int, float)) and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if max_completion_length is not None and max_completion_length < 1:
        raise ValueError(f"max_completion_length must be >= 1, got {max_completion_length}")
    if (
        beta > 0.0
        and normalizer is not None
        and kl_normalizer is None
        and token_mask is not None
        and aggregation in ("selected_mean", "sequence_mean")
    ):
        raise ValueError(
            f"with aggregation={aggregation!r}, a token mask and beta > 0, the KL term (all valid tokens) needs "
            "its own global denominator: pass kl_normalizer as well as normalizer"
        )

    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1)
    if advantages.shape not in ((shape[0], 1), shape):
        raise ValueError(
            f"advantages must be (B,) or (B, T) with B, T = {tuple(shape)}, got {tuple(advantages.shape)}"
        )
    return advantages


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: str = "selected_mean",
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    importance_weights: torch.Tensor | None = None,
    normalizer: float | None = None,
    max_completion_length: int | None = None,
    kl_normalizer: float | None = None,
    surrogate: Surrogate | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss over the selected tokens plus ``β ×`` k3 KL over all valid tokens.

    Args:
        logps: ``(B, T)`` log-probs of the sampled tokens under the current policy (carries the gradient).
        old_logps: ``(B, T)`` log-probs under the sampling policy; None means on-policy
            (``logps.detach()``, ratio 1).
        advantages: ``(B,)`` (broadcast over tokens) or ``(B, T)``.
        mask: ``(B, T)`` 1 for valid completion tokens, 0 for padding.
        token_mask: ``(B, T)`` 0/1 selection (:func:`visent.core.selection.select_tokens`); None = all.
        eps_low, eps_high: clip range ``[1 - eps_low, 1 + eps_high]``.
        aggregation: a key of :data:`AGGREGATIONS`.
        ref_logps: ``(B, T)`` reference-policy log-probs; required when ``beta > 0``.
        beta: KL coefficient (VEPO: 0).
        importance_weights: ``(B, T)`` per-token factors on the policy term (e.g. TRL's vLLM
            truncated-importance-sampling correction); not applied to the KL term.
        normalizer: replaces the aggregation's denominator (see module docstring); a number or 0-d tensor.
        max_completion_length: ``L`` of ``dr_grpo`` (default T).
        kl_normalizer: replaces the KL term's denominator. Needed with ``normalizer``, ``beta > 0`` and a
            token mask under ``selected_mean``/``sequence_mean``, where the KL term (all valid tokens) and
            the policy term (selected tokens) have different denominators; otherwise defaults to
            ``normalizer``.
        surrogate: the per-token objective (:class:`visent.core.surrogates.Surrogate`: PPO clip with optional
            dual clip / two-sided clip, CISPO, SAPO; token- or sequence-level ratio). None = PPO clip.

    Returns:
        ``(loss, metrics)``: ``loss`` a 0-d tensor; ``metrics`` detached 0-d tensors:
        ``policy_loss`` (aggregated policy term), ``kl`` (aggregated k3 term before β; only when β > 0),
        ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean`` (fractions of the
        policy tokens clipped below with A < 0, above with A > 0, either; as TRL defines them).
    """
    advantages = _checked_advantages(
        logps, old_logps, advantages, mask, token_mask, ref_logps, importance_weights, eps_low=eps_low,
        eps_high=eps_high, aggregation=aggregation, beta=beta, normalizer=normalizer,
        kl_normalizer=kl_normalizer, max_completion_length=max_completion_length,
    )
    if logps.dtype in (torch.float16, torch.bfloat16):
        # Half-precision sums over thousands of tokens round badly; the loss is reduced in float32
        # (the gradient still flows back to the half-precision log-probs).
        logps = logps.float()
    valid = mask.to(logps.dtype)
    w = valid if token_mask is None else valid * token_mask.to(logps.dtype)  # policy tokens
    on_policy = w != 0
    if old_logps is None:
        old_logps = logps.detach()

    # Guards (counted in visent.core.guards): a valid token with a non-finite input is left out of the
    # loss. Log-ratios are clamped so that exp() cannot overflow (ratio·A would be inf, or NaN for A = 0).
    _count_empty(valid)
    advantages, use = _finite_inputs(logps, old_logps, advantages, valid, on_policy, ref_logps,
                                     importance_weights, beta)

    surrogate = surrogate or Surrogate()
    log_ratio = _log_ratio(logps, old_logps, valid, use, surrogate.sequence_level)
    ratio = torch.exp(log_ratio)
    per_token = per_token_surrogate(ratio, logps, advantages, eps_low, eps_high, surrogate)  # (B, T)
    if importance_weights is not None:
        per_token = torch.where(use, per_token * importance_weights, torch.zeros_like(per_token))
    else:
        per_token = torch.where(use, per_token, torch.zeros_like(per_token))

    agg = AGGREGATIONS[aggregation]
    policy = agg(per_token, w, valid, normalizer, max_completion_length)
    loss = policy

    metrics: dict[str, torch.Tensor] = {"policy_loss": policy.detach()}
    if beta > 0.0:
        kl_denominator = kl_normalizer if kl_normalizer is not None else normalizer
        kl = agg(_k3_per_token(logps, ref_logps, valid), valid, valid, kl_denominator, max_completion_length)
        loss = loss + beta * kl
        metrics["kl"] = kl.detach()

    low = (ratio < 1.0 - eps_low) & (advantages < 0)
    high = (ratio > 1.0 + eps_high) & (advantages > 0)
    metrics["clip_ratio/low_mean"] = _masked_fraction(low, w)
    metrics["clip_ratio/high_mean"] = _masked_fraction(high, w)
    metrics["clip_ratio/region_mean"] = _masked_fraction(low | high, w)
    return loss, metrics


def _finite_inputs(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    valid: torch.Tensor,
    on_policy: torch.Tensor,
    ref_logps: torch.Tensor | None,
    importance_weights: torch.Tensor | None,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, use)``: non-finite advantages zeroed, and the ``(B, T)`` policy tokens whose inputs
    are all finite. A token left out is replaced *before* any arithmetic, so its gradient from the loss is
    exactly zero rather than 0 · NaN. Counts ``guard/nonfinite_loss_terms``."""
    advantages = advantages.to(logps.dtype)
    finite_adv = torch.isfinite(advantages)
    advantages = torch.where(finite_adv, advantages, torch.zeros_like(advantages))
    policy_inputs_ok = torch.isfinite(logps) & torch.isfinite(old_logps) & finite_adv
    if importance_weights is not None:
        policy_inputs_ok = policy_inputs_ok & torch.isfinite(importance_weights)
    bad = on_policy & ~policy_inputs_ok
    if beta > 0.0:
        bad = bad | ((valid != 0) & ~(torch.isfinite(logps) & torch.isfinite(ref_logps)))
    guards.count("guard/nonfinite_loss_terms", bad)
    return advantages, on_policy & policy_inputs_ok


def _k3_per_token(logps: torch.Tensor, ref_logps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` k3 estimate of KL(π‖π_ref) per valid token, 0 at padding and at non-finite inputs."""
    kl_ok = (valid != 0) & torch.isfinite(logps) & torch.isfinite(ref_logps)
    delta = _clamp_log_ratio(torch.where(kl_ok, ref_logps - logps, torch.zeros_like(logps)))
    return torch.exp(delta) - delta - 1.0


def entropy_regularizer(entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_ent = -mean_i H̄_i`` over responses with at least one valid token (METHOD §4).

    Args:
        entropy: ``(B, T)`` per-token entropy in nats, with gradient
            (:func:`visent.core.stats.entropy_from_logits`).
        mask: ``(B, T)`` 1 for valid completion tokens.

    Returns:
        0-d tensor. Sign convention: the trainer adds ``coef · L_ent`` to the loss, so gradient descent with
        ``coef > 0`` *raises* entropy and ``coef < 0`` lowers it. 0 (still differentiable) when no response
        has a valid token.
    """
    if entropy.shape != mask.shape or entropy.dim() != 2:
        raise ValueError(
            f"entropy and mask must both be (B, T), got {tuple(entropy.shape)} and {tuple(mask.shape)}"
        )
    valid = mask.to(entropy.dtype)
    # A non-finite entropy (NaN logits, or a fully masked vocabulary) is left out, as if it were padding.
    finite = torch.isfinite(entropy)
    guards.count("guard/nonfinite_entropy", (valid != 0) & ~finite)
    valid = valid * finite.to(valid.dtype)
    h = torch.where(valid != 0, entropy, torch.zeros_like(entropy))
    n = valid.sum(dim=1)  # (B,)
    per_response = (h * valid).sum(dim=1) / n.clamp_min(1.0)
    responses = (n > 0).sum().clamp_min(1)
    return -per_response.sum() / responses
