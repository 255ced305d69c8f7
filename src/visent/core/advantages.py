"""Group-relative advantages (METHOD §1): one scalar per response, broadcast to its tokens by the loss.

Rewards arrive flat, ``(N,)`` with ``N = G · group_size``, the ``group_size`` responses of each prompt
contiguous (TRL's layout: ``rewards.view(-1, num_generations)``).

    A_i = (r_i - mean_g r) / (std r + eps)

Standard deviation: *unbiased* (Bessel's correction, divide by ``n - 1``), matching TRL 1.16's
``GRPOTrainer._generate_and_score_completions``, which uses ``trl.trainer.utils.nanstd`` (unbiased), so our
advantages equal TRL's for the same rewards up to ``eps``. A group of one response has no spread; its std is
taken as 0 (as TRL does for ``num_generations == 1``), giving advantage 0.

``eps`` defaults to 1e-6 as written in METHOD §1; TRL hard-codes 1e-4. The difference matters only for groups
whose std is tiny but non-zero.

Scales (the same names and meaning as TRL's ``scale_rewards``): ``"group"`` divides by each group's std,
``"batch"`` by the std of all N rewards (the mean stays per group), ``"none"`` only centres (Dr.GRPO).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from visent.core import guards

__all__ = ["REWARD_SCALES", "group_advantages", "zero_variance_groups"]


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Validate and reshape ``(N,)`` rewards to ``(N // group_size, group_size)`` float."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int (responses per prompt), got {group_size!r}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of {group_size}; "
            "each prompt must contribute exactly group_size contiguous responses"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.view(-1, group_size)


def _unbiased_std(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Unbiased std over ``dim`` (all elements when None); 0 where there is a single element."""
    n = x.numel() if dim is None else x.shape[dim]
    if n < 2:
        return torch.zeros_like(x.sum(dim=dim, keepdim=dim is not None))
    if dim is None:
        return x.std(unbiased=True)
    return x.std(dim=dim, keepdim=True, unbiased=True)


def _scale_group(grouped: torch.Tensor) -> torch.Tensor:
    return _unbiased_std(grouped, dim=1)  # (G, 1)


def _scale_batch(grouped: torch.Tensor) -> torch.Tensor:
    return _unbiased_std(grouped.reshape(-1), dim=None)  # 0-d, broadcasts


REWARD_SCALES: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "group": _scale_group,
    "batch": _scale_batch,
    "none": None,
}


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-6
) -> torch.Tensor:
    """Group-centred (and optionally scaled) advantages.

    Args:
        rewards: ``(N,)`` scalar rewards, groups of ``group_size`` contiguous.
        group_size: responses per prompt (K).
        scale: ``"group"``, ``"batch"`` or ``"none"`` (see module docstring).
        eps: added to the std before dividing.

    Returns:
        ``(N,)`` advantages, float dtype of ``rewards`` (float32 for integer rewards). A group whose rewards
        are all equal gets exactly 0 for every scale; so does a group holding a NaN or inf reward
        (counted as ``guard/nonfinite_rewards``), which counts as a group of zeros for ``scale="batch"``.
    """
    if scale not in REWARD_SCALES:
        raise ValueError(f"unknown reward scale {scale!r}; valid: {', '.join(REWARD_SCALES)}")
    grouped = _grouped(rewards, group_size)  # (G, K)
    # A NaN/inf reward (a broken reward function) would make its group's mean, and with scale="batch"
    # every advantage, NaN. Its group carries no trustworthy signal: it becomes a constant group of
    # zeros (advantage exactly 0), and each such reward is counted.
    finite = torch.isfinite(grouped)
    guards.count("guard/nonfinite_rewards", ~finite)
    grouped = torch.where(finite.all(dim=1, keepdim=True), grouped, torch.zeros_like(grouped))
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    # The mean of equal rewards can round to a neighbouring float (e.g. three 0.3s), and dividing that
    # residue by eps would turn it into a sizeable spurious advantage: pin such groups to exactly 0.
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)
    centred = torch.where(constant, torch.zeros_like(centred), centred)
    scale_fn = REWARD_SCALES[scale]
    if scale_fn is not None:
        centred = centred / (scale_fn(grouped) + eps)
    return centred.reshape(-1)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(N,)`` bool: True for every response whose group's rewards are all exactly equal.

    These groups give zero advantage, so GRPO learns nothing from them (METHOD §4's motivation); the trainer
    logs their fraction.
    """
    grouped = _grouped(rewards, group_size)
    flat = grouped.amax(dim=1) == grouped.amin(dim=1)  # (G,)
    return flat.repeat_interleave(group_size)
