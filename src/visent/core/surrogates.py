"""Per-token policy objectives (the "loss type" axis), each composing with a token mask.

A token mask (VEPO's selection, VPPO's top-40%) multiplies the per-token loss, so it composes with any
objective whose loss is a sum of per-token terms each carrying the gradient of its own token's log-prob.
That holds for every kind here:

* ``clip`` — PPO's ``−min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A)``; optional dual clip (``−A·c`` bound where A < 0,
  Ye et al. 2020; VPPO/EasyR1 use c = 3) and two-sided clip ``delta`` (ρ ≤ δ before the min; INTELLECT-2,
  TRL's ``delta``).
* ``cispo`` — MiniMax-M1's ``−sg(min(ρ, ε_max))·A·log π``: the clipped ratio only weights the REINFORCE term
  (TRL's ``loss_type="cispo"``: ε_max is ``epsilon_high`` itself, ScaleRL recommends 5.0).
* ``sapo`` — Soft Adaptive PO's ``−(4/τ)·σ(τ(ρ−1))·A`` with τ = τ_pos where A > 0, τ_neg otherwise (TRL's
  ``loss_type="sapo"``).

**Sequence-level importance ratios** (GSPO, TRL's ``importance_sampling_level="sequence"``) use
``ρ_i = exp(mean_t log(π/π_old))`` over all valid tokens of response i. Plain GSPO puts that one ratio on every
token, so a token's gradient comes through the sequence mean whatever the mask — a token mask would not
select anything. Here the ratio is taken in GSPO-token form, ``ρ_{i,t} = sg(ρ_i) · π_t / sg(π_t)``: the same
value, and without a mask the same gradient as GSPO for every aggregation (each response's tokens share
one weight); with a mask, the gradient reaches exactly the selected tokens. ``cispo`` at sequence level is
refused (its weight is already a stop-gradient, so the GSPO-token form changes nothing and TRL warns that
it optimises a length-weighted objective).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["SURROGATES", "Surrogate", "per_token_surrogate"]


@dataclass(frozen=True)
class Surrogate:
    """Which per-token objective, and its settings (see the module docstring).

    Attributes:
        kind: a key of :data:`SURROGATES`.
        dual_clip: ``c > 1`` bounding the loss at ``−c·A`` where A < 0 (``clip`` only); None = off.
        delta: two-sided clip, ρ capped at ``δ > 1`` before the min (``clip`` only); None = off.
        sapo_tau_pos, sapo_tau_neg: SAPO's temperatures (> 0) for A > 0 and A ≤ 0.
        sequence_level: GSPO's sequence-level ratio, in GSPO-token form.
    """

    kind: str = "clip"
    dual_clip: float | None = None
    delta: float | None = None
    sapo_tau_pos: float = 1.0
    sapo_tau_neg: float = 1.05
    sequence_level: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SURROGATES:
            raise ValueError(f"unknown surrogate {self.kind!r}; valid: {', '.join(SURROGATES)}")
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            raise ValueError(f"dual_clip must be > 1 (a bound on the ratio for negative advantages), got {self.dual_clip}")
        if self.delta is not None and not self.delta > 1.0:
            raise ValueError(f"delta (two-sided clip) must be > 1, got {self.delta}")
        if (self.dual_clip is not None or self.delta is not None) and self.kind != "clip":
            raise ValueError(f"dual_clip and delta bound the clipped objective only, not {self.kind!r}")
        if not (self.sapo_tau_pos > 0 and self.sapo_tau_neg > 0):
            raise ValueError("SAPO temperatures must be > 0")
        if self.sequence_level and self.kind == "cispo":
            raise ValueError(
                "sequence-level importance ratios with CISPO: its ratio is a stop-gradient weight, so a sequence "
                "ratio only reweights whole responses by length; use importance_sampling_level=token"
            )


def _clip(ratio, logps, adv, eps_low, eps_high, s: Surrogate):
    coef = ratio if s.delta is None else ratio.clamp(max=s.delta)
    loss = -torch.min(coef * adv, ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv)
    if s.dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -s.dual_clip * adv), loss)
    return loss


def _cispo(ratio, logps, adv, eps_low, eps_high, s: Surrogate):
    return -ratio.clamp(max=eps_high).detach() * adv * logps


def _sapo(ratio, logps, adv, eps_low, eps_high, s: Surrogate):
    tau = torch.where(adv > 0, torch.full_like(adv, s.sapo_tau_pos), torch.full_like(adv, s.sapo_tau_neg))
    return -torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * adv


SURROGATES: dict[str, Callable[..., torch.Tensor]] = {"clip": _clip, "cispo": _cispo, "sapo": _sapo}


def per_token_surrogate(
    ratio: torch.Tensor,
    logps: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
    surrogate: Surrogate,
) -> torch.Tensor:
    """``(B, T)`` per-token loss of ``surrogate`` from ratios ``(B, T)``, log-probs ``(B, T)``, advantages
    ``(B, 1)`` or ``(B, T)`` (padding and unselected tokens are masked by the caller)."""
    return SURROGATES[surrogate.kind](ratio, logps, advantages, eps_low, eps_high, surrogate)
