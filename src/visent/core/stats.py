"""Per-token statistics of a clean and a perturbed teacher-forced pass (METHOD.md §2).

For every valid response token t, with logits divided by the sampling temperature τ:

    P_t = softmax(z_t),  Q_t = softmax(z'_t)                 (full vocabulary, natural logs)
    H_t  = -Σ_v P_t(v) log P_t(v)        entropy of the clean pass
    H'_t = -Σ_v Q_t(v) log Q_t(v)        entropy of the perturbed pass
    JSD_t = ½ KL(P_t‖M_t) + ½ KL(Q_t‖M_t),   log M_t = logaddexp(log P_t, log Q_t) − log 2, clamped ≥ 0
    KL_t  = KL(P_t‖Q_t)                  (only for the KL ablation score), clamped ≥ 0
    ΔH_t = H'_t − H_t                    (``TokenStats.gap``)

Memory. A Qwen vocabulary has V ≈ 152k entries, so materialising ``(B, T, V)`` float32 probabilities
for both passes costs gigabytes, several times over in temporaries. Here tokens are processed in
chunks: at most about ``chunk_size × V`` float32 logits-sized values are alive at once, whatever B·T
is. Inside a chunk the two passes each take ``rows = 2·chunk_size/5`` rows of log-probabilities,
and the element-wise work runs on sub-blocks of at most ``rows/8`` rows with at most four temporaries
(2·rows + 4·rows/8 = chunk_size rows in all). Padding positions are never computed.

Numerics. Every chunk is converted to float32 before the softmax, so bf16/fp16 inputs are safe. From
hidden states, the logits themselves are computed in float32 (half-precision LM-head weights are upcast
a block of vocabulary rows at a time), so they are not rounded to the half-precision grid first.
Log-probabilities are clamped at the smallest finite float32 so that masked vocabulary entries
(−inf logits) give ``0 · log 0 = 0`` instead of NaN. A token whose distribution is undefined (a NaN
or +inf logit, or every logit −inf) gets all-zero statistics and is counted as
``guard/nonfinite_logits`` (:mod:`visent.core.guards`). KL and JSD are summed from the element-wise
differences ``log P − log M`` rather than from differences of large sums, which keeps float32 close
to float64 even for nearly identical distributions.

The statistics never carry gradient: they only decide which tokens carry the policy gradient.
``entropy_from_logits`` is the differentiable entropy for the entropy regulariser.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from visent.core import guards

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "TokenStats",
    "entropy_from_logits",
    "token_stats",
    "token_stats_from_hidden",
]

#: Tokens per chunk: 512 × 152k × 4 B ≈ 310 MB of logits-sized temporaries at most.
DEFAULT_CHUNK_SIZE = 512

_LOG2 = math.log(2.0)
_F32_MIN = torch.finfo(torch.float32).min
#: CPU sub-block size in values: 8 rows of a 152k vocabulary.
_CPU_SUB_ELEMENTS = 8 * 152_064


@dataclass
class TokenStats:
    """Statistics of the clean and perturbed passes, each ``(B, T)`` float32, zero at padding.

    Attributes:
        entropy: ``H_t`` of the clean pass, nats.
        entropy_perturbed: ``H'_t`` of the perturbed pass, nats.
        jsd: Jensen–Shannon divergence between the two next-token distributions, nats in [0, log 2].
        kl: ``KL(P_t‖Q_t)``, nats ≥ 0.
    """

    entropy: torch.Tensor
    entropy_perturbed: torch.Tensor
    jsd: torch.Tensor
    kl: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        """Entropy gap ``ΔH_t = H'_t − H_t``, ``(B, T)``; positive when the perturbation adds doubt."""
        return self.entropy_perturbed - self.entropy


def _check_mask(mask: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if mask.shape != torch.Size(shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but {what} has (B, T) = {tuple(shape)}")
    return mask.reshape(-1).bool()


def _rows_per_pass(chunk_size: int, device: torch.device, vocab: int) -> tuple[int, int]:
    """Rows of each pass per chunk and rows per element-wise sub-block (see module docstring).

    On a CPU, sub-blocks are also capped at ``_CPU_SUB_ELEMENTS`` values (8 rows of a Qwen vocabulary,
    ~4.9 MB per temporary): that stays cache-friendly. The cap is in values, not rows, because with a
    small vocabulary (the lab's few hundred tokens) 8-row blocks made the loop overhead-bound (a dozen
    tiny ops per 8 tokens). On a GPU there is no cap: every sub-block costs a dozen kernel launches,
    and small ones made the pass launch-bound (measured on an H100, BENCHMARKS.md).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = max(1, (2 * chunk_size) // 5)
    sub = rows // 8
    if device.type == "cpu":
        sub = min(sub, max(8, _CPU_SUB_ELEMENTS // max(1, vocab)))
    return rows, max(1, sub)


def _log_softmax_into(src: torch.Tensor, buf: torch.Tensor, temperature: float, sub: int) -> torch.Tensor:
    """``buf[:n] = log_softmax(src / temperature)`` in float32 for rows ``src`` ``(n, V)``, any dtype.

    Works on sub-blocks so that ``logsumexp``'s internal temporary is only ``(sub, V)``; the result is
    written straight into the reusable buffer, so no full-size copy of the input is ever made.
    """
    n = src.shape[0]
    out = buf[:n]
    for i in range(0, n, sub):
        block = out[i : i + sub]
        block.copy_(src[i : i + sub])
        if temperature != 1.0:
            block.div_(temperature)
        # A fully masked row (all −inf), a +inf or a NaN logit gives a non-finite lse and NaN
        # log-probs; ``_repair`` zeroes and counts such tokens once, after the statistics.
        block.sub_(torch.logsumexp(block, dim=-1, keepdim=True))
    # Clamping masked entries (−inf) to the smallest finite float makes 0 · log 0 = 0 exact and keeps
    # every later difference finite.
    return out.clamp_(min=_F32_MIN)


def _pair_stats(lp: torch.Tensor, lq: torch.Tensor, sub: int) -> torch.Tensor:
    """Entropy, perturbed entropy, JSD and KL for float32 log-prob blocks ``(n, V)`` → ``(4, n)``.

    With ``d = log Q − log P``: ``log P − log M = log 2 − softplus(d)`` and
    ``log Q − log M = log 2 − softplus(−d)``. Working from ``d`` makes identical distributions give
    exactly zero JSD and KL (``softplus(0)`` rounds to the same float as ``log 2``), and avoids
    subtracting nearly equal large log-probabilities.
    """
    out = lp.new_empty(4, lp.shape[0])
    for i in range(0, lp.shape[0], sub):
        a, b = lp[i : i + sub], lq[i : i + sub]
        p = a.exp()
        q = b.exp()
        out[0, i : i + sub] = -torch.linalg.vecdot(p, a)
        out[1, i : i + sub] = -torch.linalg.vecdot(q, b)
        d = b - a
        out[3, i : i + sub] = -torch.linalg.vecdot(p, d)
        # softplus(−d) = softplus(d) − d: one transcendental pass serves both halves of the JSD.
        t = torch.nn.functional.softplus(d).neg_().add_(_LOG2)  # log P − log M
        kl_pm = torch.linalg.vecdot(p, t)
        kl_qm = torch.linalg.vecdot(q, t.add_(d))  # log Q − log M
        out[2, i : i + sub] = 0.5 * (kl_pm + kl_qm)
    out[2:].clamp_(min=0.0)
    return out


def _repair(values: torch.Tensor) -> torch.Tensor:
    """Zero every token ``(4, N)`` column with a non-finite statistic, counting it (no host sync).

    Such a token had NaN or +inf logits, or no finite logit at all, in one of the passes: its
    distribution is undefined, so it gets the statistics of an uninformative token (all 0) instead of
    turning its response's normalised scores into NaN.
    """
    bad = ~torch.isfinite(values).all(dim=0)  # (N,)
    guards.count("guard/nonfinite_logits", bad)
    return values.masked_fill(bad, 0.0)


def _rows(idx: torch.Tensor, start: int, rows: int) -> torch.Tensor | slice:
    """Row selector for one chunk: a slice (a view, no copy) when the valid rows are contiguous."""
    sel = idx[start : start + rows]
    first, last = int(sel[0]), int(sel[-1])
    return slice(first, last + 1) if last - first + 1 == sel.numel() else sel


def _scatter(values: torch.Tensor, valid: torch.Tensor, shape: tuple[int, int]) -> TokenStats:
    """Place ``(4, N_valid)`` values into four zero-filled ``(B, T)`` tensors."""
    full = values.new_zeros(4, shape[0] * shape[1])
    full[:, valid] = values
    h, hp, jsd, kl = full.view(4, *shape).unbind(0)
    return TokenStats(entropy=h, entropy_perturbed=hp, jsd=jsd, kl=kl)


@torch.no_grad()
def token_stats(
    logits: torch.Tensor,
    logits_perturbed: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> TokenStats:
    """Statistics from two sets of logits.

    Args:
        logits: ``(B, T, V)`` clean-pass logits, any float dtype (bf16/fp16 are upcast per chunk).
        logits_perturbed: ``(B, T, V)`` perturbed-pass logits for the same tokens.
        mask: ``(B, T)`` 1 for valid response tokens, 0 for padding.
        temperature: sampling temperature τ; logits are divided by it.
        chunk_size: tokens per chunk; bounds temporaries at about ``chunk_size × V`` float32 values.

    Returns:
        ``TokenStats`` of ``(B, T)`` float32 tensors on the logits' device, zero at padding.
    """
    if logits.shape != logits_perturbed.shape or logits.dim() != 3:
        raise ValueError(
            f"logits and logits_perturbed must both be (B, T, V); got {tuple(logits.shape)} and "
            f"{tuple(logits_perturbed.shape)}"
        )
    bufs: list[torch.Tensor] = []  # one reusable float32 buffer per pass

    def log_probs(x: torch.Tensor, which: int, sub: int) -> torch.Tensor:
        if len(bufs) <= which:  # the first chunk is the largest: size the buffer by it
            bufs.append(torch.empty(x.shape, dtype=torch.float32, device=x.device))
        return _log_softmax_into(x, bufs[which], temperature, sub)

    return _chunked(logits, logits_perturbed, mask, temperature, chunk_size, "logits", log_probs, logits.shape[-1])


def _chunked(
    inputs: torch.Tensor,
    inputs_perturbed: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    chunk_size: int,
    what: str,
    log_probs: Callable[[torch.Tensor, int, int], torch.Tensor],
    vocab: int,
) -> TokenStats:
    """The shared driver: valid rows of ``(B, T, ·)`` inputs, a chunk at a time, into ``TokenStats``.

    ``log_probs(rows (n, ·), which, sub)`` turns a chunk of rows of pass ``which`` (0 clean, 1 perturbed)
    into float32 log-probabilities ``(n, V)``; the rest (masking, chunking, statistics, repair of undefined
    tokens, scattering back to ``(B, T)``) is the same for logits and hidden states.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    B, T = inputs.shape[:2]
    valid = _check_mask(mask, (B, T), what).to(inputs.device)
    idx = valid.nonzero().squeeze(1)
    rows, sub = _rows_per_pass(chunk_size, inputs.device, vocab)
    flat, flat_p = inputs.reshape(B * T, -1), inputs_perturbed.reshape(B * T, -1)
    parts = []
    for start in range(0, idx.numel(), rows):
        sel = _rows(idx, start, rows)
        lp = log_probs(flat[sel], 0, sub)
        lq = log_probs(flat_p[sel], 1, sub)
        parts.append(_pair_stats(lp, lq, sub))
        del lp, lq
    values = torch.cat(parts, dim=1) if parts else inputs.new_zeros(4, 0, dtype=torch.float32)
    return _scatter(_repair(values), valid, (B, T))


def _project(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, budget: int) -> torch.Tensor:
    """float32 logits ``(n, V)`` for hidden rows ``(n, D)``, multiplied in float32 whatever the dtypes.

    A half-precision matmul would round every logit to 8 (bf16) or 11 (fp16) mantissa bits before the
    float32 softmax: a floor under JSD and the entropy gap of two nearly equal passes (issue 20, item 5).
    Half-precision weights are never copied to float32 whole (a ``(V, D)`` temporary): they are upcast
    a block of vocabulary rows at a time, each block at most ``budget`` values (the chunk's own size).
    """
    h = h.float()
    if weight.dtype == torch.float32:
        out = h @ weight.T
        return out.add_(bias) if bias is not None else out
    V, D = weight.shape
    step = max(1, min(V, budget // max(1, D)))
    if step == V:
        out = h @ weight.float().T
    else:
        out = torch.empty(h.shape[0], V, dtype=torch.float32, device=h.device)
        for v in range(0, V, step):
            out[:, v : v + step] = h @ weight[v : v + step].float().T  # (n, step)
    if bias is not None:
        out.add_(bias.float())
    return out


@torch.no_grad()
def token_stats_from_hidden(
    hidden: torch.Tensor,
    hidden_perturbed: torch.Tensor,
    lm_head_weight: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lm_head_bias: torch.Tensor | None = None,
) -> TokenStats:
    """Statistics from final hidden states and the LM head, never materialising all logits.

    This is the form the trainer uses: the model returns ``(B, T, D)`` hidden states (D ≪ V), and
    logits are produced here a chunk of tokens at a time.

    Args:
        hidden: ``(B, T, D)`` final (post-norm) hidden states of the clean pass at the positions that
            predict each response token.
        hidden_perturbed: ``(B, T, D)`` the same for the perturbed pass.
        lm_head_weight: ``(V, D)`` output projection.
        mask: ``(B, T)`` 1 for valid response tokens.
        temperature: τ; logits are divided by it.
        chunk_size: tokens per chunk (see module docstring for the memory bound).
        lm_head_bias: optional ``(V,)`` bias.

    Returns:
        ``TokenStats`` of ``(B, T)`` float32 tensors, zero at padding.
    """
    if hidden.shape != hidden_perturbed.shape or hidden.dim() != 3:
        raise ValueError(
            f"hidden and hidden_perturbed must both be (B, T, D); got {tuple(hidden.shape)} and "
            f"{tuple(hidden_perturbed.shape)}"
        )
    if lm_head_weight.dim() != 2 or lm_head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"lm_head_weight must be (V, D={hidden.shape[-1]}); got {tuple(lm_head_weight.shape)}"
        )

    def log_probs(h: torch.Tensor, which: int, sub: int) -> torch.Tensor:
        # the projection's output is the buffer; log-softmax then runs in place on it
        z = _project(h, lm_head_weight, lm_head_bias, budget=h.shape[0] * lm_head_weight.shape[0])
        return _log_softmax_into(z, z, temperature, sub)

    return _chunked(
        hidden, hidden_perturbed, mask, temperature, chunk_size, "hidden", log_probs, lm_head_weight.shape[0]
    )


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Differentiable per-token entropy ``(B, T)`` float32 from logits ``(B, T, V)``.

    Used by the entropy regulariser, so gradients flow. Masked vocabulary entries (−inf logits)
    contribute exactly zero, with zero (not NaN) gradient.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    # clamp (not where): where() would still back-propagate 0 · (−inf) = NaN through the unused branch.
    logp = logp.clamp(min=_F32_MIN)
    return -(logp.exp() * logp).sum(-1)
