"""Verifiable rewards with TRL's signature ``reward(completions, **columns) -> list[float]``.

Use by name: ``get_reward("vepo_math")`` or ``REWARDS[name]``; each is a :class:`Reward` that also gives
per-row components via ``reward.results(completions, **columns)`` / ``reward.score_one(text, answer, **row)``.
Parse failures are counted in :data:`REWARD_STATS` (see ``visent.rewards.base``).
"""

from __future__ import annotations

from visent.rewards.base import REWARD_STATS, LabelError, Reward, RewardResult, RewardStats, completion_text
from visent.rewards.combine import weighted
from visent.rewards.detection import map50
from visent.rewards.registry import REWARDS, TASK_REWARDS, get_reward, reward_for_task

__all__ = [
    "REWARDS",
    "REWARD_STATS",
    "TASK_REWARDS",
    "LabelError",
    "Reward",
    "RewardResult",
    "RewardStats",
    "completion_text",
    "get_reward",
    "map50",
    "reward_for_task",
    "weighted",
]
