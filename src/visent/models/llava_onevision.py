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
no shared prefix (1D positions only). Multi-image prompts: TRL does not pass the processor's
``batch_num_images``, so the model would tile every image while the processor (for a prompt with
several images) did not; use one image per prompt.

Tiny builder: a Qwen2 decoder and a SigLIP encoder with 28 px tiles of 14 px patches (4 tokens a tile),
pinpoints of 1 × 1 to 2 × 2 tiles, ChatML template, ``vision_feature_select_strategy="full"`` as in the
released OneVision configs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit
from visent.models.tiny import seeded_model
from visent.models.whole_images import (
    chat_template,
    image_stats,
    named_tokenizer,
    packed_encoder_outputs,
    perturb_units,
    picture,
    tiny_text_dims,
    tiny_vision_dims,
)

__all__ = ["ADAPTERS", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_processor", "build_tiny", "tiny_config", "valid_tiles"]

SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")

CHAT_TEMPLATE = chat_template(
    turn_start="<|im_start|>",
    turn_end="<|im_end|>{{ '\\n' }}",
    image="<image>",
    generation_prompt="<|im_start|>assistant{{ '\\n' }}",
)


def _pinpoints(tile: int, max_tiles: int) -> list[list[int]]:
    return [[tile * i, tile * j] for i in range(1, max_tiles + 1) for j in range(1, max_tiles + 1)]


def build_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 512, with_lab_texts: bool = True) -> Any:
    from visent.models.tokenizer import build_tokenizer as build

    tok = build(
        texts,
        SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        vocab_size=vocab_size,
        with_lab_texts=with_lab_texts,
    )
    return named_tokenizer(tok, {"image_token": "<image>", "video_token": "<video>"})


def build_processor(tokenizer: Any, *, tile_size: int = 28, patch_size: int = 14, max_tiles: int = 2) -> Any:
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    image_processor = LlavaOnevisionImageProcessor(
        size={"height": tile_size, "width": tile_size}, image_grid_pinpoints=_pinpoints(tile_size, max_tiles)
    )
    video_processor = LlavaOnevisionVideoProcessor(size={"height": tile_size, "width": tile_size})
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
        num_image_tokens=(tile_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )


def tiny_config(
    tokenizer: Any,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_hidden_size: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 2,
    tile_size: int = 28,
    patch_size: int = 14,
    max_tiles: int = 2,
) -> Any:
    from transformers import LlavaOnevisionConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "model_type": "qwen2",
        **tiny_text_dims(
            tokenizer,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
        ),
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "model_type": "siglip_vision_model",
        **tiny_vision_dims(
            hidden_size=vision_hidden_size,
            depth=vision_depth,
            heads=vision_heads,
            image_size=tile_size,
            patch_size=patch_size,
        ),
    }
    return LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=_pinpoints(tile_size, max_tiles),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )


def build_tiny(
    *,
    texts: Sequence[str] | None = None,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_hidden_size: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 2,
    vocab_size: int = 512,
    tile_size: int = 28,
    patch_size: int = 14,
    max_tiles: int = 2,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, processor)``: a random-weight tiny LLaVA-OneVision and its processor (module docstring).

    Same arguments, same weights and tokenizer; the caller's RNG state is left alone. About a second.
    """
    from transformers import LlavaOnevisionForConditionalGeneration

    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    processor = build_processor(tokenizer, tile_size=tile_size, patch_size=patch_size, max_tiles=max_tiles)
    config = tiny_config(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        vision_hidden_size=vision_hidden_size,
        vision_depth=vision_depth,
        vision_heads=vision_heads,
        tile_size=tile_size,
        patch_size=patch_size,
        max_tiles=max_tiles,
    )
    model = seeded_model(
        LlavaOnevisionForConditionalGeneration,
        config,
        seed,
        eos_token_ids=[config.text_config.eos_token_id, config.text_config.pad_token_id],
    )
    return model, processor


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
        shared_prefix=False,
        reuse_positions=False,
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
