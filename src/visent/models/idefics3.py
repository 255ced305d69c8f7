"""SmolVLM2 (the Idefics3 layout): ``SmolVLMForConditionalGeneration`` with ``SmolVLMProcessor`` and
``SmolVLMImageProcessor``.

Layout (``"tiles"``): the image processor resizes an image so its longest edge is ``size`` and, with
``do_image_splitting``, cuts it into square tiles of ``max_image_size`` plus one global view of the whole
image at that size. The tiles of every image of a prompt row are stacked per row: ``pixel_values``
``(B, N_tiles, C, S, S)``, padded to the batch's largest ``N_tiles`` with all-zero tiles, and
``pixel_attention_mask`` ``(B, N_tiles, S, S)`` marks real pixels. The model drops every all-zero tile
as padding, encodes each remaining tile on its own (SigLIP), pixel-shuffles ``scale_factor²`` patches
into one token and projects. Normalisation: the image processor's mean/std (0.5 / 0.5 released).

Image units: one per prompt row that has images, ``{"pixel_values": (1, N_tiles, C, S, S),
"pixel_attention_mask": (1, N_tiles, S, S)}`` — the row's tiles of all its images together, since the
processor does not record which tile belongs to which image. A row's unit count is therefore 0 or 1,
not its number of images; the counterfactual pass only needs units to be cut and joined consistently.
Joining stacks rows (all rows of a batch have the same ``N_tiles``) and gives a row without images an
all-zero stack, as the processor does in a batch that mixes image and text-only rows: the model drops
all-zero tiles and matches image features to image tokens in order over the whole batch, so the slot
changes nothing, but a whole batch joined back has the batch's own ``(B, ...)`` layout, which TRL's forward
of every row with replaced ``pixel_values`` needs.

Perturbation: each real tile is perturbed as an image of its own (``visent.perturb.perturb_image_tiles``
with ``zero_is_padding``): padding tiles and padding pixels keep their zeros, ``no_image`` leaves a
near-zero constant so the model still counts the tile, and the blackout cell is the square behind one
pixel-shuffled token (``patch_size · scale_factor`` pixels). The global view and the crops get
independent noise: the original image is not kept by TRL, only its tiles.

Counterfactual savings: vision cache exact (tiles are encoded independently); shared prefix exact: the
Llama decoder numbers positions ``arange(L) + cached length`` itself, padding included, so a prompt run
once with a cache and its responses continued from it see the full forward's positions
(``sequence_positions``).

The tiny builder is in ``visent.models.tiny.idefics3``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit, sequence_positions
from visent.models.tiny.idefics3 import build_tiny
from visent.models.whole_images import (
    image_stats,
    packed_encoder_outputs,
    perturb_units,
    picture,
)

__all__ = ["ADAPTERS"]

# ----------------------------------------------------------------------------- the tiles layout


def split_rows(batch: dict[str, Any]) -> list[list[ImageUnit]]:
    """One unit per prompt row with images (module docstring): that row's tiles and pixel mask."""
    pv, mask = batch["pixel_values"], batch.get("pixel_attention_mask")
    if pv.dim() != 5:
        raise ValueError(f"SmolVLM pixel_values must be (B, N_tiles, C, H, W); got {tuple(pv.shape)}")
    out = []
    for b, k in enumerate(batch["num_images"]):
        if not k:
            out.append([])
            continue
        unit = {"pixel_values": pv[b : b + 1]}
        if mask is not None:
            unit["pixel_attention_mask"] = mask[b : b + 1]
        out.append([unit])
    return out


def join_rows(units: Sequence[Sequence[ImageUnit]]) -> dict[str, torch.Tensor]:
    """Model inputs of responses whose units are ``units`` (0 or 1 per row): ``(b, N_tiles, ...)`` per key,
    an all-zero stack for a row without images (module docstring); ``{}`` when no row has one."""
    like = next((row[0] for row in units if row), None)
    if like is None:
        return {}
    return {
        key: torch.cat([row[0][key] if row else torch.zeros_like(like[key]) for row in units])
        for key in like
    }


def geometry(processor: Any) -> Any:
    """``TileLayout``: mean/std of the image processor; one blackout cell per pixel-shuffled token."""
    from visent.perturb import TileLayout

    tile = processor.image_processor.max_image_size
    side = int(tile["longest_edge"] if isinstance(tile, dict) else tile.longest_edge)
    per_side = math.isqrt(int(processor.image_seq_len))
    mean, std = image_stats(processor)
    return TileLayout(image_mean=mean, image_std=std, cell=max(1, side // per_side), zero_is_padding=True)


def _tiles(unit: ImageUnit) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, S, S)`` tiles of the unit and their real pixels: the pixel mask, and no pixel of an
    all-zero (padding) tile — the model's own padding test."""
    tiles = unit["pixel_values"][0]
    real_tile = (tiles != 0).flatten(1).any(1)
    mask = unit.get("pixel_attention_mask")
    valid = torch.ones(tiles.shape[0], *tiles.shape[2:], dtype=torch.bool, device=tiles.device)
    if mask is not None:
        valid = mask[0].bool()
    return tiles, valid & real_tile[:, None, None]


def perturb(kind: str, units: Sequence[ImageUnit], generator, strength, layout) -> list[ImageUnit]:
    """One prompt's tiles perturbed as images of their own, padding untouched (module docstring)."""
    return perturb_units(
        kind, units, generator, strength, layout,
        tiles_of=_tiles,
        with_tiles=lambda u, t: {**u, "pixel_values": t[None]},
    )


def display(unit: ImageUnit, layout) -> list[Any]:
    """For ``visent inspect``: the row's last real tile, the global view of its (last) image."""
    tiles, valid = _tiles(unit)
    real = valid.flatten(1).any(1).nonzero()
    return [picture(tiles[int(real[-1])], layout)] if real.numel() else []


def encode_images(backbone: torch.nn.Module, units: Sequence[ImageUnit]) -> list[torch.Tensor]:
    """``(n_tokens, D)`` per unit (all its real tiles' tokens in order), one encoder call."""
    pixels = torch.cat([u["pixel_values"] for u in units])
    mask = None
    if "pixel_attention_mask" in units[0]:
        mask = torch.cat([u["pixel_attention_mask"] for u in units])
    return list(backbone.get_image_features(pixels, mask, return_dict=True).pooler_output)


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        name="smolvlm",
        model_types=("smolvlm",),
        model_class="SmolVLMForConditionalGeneration",
        processor_class="SmolVLMProcessor",
        layout="tiles",
        image_keys=("pixel_values", "pixel_attention_mask"),
        token_keys=(),
        normalisation="SmolVLMImageProcessor image_mean / image_std (0.5 / 0.5 released)",
        vision_cache=True,
        shared_prefix=True,
        reuse_positions=True,
        rope_positions=sequence_positions,
        build_tiny=partial(build_tiny),
        split_images=split_rows,
        join_images=join_rows,
        image_geometry=geometry,
        perturb=perturb,
        encode_images=encode_images,
        encoder_outputs=packed_encoder_outputs,
        notes="SmolVLM2 (Idefics3 layout): per-row tiles + global view, pixel_attention_mask, all-zero tiles are padding",
        extra={"display": display},
    ),
)
