"""Mixed precision for training: fp32 master weights, and a refusal of weights that cannot take a step.

**The policy.** Released checkpoints are stored in bf16, and transformers (>= 5) loads a checkpoint in
its stored dtype. Trained in bf16, a weight can only move by a bf16 step, and at the learning rates of
RL fine-tuning (1e-6) almost no update is that large: the run trains nothing, silently. So:

- **Full fine-tuning**: ``visent train`` loads checkpoints in float32 unless ``model_init_kwargs`` names
  a ``dtype`` (``training_load_kwargs``), as TRL's own loader (``create_model_from_path``) does. The
  weights, their gradients and Adam's moments are fp32 (the "master weights"); with ``bf16: true`` (the
  default wherever the hardware has bf16) every forward runs under bf16 autocast (accelerate's
  ``mixed_precision``), so matmuls still run in bf16. Under DeepSpeed with ``bf16`` enabled, DeepSpeed
  keeps its own fp32 master copy in the optimizer whatever the load dtype.
- **LoRA**: the frozen base may be loaded in bf16 (``model_init_kwargs: {dtype: bfloat16}``) to halve
  its memory; PEFT keeps the adapter weights in fp32 (``autocast_adapter_dtype``). Under ZeRO-3 TRL
  keeps the adapter in the base's dtype (a DeepSpeed limitation), and DeepSpeed's optimizer holds the
  fp32 master copy instead.

**The check** (``check_update_precision``, run when the trainer is built, before the first step): if
trained weights are bf16/fp16 and the optimizer's step cannot change most of them at the peak learning
rate, training is refused in one line that says below which learning rate updates vanish.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = [
    "SetupRefused",
    "check_update_precision",
    "training_load_kwargs",
    "update_vanishes",
    "vanishing_lr",
    "vanishing_update_fraction",
]

logger = logging.getLogger(__name__)

#: Refuse when at least this fraction of the trained weights cannot take a step of size lr; warn above WARN.
REFUSE_FRACTION, WARN_FRACTION = 0.5, 0.05
#: Elements read per tensor (evenly strided) to estimate the fractions: exactness is not needed.
SAMPLE_PER_TENSOR = 4096
#: Optimizers whose per-element step is about ``lr`` whatever the gradient's scale (Adam-type: m̂/√v̂ is
#: ±1 at the first step for every weight with a non-zero gradient, and |m̂/√v̂| <= ~1 after; Lion's sign
#: update is exactly ±lr). For the others (SGD, Adafactor's relative steps, ...) the step is unknown.
_UNIT_STEP_OPTIMIZERS = ("adam", "lion")


class SetupRefused(ValueError):
    """A training setup that cannot work at real scale, refused before the first step (CLI: one line,
    exit status 2)."""


def training_load_kwargs(model_init_kwargs: dict | None) -> dict:
    """``from_pretrained`` kwargs for a model to be trained: ``dtype`` float32 unless set (module doc)."""
    kwargs = dict(model_init_kwargs or {})
    kwargs.setdefault("dtype", torch.float32)
    return kwargs


def _half_ulp(w: torch.Tensor) -> torch.Tensor:
    """Half the spacing of ``w.dtype``'s numbers just above ``|w|``: the smallest update round-to-nearest
    keeps (float32 result, same shape).

    A float with ``p`` significand bits stores ``|w|`` in ``[2^e, 2^(e+1))`` on a grid of spacing
    ``ulp = eps · 2^e`` with ``eps = 2^-(p-1)`` (``torch.finfo(dtype).eps``: bf16 2^-7, fp16 2^-10).
    ``w + u`` rounds back to ``w`` when ``|u| < ulp / 2``, so an update vanishes unless
    ``|u| >= eps · 2^floor(log2|w|) / 2``, i.e. roughly ``|u| >= eps · |w| / 4 .. eps · |w| / 2``.
    (Downwards across a power of two the spacing halves; this ignores that edge.) ``frexp`` gives
    ``|w| = m · 2^k`` with ``m`` in [0.5, 1), so ``2^floor(log2|w|) = 2^(k-1)``. Zero weights can take
    any update (the grid is finest there): their threshold is 0.
    """
    eps = torch.finfo(w.dtype).eps
    _, exponent = torch.frexp(w.float())
    half = torch.ldexp(torch.full_like(w, eps / 2, dtype=torch.float32), exponent - 1)
    return torch.where(w == 0, torch.zeros_like(half), half)


def update_vanishes(w: torch.Tensor, step: float) -> torch.Tensor:
    """Bool, shape of ``w``: whether adding ``+step`` to each element leaves it unchanged in ``w.dtype``."""
    return step < _half_ulp(w)


def _sample(p: torch.Tensor) -> torch.Tensor:
    flat = p.detach().reshape(-1)
    stride = max(1, flat.numel() // SAMPLE_PER_TENSOR)
    return flat[::stride][:SAMPLE_PER_TENSOR]


def _thresholds(params: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thresholds, weights)``: half-ulps of a strided sample of each tensor, each weighted by the share
    of its tensor's elements it stands for (so big matrices count by their size)."""
    values, weights = [], []
    for p in params:
        s = _sample(p)
        if s.numel() == 0:
            continue
        values.append(_half_ulp(s).cpu())
        weights.append(torch.full((s.numel(),), p.numel() / s.numel(), dtype=torch.float64))
    if not values:
        return torch.zeros(0), torch.zeros(0, dtype=torch.float64)
    return torch.cat(values), torch.cat(weights)


def vanishing_update_fraction(params: list[torch.Tensor], step: float) -> float:
    """Fraction (by element count, estimated from samples) of ``params``' elements that a step of size
    ``step`` cannot change."""
    t, w = _thresholds(params)
    if not t.numel():
        return 0.0
    return float((w * (step < t)).sum() / w.sum())


def vanishing_lr(params: list[torch.Tensor], fraction: float = 0.5) -> float:
    """The step size below which at least ``fraction`` of ``params``' elements cannot move (a weighted
    quantile of the per-element half-ulps)."""
    t, w = _thresholds(params)
    if not t.numel():
        return 0.0
    order = torch.argsort(t)
    cum = torch.cumsum(w[order], 0) / w.sum()
    i = int(torch.searchsorted(cum, torch.tensor(fraction, dtype=cum.dtype)).clamp(max=len(t) - 1))
    return float(t[order][i])


def _low_precision_trained(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)]


def check_update_precision(model: torch.nn.Module, args: Any) -> None:
    """Refuse (``SetupRefused``) or warn, in one line, when trained weights are bf16/fp16 and a step of the
    peak learning rate cannot change them (module doc). Does nothing when every trained weight is fp32."""
    params = _low_precision_trained(model)
    if not params or getattr(args, "deepspeed_plugin", None) is not None:
        # DeepSpeed's optimizer keeps its own fp32 master copy of every trained weight whatever their dtype
        return
    dtype = str(params[0].dtype).replace("torch.", "")
    n = sum(p.numel() for p in params)
    lr = float(args.learning_rate)
    optim = str(getattr(getattr(args, "optim", ""), "value", getattr(args, "optim", ""))).lower()  # an enum in HF
    fix = (
        "load the model in float32 (visent's default: drop model_init_kwargs.dtype) and train under bf16 "
        "autocast (bf16: true)"
    )
    if not any(name in optim for name in _UNIT_STEP_OPTIMIZERS):
        logger.warning(
            "visent: %.3g trained weights are %s and optimizer %s's step size is unknown before training; "
            "steps below half a %s ulp are lost (%s)", n, dtype, optim, dtype, fix,
        )
        return
    lost = vanishing_update_fraction(params, lr)
    if lost < WARN_FRACTION:
        return
    below = vanishing_lr(params, 0.5)
    message = (
        f"{n:.3g} trained weights are {dtype}: a step of learning_rate {lr:g} ({optim}'s step is about lr per "
        f"weight) is below half a {dtype} ulp for {lost:.0%} of them, so their updates vanish (for half of the "
        f"weights below lr ≈ {below:.2g}); {fix}"
    )
    if lost >= REFUSE_FRACTION:
        raise SetupRefused(message)
    logger.warning("visent: %s", message)

