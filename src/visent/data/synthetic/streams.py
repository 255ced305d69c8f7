"""The synthetic tasks' three disjoint streams: training (mixed), held-out (evaluation) and check.

Each stream is ``make_examples`` under its own seed, so no example of one ever appears in another:

- training: ``mixed_examples(tasks, n, seed, start)``, the warm-start's fresh batches, cycling over tasks;
- held-out: ``heldout_examples`` (seed ``+ HELDOUT_SEED_OFFSET``), what RL and ``visent eval`` measure on;
- check: ``check_examples`` (seed ``+ CHECK_SEED_OFFSET``), the warm-start band rule's checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from visent.data.schema import Example
from visent.data.synthetic.tasks import make_examples

__all__ = ["CHECK_SEED_OFFSET", "HELDOUT_SEED_OFFSET", "check_examples", "heldout_examples", "mixed_examples"]

# Held-out examples come from a stream no training step ever draws from.
HELDOUT_SEED_OFFSET = 1_000_003
# The band rule's checks use a third stream, disjoint from the held-out set RL is evaluated on: stopping at
# the first check that lands in the band selects a check that read high, and had the evaluation set been
# that check set, the "before RL" accuracy would carry that luck and every "RL − warm-start" difference a
# regression to the mean (measured: a warm-start stopped at 43.8% on its check set).
CHECK_SEED_OFFSET = 2_000_003


def mixed_examples(tasks: Sequence[str], n: int, seed: int, start: int) -> list[Example]:
    """``n`` examples cycling over ``tasks``; index ``start + i`` of the mixed stream is task ``i % len``."""
    out = []
    for j in range(start, start + n):
        task = tasks[j % len(tasks)]
        out.append(make_examples(task, 1, seed, start=j // len(tasks))[0])
    return out


def heldout_examples(tasks: Sequence[str], n_per_task: int, seed: int = 0) -> list[Example]:
    """Examples from the held-out stream of each task (never used for warm-start training)."""
    return [ex for task in tasks for ex in make_examples(task, n_per_task, seed + HELDOUT_SEED_OFFSET)]


def check_examples(tasks: Sequence[str], n_per_task: int, seed: int = 0) -> list[Example]:
    """Examples of the band rule's check stream (never trained on; disjoint from ``heldout_examples``)."""
    return [ex for task in tasks for ex in make_examples(task, n_per_task, seed + CHECK_SEED_OFFSET)]
