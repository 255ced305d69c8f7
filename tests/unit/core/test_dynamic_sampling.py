"""dynamic_sampling: DAPO group filters (EasyR1 and verl rules) — hand cases and parity with the authors' code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visent.core.dynamic_sampling import informative_groups, take_groups


def _easyr1_as_written(scores, n, low, high):
    """``hiyouga/EasyR1`` @ b44b311b669bf1fd1aa2fc36f2251482ba33cb16, ``verl/trainer/ray_trainer.py:518-530``:
    ``uid2mean = np.mean(scores)``; keep iff ``avg > filter_low and avg < filter_high``."""
    groups = [scores[i : i + n] for i in range(0, len(scores), n)]
    return [bool(np.mean(g) > low and np.mean(g) < high) for g in groups]


def _verl_as_written(scores, n):
    """``verl-project/verl-recipe`` @ 48ea0a79, ``dapo/dapo_ray_trainer.py:235-294``:
    keep iff ``np.std(vals) > 0 or len(vals) == 1``."""
    groups = [scores[i : i + n] for i in range(0, len(scores), n)]
    return [bool(np.std(g) > 0 or len(g) == 1) for g in groups]


def test_hand_computed():
    acc = torch.tensor([1.0, 1, 1, 0, 0, 0, 1, 0, 1])  # groups of 3: all right, all wrong, mixed
    assert informative_groups(acc, 3, "easyr1").tolist() == [False, False, True]
    assert informative_groups(acc, 3, "verl").tolist() == [False, False, True]
    assert informative_groups(torch.tensor([1.0, 0.0]), 1, "verl").tolist() == [True, True]
    assert informative_groups(torch.tensor([1.0, 0.0]), 1, "easyr1").tolist() == [False, False]


@pytest.mark.parametrize("n", [1, 5, 8])
def test_parity_with_easyr1_and_verl(n):
    g = torch.Generator().manual_seed(n)
    # graded metrics (0.9·acc + 0.1·format style) and 0/1 accuracy, 37 groups
    for metric in (torch.randint(0, 2, (37 * n,), generator=g).double(), torch.rand(37 * n, generator=g).double().round(decimals=1)):
        vals = metric.tolist()
        assert informative_groups(metric, n, "easyr1").tolist() == _easyr1_as_written(vals, n, 0.01, 0.99)
        assert informative_groups(metric, n, "verl").tolist() == _verl_as_written(vals, n)


def test_nonfinite_group_dropped_and_bad_input():
    assert informative_groups(torch.tensor([float("nan"), 1.0, 0.0, 1.0]), 2, "verl").tolist() == [False, True]
    with pytest.raises(ValueError, match="valid: easyr1, verl"):
        informative_groups(torch.zeros(4), 2, "dapo")
    with pytest.raises(ValueError, match="multiple of group_size"):
        informative_groups(torch.zeros(5), 2)


def test_take_groups_truncates_to_the_batch():
    keep = torch.tensor([True, False, True, True])
    assert take_groups(keep, have=0, needed=8).tolist() == [0, 2, 3]
    assert take_groups(keep, have=6, needed=8).tolist() == [0, 2]
    assert take_groups(keep, have=8, needed=8).tolist() == []
