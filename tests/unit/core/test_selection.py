"""select_tokens: hand-computed cases, a float64 reference on odd shapes, and the random/edge-case contract."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visent.core.selection import keep_count, select_tokens

# --- slow reference: Python lists, straight from METHOD §3 ---------------------------------------------


def _ref_k(ratio: float, n: int) -> int:
    # round() strips float noise such as 0.1 * 30 = 3.0000000000000004 before the ceiling
    return 0 if n == 0 else max(1, math.ceil(round(ratio * n, 9)))


def reference_select(scores, mask, ratio, granularity, mode) -> torch.Tensor:
    B, T = mask.shape
    out = torch.zeros(B, T)
    cells = [(b, t) for b in range(B) for t in range(T) if mask[b, t] > 0]
    value = {c: float(scores[c]) for c in cells}  # float32 -> exact float64
    if granularity == "response":
        for b in range(B):
            row = [c for c in cells if c[0] == b]
            # ties: earlier position first
            sign = -1.0 if mode == "top" else 1.0
            row.sort(key=lambda c: (sign * value[c], c[1]))
            for c in row[: _ref_k(ratio, len(row))]:
                out[c] = 1.0
        return out
    vals = sorted(value.values())
    if not vals:
        return out
    q = 1.0 - ratio if mode == "top" else ratio
    pos = q * (len(vals) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    thr = vals[lo] + (pos - lo) * (vals[hi] - vals[lo])
    for c in cells:
        if (value[c] >= thr) if mode == "top" else (value[c] <= thr):
            out[c] = 1.0
    return out


# --- hand-computed -------------------------------------------------------------------------------------


def test_per_response_hand_computed():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.3, 7.0], [0.2, 0.4, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    # row 0: n = 5, ratio .4 -> k = 2: the two 0.9s (positions 1, 3); the 7.0 is padding.
    # row 1: n = 2, ratio .4 -> k = ceil(.8) = 1: position 1 (0.4).
    top = select_tokens(scores, mask, ratio=0.4)
    assert top.tolist() == [[0, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]]
    # ratio .2 -> k = 1 in both rows; row 0 has a tie at 0.9: the earlier position (1) wins.
    assert select_tokens(scores, mask, ratio=0.2).tolist() == [[0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    # bottom .4: row 0 keeps 0.1 and 0.3 (positions 0, 4); row 1 keeps 0.2 (position 0).
    bottom = select_tokens(scores, mask, ratio=0.4, mode="bottom")
    assert bottom.tolist() == [[1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]]
    assert top.dtype == torch.float32


def test_keep_count_is_exact_ceiling():
    n = torch.tensor([0, 1, 5, 30, 7, 10])
    # ceil(.1·[0, 1, 5, 30, 7, 10]) = [0, 1(min), 1, 3 (not 4 from 3.0000000000000004), 1, 1]
    assert keep_count(n, 0.1).tolist() == [0, 1, 1, 3, 1, 1]
    # ceil(.2·...) = [0, 1, 1, 6, 2, 2]
    assert keep_count(n, 0.2).tolist() == [0, 1, 1, 6, 2, 2]
    assert keep_count(n, 1.0).tolist() == n.tolist()


def test_batch_quantile_hand_computed():
    # valid scores 1..10 spread over two rows (plus padding holding 100, which must not count)
    scores = torch.tensor(
        [[1.0, 5.0, 9.0, 3.0, 100.0], [2.0, 10.0, 4.0, 6.0, 8.0], [7.0, 100.0, 100.0, 100.0, 100.0]]
    )
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    # top .2: q(.8) over the 10 values: position .8·9 = 7.2 -> 8 + .2·(9-8) = 8.2 -> keep 9 and 10
    top = select_tokens(scores, mask, ratio=0.2, granularity="batch")
    assert top.tolist() == [[0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    # bottom .3: q(.3): position 2.7 -> 3 + .7·1 = 3.7 -> keep 1, 2, 3
    bottom = select_tokens(scores, mask, ratio=0.3, granularity="batch", mode="bottom")
    assert bottom.tolist() == [[1, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    # ratio 1: q(0) = min -> every valid token, never padding
    assert torch.equal(select_tokens(scores, mask, ratio=1.0, granularity="batch"), mask.float())


def test_batch_keeps_every_tie_at_the_threshold():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 3.0]])
    mask = torch.ones(1, 5)
    # q(.6): position 2.4 between two 2.0s -> threshold 2.0 -> the three 2.0s and the 3.0 (4 of 5, not 2)
    assert select_tokens(scores, mask, ratio=0.4, granularity="batch").tolist() == [[0, 1, 1, 1, 1]]


# --- reference on odd shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["response", "batch"])
@pytest.mark.parametrize("mode", ["top", "bottom"])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.05, 1.0, 1 / 3])
def test_matches_reference_on_odd_shape(granularity, mode, ratio, odd_mask):
    g = torch.Generator().manual_seed(11)
    scores = torch.rand(odd_mask.shape, generator=g) * odd_mask  # distinct almost surely: no ties
    got = select_tokens(scores, odd_mask, ratio=ratio, granularity=granularity, mode=mode)
    ref = reference_select(scores, odd_mask, ratio, granularity, mode)
    assert torch.equal(got, ref)
    assert (got[odd_mask == 0] == 0).all()
    if granularity == "response":
        n = odd_mask.sum(1).long().tolist()
        # the single-token row keeps 1 token, the empty row none
        assert got.sum(1).long().tolist() == [_ref_k(ratio, k) for k in n]


@pytest.mark.parametrize("granularity", ["response", "batch"])
def test_matches_reference_with_many_ties(granularity, odd_mask):
    # scores on a coarse grid: lots of exact ties, still deterministic and equal to the reference
    g = torch.Generator().manual_seed(2)
    scores = torch.randint(0, 3, odd_mask.shape, generator=g).float()
    for mode in ("top", "bottom"):
        got = select_tokens(scores, odd_mask, ratio=0.3, granularity=granularity, mode=mode)
        assert torch.equal(got, reference_select(scores, odd_mask, 0.3, granularity, mode))


def test_batch_matches_torch_quantile_rule(odd_mask):
    # the threshold is the same as TRL's get_high_entropy_mask (torch.quantile, linear interpolation)
    g = torch.Generator().manual_seed(5)
    scores = torch.rand(odd_mask.shape, generator=g)
    thr = torch.quantile(scores[odd_mask.bool()].double(), 0.8)
    expected = ((scores.double() >= thr) & odd_mask.bool()).float()
    assert torch.equal(select_tokens(scores, odd_mask, 0.2, granularity="batch"), expected)


def test_padding_values_never_matter(odd_mask):
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(odd_mask.shape, generator=g)
    poisoned = torch.where(odd_mask.bool(), scores, torch.tensor(float("inf")))
    poisoned_neg = torch.where(odd_mask.bool(), scores, torch.tensor(float("-inf")))
    poisoned_nan = torch.where(odd_mask.bool(), scores, torch.tensor(float("nan")))
    for granularity in ("response", "batch"):
        for mode in ("top", "bottom"):
            base = select_tokens(scores, odd_mask, 0.3, granularity, mode)
            assert torch.equal(base, select_tokens(poisoned, odd_mask, 0.3, granularity, mode))
            assert torch.equal(base, select_tokens(poisoned_neg, odd_mask, 0.3, granularity, mode))
            assert torch.equal(base, select_tokens(poisoned_nan, odd_mask, 0.3, granularity, mode))


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 17), min_size=1, max_size=6),
    ratio=st.sampled_from([0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.9, 1.0]),
    coarse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(lengths, ratio, coarse, seed):
    T = max(lengths) + 1
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()
    g = torch.Generator().manual_seed(seed)
    scores = (
        torch.randint(0, 4, mask.shape, generator=g).float()
        if coarse
        else torch.rand(mask.shape, generator=g)
    )
    for granularity in ("response", "batch"):
        for mode in ("top", "bottom"):
            got = select_tokens(scores, mask, ratio, granularity, mode)
            assert torch.equal(got, reference_select(scores, mask, ratio, granularity, mode))


# --- random mode -----------------------------------------------------------------------------------------


def test_random_per_response_exact_count_and_seeded(odd_mask):
    scores = torch.zeros(odd_mask.shape)
    a = select_tokens(scores, odd_mask, 0.3, mode="random", generator=torch.Generator().manual_seed(0))
    b = select_tokens(scores, odd_mask, 0.3, mode="random", generator=torch.Generator().manual_seed(0))
    c = select_tokens(scores, odd_mask, 0.3, mode="random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.sum(1).long().tolist() == [_ref_k(0.3, int(n)) for n in odd_mask.sum(1)]
    assert (a[odd_mask == 0] == 0).all()


def test_random_per_response_is_uniform_over_positions():
    # one row of 10 valid tokens, k = 2; over 2000 draws each position is picked ~ 2/10 of the time
    mask = torch.ones(2000, 10)
    picked = select_tokens(
        torch.zeros(2000, 10), mask, 0.2, mode="random", generator=torch.Generator().manual_seed(4)
    )
    freq = picked.mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.2), atol=0.04), freq


def test_random_batch_exact_total(odd_mask):
    got = select_tokens(
        odd_mask,
        odd_mask,
        0.2,
        granularity="batch",
        mode="random",
        generator=torch.Generator().manual_seed(9),
    )
    n = int(odd_mask.sum())
    assert int(got.sum()) == _ref_k(0.2, n)
    assert (got[odd_mask == 0] == 0).all()


# --- edge cases and validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["response", "batch"])
@pytest.mark.parametrize("mode", ["top", "bottom", "random"])
def test_all_padding_batch_selects_nothing(granularity, mode):
    mask = torch.zeros(3, 4)
    got = select_tokens(
        torch.rand(3, 4), mask, 0.2, granularity, mode, generator=torch.Generator().manual_seed(0)
    )
    assert got.shape == (3, 4) and got.sum() == 0 and got.dtype == torch.float32


def test_bool_and_long_masks_behave_like_float(odd_mask):
    scores = torch.rand(odd_mask.shape, generator=torch.Generator().manual_seed(1))
    base = select_tokens(scores, odd_mask)
    assert torch.equal(base, select_tokens(scores, odd_mask.bool()))
    assert torch.equal(base, select_tokens(scores, odd_mask.long()))


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), True])
def test_bad_ratio_rejected(ratio):
    with pytest.raises(ValueError, match="ratio must be"):
        select_tokens(torch.rand(2, 3), torch.ones(2, 3), ratio=ratio)


def test_unknown_names_and_shapes_rejected():
    s, m = torch.rand(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="valid: top, bottom, random"):
        select_tokens(s, m, mode="highest")
    with pytest.raises(ValueError, match="valid: response, batch"):
        select_tokens(s, m, granularity="sequence")
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        select_tokens(s, torch.ones(2, 4))


# --- accelerator ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_without_host_sync(odd_mask, make_stats):
    from visent.core.scores import SCORES, token_scores

    stats = make_stats(odd_mask, seed=21)
    cuda_stats = type(stats)(
        *(x.cuda() for x in (stats.entropy, stats.entropy_perturbed, stats.jsd, stats.kl))
    )
    mask = odd_mask.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any .item()/nonzero-style host sync raises
    try:
        results = {}
        for method in sorted(set(SCORES) - {"random"}):
            s = token_scores(cuda_stats, mask, method)
            for granularity in ("response", "batch"):
                for mode in ("top", "bottom"):
                    results[method, granularity, mode] = (s, select_tokens(s, mask, 0.3, granularity, mode))
        gen = torch.Generator(device="cuda").manual_seed(0)
        rnd = select_tokens(token_scores(cuda_stats, mask, "random", generator=gen), mask, 0.3, mode="random",
                            generator=gen)  # fmt: skip
        rnd_batch = select_tokens(mask, mask, 0.3, "batch", "random", generator=gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for (method, granularity, mode), (s, sel) in results.items():
        cpu_s = token_scores(stats, odd_mask, method)
        torch.testing.assert_close(s.cpu(), cpu_s, atol=1e-6, rtol=0)
        assert torch.equal(sel.cpu(), select_tokens(cpu_s, odd_mask, 0.3, granularity, mode)), (
            method,
            granularity,
        )
    assert rnd.is_cuda and rnd.sum(1).long().tolist() == [_ref_k(0.3, int(n)) for n in odd_mask.sum(1)]
    assert (rnd.cpu()[odd_mask == 0] == 0).all() and int(rnd_batch.sum()) == _ref_k(0.3, int(odd_mask.sum()))
