"""token_stats / token_stats_from_hidden against hand-computed values and a float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from visent.core.stats import entropy_from_logits, token_stats, token_stats_from_hidden


def reference_stats(logits, logits_p, mask, temperature=1.0):
    """Slow float64 reference written straight from METHOD.md §2, one token at a time."""
    B, T, _ = logits.shape
    out = {k: torch.zeros(B, T, dtype=torch.float64) for k in ("h", "hp", "jsd", "kl")}
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            p = torch.softmax(logits[b, t].double() / temperature, -1)
            q = torch.softmax(logits_p[b, t].double() / temperature, -1)
            m = 0.5 * (p + q)

            def kl(x, y):
                nz = x > 0
                return float((x[nz] * (x[nz].log() - y[nz].log())).sum())

            def ent(x):
                nz = x > 0
                return float(-(x[nz] * x[nz].log()).sum())

            out["h"][b, t] = ent(p)
            out["hp"][b, t] = ent(q)
            out["jsd"][b, t] = max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))
            out["kl"][b, t] = max(0.0, kl(p, q))
    return out


def odd_case(seed=0, B=5, T=13, V=1271, dtype=torch.float32, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g) * scale).to(dtype)
    logits_p = (logits.float() + torch.randn(B, T, V, generator=g) * 0.7).to(dtype)
    lengths = torch.tensor([13, 1, 0, 7, 12])[:B]  # full, single-token, all-padding, partial
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return logits, logits_p, mask


def assert_matches(stats, ref, atol):
    for name, key in (("entropy", "h"), ("entropy_perturbed", "hp"), ("jsd", "jsd"), ("kl", "kl")):
        got = getattr(stats, name)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), ref[key], atol=atol, rtol=0, msg=name)


def test_hand_computed_two_token_vocabulary():
    # P = softmax([0, 0]) = (1/2, 1/2); Q = softmax([log 3, 0]) = (3/4, 1/4).
    # H = log 2; H' = -(3/4 log 3/4 + 1/4 log 1/4) = log 4 - (3/4) log 3.
    # M = (5/8, 3/8).  KL(P||M) = 1/2 log(4/5) + 1/2 log(4/3);  KL(Q||M) = 3/4 log(6/5) + 1/4 log(2/3).
    # KL(P||Q) = 1/2 log(2/3) + 1/2 log 2.
    logits = torch.tensor([[[0.0, 0.0]]])
    logits_p = torch.tensor([[[math.log(3.0), 0.0]]])
    s = token_stats(logits, logits_p, torch.ones(1, 1))
    h = math.log(2)
    hp = math.log(4) - 0.75 * math.log(3)
    jsd = 0.5 * (0.5 * math.log(4 / 5) + 0.5 * math.log(4 / 3)) + 0.5 * (
        0.75 * math.log(6 / 5) + 0.25 * math.log(2 / 3)
    )
    kl = 0.5 * math.log(2 / 3) + 0.5 * math.log(2)
    assert s.entropy.item() == pytest.approx(h, abs=1e-6)
    assert s.entropy_perturbed.item() == pytest.approx(hp, abs=1e-6)
    assert s.jsd.item() == pytest.approx(jsd, abs=1e-6)
    assert s.kl.item() == pytest.approx(kl, abs=1e-6)
    assert s.gap.item() == pytest.approx(hp - h, abs=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_float64_reference_on_odd_shapes(chunk_size, temperature):
    logits, logits_p, mask = odd_case()
    s = token_stats(logits, logits_p, mask, temperature=temperature, chunk_size=chunk_size)
    assert_matches(s, reference_stats(logits, logits_p, mask, temperature), atol=1e-5)
    # padding is exactly zero, the all-padding row included
    for name in ("entropy", "entropy_perturbed", "jsd", "kl"):
        assert (getattr(s, name)[mask == 0] == 0).all()


def test_from_hidden_matches_reference_and_logits_path():
    g = torch.Generator().manual_seed(1)
    B, T, D, V = 3, 11, 24, 997
    hidden = torch.randn(B, T, D, generator=g)
    hidden_p = hidden + 0.3 * torch.randn(B, T, D, generator=g)
    weight = torch.randn(V, D, generator=g) * 0.5
    bias = torch.randn(V, generator=g) * 0.1
    mask = (torch.arange(T)[None] < torch.tensor([11, 1, 6])[:, None]).long()
    s = token_stats_from_hidden(hidden, hidden_p, weight, mask, chunk_size=5, lm_head_bias=bias)
    logits, logits_p = hidden @ weight.T + bias, hidden_p @ weight.T + bias
    assert_matches(s, reference_stats(logits, logits_p, mask), atol=1e-5)


def test_identical_passes_give_zero_divergence():
    logits, _, mask = odd_case(seed=3)
    s = token_stats(logits, logits.clone(), mask)
    assert (s.jsd == 0).all() and (s.kl == 0).all()
    assert (s.gap == 0).all()


@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 5e-2), (torch.float16, 5e-3)])
def test_half_precision_inputs_are_finite_and_close(dtype, atol):
    # Tolerance is against float64 on the *rounded* half-precision logits, so it measures our
    # arithmetic, not the rounding of the inputs; we upcast per chunk, so it is float32-tight.
    logits, logits_p, mask = odd_case(dtype=dtype)
    s = token_stats(logits, logits_p, mask)
    for name in ("entropy", "entropy_perturbed", "jsd", "kl"):
        assert torch.isfinite(getattr(s, name)).all()
    assert_matches(s, reference_stats(logits.float(), logits_p.float(), mask), atol=1e-5)
    # and the half-precision weights path of the hidden-state form
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 9, 16, generator=g).to(dtype)
    weight = torch.randn(301, 16, generator=g).to(dtype)
    m = torch.ones(2, 9)
    sh = token_stats_from_hidden(hidden, hidden.flip(1), weight, m, chunk_size=4)
    assert torch.isfinite(sh.jsd).all()
    # The logits are computed in float32 from the half-precision hidden states and weights (no rounding of
    # the logits to the half-precision grid): float32-tight against float64 of the same inputs.
    exact = reference_stats(hidden.double() @ weight.double().T, hidden.flip(1).double() @ weight.double().T, m)
    for key, field in (("h", "entropy"), ("jsd", "jsd"), ("kl", "kl")):
        torch.testing.assert_close(getattr(sh, field).double(), exact[key], atol=1e-4, rtol=0)
    # Control: the statistics of half-precision logits (the rounding this avoids) are measurably further off.
    rounded = reference_stats((hidden @ weight.T).double(), (hidden.flip(1) @ weight.T).double(), m)
    assert float((rounded["h"] - exact["h"]).abs().max()) > 10 * float((sh.entropy.double() - exact["h"]).abs().max())
    # Vocabulary blocks (a budget below V·D) give the logits of one block (up to summation order).
    from visent.core.stats import _project

    whole = _project(hidden[0], weight, None, budget=10**9)
    torch.testing.assert_close(_project(hidden[0], weight, None, budget=3 * 16), whole, atol=1e-5, rtol=1e-5)


def test_masked_vocabulary_and_degenerate_rows_stay_finite():
    V = 50
    logits = torch.randn(2, 4, V)
    logits[..., 10:] = float("-inf")  # a masked vocabulary
    logits_p = logits.clone()
    logits_p[..., :10] += torch.randn(2, 4, 10)
    logits_p[0, 0] = float("-inf")  # a fully masked row: defined as zero, never NaN
    logits[1, 1] = 5.0  # all-equal logits: entropy log V... of the finite support
    s = token_stats(logits, logits_p, torch.ones(2, 4))
    for name in ("entropy", "entropy_perturbed", "jsd", "kl"):
        assert torch.isfinite(getattr(s, name)).all(), name
    assert s.entropy[1, 1].item() == pytest.approx(math.log(V), abs=1e-5)
    ref = reference_stats(logits, logits_p, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))
    torch.testing.assert_close(s.jsd[0, 1:].double(), ref["jsd"][0, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(s.entropy[1].double(), ref["h"][1], atol=1e-5, rtol=0)


def test_entropy_from_logits_values_and_gradient():
    logits, _, _ = odd_case(B=2, T=5, V=37, scale=2.0)
    ref = reference_stats(logits, logits, torch.ones(2, 5))["h"]
    x = logits.double().requires_grad_(True)
    h = entropy_from_logits(x)
    torch.testing.assert_close(h.double(), ref, atol=1e-5, rtol=0)
    # dH/dz = -p * (log p + H): check against autograd of the float64 reference form
    h.sum().backward()
    p = torch.softmax(logits.double(), -1)
    expected = -p * (p.log() + ref[..., None])
    torch.testing.assert_close(x.grad, expected, atol=1e-5, rtol=0)
    # masked vocabulary: zero entropy contribution and a finite gradient
    y = torch.tensor([[[0.0, 1.0, float("-inf")]]], requires_grad=True)
    entropy_from_logits(y).sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad[0, 0, 2] == 0


def test_bad_shapes_fail_clearly():
    with pytest.raises(ValueError, match="mask has shape"):
        token_stats(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="lm_head_weight"):
        token_stats_from_hidden(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), torch.zeros(10, 7), torch.ones(1, 2))
