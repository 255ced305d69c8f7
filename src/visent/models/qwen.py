"""The Qwen vision-language families: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE and Qwen3.5.

All five share one processor layout (``"patch_rows"``: the image processor ``Qwen2VLImageProcessor`` cuts
an image into ``(t·h·w, C·tp·p·p)`` patch rows and reports ``image_grid_thw``; see ``visent.perturb``) and
one M-RoPE scheme (3D positions from ``get_rope_index(input_ids, mm_token_type_ids, image_grid_thw)``).
They differ in (checked against transformers 5's own code and the released preprocessor configs):

================  =====================================  =========  =====================  =========
family            model class                            patch p    mean / std             deepstack
================  =====================================  =========  =====================  =========
qwen2_vl          ``Qwen2VLForConditionalGeneration``    14         OpenAI CLIP            no
qwen2_5_vl        ``Qwen2_5_VLForConditionalGeneration`` 14         OpenAI CLIP            no
qwen3_vl          ``Qwen3VLForConditionalGeneration``    16         0.5 / 0.5              yes
qwen3_vl_moe      ``Qwen3VLMoeForConditionalGeneration`` 16         0.5 / 0.5              yes
qwen3_5           ``Qwen3_5ForConditionalGeneration``    16         0.5 / 0.5              no
================  =====================================  =========  =====================  =========

Processors: ``Qwen2VLProcessor``, ``Qwen2_5_VLProcessor``, and ``Qwen3VLProcessor`` for the three
Qwen3-generation families (transformers' ``AutoProcessor`` maps ``qwen3_5`` to it too).

Deepstack (Qwen3-VL): the vision encoder also returns features of intermediate layers
(``deepstack_features``, one ``(n_tokens, D)`` tensor per image and listed layer) that the decoder adds
to the image tokens' hidden states in its first layers. A cached encoder output must carry them, or the
decoder fails (``'BaseModelOutputWithPooling' object has no attribute 'deepstack_features'``) — the
vision cache here keeps them per image.

Qwen3.5 is a hybrid decoder: three of four layers are gated-delta-net linear attention with a recurrent
and a convolution state, one of four full attention. Shared-prefix reuse is still exact for it: the
prompt's call leaves each linear layer's conv and recurrent state at the prompt's end, which
``reorder_cache`` indexes out to the responses like keys and values, and the completion call continues
the recurrence from that state; the chunked kernel run in two pieces equals one pass over the whole
sequence in real arithmetic (float32 differences of a few 1e-6 on the tiny model, inside the 1e-5 the
tests allow: ``tests/unit/models/test_adapters_counterfactual.py``, with and without length splits).
Left padding contributes nothing (padded positions are zeroed before the convolution and recurrence).

The tiny builder is in ``visent.models.tiny.qwen``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit, concat_units
from visent.models.tiny.qwen import MODEL_CLASSES, build_tiny

__all__ = ["ADAPTERS"]

# ----------------------------------------------------------------------------- the patch-rows layout


def split_patch_rows(batch: dict[str, Any]) -> list[list[ImageUnit]]:
    """Units of a patch-rows batch: image i's ``grid[i].prod()`` rows of ``pixel_values`` and its grid row."""
    pv, grid = batch["pixel_values"], batch["image_grid_thw"]
    rows = grid.prod(-1).tolist()
    out, row, img = [], 0, 0
    for k in batch["num_images"]:
        units = []
        for i in range(img, img + k):
            units.append({"pixel_values": pv[row : row + rows[i]], "image_grid_thw": grid[i : i + 1]})
            row += rows[i]
        out.append(units)
        img += k
    return out


def patch_geometry(processor: Any) -> Any:
    from visent.perturb import PatchLayout

    return PatchLayout.from_processor(processor)


def perturb_patch_rows(kind: str, units: Sequence[ImageUnit], generator, strength, geometry) -> list[ImageUnit]:
    """One prompt's images perturbed by ``visent.perturb.perturb_pixel_values`` (one call, all images)."""
    from visent.perturb import perturb_pixel_values

    joined = concat_units([units])
    noisy = perturb_pixel_values(kind, joined["pixel_values"], joined["image_grid_thw"], generator, strength, geometry)
    parts = torch.split(noisy, [u["pixel_values"].size(0) for u in units])
    return [{**u, "pixel_values": p} for u, p in zip(units, parts)]


def encode_patch_rows(backbone: torch.nn.Module, units: Sequence[ImageUnit]) -> list[dict[str, Any]]:
    """Vision-encoder outputs per unit, in one encoder call: ``{"embeds": (n_i, D)}`` plus, for Qwen3-VL,
    ``"deepstack": [(n_i, D) per deepstack layer]``. Qwen's vision attention is block-diagonal per image
    (``cu_seqlens``), so encoding the units together gives each what it gets alone."""
    joined = concat_units([units])
    out = backbone.get_image_features(joined["pixel_values"], joined["image_grid_thw"], return_dict=True)
    pieces = [{"embeds": e} for e in out.pooler_output]
    deep = getattr(out, "deepstack_features", None)
    if deep is not None:
        for i, piece in enumerate(pieces):
            piece["deepstack"] = [layer[i] for layer in deep]
    return pieces


def encoder_outputs_patch_rows(pieces: Sequence[dict[str, Any]]) -> Any:
    """The ``mm_encoder_outputs["image"]`` value for the decoder: pooled embeddings per image and, when
    the encoder has them, deepstack features as one per-image tuple per layer (the model's own format)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    embeds = tuple(p["embeds"] for p in pieces)
    if pieces and "deepstack" in pieces[0]:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        layers = len(pieces[0]["deepstack"])
        deep = [tuple(p["deepstack"][k] for p in pieces) for k in range(layers)]
        return BaseModelOutputWithDeepstackFeatures(pooler_output=embeds, deepstack_features=deep)
    return BaseModelOutputWithPooling(pooler_output=embeds)


def mrope_positions(backbone: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor | None:
    """M-RoPE 3D positions ``(3, b, L)`` from the model's own ``get_rope_index(input_ids, mm_token_type_ids,
    image_grid_thw, attention_mask)`` (the same in all five families in transformers 5), or ``None`` when
    the rows have no image. They depend on tokens, mask and grids only, so perturbed rows share them."""
    get = getattr(backbone, "get_rope_index", None)
    if get is None or inputs.get("image_grid_thw") is None or inputs.get("mm_token_type_ids") is None:
        return None
    try:
        positions, _ = get(
            inputs["input_ids"],
            inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
    except TypeError:  # another signature (a transformers version this was not written against)
        return None
    return positions


def slice_mrope(positions: torch.Tensor, rows: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor:
    """Rows ``rows`` and positions ``columns`` of M-RoPE position ids ``(3, B, L)``."""
    return positions[:, rows, columns]


def join_mrope(parts: Sequence[torch.Tensor | None], rows: int) -> torch.Tensor | None:
    """M-RoPE position ids ``(3, B_i, L)`` of consecutive forwards joined along the responses, ``None``
    unless they are ``rows`` responses of that layout."""
    if not parts or any(p is None or p.dim() != 3 for p in parts):
        return None
    out = torch.cat(list(parts), dim=1)
    return out if out.size(1) == rows else None


def patch_row_spans(batch: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """Per response b ``(row_start, row_end, img_start, img_end)`` into a patch-rows batch's
    ``pixel_values`` / ``image_grid_thw`` (all zeros when the batch has no images)."""
    n = batch["completion_ids"].size(0)
    num_images, grid = batch.get("num_images"), batch.get("image_grid_thw")
    if num_images is None or grid is None or batch.get("pixel_values") is None:
        return [(0, 0, 0, 0)] * n
    rows_per_image = grid.prod(-1).tolist()
    spans, row, img = [], 0, 0
    for k in num_images:
        r = sum(rows_per_image[img : img + k])
        spans.append((row, row + r, img, img + k))
        row, img = row + r, img + k
    return spans


def set_pixel_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    """Qwen image processors resize each image to a multiple of (patch · merge) px with a pixel count in
    ``[size.shortest_edge, size.longest_edge]`` (transformers' ``smart_resize``; the old ``min_pixels`` /
    ``max_pixels``). Sets either bound in place; the processor's other settings are kept."""
    ip = processor.image_processor
    size = dict(ip.size) if not hasattr(ip.size, "__dataclass_fields__") else {
        k: getattr(ip.size, k) for k in ip.size.__dataclass_fields__ if getattr(ip.size, k) is not None
    }
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
    size.pop("min_pixels", None)
    size.pop("max_pixels", None)
    ip.size = type(ip.size)(**size) if hasattr(ip.size, "__dataclass_fields__") else size


def _adapter(name: str, processor_class: str, *, shared_prefix: bool, notes: str, normalisation: str) -> Adapter:
    from functools import partial

    return Adapter(
        name=name,
        model_types=(name,),
        model_class=MODEL_CLASSES[name],
        processor_class=processor_class,
        layout="patch_rows",
        image_keys=("pixel_values", "image_grid_thw"),
        token_keys=("mm_token_type_ids",),
        normalisation=normalisation,
        vision_cache=True,
        shared_prefix=shared_prefix,
        reuse_positions=True,
        build_tiny=partial(build_tiny, name),
        split_images=split_patch_rows,
        image_geometry=patch_geometry,
        perturb=perturb_patch_rows,
        encode_images=encode_patch_rows,
        encoder_outputs=encoder_outputs_patch_rows,
        rope_positions=mrope_positions,
        slice_positions=slice_mrope,
        join_positions=join_mrope,
        image_budget=set_pixel_budget,
        vision_modules=("visual",),  # the encoder and its patch merger (the projection into the decoder)
        notes=notes,
    )


ADAPTERS: tuple[Adapter, ...] = (
    _adapter("qwen2_5_vl", "Qwen2_5_VLProcessor", shared_prefix=True, normalisation="OpenAI CLIP mean/std",
             notes="patch 14, window attention in the vision encoder"),
    _adapter("qwen2_vl", "Qwen2VLProcessor", shared_prefix=True, normalisation="OpenAI CLIP mean/std",
             notes="patch 14"),
    _adapter("qwen3_vl", "Qwen3VLProcessor", shared_prefix=True, normalisation="0.5 / 0.5",
             notes="patch 16, deepstack features cached with the image embeddings"),
    _adapter("qwen3_vl_moe", "Qwen3VLProcessor", shared_prefix=True, normalisation="0.5 / 0.5",
             notes="patch 16, deepstack, mixture-of-experts decoder"),
    _adapter("qwen3_5", "Qwen3VLProcessor", shared_prefix=True, normalisation="0.5 / 0.5",
             notes="patch 16, hybrid linear/full attention decoder (recurrent state reused with the prompt)"),
)
