"""group_advantages / zero_variance_groups: hand-computed, Python-statistics reference, and TRL parity."""

from __future__ import annotations

import statistics

import pytest
import torch

from visent.core.advantages import group_advantages, zero_variance_groups


def reference_advantages(rewards: list[float], k: int, scale: str, eps: float) -> list[float]:
    groups = [rewards[i : i + k] for i in range(0, len(rewards), k)]
    batch_std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0  # unbiased (n - 1)
    out = []
    for g in groups:
        mu = statistics.fmean(g)
        if len(set(g)) == 1:
            out += [0.0] * len(g)
            continue
        sd = {"group": statistics.stdev(g) if len(g) > 1 else 0.0, "batch": batch_std, "none": None}[scale]
        out += [(r - mu) / (sd + eps) if sd is not None else r - mu for r in g]
    return out


def test_hand_computed_group_scale():
    # group 1: [1, 0, 0, 1]: mean .5, unbiased var = 4·.25/3 = 1/3, std = .57735 -> ±.5/.57735 = ±.866025
    # group 2: [1, 1, 1, 1]: constant -> 0
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    a = group_advantages(r, group_size=4)
    expected = torch.tensor([0.866025, -0.866025, -0.866025, 0.866025, 0, 0, 0, 0])
    torch.testing.assert_close(a, expected, atol=2e-6, rtol=0)


def test_hand_computed_batch_and_none_scales():
    # r = [2, 0 | 3, 3]: group means 1, 3 -> centred [1, -1, 0, 0]
    # batch std (unbiased) of [2, 0, 3, 3]: mean 2, squares 0+4+1+1 = 6, /3 -> sqrt(2) = 1.414214
    r = torch.tensor([2.0, 0.0, 3.0, 3.0])
    torch.testing.assert_close(group_advantages(r, 2, scale="none"), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    torch.testing.assert_close(
        group_advantages(r, 2, scale="batch"),
        torch.tensor([0.707107, -0.707107, 0.0, 0.0]),
        atol=2e-6,
        rtol=0,
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_reference(scale, k):
    g = torch.Generator().manual_seed(k)
    r = torch.rand(7 * k, generator=g, dtype=torch.float64)
    r[:k] = 0.25  # one constant group
    r[k : 2 * k] = torch.randint(0, 2, (k,), generator=g).double()  # binary rewards
    got = group_advantages(r, k, scale=scale)
    assert got.dtype == torch.float64
    ref = torch.tensor(reference_advantages(r.tolist(), k, scale, 1e-6), dtype=torch.float64)
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=1e-9)


def test_equal_rewards_that_do_not_average_exactly_give_zero():
    # mean of seven float32 0.1s is 0.1 + 7.45e-9; dividing that residue by (0 + 1e-6) would give 0.0075
    r = torch.full((7,), 0.1)
    assert (group_advantages(r, 7) == 0).all()


def test_single_response_groups_and_integer_rewards():
    a = group_advantages(torch.tensor([1, 0, 1]), group_size=1)
    assert a.dtype == torch.float32 and (a == 0).all()


def test_matches_trl_1_16_formula():
    # TRL's GRPOTrainer: (r - group mean) / (nanstd(group) + 1e-4), nanstd unbiased.
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd
    g = torch.Generator().manual_seed(0)
    r = torch.rand(24, generator=g)
    grouped = r.view(-1, 6)
    trl = (grouped - grouped.mean(1, keepdim=True)) / (nanstd(grouped, dim=1).unsqueeze(1) + 1e-4)
    torch.testing.assert_close(group_advantages(r, 6, eps=1e-4), trl.reshape(-1))
    trl_batch = (grouped - grouped.mean(1, keepdim=True)) / (nanstd(r) + 1e-4)
    torch.testing.assert_close(group_advantages(r, 6, scale="batch", eps=1e-4), trl_batch.reshape(-1))


def test_zero_variance_groups():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5])
    assert zero_variance_groups(r, 3).tolist() == [True] * 3 + [False] * 3 + [True] * 3
    assert zero_variance_groups(torch.tensor([0.3, 0.7]), 1).tolist() == [True, True]


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size must be a positive int"):
        group_advantages(torch.zeros(6), 0)
    with pytest.raises(ValueError, match=r"1-D \(N,\)"):
        group_advantages(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="valid: group, batch, none"):
        group_advantages(torch.zeros(6), 3, scale="global")
    with pytest.raises(ValueError, match="do not split"):
        zero_variance_groups(torch.zeros(5), 2)
