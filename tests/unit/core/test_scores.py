"""token_scores / minmax_per_response: hand-computed cases and a float64 reference written from METHOD §3."""

from __future__ import annotations

import pytest
import torch

from visent.core.scores import SCORES, minmax_per_response, token_scores

# --- slow reference: plain Python floats, one response at a time, straight from the spec ----------------


def _ref_minmax(values: list[float], eps: float = 1e-8) -> list[float]:
    if not values:
        return []
    lo, hi = min(values), max(values)
    return [(v - lo) / max(hi - lo, eps) for v in values]


def _ref_noisy_or(signals: list[list[float]], weights: list[float]) -> list[float]:
    out = []
    for xs in zip(*signals):
        keep = 1.0
        for x, w in zip(xs, weights):
            keep *= (1.0 - x) ** w  # Python: 0.0 ** 0 == 1.0, as in torch
        out.append(1.0 - keep)
    return out


def _mul(a: list[float], c: list[float]) -> list[float]:
    return [x * y for x, y in zip(a, c)]


def _ref_row(method: str, alpha: float, h, hp, jsd, kl) -> list[float]:
    """Score of one response's valid tokens (lists of floats) by the METHOD §3 formula for ``method``."""
    gap = [p - q for p, q in zip(hp, h)]
    j_, k_, h_ = _ref_minmax(jsd), _ref_minmax(kl), _ref_minmax(h)
    g_ = _ref_minmax([abs(x) for x in gap])
    gp_ = _ref_minmax([max(x, 0.0) for x in gap])
    if method == "vepo":
        return _mul(_ref_noisy_or([j_, g_], [alpha, 1 - alpha]), h_)
    if method == "vepo_positive_gap":
        return _mul(_ref_noisy_or([j_, gp_], [alpha, 1 - alpha]), h_)
    if method == "vepo_no_entropy":
        return _ref_noisy_or([j_, g_], [alpha, 1 - alpha])
    if method == "vepo_linear":
        return _mul([alpha * a + (1 - alpha) * c for a, c in zip(j_, g_)], h_)
    if method == "vepo_kl":
        return _mul(_ref_noisy_or([k_, g_], [alpha, 1 - alpha]), h_)
    if method == "noisy_or_all":
        return _ref_noisy_or([j_, g_, h_], [1 / 3] * 3)
    if method == "noisy_or_all_positive_gap":
        return _ref_noisy_or([j_, gp_, h_], [1 / 3] * 3)
    if method == "product":
        return _mul(_mul(j_, g_), h_)
    if method == "jsd":
        return jsd
    if method == "entropy":
        return h
    raise AssertionError(f"no reference for {method}")


def reference_scores(stats, mask, method: str, alpha: float = 0.7) -> torch.Tensor:
    B, T = mask.shape
    out = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        idx = [t for t in range(T) if mask[b, t] > 0]
        fields = (stats.entropy, stats.entropy_perturbed, stats.jsd, stats.kl)
        rows = [[float(x[b, t]) for t in idx] for x in fields]  # float32/bf16 -> exact float64
        for t, v in zip(idx, _ref_row(method, alpha, *rows)):
            out[b, t] = v
    return out


DETERMINISTIC = sorted(set(SCORES) - {"random"})


# --- hand-computed ----------------------------------------------------------------------------------


def _hand_stats(TokenStats):
    # One response of 4 valid tokens + 1 padding slot (holding garbage that must be ignored).
    #   jsd = [0, .1, .2, .4]      -> ĵ = [0, .25, .5, 1]
    #   H   = [1, 2, 3, 5]          -> ĥ = [0, .25, .5, 1]
    #   ΔH  = [0, -.5, 1, .25]      -> |ΔH| = [0, .5, 1, .25] -> ĝ = [0, .5, 1, .25]
    #                                  max(ΔH,0) = [0, 0, 1, .25] -> ĝ+ = [0, 0, 1, .25]
    h = torch.tensor([[1.0, 2.0, 3.0, 5.0, 9.0]])
    gap = torch.tensor([[0.0, -0.5, 1.0, 0.25, -9.0]])
    jsd = torch.tensor([[0.0, 0.1, 0.2, 0.4, 9.0]])
    kl = torch.tensor([[0.0, 0.3, 0.1, 0.2, 9.0]])  # -> k̂ = [0, 1, 1/3, 2/3]
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    return TokenStats(h, h + gap, jsd, kl), mask


def test_vepo_hand_computed(stats_cls):
    stats, mask = _hand_stats(stats_cls)
    s = token_scores(stats, mask, "vepo", alpha=0.7)
    # token 0: ĥ = 0                          -> 0
    # token 1: (1 - .75^.7 · .5^.3) · .25     = (1 - 0.817604 · 0.812252) · .25 = 0.335899 · .25 = 0.083975
    # token 2: (1 - .5^.7 · 0^.3) · .5        = (1 - 0) · .5 = 0.5
    # token 3: (1 - 0^.7 · .75^.3) · 1        = 1
    # padding: 0
    expected = torch.tensor([[0.0, 0.083975, 0.5, 1.0, 0.0]])
    torch.testing.assert_close(s, expected, atol=2e-6, rtol=0)


def test_ablations_hand_computed(stats_cls):
    stats, mask = _hand_stats(stats_cls)
    score = lambda m: token_scores(stats, mask, m, alpha=0.7)[0, :4]
    # positive gap: ĝ+ = [0, 0, 1, .25]; token 1: (1 - .75^.7 · 1) · .25 = 0.182396 · .25 = 0.045599
    torch.testing.assert_close(
        score("vepo_positive_gap"), torch.tensor([0.0, 0.045599, 0.5, 1.0]), atol=2e-6, rtol=0
    )
    # without ĥ: token 0 bracket = 1 - 1·1 = 0; token 1 = 0.335899; tokens 2, 3 = 1
    torch.testing.assert_close(
        score("vepo_no_entropy"), torch.tensor([0.0, 0.335899, 1.0, 1.0]), atol=2e-6, rtol=0
    )
    # linear: (.7 ĵ + .3 ĝ) ĥ = [0, (.175+.15)·.25, (.35+.3)·.5, (.7+.075)·1] = [0, .08125, .325, .775]
    torch.testing.assert_close(
        score("vepo_linear"), torch.tensor([0.0, 0.08125, 0.325, 0.775]), atol=1e-6, rtol=0
    )
    # product ĵĝĥ = [0, .25·.5·.25, .5·1·.5, 1·.25·1] = [0, .03125, .25, .25]
    torch.testing.assert_close(score("product"), torch.tensor([0.0, 0.03125, 0.25, 0.25]), atol=1e-6, rtol=0)
    # KL: k̂ = [0, 1, 1/3, 2/3]; token 1: (1 - 0 · .5^.3)·.25 = .25;
    #     token 2: (1 - (2/3)^.7 · 0^.3)·.5 = .5; token 3: (1 - (1/3)^.7 · .75^.3)·1
    #     (1/3)^.7 = exp(-.7 · 1.098612) = 0.463463; .75^.3 = exp(.3 · -.287682) = 0.917315 -> 1 - 0.425142 = 0.574858
    torch.testing.assert_close(score("vepo_kl"), torch.tensor([0.0, 0.25, 0.5, 0.574858]), atol=2e-6, rtol=0)
    # noisy-OR of all three, weights 1/3: 1 - ((1-ĵ)(1-ĝ)(1-ĥ))^(1/3)
    #   token 0: 1 - 1 = 0; token 1: 1 - (.75·.5·.75)^(1/3) = 1 - .28125^(1/3) = 1 - 0.655185 = 0.344815
    #   token 2: ĝ = 1 -> 1; token 3: ĵ = 1 -> 1
    torch.testing.assert_close(
        score("noisy_or_all"), torch.tensor([0.0, 0.344815, 1.0, 1.0]), atol=2e-6, rtol=0
    )
    # positive gap: token 1: 1 - (.75·1·.75)^(1/3) = 1 - .5625^(1/3) = 1 - 0.825482 = 0.174518
    torch.testing.assert_close(
        score("noisy_or_all_positive_gap"), torch.tensor([0.0, 0.174518, 1.0, 1.0]), atol=2e-6, rtol=0
    )
    # single signals are raw, not normalised
    torch.testing.assert_close(score("jsd"), torch.tensor([0.0, 0.1, 0.2, 0.4]))
    torch.testing.assert_close(score("entropy"), torch.tensor([1.0, 2.0, 3.0, 5.0]))


def test_minmax_hand_computed():
    x = torch.tensor([[2.0, 4.0, 3.0, 100.0], [5.0, 5.0, 0.0, 0.0], [7.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    # row 0: min 2, max 4 -> [0, 1, .5, pad 0]; row 1: constant -> range clamped, (5-5)/1e-8 = 0;
    # row 2: all padding -> zeros (the 7 is padding garbage)
    expected = torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(minmax_per_response(x, mask), expected)


# --- float64 reference on odd shapes ------------------------------------------------------------------


@pytest.mark.parametrize("method", DETERMINISTIC)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_float64_reference(method, seed, odd_mask, make_stats):
    stats = make_stats(odd_mask, seed=seed)  # float32 inputs
    got = token_scores(stats, odd_mask, method)
    assert got.dtype == torch.float32 and got.shape == odd_mask.shape
    ref = reference_scores(stats, odd_mask, method)
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=0)
    assert torch.isfinite(got).all()
    assert (got[odd_mask == 0] == 0).all()


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_is_the_jsd_weight(alpha, odd_mask, make_stats):
    stats = make_stats(odd_mask, seed=3)
    for method in ("vepo", "vepo_linear", "vepo_kl", "vepo_positive_gap", "vepo_no_entropy"):
        got = token_scores(stats, odd_mask, method, alpha=alpha)
        torch.testing.assert_close(
            got.double(), reference_scores(stats, odd_mask, method, alpha), atol=1e-4, rtol=0
        )


def test_alpha_one_reduces_to_jsd_times_entropy(odd_mask, make_stats):
    # With α = 1 the bracket is 1 - (1-ĵ) = ĵ, so vepo = ĵ·ĥ: an identity independent of the implementation.
    stats = make_stats(odd_mask, seed=4)
    got = token_scores(stats, odd_mask, "vepo", alpha=1.0)
    expected = minmax_per_response(stats.jsd, odd_mask) * minmax_per_response(stats.entropy, odd_mask)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", sorted(SCORES))
def test_degenerate_rows_never_nan(method, stats_cls):
    # one valid token; constant signals; all padding with NaN garbage in the padding slots
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    const = torch.tensor([[0.5, float("nan"), 0.0], [0.5, 0.5, 0.5], [float("nan")] * 3])
    stats = stats_cls(const, const, const, const)
    got = token_scores(stats, mask, method, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(got).all()
    assert (got[mask == 0] == 0).all()
    if method not in ("jsd", "entropy", "random"):
        assert (got == 0).all()  # nothing to tell apart


def test_random_is_seeded_and_zero_at_padding(odd_mask, make_stats):
    stats = make_stats(odd_mask, seed=0)
    a = token_scores(stats, odd_mask, "random", generator=torch.Generator().manual_seed(7))
    b = token_scores(stats, odd_mask, "random", generator=torch.Generator().manual_seed(7))
    c = token_scores(stats, odd_mask, "random", generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[odd_mask == 0] == 0).all() and (a[odd_mask == 1] > 0).float().mean() > 0.9


def test_scores_ignore_everything_but_valid_tokens(odd_mask, make_stats, stats_cls):
    # Changing statistics at padding positions must not move any score (per-response normalisation
    # must not see them).
    stats = make_stats(odd_mask, seed=5)
    noisy = stats_cls(
        *(x + 50.0 * (1 - odd_mask) for x in (stats.entropy, stats.entropy_perturbed, stats.jsd, stats.kl))
    )
    for method in DETERMINISTIC:
        assert torch.equal(token_scores(stats, odd_mask, method), token_scores(noisy, odd_mask, method)), (
            method
        )


def test_bf16_statistics_give_finite_scores(odd_mask, make_stats):
    stats = make_stats(odd_mask, seed=6, dtype=torch.bfloat16)
    got = token_scores(stats, odd_mask, "vepo")
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    ref = reference_scores(stats, odd_mask, "vepo")  # reference on the same (bf16-rounded) values
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=0)


def test_unknown_method_lists_valid_names(odd_mask, make_stats):
    stats = make_stats(odd_mask, seed=0)
    with pytest.raises(ValueError, match="valid methods: .*vepo"):
        token_scores(stats, odd_mask, "VEPO-typo")


def test_bad_alpha_and_shape_are_rejected(odd_mask, make_stats):
    stats = make_stats(odd_mask, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        token_scores(stats, odd_mask, "vepo", alpha=1.5)
    with pytest.raises(ValueError, match="stats.entropy has shape"):
        token_scores(stats, odd_mask[:, :5], "vepo")


def test_odd_mask_has_the_edge_cases(odd_mask):
    # guard: the odd-shape tests above only cover single-token / empty / full rows if the fixture has them
    lengths = odd_mask.sum(dim=1).tolist()
    assert 1 in lengths and 0 in lengths and odd_mask.shape[1] in lengths and odd_mask.shape[1] % 2 == 1
