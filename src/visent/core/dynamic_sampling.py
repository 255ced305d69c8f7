"""DAPO's dynamic sampling: keep only prompt groups whose responses disagree, refill the batch with more.

A group whose accuracy is the same for every response has zero advantage under GRPO and teaches nothing;
DAPO drops such groups and samples more prompts until the batch is full. Two rules are in use:

* ``"easyr1"`` — keep a group iff ``low < mean(metric) < high`` (``low = 0.01``, ``high = 0.99``): EasyR1's
  ``online_filtering`` (``hiyouga/EasyR1`` @ b44b311b669bf1fd1aa2fc36f2251482ba33cb16,
  ``verl/trainer/ray_trainer.py:515-535``), used by VPPO and PAPO with ``filter_key = accuracy``.
* ``"verl"`` — keep a group iff its population std of the metric is > 0, or it has one response:
  verl's ``filter_groups`` (``verl-project/verl-recipe`` @ 48ea0a79, ``dapo/dapo_ray_trainer.py:235-294``).

For 0/1 accuracy the two agree except for groups whose mean is within 0.01 of 0 or 1 (more than 100
responses); for graded metrics ``"easyr1"`` also drops groups that are nearly all right or all wrong.

:func:`take_groups` is the refill bookkeeping: which of a new chunk's groups to append so that the batch
holds at most ``needed`` groups (EasyR1 and verl concatenate chunks, then truncate to the batch size).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["FILTER_RULES", "informative_groups", "take_groups"]


def _grouped(metric: torch.Tensor, group_size: int) -> torch.Tensor:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int (responses per prompt); got {group_size!r}")
    if metric.dim() != 1 or metric.numel() % group_size:
        raise ValueError(
            f"metric must be (N,) with N a multiple of group_size={group_size}; got shape {tuple(metric.shape)}"
        )
    return metric.double().view(-1, group_size)


def _easyr1(grouped: torch.Tensor, low: float, high: float) -> torch.Tensor:
    mean = grouped.mean(dim=1)
    return (mean > low) & (mean < high)


def _verl(grouped: torch.Tensor, low: float, high: float) -> torch.Tensor:
    if grouped.shape[1] == 1:
        return torch.ones(grouped.shape[0], dtype=torch.bool, device=grouped.device)
    return grouped.std(dim=1, unbiased=False) > 0


FILTER_RULES: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "easyr1": _easyr1,
    "verl": _verl,
}


def informative_groups(
    metric: torch.Tensor, group_size: int, rule: str = "easyr1", low: float = 0.01, high: float = 0.99
) -> torch.Tensor:
    """Which groups a dynamic-sampling rule keeps.

    Args:
        metric: ``(N,)`` per-response metric (accuracy), groups of ``group_size`` contiguous.
        group_size: responses per prompt.
        rule: a key of :data:`FILTER_RULES`.
        low, high: the ``"easyr1"`` bounds (ignored by ``"verl"``).

    Returns:
        ``(N // group_size,)`` bool. A group with a non-finite metric is dropped.
    """
    if rule not in FILTER_RULES:
        raise ValueError(f"unknown dynamic sampling rule {rule!r}; valid: {', '.join(FILTER_RULES)}")
    grouped = _grouped(metric, group_size)
    finite = torch.isfinite(grouped).all(dim=1)
    safe = torch.where(finite[:, None], grouped, torch.zeros_like(grouped))
    return FILTER_RULES[rule](safe, low, high) & finite


def take_groups(keep: torch.Tensor, have: int, needed: int) -> torch.Tensor:
    """Indices of the kept groups of a new chunk to append, in order, so the batch holds at most ``needed``.

    Args:
        keep: ``(G,)`` bool from :func:`informative_groups` for the new chunk.
        have: groups already in the batch.
        needed: groups the batch must hold.

    Returns:
        ``(n,)`` int64 group indices, ``n = min(keep.sum(), max(needed − have, 0))``.
    """
    if needed < 1 or have < 0:
        raise ValueError(f"need needed >= 1 and have >= 0; got needed={needed}, have={have}")
    kept = keep.nonzero().squeeze(1)
    return kept[: max(needed - have, 0)]
