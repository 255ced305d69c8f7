"""policy_loss / entropy_regularizer: hand-computed, float64 loop reference, gradient checks, masking."""

from __future__ import annotations

import math

import pytest
import torch

from visent.core.policy_loss import AGGREGATIONS, entropy_regularizer, policy_loss

AGGS = sorted(AGGREGATIONS)

# --- slow reference: Python floats, token by token, from METHOD §1 ----------------------------------------


def reference_loss(
    logps, old, adv, mask, tmask, agg, eps_low, eps_high, ref=None, beta=0.0, iw=None, max_len=None
):
    B, T = mask.shape
    pol, kl = {}, {}
    for b in range(B):
        for t in range(T):
            if mask[b, t] == 0:
                continue
            a = float(adv[b])
            if tmask[b, t] != 0:
                r = math.exp(float(logps[b, t]) - float(old[b, t]))
                c = min(max(r, 1 - eps_low), 1 + eps_high)
                loss = -min(r * a, c * a)
                pol[b, t] = loss * (float(iw[b, t]) if iw is not None else 1.0)
            if ref is not None:
                d = float(ref[b, t]) - float(logps[b, t])
                kl[b, t] = math.exp(d) - d - 1

    n_valid = int(mask.sum())

    def reduce(vals: dict) -> float:
        total = sum(vals.values())
        if agg == "selected_mean":
            return total / max(len(vals), 1)
        if agg == "token_mean":
            return total / max(n_valid, 1)
        if agg == "dr_grpo":
            return total / (B * (max_len or T))
        rows = {}
        for (b, _), v in vals.items():
            rows.setdefault(b, []).append(v)
        return sum(sum(v) / len(v) for v in rows.values()) / max(len(rows), 1)

    value = reduce(pol)
    if ref is not None and beta > 0:
        value += beta * reduce(kl)
    return value


def _odd_inputs(mask, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B, T = mask.shape
    logps = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    old = logps + 0.4 * torch.randn(B, T, generator=g, dtype=dtype)  # ratios spread across the clip range
    ref = logps + 0.3 * torch.randn(B, T, generator=g, dtype=dtype)
    adv = torch.randn(B, generator=g, dtype=dtype)
    tmask = (torch.rand(B, T, generator=g) < 0.4).to(dtype) * mask.to(dtype)
    tmask[:, 0] = mask[:, 0].to(dtype)  # every non-empty row keeps >= 1 token, as select_tokens guarantees
    iw = 0.5 + torch.rand(B, T, generator=g, dtype=dtype)
    return logps, old, ref, adv, tmask, iw


# --- hand-computed ---------------------------------------------------------------------------------------


def _hand():
    # log-ratios row 0: [ln 1.5, ln .5, 0], row 1: [ln 1.1, pad, pad]; A = [1, -1]
    # row 0 (A = 1):  t0 ρ=1.5 -> min(1.5, 1.2) = 1.2 -> ℓ = -1.2 (clipped high)
    #                 t1 ρ=.5  -> min(.5, .8)   = .5  -> ℓ = -.5
    #                 t2 ρ=1   -> ℓ = -1
    # row 1 (A = -1): t0 ρ=1.1 -> min(-1.1, -1.1)     -> ℓ = 1.1
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, 9.0, float("nan")]], dtype=torch.float64)
    log_ratio = torch.tensor(
        [[math.log(1.5), math.log(0.5), 0.0], [math.log(1.1), 0.0, 0.0]], dtype=torch.float64
    )
    old = logps - log_ratio
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    tmask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)  # drop row 0, t1
    # ref - logp: row 0 [0, ln 2, 0], row 1 [ln .5]: k3 = [0, 2 - ln2 - 1 = .306853, 0], [.5 + ln2 - 1 = .193147]
    ref = logps + torch.tensor([[0.0, math.log(2.0), 0.0], [math.log(0.5), 0.0, 0.0]], dtype=torch.float64)
    return logps, old, adv, mask, tmask, ref


@pytest.mark.parametrize(
    ("aggregation", "kwargs", "expected"),
    [
        # selected tokens: -1.2, -1, 1.1 -> -1.1 / 3
        ("selected_mean", {}, -1.1 / 3),
        # same sum over the 4 valid tokens
        ("token_mean", {}, -1.1 / 4),
        # row 0: (-1.2 - 1) / 2 = -1.1, row 1: 1.1 -> mean 0
        ("sequence_mean", {}, 0.0),
        # Σ / (B · T) = -1.1 / 6, or / (2 · 5) with max_completion_length 5
        ("dr_grpo", {}, -1.1 / 6),
        ("dr_grpo", {"max_completion_length": 5}, -1.1 / 10),
        # global normaliser replaces Σ w
        ("selected_mean", {"normalizer": 11.0}, -0.1),
    ],
)
def test_hand_computed_aggregations(aggregation, kwargs, expected):
    logps, old, adv, mask, tmask, _ = _hand()
    loss, m = policy_loss(logps, old, adv, mask, tmask, aggregation=aggregation, **kwargs)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # clip metrics over the 3 selected tokens: one clipped high (row 0, t0 with A > 0), none low
    assert m["clip_ratio/high_mean"].item() == pytest.approx(1 / 3)
    assert m["clip_ratio/low_mean"].item() == 0.0
    assert m["clip_ratio/region_mean"].item() == pytest.approx(1 / 3)
    assert m["policy_loss"].item() == pytest.approx(expected, abs=1e-12)


def test_hand_computed_without_token_mask():
    logps, old, adv, mask, _, _ = _hand()
    # all four valid tokens: (-1.2 - .5 - 1 + 1.1) / 4 = -.4
    loss, _ = policy_loss(logps, old, adv, mask)
    assert loss.item() == pytest.approx(-0.4, abs=1e-12)


def test_hand_computed_kl_uses_all_valid_tokens():
    logps, old, adv, mask, tmask, ref = _hand()
    # KL over the 4 valid tokens (including the unselected row 0, t1): (.306853 + .193147) / 4 = .125
    loss, m = policy_loss(logps, old, adv, mask, tmask, ref_logps=ref, beta=0.1)
    assert m["kl"].item() == pytest.approx(0.125, abs=1e-12)
    assert loss.item() == pytest.approx(-1.1 / 3 + 0.1 * 0.125, abs=1e-12)
    # sequence mean: row 0 .306853 / 3, row 1 .193147 -> (.102284 + .193147) / 2 = .147716
    _, m = policy_loss(logps, old, adv, mask, tmask, ref_logps=ref, beta=0.1, aggregation="sequence_mean")
    assert m["kl"].item() == pytest.approx((2 - math.log(2) - 1) / 6 + (0.5 + math.log(2) - 1) / 2, abs=1e-12)


def test_importance_weights_scale_policy_tokens():
    logps, old, adv, mask, tmask, _ = _hand()
    iw = torch.tensor([[2.0, 5.0, 0.5], [1.0, float("nan"), 3.0]], dtype=torch.float64)
    # (-1.2·2 - 1·.5 + 1.1·1) / 3 = -1.8 / 3 = -.6 ; the NaN sits at padding and is never read
    loss, _ = policy_loss(logps, old, adv, mask, tmask, importance_weights=iw)
    assert loss.item() == pytest.approx(-0.6, abs=1e-12)


# --- float64 reference on odd shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", AGGS)
@pytest.mark.parametrize("with_extras", [False, True])
def test_matches_reference_on_odd_shape(aggregation, with_extras, odd_mask):
    mask = odd_mask.double()
    logps, old, ref, adv, tmask, iw = _odd_inputs(mask, seed=3)
    kw = {"ref_logps": ref, "beta": 0.05, "importance_weights": iw} if with_extras else {}
    loss, _ = policy_loss(
        logps,
        old,
        adv,
        mask,
        tmask,
        eps_low=0.2,
        eps_high=0.28,
        aggregation=aggregation,
        max_completion_length=17,
        **kw,
    )
    expected = reference_loss(
        logps, old, adv, mask, tmask, aggregation, 0.2, 0.28,
        ref=ref if with_extras else None, beta=0.05 if with_extras else 0.0, iw=iw if with_extras else None, max_len=17,
    )  # fmt: skip
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_float32_close_to_float64(odd_mask):
    logps, old, ref, adv, tmask, _ = _odd_inputs(odd_mask.double(), seed=4)
    for aggregation in AGGS:
        l64, _ = policy_loss(
            logps, old, adv, odd_mask, tmask, aggregation=aggregation, ref_logps=ref, beta=0.1
        )
        l32, _ = policy_loss(
            logps.float(), old.float(), adv.float(), odd_mask, tmask.float(), aggregation=aggregation,
            ref_logps=ref.float(), beta=0.1,
        )  # fmt: skip
        assert l32.dtype == torch.float32 and abs(l32.item() - l64.item()) < 1e-5


def test_on_policy_default_is_minus_mean_advantage(odd_mask):
    # old_logps None -> ρ = 1 everywhere, loss = -Σ A w / Σ w, and dloss/dlogp = -A / Σ w at selected tokens
    mask = odd_mask.double()
    logps, _, _, adv, tmask, _ = _odd_inputs(mask, seed=5)
    logps.requires_grad_(True)
    loss, m = policy_loss(logps, None, adv, mask, tmask)
    n = tmask.sum()
    assert loss.item() == pytest.approx(-(adv[:, None] * tmask).sum().item() / n.item(), rel=1e-12)
    (grad,) = torch.autograd.grad(loss, logps)
    torch.testing.assert_close(grad, -adv[:, None].expand_as(tmask) * tmask / n)
    assert m["clip_ratio/region_mean"].item() == 0.0


# --- gradients ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", AGGS)
def test_gradcheck(aggregation):
    mask = torch.tensor([[1.0] * 5, [1.0, 1.0, 0, 0, 0], [1.0, 0, 0, 0, 0]], dtype=torch.float64)
    logps, old, ref, adv, tmask, iw = _odd_inputs(mask, seed=6)
    tmask[2, 0] = 1.0
    logps.requires_grad_(True)

    def f(lp):
        return policy_loss(
            lp, old, adv, mask, tmask, aggregation=aggregation, ref_logps=ref, beta=0.1, importance_weights=iw
        )[0]

    assert torch.autograd.gradcheck(f, (logps,), eps=1e-6, atol=1e-7)


def test_no_policy_gradient_outside_the_token_mask(odd_mask):
    mask = odd_mask.double()
    logps, old, _, adv, tmask, _ = _odd_inputs(mask, seed=7)
    # poison every position the policy term must not read: huge ratios at unselected tokens, NaN at padding
    logps = torch.where(tmask.bool(), logps, torch.tensor(80.0, dtype=torch.float64))
    logps = torch.where(mask.bool(), logps, torch.tensor(float("nan"), dtype=torch.float64))
    logps.requires_grad_(True)
    for aggregation in AGGS:
        loss, _ = policy_loss(logps, old, adv, mask, tmask, aggregation=aggregation)
        (grad,) = torch.autograd.grad(loss, logps)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert (grad[tmask == 0] == 0).all()
        assert (grad[tmask == 1] != 0).float().mean() > 0.5  # and the selected ones do learn


def test_kl_gradient_reaches_unselected_tokens(odd_mask):
    # with β > 0 the unselected valid tokens get exactly the KL term's gradient
    mask = odd_mask.double()
    logps, old, ref, adv, tmask, _ = _odd_inputs(mask, seed=8)
    logps.requires_grad_(True)
    loss, _ = policy_loss(logps, old, adv, mask, tmask, ref_logps=ref, beta=0.2)
    (grad,) = torch.autograd.grad(loss, logps)
    d = ref - logps.detach()
    kl_grad = 0.2 * (1.0 - torch.exp(d)) * mask / mask.sum()  # d/dlogp of β Σ (e^d - d - 1) / Σ m
    unselected = (mask == 1) & (tmask == 0)
    torch.testing.assert_close(grad[unselected], kl_grad[unselected])
    assert (grad[mask == 0] == 0).all()


def test_selection_never_changes_the_kl_term(odd_mask):
    mask = odd_mask.double()
    logps, old, ref, adv, tmask, _ = _odd_inputs(mask, seed=9)
    for aggregation in AGGS:
        kls = [
            policy_loss(logps, old, adv, mask, tm, aggregation=aggregation, ref_logps=ref, beta=0.1)[1]["kl"]
            for tm in (None, tmask, torch.zeros_like(tmask))
        ]
        assert kls[0] == kls[1] == kls[2] and kls[0] > 0


def test_global_normalizer_makes_micro_batches_add_up(odd_mask):
    # Two micro-batches, each normalised by the whole batch's count, sum to the whole-batch loss.
    mask = odd_mask.double()
    logps, old, ref, adv, tmask, _ = _odd_inputs(mask, seed=10)
    for aggregation, pol_n, kl_n in [
        ("selected_mean", tmask.sum(), mask.sum()),
        ("token_mean", mask.sum(), mask.sum()),
        ("dr_grpo", float(mask.shape[0] * mask.shape[1]), None),
    ]:
        full, _ = policy_loss(logps, old, adv, mask, tmask, aggregation=aggregation, ref_logps=ref, beta=0.1)
        parts = [
            policy_loss(
                logps[s], old[s], adv[s], mask[s], tmask[s], aggregation=aggregation, ref_logps=ref[s], beta=0.1,
                normalizer=float(pol_n), kl_normalizer=None if kl_n is None else float(kl_n),
                max_completion_length=mask.shape[1],
            )[0]
            for s in (slice(0, 3), slice(3, None))
        ]  # fmt: skip
        assert (parts[0] + parts[1]).item() == pytest.approx(full.item(), rel=1e-12), aggregation


def test_empty_selection_gives_zero_loss_that_still_backpropagates():
    logps = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 3)
    for aggregation in AGGS:
        loss, m = policy_loss(logps, None, torch.ones(2), mask, aggregation=aggregation)
        loss.backward()
        assert loss.item() == 0.0 and all(torch.isfinite(v) for v in m.values())
        assert (logps.grad == 0).all()


def test_metrics_are_detached_zero_dim_tensors(odd_mask):
    mask = odd_mask.double()
    logps, old, ref, adv, tmask, _ = _odd_inputs(mask, seed=11)
    logps.requires_grad_(True)
    loss, m = policy_loss(logps, old, adv, mask, tmask, ref_logps=ref, beta=0.1)
    assert loss.requires_grad and loss.dim() == 0
    assert set(m) == {
        "policy_loss",
        "kl",
        "clip_ratio/low_mean",
        "clip_ratio/high_mean",
        "clip_ratio/region_mean",
    }
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in m.values())
    assert "kl" not in policy_loss(logps, old, adv, mask, tmask)[1]


def test_bad_inputs_are_rejected(odd_mask):
    mask = odd_mask.double()
    logps, old, ref, adv, tmask, _ = _odd_inputs(mask, seed=0)
    with pytest.raises(ValueError, match="valid: selected_mean, token_mean, sequence_mean, dr_grpo"):
        policy_loss(logps, old, adv, mask, aggregation="seq-mean")
    with pytest.raises(ValueError, match="beta > 0 needs ref_logps"):
        policy_loss(logps, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="token_mask must have the shape"):
        policy_loss(logps, old, adv, mask, tmask[:, :4])
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(logps, old, adv[:3], mask)
    with pytest.raises(ValueError, match="eps_low"):
        policy_loss(logps, old, adv, mask, eps_low=1.0)
    with pytest.raises(ValueError, match="kl_normalizer"):
        policy_loss(logps, old, adv, mask, tmask, ref_logps=ref, beta=0.1, normalizer=10.0)
    with pytest.raises(ValueError, match="normalizer must be > 0"):
        policy_loss(logps, old, adv, mask, normalizer=0.0)


# --- entropy regulariser --------------------------------------------------------------------------------------


def test_entropy_regularizer_hand_computed():
    # row means: (1 + 2 + 3) / 3 = 2, 4 / 1 = 4; the all-padding row is not counted -> -(2 + 4) / 2 = -3
    h = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, float("nan")], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert entropy_regularizer(h, mask).item() == pytest.approx(-3.0)


def test_entropy_regularizer_reference_and_gradient(odd_mask):
    g = torch.Generator().manual_seed(12)
    h = (torch.rand(odd_mask.shape, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    rows = [
        sum(float(h.detach()[b, t]) for t in range(h.shape[1]) if odd_mask[b, t]) / odd_mask[b].sum().item()
        for b in range(h.shape[0])
        if odd_mask[b].sum() > 0
    ]
    assert entropy_regularizer(h, odd_mask).item() == pytest.approx(-sum(rows) / len(rows), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: entropy_regularizer(x, odd_mask), (h,))


@pytest.mark.parametrize("coef", [0.5, -0.5])
def test_positive_coefficient_raises_entropy(coef):
    # the sign convention the trainer relies on: loss += coef · L_ent, one SGD step moves entropy with sign(coef)
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 5)

    def ent(z):
        logp = torch.log_softmax(z, -1)
        return -(logp.exp() * logp).sum(-1)

    before = ent(logits).mean().item()
    (coef * entropy_regularizer(ent(logits), mask)).backward()
    with torch.no_grad():
        after = ent(logits - 0.5 * logits.grad).mean().item()
    assert (after - before) * coef > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_without_host_sync(odd_mask):
    mask = odd_mask.double()
    inputs = _odd_inputs(mask, seed=22)
    logps, old, ref, adv, tmask, iw = (x.cuda() for x in inputs)
    logps.requires_grad_(True)
    cuda_mask = mask.cuda()
    norm, kl_norm = torch.tensor(9.0, device="cuda"), torch.tensor(11.0, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = {}
        for aggregation in AGGS:
            loss, m = policy_loss(logps, old, adv, cuda_mask, tmask, aggregation=aggregation, ref_logps=ref,
                                  beta=0.1, importance_weights=iw, normalizer=norm, kl_normalizer=kl_norm)  # fmt: skip
            (grad,) = torch.autograd.grad(loss, logps)
            out[aggregation] = (loss, grad, m)
        ent = entropy_regularizer(logps.exp(), cuda_mask)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu_logps = inputs[0].clone().requires_grad_(True)
    for aggregation, (loss, grad, m) in out.items():
        cpu_loss, cpu_m = policy_loss(cpu_logps, inputs[1], inputs[3], mask, inputs[4], aggregation=aggregation,
                                      ref_logps=inputs[2], beta=0.1, importance_weights=inputs[5], normalizer=9.0,
                                      kl_normalizer=11.0)  # fmt: skip
        (cpu_grad,) = torch.autograd.grad(cpu_loss, cpu_logps)
        torch.testing.assert_close(loss.cpu(), cpu_loss.detach())
        torch.testing.assert_close(grad.cpu(), cpu_grad)
        for k in cpu_m:
            torch.testing.assert_close(m[k].cpu(), cpu_m[k])
    torch.testing.assert_close(ent.cpu(), entropy_regularizer(inputs[0].exp(), mask))
