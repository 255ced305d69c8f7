"""The vision tower's own learning rate (``vision_lr_scale``): optimizer parameter groups split in two.

Fine-tuning recipes for Qwen-VL-style models often train the vision encoder at a different rate from the
language model (the encoder is pretrained on other data, and a step that suits the decoder can erase the
features it reads). Transformers' ``Trainer.create_optimizer`` builds one decay and one no-decay group;
this module splits each of them into a language-model group and a vision group whose ``lr`` is scaled,
before any step is taken (so the optimizer holds no state yet) and before the scheduler is created (so
the scheduler's base rates are the scaled ones and every schedule shape keeps the ratio).
"""

from __future__ import annotations

import torch

__all__ = ["split_vision_groups", "vision_lr_scale_error", "vision_modules"]


def vision_lr_scale_error(config) -> str | None:
    """Why ``config.vision_lr_scale`` cannot be used (one line), or ``None``."""
    scale = config.vision_lr_scale
    if not scale > 0:
        return f"vision_lr_scale must be > 0 (use freeze_vision_tower: true for 0); got {scale}"
    if scale != 1.0 and config.freeze_vision_tower:
        return (
            f"vision_lr_scale={scale} scales the vision tower's learning rate, but freeze_vision_tower is true "
            "(the tower does not train); set freeze_vision_tower: false"
        )
    return None


def vision_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The vision encoder and its projection (the family adapter's ``vision_modules``), looked up on the
    transformers model inside any PEFT / accelerate wrapper; ``[]`` if the family names none."""
    from visent.models.adapters import Adapter, adapter_for
    from visent.models.unwrap import transformers_model

    inner_model = transformers_model(model)
    adapter = adapter_for(inner_model)
    names = adapter.vision_modules if adapter is not None else Adapter.__dataclass_fields__["vision_modules"].default
    inner = getattr(inner_model, "model", inner_model)
    found = []
    for name in names:
        module = getattr(inner, name, None) or getattr(inner_model, name, None)
        if isinstance(module, torch.nn.Module):
            found.append(module)
    return found


def split_vision_groups(optimizer: torch.optim.Optimizer, model: torch.nn.Module, scale: float) -> int:
    """Move the vision modules' parameters of every group of ``optimizer`` into a copy of that group
    with ``lr * scale``. Returns how many tensors moved (0: the model has no trained vision parameter).

    Must run before the first step: groups are edited in place and per-parameter state is not moved.
    """
    if any(optimizer.state.values()):
        raise RuntimeError("split_vision_groups must run before the optimizer's first step")
    vision_ids = {id(p) for m in vision_modules(model) for p in m.parameters()}
    moved = 0
    new_groups = []
    for group in optimizer.param_groups:
        vision = [p for p in group["params"] if id(p) in vision_ids]
        if not vision:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in vision_ids]
        new_groups.append({**group, "params": vision, "lr": group["lr"] * scale})
        moved += len(vision)
    # An emptied group is harmless to torch's optimizers (it steps nothing) but is dropped for clarity.
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in new_groups:
        if "initial_lr" in group:
            group["initial_lr"] = group["lr"]
        optimizer.add_param_group(group)
    return moved
