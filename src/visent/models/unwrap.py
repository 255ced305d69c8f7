"""Seeing through the wrappers around a transformers model: DDP/DeepSpeed, PEFT (LoRA), and the split of a
causal VLM into its decoder backbone and LM head. transformers/PEFT only, no TRL."""

from __future__ import annotations

import torch

__all__ = ["adapters_disabled", "backbone_and_head", "transformers_model"]


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under DDP/DeepSpeed (``.module``) and PEFT (``get_base_model``) wrappers.

    Use it wherever code reaches ``.model``, ``.lm_head``, ``.visual`` or ``.config`` of the policy. PEFT
    injects its LoRA layers into this model's modules in place, so forwards through it (and through any
    submodule) run with the adapter active, exactly as forwards through the ``PeftModel`` do.
    """
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def adapters_disabled(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds PEFT adapter layers that are switched off right now (TRL's reference forward
    of a LoRA policy runs under ``disable_adapter()``)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return False
    return any(isinstance(m, BaseTunerLayer) and m.disable_adapters for m in model.modules())


def backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder backbone (returns ``last_hidden_state``, post final norm) and the LM head of a causal VLM.

    Unwraps DDP/DeepSpeed and PEFT (``transformers_model``; a LoRA adapter stays active). The backbone is
    the module TRL's fused LM head calls (``model.base_model`` in transformers 5), so hidden states match
    TRL's log-probs.
    """
    model = transformers_model(model)
    return model.base_model, model.get_output_embeddings()
