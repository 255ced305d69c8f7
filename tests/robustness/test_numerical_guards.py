"""Numerical guards of visent.core: degenerate inputs never put NaN or inf into the loss, and each
repair is counted in visent.core.guards.

Each test injects one kind of bad input and checks three things: the output is finite, the good part of
the batch is exactly what it would be without the bad part (so the guard repairs, not just hides), and the
right guard counter moved. A float64 reference computed on the good part only is the oracle throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visent.core import guards
from visent.core.advantages import group_advantages
from visent.core.policy_loss import AGGREGATIONS, MAX_LOG_RATIO, entropy_regularizer, policy_loss
from visent.core.scores import SCORES, token_scores
from visent.core.selection import select_tokens
from visent.core.stats import TokenStats, entropy_from_logits, token_stats, token_stats_from_hidden

NAN, INF = float("nan"), float("inf")
AGGS = list(AGGREGATIONS)


@pytest.fixture(autouse=True)
def fresh_counters():
    guards.GUARDS.reset()
    yield
    guards.GUARDS.reset()


def lengths_mask(lengths: list[int], T: int) -> torch.Tensor:
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()


def ref_entropy(logits_row: torch.Tensor) -> float:
    """float64 entropy over the finite entries of one logits vector (masked vocabulary = −inf)."""
    z = logits_row.double()
    z = z[torch.isfinite(z)]
    p = torch.softmax(z, -1)
    return float(-(p * p.log()).sum())


def all_finite(stats: TokenStats) -> bool:
    return all(
        bool(torch.isfinite(getattr(stats, f)).all()) for f in ("entropy", "entropy_perturbed", "jsd", "kl")
    )


# --- the counter itself ---------------------------------------------------------------------------------


def test_counter_sums_tensors_and_ints_and_pop_resets():
    c = guards.GuardCounter()
    c.count("guard/empty_response", torch.tensor([True, False, True]))
    c.count("guard/empty_response", 2)
    c.count("custom/thing", torch.tensor(3.0))
    # counts stay tensors until popped: no host synchronisation on the hot path
    assert isinstance(c._totals["guard/empty_response"], torch.Tensor)
    out = c.pop()
    assert out["guard/empty_response"] == 4 and out["custom/thing"] == 3
    assert set(guards.GUARD_NAMES) <= set(out) and out["guard/nonfinite_logits"] == 0
    assert all(isinstance(v, int) for v in out.values())
    assert c.pop()["guard/empty_response"] == 0


# --- statistics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_stats_bad_logits_are_zeroed_counted_and_leave_other_tokens_exact(dtype):
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 6, 37
    logits = (torch.randn(B, T, V, generator=g) * 3).to(dtype)
    logits_p = (logits.float() + torch.randn(B, T, V, generator=g)).to(dtype)
    mask = lengths_mask([6, 1, 0], T)
    bad_z, bad_zp = logits.clone(), logits_p.clone()
    bad_z[0, 0, 5] = NAN  # one NaN logit
    bad_zp[0, 2, 7] = INF  # +inf in the perturbed pass only
    bad_z[0, 4] = -INF  # every logit masked
    bad_z[1, 0, :] = NAN  # the only token of a length-1 response
    bad_z[2, 3, :] = NAN  # padding: must not be counted
    s = token_stats(bad_z, bad_zp, mask, chunk_size=3)
    clean = token_stats(logits, logits_p, mask, chunk_size=3)
    assert all_finite(s)
    broken = torch.zeros(B, T, dtype=torch.bool)
    broken[0, 0] = broken[0, 2] = broken[0, 4] = broken[1, 0] = True
    for f in ("entropy", "entropy_perturbed", "jsd", "kl"):
        got, want = getattr(s, f), getattr(clean, f)
        assert (got[broken] == 0).all(), f
        torch.testing.assert_close(got[~broken], want[~broken], rtol=0, atol=0)
    assert guards.pop()["guard/nonfinite_logits"] == 4


def test_stats_from_hidden_with_nonfinite_hidden_states():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 5, 8, generator=g)
    weight = torch.randn(41, 8, generator=g)
    mask = lengths_mask([5, 3], 5)
    bad = hidden.clone()
    bad[1, 1, 2] = NAN
    bad_p = hidden.flip(1).clone()
    bad_p[0, 3] = INF
    s = token_stats_from_hidden(bad, bad_p, weight, mask, chunk_size=2)
    clean = token_stats_from_hidden(hidden, hidden.flip(1), weight, mask, chunk_size=2)
    assert all_finite(s)
    assert s.entropy[1, 1] == 0 and s.jsd[0, 3] == 0
    torch.testing.assert_close(s.entropy[0, :3], clean.entropy[0, :3], rtol=0, atol=0)
    assert guards.pop()["guard/nonfinite_logits"] == 2


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5), (torch.float16, 1e-5)])
def test_masked_vocabulary_and_all_equal_logits_are_exact_not_guarded(dtype, atol):
    # −inf entries are a legitimate masked vocabulary, not an error: exact values, nothing counted.
    V = 64
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, V, generator=g).to(dtype)
    logits[0, :, 40:] = -INF
    logits[1, 0] = 7.0  # all equal: uniform, entropy log V
    logits[1, 1, :] = -INF
    logits[1, 1, 3] = 0.0  # one finite entry: a point mass, entropy 0
    s = token_stats(logits, logits.clone(), torch.ones(2, 3))
    for b in range(2):
        for t in range(3):
            assert s.entropy[b, t].item() == pytest.approx(ref_entropy(logits[b, t].float()), abs=atol)
    assert s.entropy[1, 0].item() == pytest.approx(math.log(V), abs=atol)
    assert (s.jsd == 0).all() and (s.kl == 0).all()
    assert guards.pop()["guard/nonfinite_logits"] == 0


# --- scores and selection -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(SCORES))
def test_scores_with_nonfinite_statistics_stay_finite_and_spare_other_responses(method):
    g = torch.Generator().manual_seed(3)
    mask = lengths_mask([7, 1, 0, 5], 7)
    fields = [torch.rand(4, 7, generator=g) * mask for _ in range(4)]
    clean = TokenStats(*fields)
    dirty = TokenStats(*(f.clone() for f in fields))
    dirty.jsd[0, 2] = NAN
    dirty.entropy[0, 5] = INF
    dirty.kl[0, 1] = -INF
    dirty.entropy_perturbed[2, 4] = NAN  # padding: ignored, not counted
    s = token_scores(dirty, mask, method, generator=torch.Generator().manual_seed(0))
    ref = token_scores(clean, mask, method, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(s).all()
    assert (s[mask == 0] == 0).all()
    torch.testing.assert_close(s[1:], ref[1:], rtol=0, atol=0)  # the other responses are untouched
    if method not in ("jsd", "entropy", "random"):
        assert ((s >= 0) & (s <= 1)).all()
    counted = guards.pop()["guard/nonfinite_stats"]
    assert counted == (0 if method == "random" else 3)


def test_scores_of_length_zero_and_one_and_constant_responses_are_zero():
    mask = lengths_mask([0, 1, 4], 4)
    const = torch.ones(3, 4) * mask
    s = token_scores(TokenStats(const, const * 2, const * 0.3, const), mask, "vepo")
    assert (s == 0).all()


@pytest.mark.parametrize("mode", ["top", "bottom"])
def test_nonfinite_scores_rank_last_per_response(mode):
    scores = torch.tensor([[NAN, 0.9, 0.1, 0.5, INF, -INF], [0.3, NAN, 0.2, 0.0, 0.0, 0.0]])
    mask = lengths_mask([6, 3], 6)
    m = select_tokens(scores, mask, ratio=1 / 3, mode=mode)  # k = 2 and 1
    want = (
        [[0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]]
        if mode == "top"
        else [[0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]]
    )
    assert m.tolist() == [[float(x) for x in r] for r in want]
    assert guards.pop()["guard/nonfinite_scores"] == 4


@pytest.mark.parametrize("mode", ["top", "bottom"])
def test_nonfinite_scores_do_not_empty_a_batch_selection(mode):
    # A NaN made the batch quantile NaN, and every comparison with it False: nothing was selected.
    g = torch.Generator().manual_seed(4)
    scores = torch.rand(4, 10, generator=g)
    scores[1, 3] = NAN
    mask = lengths_mask([10, 10, 6, 0], 10)
    m = select_tokens(scores, mask, ratio=0.2, granularity="batch", mode=mode)
    clean = scores.clone()
    clean[1, 3] = -INF if mode == "top" else INF  # the guard's meaning, stated directly
    sel = select_tokens(torch.nan_to_num(clean, neginf=-1e30, posinf=1e30), mask, 0.2, "batch", mode)
    assert m.sum() >= 0.2 * 26 and (m == sel).all()
    assert m[1, 3] == 0 and (m[mask == 0] == 0).all()


# --- advantages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_nonfinite_rewards_zero_their_group_only(scale):
    rewards = torch.tensor([1.0, 0.0, 1.0, INF, 0.0, 1.0, 0.5, NAN, 0.0, 1.0, 0.0, 0.0])
    adv = group_advantages(rewards, 3, scale=scale)
    assert torch.isfinite(adv).all()
    assert (adv[3:9] == 0).all()
    if scale != "batch":  # other groups are exactly what they are without the broken ones
        good = torch.cat([rewards[:3], rewards[9:]])
        ref = group_advantages(good, 3, scale=scale)
        torch.testing.assert_close(torch.cat([adv[:3], adv[9:]]), ref, rtol=0, atol=0)
    assert guards.pop()["guard/nonfinite_rewards"] == 2


# --- the loss -------------------------------------------------------------------------------------------


def loss_inputs(seed=5, B=4, T=7, lengths=(7, 3, 1, 5)):
    g = torch.Generator().manual_seed(seed)
    mask = lengths_mask(list(lengths), T)
    logps = (-torch.rand(B, T, generator=g) * 3).double()
    old = logps + 0.1 * torch.randn(B, T, generator=g).double()
    ref = logps + 0.1 * torch.randn(B, T, generator=g).double()
    adv = torch.randn(B, generator=g).double()
    tmask = (torch.rand(B, T, generator=g) < 0.6).double() * mask
    tmask[:, 0] = mask[:, 0]
    iw = (0.5 + torch.rand(B, T, generator=g)).double()
    return logps, old, ref, adv, mask.double(), tmask, iw


def run_loss(logps, old, ref, adv, mask, tmask, iw, aggregation, beta=0.1):
    x = logps.clone().requires_grad_(True)
    loss, _metrics = policy_loss(x, old, adv, mask, tmask, aggregation=aggregation, ref_logps=ref, beta=beta,
                                importance_weights=iw)  # fmt: skip
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("aggregation", AGGS)
@pytest.mark.parametrize("where", ["logps", "old", "adv", "iw", "ref"])
def test_nonfinite_loss_inputs_are_left_out_exactly(aggregation, where):
    logps, old, ref, adv, mask, tmask, iw = loss_inputs()
    b, t = 0, 2  # a selected, valid token (tmask[0, 2] is set below)
    tmask[b, t] = 1.0
    bad = {k: v.clone() for k, v in {"logps": logps, "old": old, "ref": ref, "adv": adv, "iw": iw}.items()}
    if where == "adv":
        bad["adv"][b] = NAN  # the whole response
    else:
        bad[where][b, t] = INF if where == "old" else NAN
    loss, grad = run_loss(
        bad["logps"], bad["old"], bad["ref"], bad["adv"], mask, tmask, bad["iw"], aggregation
    )
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # Oracle: the same batch with the broken term(s) removed by hand.
    if where == "adv":
        drop_policy = torch.zeros_like(mask)
        drop_policy[b] = 1.0
        drop_kl = torch.zeros_like(mask)
        want, want_grad = _loss_dropping(logps, old, ref, adv.nan_to_num(0.0), mask, tmask, iw, aggregation,
                                         drop_policy, drop_kl)  # fmt: skip
    else:
        one = torch.zeros_like(mask)
        one[b, t] = 1.0
        drop_kl = one if where in ("logps", "ref") else torch.zeros_like(mask)
        drop_policy = one if where != "ref" else torch.zeros_like(mask)
        want, want_grad = _loss_dropping(
            logps, old, ref, adv, mask, tmask, iw, aggregation, drop_policy, drop_kl
        )
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-12)
    expected = int(((drop_policy * tmask * mask) + drop_kl).clamp(max=1).sum())
    assert guards.pop()["guard/nonfinite_loss_terms"] == expected


def _loss_dropping(logps, old, ref, adv, mask, tmask, iw, aggregation, drop_policy, drop_kl):
    """float64 reference: the policy term without ``drop_policy`` tokens, the KL term without ``drop_kl``
    tokens, each keeping its denominator as the guarded loss does (a left-out token still counts as
    valid/selected in the aggregation's denominator)."""
    x = logps.clone().requires_grad_(True)
    keep_p = (1 - drop_policy) * tmask * mask
    ratio = torch.exp(torch.where(keep_p > 0, x - old, torch.zeros_like(x)))
    a = adv[:, None]
    per_token = -torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a) * iw * keep_p
    keep_k = (1 - drop_kl) * mask
    delta = torch.where(keep_k > 0, ref - x, torch.zeros_like(x))
    per_kl = (torch.exp(delta) - delta - 1) * keep_k
    w = tmask * mask
    agg = AGGREGATIONS[aggregation]
    loss = agg(per_token, w, mask, None, None) + 0.1 * agg(per_kl, mask, mask, None, None)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("aggregation", AGGS)
@pytest.mark.parametrize("adv_value", [0.0, -1.0, 1.0])
def test_overflowing_log_ratio_is_clamped(aggregation, adv_value):
    logps, old, _ref, adv, mask, tmask, _iw = loss_inputs()
    tmask[0, 1] = 1.0
    old = old.clone()
    old[0, 1] = logps[0, 1] - 200.0  # ratio e^200: inf in float32, and inf·0 = NaN when A = 0
    adv = adv.clone()
    adv[0] = adv_value
    x = logps.float().requires_grad_(True)
    loss, _ = policy_loss(x, old.float(), adv.float(), mask.float(), tmask.float(), aggregation=aggregation)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    clamped = old.clone()
    clamped[0, 1] = logps[0, 1] - MAX_LOG_RATIO  # the guard's meaning: the ratio saturates at e^20
    want, _ = policy_loss(logps, clamped, adv, mask, tmask, aggregation=aggregation)
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=0)
    assert guards.pop()["guard/log_ratio_clamped"] == 1


@pytest.mark.parametrize("aggregation", AGGS)
def test_empty_responses_and_all_padding_batches(aggregation):
    logps, old, ref, adv, mask, tmask, iw = loss_inputs(lengths=(0, 3, 0, 1))
    loss, grad = run_loss(logps, old, ref, adv, mask, tmask, iw, aggregation)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[0] == 0).all() and (grad[2] == 0).all()
    counts = guards.pop()
    assert counts["guard/empty_response"] == 2 and counts["guard/all_padding_batch"] == 0
    zero = torch.zeros_like(mask)
    garbage = torch.full_like(logps, NAN)  # padding may hold anything
    loss, grad = run_loss(garbage, garbage, garbage, adv, zero, zero, garbage, aggregation)
    assert loss == 0 and (grad == 0).all()
    counts = guards.pop()
    assert counts["guard/empty_response"] == 4 and counts["guard/all_padding_batch"] == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("aggregation", AGGS)
def test_half_precision_log_probs_reduce_in_float32(dtype, aggregation):
    # 3000 tokens: a half-precision sum of this many terms would be off by far more than 1e-3.
    g = torch.Generator().manual_seed(6)
    B, T = 6, 500
    mask = lengths_mask([500, 499, 1, 250, 0, 377], T)
    logps = (-torch.rand(B, T, generator=g) * 2).to(dtype)
    old = (logps.float() + 0.05 * torch.randn(B, T, generator=g)).to(dtype)
    adv = torch.randn(B, generator=g)
    x = logps.clone().requires_grad_(True)
    loss, _ = policy_loss(x, old, adv, mask, None, aggregation=aggregation)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(x.grad.float()).all()
    want, _ = policy_loss(
        logps.double(), old.double(), adv.double(), mask.double(), None, aggregation=aggregation
    )
    assert loss.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-5)


def test_entropy_regularizer_leaves_out_nonfinite_entropies():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 5, 13, generator=g)
    mask = lengths_mask([5, 2, 1], 5)
    bad = logits.clone()
    bad[0, 1] = -INF  # fully masked: log_softmax is NaN
    bad[2, 0, 4] = NAN  # the only token of its response
    x = bad.clone().requires_grad_(True)
    reg = entropy_regularizer(entropy_from_logits(x), mask)
    assert torch.isfinite(reg)
    keep = mask.clone()
    keep[0, 1] = keep[2, 0] = 0
    want = entropy_regularizer(entropy_from_logits(logits), keep)
    torch.testing.assert_close(reg, want, rtol=1e-6, atol=1e-7)
    assert guards.pop()["guard/nonfinite_entropy"] == 2


# --- the whole chain, fuzzed ----------------------------------------------------------------------------

EDITS = st.lists(
    st.tuples(
        st.sampled_from(["nan", "posinf", "neginf_row", "equal_row", "nan_row", "huge"]),
        st.integers(0, 3),
        st.integers(0, 5),
        st.booleans(),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    lengths=st.lists(st.integers(0, 6), min_size=4, max_size=4),
    edits=EDITS,
    rewards=st.lists(st.sampled_from([0.0, 1.0, 0.5, NAN, INF, -INF]), min_size=4, max_size=4),
    old_shift=st.sampled_from([0.0, 1.0, 150.0, -150.0, NAN]),
    method=st.sampled_from(sorted(SCORES)),
    granularity=st.sampled_from(["response", "batch"]),
    aggregation=st.sampled_from(AGGS),
    seed=st.integers(0, 2**16),
)
def test_no_nan_or_inf_reaches_the_loss(dtype, lengths, edits, rewards, old_shift, method, granularity,
                                        aggregation, seed):  # fmt: skip
    """Logits → statistics → scores → selection → advantages → loss (+ entropy term) with degenerate
    inputs anywhere: the loss and its gradient with respect to the log-probs are finite."""
    g = torch.Generator().manual_seed(seed)
    B, T, V = 4, 6, 19
    mask = lengths_mask(lengths, T)
    logits = torch.randn(B, T, V, generator=g) * 4
    logits_p = logits + torch.randn(B, T, V, generator=g)
    for kind, b, t, perturbed in edits:
        z = logits_p if perturbed else logits
        if kind == "nan":
            z[b, t, 3] = NAN
        elif kind == "posinf":
            z[b, t, 1] = INF
        elif kind == "neginf_row":
            z[b, t] = -INF
        elif kind == "equal_row":
            z[b, t] = 2.5
        elif kind == "nan_row":
            z[b, t] = NAN
        else:
            z[b, t] = z[b, t] * 1e4
    logits, logits_p = logits.to(dtype), logits_p.to(dtype)

    stats = token_stats(logits, logits_p, mask, chunk_size=4)
    assert all_finite(stats)
    scores = token_scores(stats, mask, method, generator=g)
    assert torch.isfinite(scores).all()
    token_mask = select_tokens(scores, mask, 0.3, granularity, "top", g)
    adv = group_advantages(torch.tensor(rewards), 2)
    assert torch.isfinite(adv).all()

    # Log-probs of the "sampled" token 0 under each pass stand in for the policy's.
    x = logits.float().clone().requires_grad_(True)
    logps = torch.log_softmax(x, -1)[..., 0]
    old = logps.detach() + old_shift
    loss, _ = policy_loss(
        logps, old, adv, mask, token_mask, aggregation=aggregation, ref_logps=old, beta=0.04
    )
    loss = loss + 0.01 * entropy_regularizer(entropy_from_logits(x), mask)
    assert torch.isfinite(loss)
    # The gradient with respect to the log-probs themselves is finite; only the model's own NaN
    # (a NaN logit) can make the gradient further upstream NaN.
    leaf = logps.detach().clone().requires_grad_(True)
    loss2, _ = policy_loss(
        leaf, old, adv, mask, token_mask, aggregation=aggregation, ref_logps=old, beta=0.04
    )
    (grad,) = torch.autograd.grad(loss2, leaf)
    assert torch.isfinite(loss2) and torch.isfinite(grad).all()
