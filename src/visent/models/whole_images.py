"""Pieces shared by the families whose processors hand the model whole images or tiles ``(…, C, H, W)``
(Gemma 3, SmolVLM2 / Idefics3, LLaVA-OneVision) rather than Qwen's patch rows.

- ``image_stats``: the family's own normalisation, read from its image processor;
- ``perturb_units``: one prompt's image units perturbed through ``visent.perturb.perturb_image_tiles`` in
  a single draw, given how a family reads tiles (and their real-pixel masks) out of a unit and puts
  perturbed tiles back;
- ``packed_encoder_outputs``: the ``mm_encoder_outputs["image"]`` value of the families whose decoder takes
  a list ``pooler_output``, one ``(n_tokens_i, D)`` piece per unit in order (SmolVLM2, LLaVA-OneVision);
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from visent.models.adapters import ImageUnit

__all__ = [
    "image_stats",
    "packed_encoder_outputs",
    "perturb_units",
    "picture",
]


def image_stats(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(image_mean, image_std)`` of the processor's image processor (per channel, [0, 1] pixels)."""
    ip = getattr(processor, "image_processor", processor)
    mean, std = getattr(ip, "image_mean", None), getattr(ip, "image_std", None)
    if mean is None or std is None:
        raise ValueError(f"{type(ip).__name__} has no image_mean / image_std to un-normalise with")
    if isinstance(mean, (int, float)):
        mean, std = [mean] * 3, [std] * 3
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def perturb_units(
    kind: str,
    units: Sequence[ImageUnit],
    generator: torch.Generator,
    strength: float | None,
    layout: Any,
    tiles_of: Callable[[ImageUnit], tuple[torch.Tensor, torch.Tensor | None]],
    with_tiles: Callable[[ImageUnit, torch.Tensor], ImageUnit],
) -> list[ImageUnit]:
    """The images of ONE prompt perturbed together (one generator, one draw over all their tiles).

    ``tiles_of(unit)``: ``(tiles (n, C, H, W), valid (n, H, W) bool or None)``, the unit's tiles and real
    pixels; ``with_tiles(unit, tiles)``: the unit with its tiles replaced. ``layout``: the family's
    ``visent.perturb.TileLayout``.
    """
    from visent.perturb import perturb_image_tiles

    if not units:
        return []
    parts = [tiles_of(u) for u in units]
    tiles = torch.cat([t for t, _ in parts])
    valid = None
    if any(v is not None for _, v in parts):
        valid = torch.cat(
            [
                v if v is not None else torch.ones(t.shape[0], *t.shape[2:], dtype=torch.bool, device=t.device)
                for t, v in parts
            ]
        )
    noisy = perturb_image_tiles(kind, tiles, generator, strength, layout, valid)
    pieces = torch.split(noisy, [t.shape[0] for t, _ in parts])
    return [with_tiles(u, p) for u, p in zip(units, pieces)]


def packed_encoder_outputs(pieces: Sequence[torch.Tensor]) -> Any:
    """``mm_encoder_outputs["image"]`` as a list ``pooler_output`` of the per-unit ``(n_tokens_i, D)`` pieces,
    in order: the decoder concatenates them as it does its own encoder's output."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(pooler_output=list(pieces))


def picture(tile: torch.Tensor, layout: Any) -> Any:
    """A normalised ``(C, H, W)`` image or tile as an RGB PIL image, un-normalised with ``layout``'s
    (a ``TileLayout``) mean/std and clipped to [0, 1] for display (``visent inspect``)."""
    from PIL import Image

    mean = torch.tensor(layout.image_mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(layout.image_std, dtype=torch.float32).view(-1, 1, 1)
    pixels = (tile.detach().float().cpu() * std + mean).clamp(0.0, 1.0)
    return Image.fromarray((pixels * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()).convert("RGB")
