"""Turn per-token scores into a 0/1 mask of the tokens that carry the policy gradient (METHOD §3).

Two granularities:

* ``"response"`` (VEPO and its entropy-only baseline): each response ``i`` keeps exactly
  ``k_i = ceil(ratio · n_i)`` of its ``n_i`` valid tokens (at least 1; 0 for an all-padding row).
* ``"batch"`` (the 80/20 paper's rule): one threshold for the whole batch, the linear-interpolation
  quantile of the scores of all valid tokens (as ``torch.quantile`` / TRL's ``get_high_entropy_mask``).
  ``top`` keeps scores ``>= quantile(1 - ratio)``, ``bottom`` keeps scores ``<= quantile(ratio)``; every
  token tied with the threshold is kept, so the count is about ``ratio · N`` and not fixed. ``random``
  keeps exactly ``ceil(ratio · N)`` valid tokens of the batch, drawn uniformly.

Modes: ``top`` (highest scores), ``bottom`` (lowest; ablation), ``random`` (uniform; control, scores
ignored). Plain GRPO, all tokens, is ``ratio=1.0`` (or no token mask at all).

Tie-breaking (per-response ``top``/``bottom``) is deterministic: among equal scores the token at the earlier
position wins. ``ceil`` is taken on the exact rational value of ``ratio`` (to 6 decimal places), so
``ratio=0.1, n=30`` keeps 3 tokens, not ``ceil(3.0000000000000004) = 4``.

Nothing here synchronises with the host (no ``.item()``, no boolean indexing), so it stays cheap on GPU.
A non-finite score at a valid token ranks last (counted as ``guard/nonfinite_scores``).
"""

from __future__ import annotations

from fractions import Fraction

import torch

from visent.core import guards

__all__ = ["GRANULARITIES", "MODES", "keep_count", "select_tokens", "selection_weights"]

MODES = ("top", "bottom", "random")


def keep_count(n_valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """``ceil(ratio · n)``, at least 1 where ``n > 0``, computed in exact integer arithmetic.

    Args:
        n_valid: integer tensor of valid-token counts (any shape).
        ratio: fraction in (0, 1].

    Returns:
        int64 tensor like ``n_valid``.
    """
    frac = Fraction(ratio).limit_denominator(1_000_000)
    num, den = frac.numerator, frac.denominator
    n = n_valid.long()
    k = (n * num + den - 1) // den
    return torch.where(n > 0, k.clamp_min(1), torch.zeros_like(k))


def _order_valid_first(key: torch.Tensor, valid: torch.Tensor, descending: bool) -> torch.Tensor:
    """Indices that sort each row of ``key`` (ties by position), with every padding slot after every valid one.

    Two stable sorts: by key first, then by validity, so the result is lexicographic in (valid, key, position)
    whatever values padding holds (even +/-inf or NaN).
    """
    by_key = torch.sort(key, dim=-1, descending=descending, stable=True).indices
    valid_in_key_order = valid.gather(-1, by_key).to(torch.int8)
    by_valid = torch.sort(valid_in_key_order, dim=-1, descending=True, stable=True).indices
    return by_key.gather(-1, by_valid)


def _keep_first_k(order: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mask with ones at ``order[..., :k]`` per row. ``order``: (R, L) indices, ``k``: (R, 1)."""
    ranks = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    keep_sorted = (ranks < k).to(torch.float32)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _random_key(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _select_per_response(
    scores: torch.Tensor, valid: torch.Tensor, ratio: float, mode: str, generator: torch.Generator | None
) -> torch.Tensor:
    k = keep_count(valid.sum(dim=1, keepdim=True), ratio)  # (B, 1)
    if mode == "random":
        key = _random_key(scores.shape, scores.device, generator)
        order = _order_valid_first(key, valid, descending=True)
    else:
        order = _order_valid_first(scores, valid, descending=(mode == "top"))
    return _keep_first_k(order, k)


def _batch_quantile(scores: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation ``q``-quantile of ``scores[valid]`` as a float64 0-d tensor (no host sync).

    Matches ``torch.quantile(scores[valid].double(), q)``; computed by sorting with padding pushed to the end,
    which also avoids ``torch.quantile``'s 16M-element limit. Interpolating in float64 keeps the threshold
    between the two float32 neighbours it interpolates, so ``>=`` comparisons are exact at integer positions.
    """
    flat = scores.reshape(-1)
    flat_valid = valid.reshape(-1)
    order = _order_valid_first(flat, flat_valid, descending=False)
    ordered = flat.gather(0, order).double()
    n = flat_valid.sum()
    pos = q * (n.double() - 1.0).clamp_min(0.0)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    # gather, not ordered[lo]: indexing with a 0-d tensor converts it to a Python int (a host sync)
    v_lo, v_hi = ordered.gather(0, lo.reshape(1))[0], ordered.gather(0, hi.reshape(1))[0]
    return v_lo + (pos - lo.double()) * (v_hi - v_lo)


def _select_per_batch(
    scores: torch.Tensor, valid: torch.Tensor, ratio: float, mode: str, generator: torch.Generator | None
) -> torch.Tensor:
    if mode == "random":
        key = _random_key(scores.shape, scores.device, generator).reshape(1, -1)
        flat_valid = valid.reshape(1, -1)
        order = _order_valid_first(key, flat_valid, descending=True)
        k = keep_count(flat_valid.sum(dim=1, keepdim=True), ratio)
        return _keep_first_k(order, k).reshape(scores.shape)
    s = scores.double()
    if mode == "top":
        keep = s >= _batch_quantile(scores, valid, 1.0 - ratio)
    else:
        keep = s <= _batch_quantile(scores, valid, ratio)
    # Padding is dropped here; an all-padding batch indexes a padding slot above but keeps nothing.
    return (keep & valid).to(torch.float32)


def _rank_nonfinite_last(scores: torch.Tensor, valid: torch.Tensor, mode: str) -> torch.Tensor:
    """Scores with NaN/±inf replaced by the value that ranks last for ``mode``, counted (no host sync).

    Unrepaired, a NaN sorts first in a descending sort (so it would always be selected) and makes the
    batch quantile NaN (so nothing at all would be selected).
    """
    if not scores.is_floating_point():
        return scores
    finite = torch.isfinite(scores)
    guards.count("guard/nonfinite_scores", valid & ~finite)
    info = torch.finfo(scores.dtype)
    last = torch.full_like(scores, info.min if mode == "top" else info.max)
    return torch.where(finite, scores, last)


GRANULARITIES = {
    "response": _select_per_response,
    "batch": _select_per_batch,
}


def select_tokens(
    scores: torch.Tensor,
    mask: torch.Tensor,
    ratio: float = 0.2,
    granularity: str = "response",
    mode: str = "top",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Keep a fraction ``ratio`` of the valid tokens by score.

    Args:
        scores: ``(B, T)`` per-token scores (any float dtype; values at padding are ignored).
        mask: ``(B, T)`` 1 for valid response tokens, 0 for padding.
        ratio: fraction kept, in (0, 1].
        granularity: ``"response"`` (k per response) or ``"batch"`` (one quantile threshold).
        mode: ``"top"``, ``"bottom"`` or ``"random"``.
        generator: RNG for ``mode="random"`` (ignored otherwise); random draws happen on its device.

    Returns:
        ``(B, T)`` float32 0/1 mask on ``scores``' device; never 1 at padding.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be a number in (0, 1] (fraction of valid tokens kept), got {ratio!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}")
    if mode not in MODES:
        raise ValueError(f"unknown selection mode {mode!r}; valid: {', '.join(MODES)}")
    if scores.dim() != 2 or scores.shape != mask.shape:
        raise ValueError(
            f"scores and mask must both be (B, T); got scores {tuple(scores.shape)}, mask {tuple(mask.shape)}"
        )
    valid = mask.bool()
    if scores.numel() == 0:
        return torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)
    if mode != "random":
        scores = _rank_nonfinite_last(scores, valid, mode)
    return GRANULARITIES[granularity](scores, valid, float(ratio), mode, generator)


def selection_weights(selected: torch.Tensor, mask: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """VEPO's ``weight`` mode: every valid token trains, the selected ones ``1 + λ`` times as much.

    ``w_t = 1 + λ·m_t`` at valid tokens, 0 at padding. With ``policy_loss(..., token_mask=w,
    aggregation="token_mean")`` the loss is ``Σ w·ℓ / (number of valid tokens)`` — the denominator is the
    valid count, not ``Σ w`` — as in ``Leonnnnnn929/VEPO`` @ 42473082dd59815ea636e7bb627f63f2772ca891,
    ``verl/trainer/core_algos.py:342-347`` (``jsd_mask_mode == "weight"``).

    Args:
        selected: ``(B, T)`` 0/1 selection from :func:`select_tokens`.
        mask: ``(B, T)`` 1 for valid response tokens.
        lam: λ ≥ 0 (the authors' default 1.0).

    Returns:
        ``(B, T)`` float32 weights.
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0.0:
        raise ValueError(f"lam (extra weight of selected tokens) must be a number >= 0, got {lam!r}")
    if selected.shape != mask.shape:
        raise ValueError(f"selected {tuple(selected.shape)} and mask {tuple(mask.shape)} differ in shape")
    valid = mask.bool()
    w = 1.0 + float(lam) * selected.float()
    return torch.where(valid, w, torch.zeros_like(w))
