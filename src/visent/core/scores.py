"""Per-token scores that decide which response tokens carry the policy gradient (METHOD §3).

Every score maps per-token statistics of a batch of B responses with T completion positions to a
``(B, T)`` float32 tensor that is exactly zero at padding. Higher means "more worth training on";
:func:`visent.core.selection.select_tokens` then keeps the top (or bottom, or a random) fraction.

Normalisation. The VEPO-family scores combine three signals on different scales (JSD in [0, log 2],
entropy in [0, log V], entropy gap signed), so each is min-max normalised to [0, 1] *within each response*
over its valid tokens (:func:`minmax_per_response`). The range is clamped at ``eps = 1e-8``: a response with
one valid token, or with a constant signal, normalises to all zeros instead of 0/0 = NaN.

Single-signal scores (``jsd``, ``entropy``) return the *raw* statistic instead. Per-response selection is
invariant to that choice (min-max is increasing), but batch-granularity selection is not: the raw entropy is
what the 80/20 paper thresholds at the batch quantile, so ``method="entropy"`` with
``granularity="batch"`` reproduces that baseline exactly.

The statistics object only needs attributes ``entropy``, ``entropy_perturbed``, ``jsd`` and ``kl`` (each
``(B, T)``), i.e. :class:`visent.core.stats.TokenStats`; the gap ``ΔH = entropy_perturbed - entropy`` is
recomputed here in float32 so that low-precision statistics do not lose it to cancellation.
Values at padding positions are ignored (never read into a score), so they may be anything finite or not.

Adding a score: write ``def my_score(stats, mask, *, alpha, generator) -> Tensor`` and add it to
:data:`SCORES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from visent.core import guards

__all__ = ["SCORES", "minmax_per_response", "token_scores"]


class _TokenStatsLike(Protocol):
    entropy: torch.Tensor
    entropy_perturbed: torch.Tensor
    jsd: torch.Tensor
    kl: torch.Tensor


def minmax_per_response(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise each row of ``x`` over its valid tokens.

    Args:
        x: ``(B, T)`` values; entries where ``mask`` is 0 are ignored.
        mask: ``(B, T)`` 1 for valid response tokens, 0 for padding (bool, int or float).
        eps: lower clamp on each row's range ``max - min``.

    Returns:
        ``(B, T)`` float32, ``(x - min_i) / max(max_i - min_i, eps)`` at valid tokens (in [0, 1]) and 0 at
        padding. Rows with fewer than two distinct values (one valid token, a constant signal, or no valid
        token at all) come out all zero.
    """
    valid = mask.bool()
    x = x.float()
    # Fill padding with +/-inf so it never wins the min/max; an all-padding row then has min=+inf,
    # max=-inf, which is replaced by 0 below before any arithmetic can turn it into NaN.
    lo = torch.where(valid, x, torch.full_like(x, float("inf"))).amin(dim=1, keepdim=True)  # (B, 1)
    hi = torch.where(valid, x, torch.full_like(x, float("-inf"))).amax(dim=1, keepdim=True)  # (B, 1)
    has_valid = valid.any(dim=1, keepdim=True)
    lo = torch.where(has_valid, lo, torch.zeros_like(lo))
    hi = torch.where(has_valid, hi, torch.zeros_like(hi))
    normalised = (x - lo) / (hi - lo).clamp_min(eps)
    return torch.where(valid, normalised, torch.zeros_like(normalised))


def _noisy_or(signals: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Weighted geometric noisy-OR ``1 - prod_k (1 - x_k)^{w_k}`` of signals in [0, 1].

    With weights summing to 1 this is a soft OR that is idempotent (all signals equal to x gives x), so it
    stays on the same [0, 1] scale as its inputs. ``0 ** 0 == 1`` in torch, so a zero weight drops a signal.
    """
    keep = torch.ones_like(signals[0])
    for x, w in zip(signals, weights):
        keep = keep * (1.0 - x).clamp_min(0.0).pow(w)
    return 1.0 - keep


# --- normalised signals (each (B, T) float32 in [0, 1], zero at padding) ---------------------------------


def _jsd_hat(stats: _TokenStatsLike, mask: torch.Tensor) -> torch.Tensor:
    return minmax_per_response(stats.jsd, mask)


def _kl_hat(stats: _TokenStatsLike, mask: torch.Tensor) -> torch.Tensor:
    return minmax_per_response(stats.kl, mask)


def _entropy_hat(stats: _TokenStatsLike, mask: torch.Tensor) -> torch.Tensor:
    return minmax_per_response(stats.entropy, mask)


def _gap(stats: _TokenStatsLike) -> torch.Tensor:
    # Same as ``stats.gap`` but subtracted in float32: with bf16 statistics the bf16 difference of two
    # nearby entropies loses most of its digits.
    return stats.entropy_perturbed.float() - stats.entropy.float()


def _abs_gap_hat(stats: _TokenStatsLike, mask: torch.Tensor) -> torch.Tensor:
    return minmax_per_response(_gap(stats).abs(), mask)


def _positive_gap_hat(stats: _TokenStatsLike, mask: torch.Tensor) -> torch.Tensor:
    # Only tokens that become *less* certain without the image count as visually anchored.
    return minmax_per_response(_gap(stats).clamp_min(0.0), mask)


# --- the scores ------------------------------------------------------------------------------------------


def vepo(stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None) -> torch.Tensor:
    """VEPO default: ``(1 - (1-ĵ)^α (1-ĝ)^(1-α)) · ĥ`` with ĝ from ``|ΔH|``."""
    visual = _noisy_or([_jsd_hat(stats, mask), _abs_gap_hat(stats, mask)], [alpha, 1.0 - alpha])
    return visual * _entropy_hat(stats, mask)


def vepo_positive_gap(
    stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None
) -> torch.Tensor:
    """VEPO with the gap signal ``max(ΔH, 0)`` instead of ``|ΔH|``."""
    visual = _noisy_or([_jsd_hat(stats, mask), _positive_gap_hat(stats, mask)], [alpha, 1.0 - alpha])
    return visual * _entropy_hat(stats, mask)


def vepo_no_entropy(
    stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None
) -> torch.Tensor:
    """The visual noisy-OR bracket alone, without the multiplicative entropy factor ĥ."""
    return _noisy_or([_jsd_hat(stats, mask), _abs_gap_hat(stats, mask)], [alpha, 1.0 - alpha])


def vepo_linear(stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None) -> torch.Tensor:
    """Linear instead of geometric mixing: ``(α ĵ + (1-α) ĝ) · ĥ``."""
    visual = alpha * _jsd_hat(stats, mask) + (1.0 - alpha) * _abs_gap_hat(stats, mask)
    return visual * _entropy_hat(stats, mask)


def vepo_kl(stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None) -> torch.Tensor:
    """VEPO with KL(P‖Q) (real-image vs perturbed-image distribution) in place of the JSD."""
    visual = _noisy_or([_kl_hat(stats, mask), _abs_gap_hat(stats, mask)], [alpha, 1.0 - alpha])
    return visual * _entropy_hat(stats, mask)


def noisy_or_all(stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None) -> torch.Tensor:
    """Noisy-OR of all three signals, ``1 - ((1-ĵ)(1-ĝ)(1-ĥ))^{1/3}``.

    Exponent choice: equal weights 1/3 (``alpha`` is unused). Weights summing to one keep the score an
    idempotent soft OR on [0, 1], like the VEPO bracket, so entropy enters as a third "OR" vote rather than
    as a multiplicative gate; there is no published weighting to follow, and an unweighted rule is the
    neutral ablation.
    """
    third = 1.0 / 3.0
    return _noisy_or(
        [_jsd_hat(stats, mask), _abs_gap_hat(stats, mask), _entropy_hat(stats, mask)], [third] * 3
    )


def noisy_or_all_positive_gap(
    stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None
) -> torch.Tensor:
    """:func:`noisy_or_all` with the gap signal ``max(ΔH, 0)`` instead of ``|ΔH|`` (``alpha`` unused)."""
    third = 1.0 / 3.0
    signals = [_jsd_hat(stats, mask), _positive_gap_hat(stats, mask), _entropy_hat(stats, mask)]
    return _noisy_or(signals, [third] * 3)


def product(stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None) -> torch.Tensor:
    """Plain product ``ĵ · ĝ · ĥ`` (``alpha`` unused)."""
    return _jsd_hat(stats, mask) * _abs_gap_hat(stats, mask) * _entropy_hat(stats, mask)


def jsd(stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None) -> torch.Tensor:
    """Raw JSD(P, Q) in nats (not normalised; see the module docstring)."""
    return _raw(stats.jsd, mask)


def entropy(stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator=None) -> torch.Tensor:
    """Raw entropy H(P) in nats: the entropy-only baseline of the 80/20 paper."""
    return _raw(stats.entropy, mask)


def random(
    stats: _TokenStatsLike, mask: torch.Tensor, *, alpha: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform [0, 1) noise at valid tokens: the random-selection control.

    Drawn on the generator's device (CPU when ``generator`` is None) and moved to ``mask``'s device, so one
    seed gives the same scores on CPU and GPU.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(mask.shape, generator=generator, device=device, dtype=torch.float32).to(mask.device)
    return _raw(noise, mask)


def _raw(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return torch.where(mask.bool(), x, torch.zeros_like(x))


ScoreFn = Callable[..., torch.Tensor]

SCORES: dict[str, ScoreFn] = {
    "vepo": vepo,
    "vepo_positive_gap": vepo_positive_gap,
    "vepo_no_entropy": vepo_no_entropy,
    "vepo_linear": vepo_linear,
    "vepo_kl": vepo_kl,
    "noisy_or_all": noisy_or_all,
    "noisy_or_all_positive_gap": noisy_or_all_positive_gap,
    "product": product,
    "jsd": jsd,
    "entropy": entropy,
    "random": random,
}


def token_scores(
    stats: _TokenStatsLike,
    mask: torch.Tensor,
    method: str = "vepo",
    alpha: float = 0.7,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Score every valid response token with the named rule.

    Args:
        stats: per-token statistics (:class:`visent.core.stats.TokenStats`), each field ``(B, T)``.
        mask: ``(B, T)`` 1 for valid response tokens, 0 for padding.
        method: a key of :data:`SCORES`.
        alpha: weight of the JSD (vs. the entropy gap) in the VEPO-family mixes, in [0, 1].
        generator: RNG for ``method="random"`` (ignored otherwise).

    Returns:
        ``(B, T)`` float32 scores, 0 at padding.
    """
    if method not in SCORES:
        raise ValueError(f"unknown token score method {method!r}; valid methods: {', '.join(sorted(SCORES))}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (weight of the JSD in the VEPO mix), got {alpha}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    needed = ("entropy", "entropy_perturbed", "jsd", "kl") if method != "random" else ()
    for field in needed:
        value = getattr(stats, field)
        if value.shape != mask.shape:
            raise ValueError(
                f"stats.{field} has shape {tuple(value.shape)} but mask has shape {tuple(mask.shape)}"
            )
    if needed:
        stats = _finite_stats(stats, mask)
    return SCORES[method](stats, mask, alpha=alpha, generator=generator)


class _Stats:
    """Plain holder of the four statistics (the repaired copy :func:`_finite_stats` hands on)."""

    def __init__(self, entropy, entropy_perturbed, jsd, kl) -> None:
        self.entropy, self.entropy_perturbed, self.jsd, self.kl = entropy, entropy_perturbed, jsd, kl


def _finite_stats(stats: _TokenStatsLike, mask: torch.Tensor) -> _TokenStatsLike:
    """Statistics with every non-finite value at a valid token read as 0, counted (no host sync).

    One NaN would otherwise make its response's min and max NaN and so every normalised score of that
    response NaN. Statistics from :func:`visent.core.stats.token_stats` are already finite; this guards
    statistics built elsewhere.
    """
    valid = mask.bool()
    fields = [getattr(stats, f).float() for f in ("entropy", "entropy_perturbed", "jsd", "kl")]
    bad = torch.zeros_like(valid)
    for x in fields:
        bad |= valid & ~torch.isfinite(x)
    guards.count("guard/nonfinite_stats", bad)
    return _Stats(*(torch.where(torch.isfinite(x), x, torch.zeros_like(x)) for x in fields))
