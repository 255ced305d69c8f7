"""The two-phase warm-start (``WarmStartConfig.tower_first``): a competent vision tower, a band language model.

Why (docs/lab-diagnosis.md §3): a one-phase band warm-start stops while the whole model is half-trained,
and what is half-trained is not "every count at 50%" but some counts read at ~90% and others never
answered — the tower has not yet built the feature that tells those images apart, and RL with a frozen
tower cannot build it. Here the whole model is first trained until a full check reads ``tower_first``
(phase 1: the tower can tell every count apart), then phase 2 trains back into the band (the band
controller unchanged) from one of two starts (``WarmStartConfig.phase_two``):

- ``"projector"`` (tally's recipe, docs/lab-diagnosis.md §8): the phase-1 model with only its vision→text
  projector re-initialised, encoder frozen. The language model keeps phase 1's settled wording, and RL
  re-learns how to read features that exist: GRPO gained on every warm-start tried.
- ``"language_model"``: a re-initialised language model on the phase-1 tower, frozen. It lands in the band
  after ~40 steps, before its *sampled* wording settles (45–71% parse failures at τ = 1), and RL lost from
  every warm-start (§7).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from visent.lab.sft import sft
from visent.lab.warmstart_config import WarmStartConfig

__all__ = ["phase_one_config", "reset_projector", "tower_first_sft", "transplant_vision_tower"]

# The vision→text projection of the lab's tiny architectures (WarmStartConfig.kind), re-initialised by the
# "projector" second phase. Both Qwen-VL generations name it the same.
_PROJECTOR = {"qwen2_5_vl": "model.visual.merger", "qwen2_vl": "model.visual.merger"}


def phase_one_config(cfg: WarmStartConfig) -> WarmStartConfig:
    """Phase 1's config: the band ``[tower_first, 1]``, stop at the first full check at or above it."""
    if cfg.tower_first is None:
        raise ValueError("phase_one_config: cfg.tower_first is None")
    return dataclasses.replace(cfg, band=(cfg.tower_first, 1.0), aim=cfg.tower_first, tower_first=None)


def transplant_vision_tower(trained: Any, fresh: Any) -> list[str]:
    """Copy ``trained``'s vision tower (the adapter's ``vision_modules``) into ``fresh`` and freeze it there.

    Everything else of ``fresh`` (the language model, embeddings, head) keeps its own initialisation.
    Returns the names of the parameters copied (and frozen).
    """
    import torch

    from visent.trainer.build import freeze_vision_tower

    if freeze_vision_tower(fresh) == 0:
        raise ValueError("transplant_vision_tower: the model's adapter names no vision module")
    names = [n for n, p in fresh.named_parameters() if not p.requires_grad]
    source = dict(trained.named_parameters())
    with torch.no_grad():
        for name in names:
            fresh.get_parameter(name).copy_(source[name])
    return names


def reset_projector(trained: Any, fresh: Any, kind: str) -> list[str]:
    """Give ``trained`` the freshly initialised projector of ``fresh`` and freeze the rest of its vision
    tower (encoder blocks, patch embedding): phase 2 then trains the projector and the language model.

    The language model keeps its phase-1 wording (docs/lab-diagnosis.md §7: a re-initialised language
    model lands in the band before its sampled grammar settles). Returns the projector's parameter names.
    """
    import torch

    from visent.trainer.build import freeze_vision_tower

    if kind not in _PROJECTOR:
        raise ValueError(f"reset_projector: no projector known for kind {kind!r}; known: {', '.join(_PROJECTOR)}")
    prefix = _PROJECTOR[kind] + "."
    names = [n for n, _ in trained.named_parameters() if n.startswith(prefix)]
    if not names:
        raise ValueError(f"reset_projector: the model has no parameter under {prefix!r}")
    freeze_vision_tower(trained)
    source = dict(fresh.named_parameters())
    with torch.no_grad():
        for name in names:
            param = trained.get_parameter(name)
            param.copy_(source[name])
            param.requires_grad_(True)
    return names


def tower_first_sft(
    model: Any,
    processor: Any,
    cfg: WarmStartConfig,
    build_fresh: Callable[[], Any],
    *,
    progress: bool = True,
    scorer: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Both phases; ``build_fresh()`` returns a freshly initialised model of the same architecture.

    Returns ``(phase-2 model, measurements)``: ``sft``'s result for phase 2 with phase 1's summary under
    ``"tower_phase"`` (its band outcome: reached, accuracy, steps). The returned model's tower is
    trainable again (``requires_grad`` restored), so RL decides what to freeze.
    """
    first = sft(model, processor, phase_one_config(cfg), progress=progress, scorer=scorer)
    fresh = build_fresh()
    if cfg.phase_two == "projector":
        reset_projector(model, fresh, cfg.kind)
        fresh = model
    else:
        transplant_vision_tower(model, fresh)
    second = sft(fresh, processor, dataclasses.replace(cfg, tower_first=None), progress=progress, scorer=scorer)
    for p in fresh.parameters():
        p.requires_grad_(True)
    band = first.get("band", {})
    second["tower_phase"] = {
        "target": cfg.tower_first,
        "reached": band.get("reached"),
        "accuracy": band.get("accuracy"),
        "steps": first["steps"],
        "seconds": first["seconds"],
    }
    return fresh, second
