"""DAPO dynamic sampling in the trainer: drop groups whose responses all score alike, refill from the dataset.

``fill_batch`` is the loop, written against four callables so that it can be tested without a model:

* ``generate(rows) -> (batch, metric)``: sample and score one chunk (TRL's generation path) and give the
  per-response filter metric ``(N,)``;
* ``select(batch, idx)``: the batch restricted to the responses ``idx``;
* ``concat(batches)``: the batches' responses in order, as one batch;
* ``draw(n) -> rows``: ``n`` fresh dataset rows (prompts repeated ``group_size`` times, TRL's layout).

Like EasyR1's ``online_filtering`` (``hiyouga/EasyR1`` @ b44b311, ``verl/trainer/ray_trainer.py:466-559``) it
keeps the informative groups of each chunk (:func:`visent.core.dynamic_sampling.informative_groups`) until the
batch holds as many groups as one chunk, truncating the last; after ``max_tries`` chunks it either stops with
an error saying how many groups it found (``on_exhaust="error"``, EasyR1's and verl's behaviour) or tops the
batch up with the last chunk's uninformative groups (``"top_up"``, a visent option: those groups' rewards are
all alike, so their group-scaled advantages are zero and they add no policy gradient; a model that has solved
its data then keeps training, as GRPO would, instead of stopping the run). Old log-probs are per response,
so filtering leaves them valid; group-scaled advantages likewise; batch-scaled ones are recomputed by the
caller after filtering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from visent.core.dynamic_sampling import informative_groups, take_groups
from visent.trainer.baseline_settings import ON_EXHAUST

__all__ = ["DynamicSamplingError", "FillStats", "fill_batch"]


class DynamicSamplingError(RuntimeError):
    """The data could not fill a batch with informative groups within the allowed tries."""


@dataclass
class FillStats:
    """What one filled batch cost: groups kept and dropped over all chunks, and chunks generated."""

    kept: int = 0
    dropped: int = 0
    tries: int = 0
    topped_up: int = 0


def fill_batch(
    rows: Sequence[Any],
    group_size: int,
    generate: Callable[[Sequence[Any]], tuple[Any, torch.Tensor]],
    select: Callable[[Any, torch.Tensor], Any],
    concat: Callable[[list[Any]], Any],
    draw: Callable[[int], Sequence[Any]],
    rule: str = "easyr1",
    bounds: tuple[float, float] = (0.01, 0.99),
    max_tries: int = 20,
    on_exhaust: str = "error",
) -> tuple[Any, FillStats]:
    """A batch of ``len(rows) // group_size`` informative groups, and its :class:`FillStats`.

    Raises:
        DynamicSamplingError: after ``max_tries`` chunks without enough informative groups, unless
            ``on_exhaust="top_up"``.
    """
    if on_exhaust not in ON_EXHAUST:
        raise ValueError(f"on_exhaust={on_exhaust!r}; valid: {', '.join(ON_EXHAUST)}")
    if len(rows) % group_size:
        raise ValueError(f"{len(rows)} rows do not split into groups of {group_size}")
    needed = len(rows) // group_size
    stats = FillStats()
    parts: list[Any] = []
    chunk = list(rows)
    while True:
        stats.tries += 1
        batch, metric = generate(chunk)
        keep = informative_groups(metric.detach().cpu(), group_size, rule, *bounds)
        take = take_groups(keep, stats.kept, needed)
        stats.dropped += int((~keep).sum())
        if take.numel():
            idx = (take[:, None] * group_size + torch.arange(group_size)).reshape(-1)
            parts.append(select(batch, idx))
            stats.kept += int(take.numel())
        if stats.kept >= needed:
            return concat(parts), stats
        if stats.tries >= max_tries and on_exhaust == "top_up":
            # Every informative group of this chunk was taken (the batch is not full), so its dropped groups
            # number at least the groups still missing.
            fill = (~keep).nonzero().reshape(-1)[: needed - stats.kept]
            idx = (fill[:, None] * group_size + torch.arange(group_size)).reshape(-1)
            parts.append(select(batch, idx))
            stats.topped_up = int(fill.numel())
            return concat(parts), stats
        if stats.tries >= max_tries:
            raise DynamicSamplingError(
                f"dynamic sampling found {stats.kept} of {needed} groups whose responses disagree in "
                f"{stats.tries} generation rounds ({stats.dropped} groups dropped): the data is too easy or too "
                "hard for the model; raise dynamic_sampling_max_tries, use more varied data, or dynamic_sampling: none"
            )
        chunk = list(draw(len(rows) // group_size))


def _metric(trainer: Any, rewards_per_func: torch.Tensor) -> torch.Tensor:
    """``(N,)`` filter metric: the named reward function's score, or the weighted total (NaN if unscorable)."""
    args = trainer.args
    if args.dynamic_sampling_metric is not None:
        return rewards_per_func[:, list(args.reward_funcs).index(args.dynamic_sampling_metric)]
    weights = trainer.reward_weights.to(rewards_per_func.device)
    total = (rewards_per_func * weights[None, :]).nansum(dim=1)
    return torch.where(torch.isnan(rewards_per_func).all(dim=1), torch.full_like(total, float("nan")), total)


def _rescale_batch_advantages(batch: dict[str, Any], group_size: int) -> None:
    """TRL's ``scale_rewards="batch"`` advantages recomputed over the kept groups (TRL's formula, eps 1e-4)."""
    rewards = batch.pop(REWARD_KEY)
    grouped = rewards.view(-1, group_size)
    centred = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).reshape(-1)
    finite = rewards[~torch.isnan(rewards)]
    std = finite.std() if finite.numel() > 1 else torch.zeros((), device=rewards.device)
    batch["advantages"] = torch.nan_to_num(centred / (std + 1e-4), nan=0.0).to(batch["advantages"].dtype)


#: Per-row total reward carried through filtering when advantages must be recomputed afterwards.
REWARD_KEY = "visent_dynamic_sampling_reward"


def dynamic_batch(trainer: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """One generation batch of informative groups for ``trainer`` (a ``VisentGRPOTrainer``), logging
    ``dynamic_sampling/kept_groups``, ``/dropped_groups``, ``/tries`` and ``/topped_up_groups``."""
    from visent.trainer._trl_seam import concat_generation_batches, select_generation_rows

    args = trainer.args
    K = trainer.num_generations
    rescale = trainer.scale_rewards == "batch"
    step = int(trainer.state.global_step)
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)

    def generate(rows):
        batch, rewards_per_func, _ = trainer.generate_chunk(list(rows))
        metric = _metric(trainer, rewards_per_func)
        if rescale:
            weights = trainer.reward_weights.to(rewards_per_func.device)
            batch[REWARD_KEY] = (rewards_per_func * weights[None, :]).nansum(dim=1)
        return batch, metric

    def draw(groups: int):
        picks = torch.randint(len(trainer.train_dataset), (groups,), generator=g).tolist()
        return [trainer.train_dataset[i] for i in picks for _ in range(K)]

    batch, stats = fill_batch(
        inputs, K, generate, select_generation_rows, concat_generation_batches, draw,
        rule=args.dynamic_sampling, bounds=tuple(args.dynamic_sampling_bounds), max_tries=args.dynamic_sampling_max_tries,
        on_exhaust=args.dynamic_sampling_on_exhaust,
    )  # fmt: skip
    if rescale:
        _rescale_batch_advantages(batch, K)
    trainer.record_metric("dynamic_sampling/kept_groups", stats.kept)
    trainer.record_metric("dynamic_sampling/dropped_groups", stats.dropped)
    trainer.record_metric("dynamic_sampling/tries", stats.tries)
    trainer.record_metric("dynamic_sampling/topped_up_groups", stats.topped_up)
    return batch
