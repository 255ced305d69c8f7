"""LLaVA-OneVision: ``LlavaOnevisionForConditionalGeneration`` with ``LlavaOnevisionProcessor`` and
``LlavaOnevisionImageProcessor`` (the tiled, "anyres" LLaVA layout).

Layout (``"tiles"``): for each image the image processor picks the best of ``image_grid_pinpoints``
(a resolution in whole tiles) for its size, resizes the image into it keeping its aspect ratio,
letterboxes the rest (black, centred), and cuts that canvas into square tiles of ``size`` (384 px
released); in front of them goes a base tile, the whole image squashed to ``size``. ``pixel_values``
``(n_images, N_tiles, C, S, S)`` is padded along ``N_tiles`` with all-zero tiles to the batch's largest
count; ``image_sizes`` ``(n_images, 2)`` holds each image's original (height, width), from which the
model recomputes its tile count and which feature positions are letterbox. Normalisation: the image
processor's mean/std (OpenAI CLIP for the released 0.5B/7B/72B; read from the processor).

Image units: one per image, ``{"pixel_values": (1, N_tiles, C, S, S), "image_sizes": (1, 2)}``.

Perturbation: each real tile is perturbed as an image of its own (``visent.perturb.perturb_image_tiles``);
the padding tiles after an image's last tile and the letterbox pixels inside its tiles are real-pixel
mask False, so they keep their values (``valid_tiles``, recomputed from ``image_sizes`` exactly as the
image processor lays the canvas out). The blackout cell is one vision patch (the model keeps every
patch feature as a token; for images so large that ``anyres_max_9`` downsamples the features, a cell is
smaller than a token). Tiles get independent noise: TRL keeps only the tiles, not the original image.

Counterfactual savings: vision cache exact (each tile is encoded on its own, then packed per image);
shared prefix exact (the Qwen2 decoder's 1D positions are ``arange(L) + cached length``, padding included,
which a cached prompt continued by its responses reproduces: ``sequence_positions``). Multi-image prompts: TRL does not pass the processor's
``batch_num_images``, so the model would tile every image while the processor (for a prompt with
several images) did not; use one image per prompt.

The tiny builder is in ``visent.models.tiny.llava_onevision``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit, sequence_positions
from visent.models.tiny.llava_onevision import build_tiny
from visent.models.whole_images import (
    image_stats,
    packed_encoder_outputs,
    perturb_units,
    picture,
)

__all__ = ["ADAPTERS", "valid_tiles"]

# ----------------------------------------------------------------------------- the tiles layout


@dataclass(frozen=True)
class OneVisionGeometry:
    """What perturbing needs: the ``TileLayout`` (mean/std, blackout cell), the tile side and the pinpoints."""

    tiles: Any
    tile_size: int
    pinpoints: tuple[tuple[int, int], ...]


def geometry(processor: Any) -> OneVisionGeometry:
    from visent.perturb import TileLayout

    ip = processor.image_processor
    size = ip.size
    side = int(size["height"] if isinstance(size, dict) else size.height)
    per_side = math.isqrt(int(processor.num_image_tokens))
    mean, std = image_stats(processor)
    return OneVisionGeometry(
        tiles=TileLayout(image_mean=mean, image_std=std, cell=max(1, side // per_side)),
        tile_size=side,
        pinpoints=tuple(tuple(int(x) for x in p) for p in ip.image_grid_pinpoints),
    )


def valid_tiles(image_size: Sequence[int], n_slots: int, geo: OneVisionGeometry) -> torch.Tensor:
    """``(n_slots, S, S)`` bool: the real pixels of one image's tile slots — the base tile whole, the
    letterboxed canvas's tiles where the resized image lies, nothing in padding slots. Recomputes the
    image processor's canvas: best pinpoint (``select_best_resolution``), aspect-preserving size
    (``get_patch_output_size``'s rounding), centred paste (``_get_padding_size``), row-major tiles."""
    from transformers.image_processing_utils import select_best_resolution

    h, w = (int(x) for x in image_size)
    S = geo.tile_size
    bh, bw = select_best_resolution((h, w), [list(p) for p in geo.pinpoints])
    scale_w, scale_h = bw / w, bh / h
    if scale_w < scale_h:
        new_w, new_h = bw, min(math.ceil(h * scale_w), bh)
    else:
        new_h, new_w = bh, min(math.ceil(w * scale_h), bw)
    top, left = (bh - new_h) // 2, (bw - new_w) // 2
    canvas = torch.zeros(bh, bw, dtype=torch.bool)
    canvas[top : top + new_h, left : left + new_w] = True
    tiles = canvas.reshape(bh // S, S, bw // S, S).permute(0, 2, 1, 3).reshape(-1, S, S)
    valid = torch.zeros(n_slots, S, S, dtype=torch.bool)
    n = min(n_slots, 1 + tiles.shape[0])
    valid[0] = True
    valid[1:n] = tiles[: n - 1]
    return valid


def split_images(batch: dict[str, Any]) -> list[list[ImageUnit]]:
    """One unit per image (``pixel_values`` and ``image_sizes`` rows); a prompt with several images is
    refused with a clear error (module docstring: the model would expect tiles the processor never made)."""
    from visent.models.adapters import split_by_image

    several = [b for b, k in enumerate(batch["num_images"]) if k > 1]
    if several:
        raise ValueError(
            f"LLaVA-OneVision: response {several[0]} has {batch['num_images'][several[0]]} images; visent supports "
            "one image per prompt for this family (TRL does not pass the processor's batch_num_images)"
        )
    return split_by_image(batch, ("pixel_values", "image_sizes"))


def perturb(kind: str, units: Sequence[ImageUnit], generator, strength, geo: OneVisionGeometry) -> list[ImageUnit]:
    """One prompt's images, each tile perturbed as an image of its own; padding untouched (module docstring)."""

    def tiles_of(u: ImageUnit):
        tiles = u["pixel_values"][0]
        valid = valid_tiles(u["image_sizes"][0].tolist(), tiles.shape[0], geo).to(tiles.device)
        return tiles, valid

    return perturb_units(
        kind, units, generator, strength, geo.tiles,
        tiles_of=tiles_of,
        with_tiles=lambda u, t: {**u, "pixel_values": t[None]},
    )


def encode_images(backbone: torch.nn.Module, units: Sequence[ImageUnit]) -> list[torch.Tensor]:
    """``(n_tokens_i, D)`` packed features per image (base tile, tiles, newline tokens), one encoder call."""
    pixels = torch.cat([u["pixel_values"] for u in units])
    sizes = torch.cat([u["image_sizes"] for u in units])
    return list(backbone.get_image_features(pixels, sizes, return_dict=True).pooler_output)


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        name="llava_onevision",
        model_types=("llava_onevision",),
        model_class="LlavaOnevisionForConditionalGeneration",
        processor_class="LlavaOnevisionProcessor",
        layout="tiles",
        image_keys=("pixel_values", "image_sizes"),
        token_keys=(),
        normalisation="LlavaOnevisionImageProcessor image_mean / image_std (OpenAI CLIP released)",
        vision_cache=True,
        shared_prefix=True,
        reuse_positions=True,
        rope_positions=sequence_positions,
        build_tiny=partial(build_tiny),
        split_images=split_images,
        image_geometry=geometry,
        perturb=perturb,
        encode_images=encode_images,
        encoder_outputs=packed_encoder_outputs,
        notes="anyres tiles + base tile per image, image_sizes; one image per prompt (TRL drops batch_num_images)",
        # For `visent inspect`: the base tile, the whole image squashed to one tile.
        extra={"display": lambda unit, geo: [picture(unit["pixel_values"][0, 0], geo.tiles)]},
    ),
)
