"""On CUDA the guards cost no host synchronisation and count exactly what they count on CPU.

Scores, selection, advantages, the policy loss and the entropy regulariser run on the training hot path,
so their guards must not call ``.item()`` or index with booleans; ``torch.cuda.set_sync_debug_mode("error")``
turns any synchronising call into an exception. (The token statistics synchronise by design, once per
batch, to find the valid rows; they are checked for equal results and counts only.)
"""

from __future__ import annotations

import pytest
import torch

from visent.core import guards
from visent.core.advantages import group_advantages
from visent.core.policy_loss import AGGREGATIONS, entropy_regularizer, policy_loss
from visent.core.scores import SCORES, token_scores
from visent.core.selection import select_tokens
from visent.core.stats import TokenStats, entropy_from_logits, token_stats

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
NAN, INF = float("nan"), float("inf")


def dirty_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, T, V = 6, 9, 257
    mask = (torch.arange(T)[None, :] < torch.tensor([9, 1, 0, 5, 9, 3])[:, None]).float()
    logits = torch.randn(B, T, V, generator=g) * 3
    logits_p = logits + torch.randn(B, T, V, generator=g)
    logits[0, 2, 7] = NAN
    logits_p[3, 1] = -INF
    logits[4, 4, 0] = INF
    logps = torch.log_softmax(logits, -1)[..., 1]
    old = logps + 0.1 * torch.randn(B, T, generator=g)
    old[4, 0] = logps[4, 0] - 60.0  # log-ratio beyond the clamp
    ref = logps + 0.1 * torch.randn(B, T, generator=g)
    rewards = torch.tensor([1.0, 0.0, INF, 1.0, 0.5, 0.5])
    return logits, logits_p, mask, logps, old, ref, rewards


def guarded_hot_path(stats, mask, logits, logps, old, ref, rewards, method, aggregation, granularity):
    scores = token_scores(stats, mask, method, generator=None if method != "random" else torch.Generator(
        device=mask.device).manual_seed(0))  # fmt: skip
    # ratio 1: every valid token, so the comparison with CPU does not hinge on near-tied float scores
    # (selection's own CUDA parity is tested in tests/unit/core); the guard inside still runs.
    tmask = select_tokens(scores, mask, 1.0, granularity, "top")
    adv = group_advantages(rewards, 2)
    x = logps.clone().requires_grad_(True)
    loss, _ = policy_loss(x, old, adv, mask, tmask, aggregation=aggregation, ref_logps=ref, beta=0.04)
    loss = loss + 0.01 * entropy_regularizer(entropy_from_logits(logits), mask)
    (grad,) = torch.autograd.grad(loss, x)
    return scores, tmask, adv, loss.detach(), grad


@pytest.mark.parametrize("method", ["vepo", "entropy", "product"])
@pytest.mark.parametrize("aggregation", list(AGGREGATIONS))
@pytest.mark.parametrize("granularity", ["response", "batch"])
def test_guards_match_cpu_without_host_sync(method, aggregation, granularity):
    assert method in SCORES
    cpu = dirty_batch()
    guards.GUARDS.reset()
    cpu_stats = token_stats(cpu[0], cpu[1], cpu[2])
    cpu_out = guarded_hot_path(cpu_stats, cpu[2], cpu[0], *cpu[3:], method, aggregation, granularity)
    cpu_counts = guards.pop()

    gpu = [t.cuda() for t in cpu]
    stats = token_stats(gpu[0], gpu[1], gpu[2])  # synchronises by design (valid-row lookup)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = guarded_hot_path(stats, gpu[2], gpu[0], *gpu[3:], method, aggregation, granularity)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    counts = guards.pop()

    assert counts == cpu_counts and counts["guard/nonfinite_logits"] > 0 and counts["guard/log_ratio_clamped"] > 0
    for f in ("entropy", "entropy_perturbed", "jsd", "kl"):
        torch.testing.assert_close(getattr(stats, f).cpu(), getattr(cpu_stats, f), atol=1e-4, rtol=1e-4)
    for got, want in zip(out, cpu_out):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


def test_counter_accumulates_on_device_until_pop():
    c = guards.GuardCounter()
    flags = torch.tensor([True, False, True], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            c.count("guard/empty_response", flags)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert c._totals["guard/empty_response"].device.type == "cuda"
    assert c.pop()["guard/empty_response"] == 6


def test_stats_fields_are_finite_in_bf16_on_cuda():
    logits, logits_p, mask, *_ = dirty_batch(1)
    s = token_stats(logits.cuda().bfloat16(), logits_p.cuda().bfloat16(), mask.cuda())
    assert all(torch.isfinite(getattr(s, f)).all() for f in ("entropy", "entropy_perturbed", "jsd", "kl"))
    assert isinstance(s, TokenStats)
