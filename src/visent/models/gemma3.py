"""Gemma 3: ``Gemma3ForConditionalGeneration`` with ``Gemma3Processor`` and ``Gemma3ImageProcessor``.

Layout (``"images"``): the image processor resizes every image to one fixed square (896 px in the
releases) and hands the model ``pixel_values`` ``(n_images, C, H, W)``, normalised with mean = std = 0.5
(the released preprocessor config). The SigLIP encoder sees each image on its own; the projector
average-pools its ``(H/p)²`` patch features to ``mm_tokens_per_image`` tokens (256 released: a 16 × 16
grid, so one token stands for a ``H/16``-pixel square, the ``patch_blackout`` cell here). Pan-and-scan
crops (off by default) are not supported: ``num_crops`` is not kept by TRL.

Extra forward input: ``token_type_ids`` ``(B, P + C)`` (1 on image tokens), from which the decoder
builds bidirectional attention inside each image block; TRL extends it with zeros over the completion.

Counterfactual savings: the vision cache is exact (each image is encoded on its own), and so is the shared
prompt prefix: the decoder numbers positions ``arange(L) + cached length`` itself, padding included
(``sequence_positions``, as Llama's), and the prompt call carries the prompt's ``token_type_ids``
(``prefix_token_keys``), from which the image blocks' bidirectional attention is built exactly as in the
full forward (by ``uncached_masks``, without transformers' ``vmap``, which on short prompts costs more than
the decoder; also for the pass's plain calls); the completion call's queries are text, which attends causally (no ``token_type_ids``,
as in generation after the first step). Sliding-window layers keep their window in the cache.

The tiny builder is in ``visent.models.tiny.gemma3``.
Gemma 4 is not served here: its processor hands the model padded variable-resolution patch rows with
``image_position_ids``, another layout; Gemma 3n is another architecture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit, sequence_positions
from visent.models.tiny.gemma3 import build_tiny
from visent.models.whole_images import (
    image_stats,
    perturb_units,
    picture,
)

__all__ = ["ADAPTERS"]

# ----------------------------------------------------------------------------- the "images" layout


def geometry(processor: Any) -> Any:
    """``TileLayout``: the image processor's mean/std; the blackout cell is one pooled token's square."""
    from visent.perturb import TileLayout

    size = processor.image_processor.size
    side = int(size["height"] if isinstance(size, dict) else size.height)
    per_side = math.isqrt(int(processor.image_seq_length))
    mean, std = image_stats(processor)
    return TileLayout(image_mean=mean, image_std=std, cell=max(1, side // per_side))


def perturb(kind: str, units: Sequence[ImageUnit], generator, strength, layout) -> list[ImageUnit]:
    """One prompt's images ``(1, C, H, W)`` each, perturbed as whole images (``visent.perturb``)."""
    return perturb_units(
        kind, units, generator, strength, layout,
        tiles_of=lambda u: (u["pixel_values"], None),
        with_tiles=lambda u, t: {**u, "pixel_values": t},
    )


def uncached_masks(backbone: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The attention masks Gemma 3 builds for a call without a cache (``create_masks_for_vision_model``:
    full layers OR(causal, same image block) AND padding; sliding layers that AND the window), built here
    without ``vmap``: transformers builds the sliding mask by ``vmap`` over every query and key (a custom
    AND of mask functions), which costs more than the decoder on short prompts, while it is exactly the
    full mask AND ``kv > q − window``. ``(b, 1, L, L)`` bool each, keyed by layer type; ``None`` (the model
    builds them) for another attention implementation or without ``token_type_ids``."""
    from transformers.masking_utils import create_causal_mask
    from transformers.models.gemma3.modeling_gemma3 import get_block_sequence_ids_for_mask

    config = backbone.config.get_text_config()
    token_types = inputs.get("token_type_ids")
    if config._attn_implementation != "sdpa" or token_types is None or config.sliding_window is None:
        return None
    ids = inputs["input_ids"]
    dtype = backbone.get_input_embeddings().weight.dtype
    shape_only = torch.empty(ids.size(0), ids.size(1), 0, dtype=dtype, device=ids.device)
    full = create_causal_mask(
        config=config, inputs_embeds=shape_only, attention_mask=inputs["attention_mask"], cache=None,
        position_ids=inputs.get("position_ids"), block_sequence_ids=get_block_sequence_ids_for_mask(token_types, ids.device),
    )  # fmt: skip
    if not isinstance(full, torch.Tensor) or full.dtype != torch.bool or full.dim() != 4:
        return None
    q = torch.arange(ids.size(1), device=ids.device)
    window = q[None, :] > q[:, None] - config.sliding_window  # (query, key), as sliding_window_overlay
    return {"full_attention": full, "sliding_attention": full & window}


def encode_images(backbone: torch.nn.Module, units: Sequence[ImageUnit]) -> list[torch.Tensor]:
    """``(tokens_per_image, D)`` projected features per unit, one encoder call (SigLIP sees each image alone)."""
    pixels = torch.cat([u["pixel_values"] for u in units])
    return list(backbone.get_image_features(pixels, return_dict=True).pooler_output)


def encoder_outputs(pieces: Sequence[torch.Tensor]) -> Any:
    """``mm_encoder_outputs["image"]``: Gemma 3 scatters ``pooler_output`` ``(n_images, tokens, D)``."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(pooler_output=torch.stack(list(pieces)))


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        name="gemma3",
        model_types=("gemma3",),
        model_class="Gemma3ForConditionalGeneration",
        processor_class="Gemma3Processor",
        layout="images",
        image_keys=("pixel_values",),
        token_keys=("token_type_ids",),
        normalisation="Gemma3ImageProcessor image_mean / image_std (0.5 / 0.5 released)",
        vision_cache=True,
        shared_prefix=True,
        reuse_positions=True,
        rope_positions=sequence_positions,
        prefix_token_keys=("token_type_ids",),
        uncached_masks=uncached_masks,
        build_tiny=partial(build_tiny),
        image_geometry=geometry,
        perturb=perturb,
        encode_images=encode_images,
        encoder_outputs=encoder_outputs,
        notes="fixed-size whole images, token_type_ids for bidirectional image attention; no pan-and-scan",
        # For `visent inspect`: the image as the model sees it.
        extra={"display": lambda unit, layout: [picture(unit["pixel_values"][0], layout)]},
    ),
)
