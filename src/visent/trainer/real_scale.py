"""Setups that cannot work at real scale, refused (or warned about) in one line before any weight is loaded.

- **FSDP with token statistics.** The counterfactual pass calls the decoder backbone directly (not the
  root module FSDP wraps) and reads ``lm_head.weight``, which under FSDP2 is a sharded ``DTensor``; visent
  has neither made that work nor tested it, so a config that computes token statistics is refused under
  FSDP. Configs without them (``token_score`` none or random, random selection: GRPO, the entropy
  schedules) are not refused: they train through TRL's own forward, which TRL supports under FSDP (not
  tested by visent). DeepSpeed ZeRO-3 is the supported sharded setup.
- **vLLM colocate**, where vLLM shares each training GPU:
  - ``vllm_max_model_length`` unset is refused: vLLM then sizes for the model's whole context (128k
    tokens for Qwen2.5-VL) and either fails at start-up or takes KV-cache memory no response can use;
    prompt + ``max_completion_length`` is what generation needs.
  - with a CUDA GPU visible and the model's config readable, the per-GPU training state (weights, grads,
    Adam; ``training_state_bytes``) plus vLLM's share (``vllm_gpu_memory_utilization`` × the GPU) is
    compared with the GPU: above it is refused, above 90% warned about (activations need the rest), and
    vLLM's bf16 weights above its own share are refused. The arithmetic is in docs/training.md.
- a **vLLM version** outside TRL 1.16's supported range (0.22.0-0.31.0) is warned about.

Everything raises ``visent.trainer.precision.SetupRefused`` (``visent train``: one line, exit status 2).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from visent.trainer.precision import SetupRefused

__all__ = ["ModelSize", "check_real_scale", "colocate_memory_problem", "training_state_bytes"]

logger = logging.getLogger(__name__)

GB = 1e9
TRL_VLLM_RANGE = ("0.22.0", "0.31.0")  # trl.import_utils.is_vllm_available, TRL 1.16
WARN_SHARE = 0.9


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts and KV-cache size of one model, from its config (no weights)."""

    total: int  # every parameter
    vision: int  # the vision tower and its projection (frozen by freeze_vision_tower)
    kv_bytes_per_token: int  # bf16 keys + values over all decoder layers


def _uses_fsdp(config: Any) -> bool:
    return bool(getattr(config, "fsdp", None)) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def _zero_stage(config: Any) -> int:
    plugin = getattr(config, "deepspeed_plugin", None)
    return int(getattr(plugin, "zero_stage", 0) or 0) if plugin is not None else 0


def training_state_bytes(size: ModelSize, *, trained: int, lora: bool, zero_stage: int, world: int,
                         weight_bytes: int) -> float:
    """Bytes per GPU of weights, gradients and Adam moments (no activations), for visent's precision policy.

    Without DeepSpeed: weights ``weight_bytes`` each (4 for visent's fp32 default; 2 for a bf16 LoRA base),
    and per trained weight an fp32 gradient (4) and two fp32 Adam moments (8). DeepSpeed with bf16 keeps
    bf16 weights (2) and gradients (2) and an fp32 master copy plus two moments (12) per trained weight,
    the last sharded over ``world`` processes from stage 1, the gradients from stage 2, the weights at
    stage 3. LoRA: the adapter's own states are small (under 1 GB at r = 16) and counted as 0 here.
    """
    n, t = size.total, (0 if lora else trained)
    if zero_stage == 0:
        return weight_bytes * n + 12 * t
    weights = 2 * n / (world if zero_stage >= 3 else 1)
    grads = 2 * t / (world if zero_stage >= 2 else 1)
    return weights + grads + 12 * t / world


def colocate_memory_problem(size: ModelSize, state_bytes: float, gpu_bytes: float, share: float,
                            max_len: int) -> tuple[str, str] | None:
    """``("refuse" | "warn", message)`` when vLLM colocate cannot fit beside training on one GPU, else None."""
    vllm_bytes = share * gpu_bytes
    weights = 2 * size.total  # vLLM holds bf16 weights inside its share
    if weights >= vllm_bytes:
        return "refuse", (
            f"vLLM colocate: the model's bf16 weights ({weights / GB:.1f} GB) do not fit in "
            f"vllm_gpu_memory_utilization {share:g} x {gpu_bytes / GB:.0f} GB = {vllm_bytes / GB:.1f} GB; raise it"
        )
    if state_bytes + vllm_bytes > gpu_bytes:
        return "refuse", (
            f"vLLM colocate: training state ~{state_bytes / GB:.1f} GB per GPU (weights, gradients, Adam; "
            f"docs/training.md) + vLLM's {vllm_bytes / GB:.1f} GB > the GPU's {gpu_bytes / GB:.0f} GB; use LoRA, "
            "ZeRO-3 over more GPUs, vllm_mode server, or a lower vllm_gpu_memory_utilization"
        )
    kv_one = size.kv_bytes_per_token * max_len
    if kv_one > vllm_bytes - weights:
        return "warn", (
            f"vLLM colocate: one sequence of vllm_max_model_length {max_len} needs ~{kv_one / GB:.1f} GB of KV cache, "
            f"more than vLLM's share leaves after its weights ({(vllm_bytes - weights) / GB:.1f} GB)"
        )
    if state_bytes + vllm_bytes > WARN_SHARE * gpu_bytes:
        return "warn", (
            f"vLLM colocate: training state ~{state_bytes / GB:.1f} GB + vLLM's {vllm_bytes / GB:.1f} GB leave less "
            f"than 10% of the GPU's {gpu_bytes / GB:.0f} GB for activations"
        )
    return None


def model_size(name_or_path: str, model_init_kwargs: dict | None = None) -> ModelSize | None:
    """Parameter counts from the model's config, on the meta device (no weights); None if unreadable."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        kw = {k: v for k, v in (model_init_kwargs or {}).items() if k in ("revision", "trust_remote_code")}
        cfg = AutoConfig.from_pretrained(name_or_path, **kw)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(cfg)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as e:  # only an estimate
        logger.info("visent: no memory estimate for %s (%s)", name_or_path, e)
        return None
    from visent.trainer.param_groups import vision_modules

    # The modules freeze_vision_tower freezes (one lookup for both).
    vision = sum(p.numel() for m in vision_modules(model) for p in m.parameters())
    text = cfg.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    kv = 2 * text.num_hidden_layers * kv_heads * head_dim * 2
    return ModelSize(sum(p.numel() for p in model.parameters()), vision, kv)


def _check_vllm(config: Any) -> None:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        installed = Version(Version(version("vllm")).base_version)
    except PackageNotFoundError:
        installed = None
    low, high = TRL_VLLM_RANGE
    if installed is not None and not Version(low) <= installed <= Version(high):
        logger.warning("visent: vLLM %s is outside TRL 1.16's supported %s-%s (pip install 'visent[vllm]')",
                       installed, low, high)
    if config.vllm_mode != "colocate":
        return
    if config.vllm_max_model_length is None:
        raise SetupRefused(
            "vllm_mode colocate with vllm_max_model_length unset: vLLM would size for the model's whole context; "
            f"set it to the longest prompt + max_completion_length ({config.max_completion_length}), "
            "e.g. --vllm_max_model_length 2048 (docs/training.md, vLLM)"
        )
    import torch

    if not torch.cuda.is_available() or str(config.model_name_or_path).startswith("tiny:"):
        return
    size = model_size(config.model_name_or_path, config.model_init_kwargs)
    if size is None:
        return
    dtype = str((config.model_init_kwargs or {}).get("dtype", "float32")).replace("torch.", "")
    state = training_state_bytes(
        size, trained=size.total - (size.vision if config.freeze_vision_tower else 0), lora=config.use_peft,
        zero_stage=_zero_stage(config), world=int(os.environ.get("WORLD_SIZE", "1")),
        weight_bytes=2 if dtype in ("bfloat16", "float16") else 4,
    )
    gpu = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    problem = colocate_memory_problem(size, state, gpu, config.vllm_gpu_memory_utilization,
                                      config.vllm_max_model_length)
    if problem is not None and problem[0] == "refuse":
        raise SetupRefused(problem[1])
    if problem is not None:
        logger.warning("visent: %s", problem[1])


def check_real_scale(config: Any) -> None:
    """All of the module doc's checks on a ``VisentConfig``, before the model is loaded."""
    if _uses_fsdp(config) and config.needs_clean_stats:
        raise SetupRefused(
            f"FSDP with token_score {config.token_score!r}: visent's counterfactual pass does not run under FSDP "
            "(it calls the decoder directly and reads the sharded lm_head); use DeepSpeed ZeRO-3 "
            "(src/visent/configs/accelerate/zero3.yaml), or a config without token statistics"
        )
    if config.use_vllm:
        _check_vllm(config)
