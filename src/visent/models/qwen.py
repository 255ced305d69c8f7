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

Tiny builders: random weights, the real processor class around ``visent.models.tokenizer``'s local
tokenizer with Qwen's special tokens, a chat template in ChatML form without a default system prompt, and
an image processor whose pixel range is capped at ``max_image_side²`` so the lab's small images keep
their size (exactly for p = 14, where 56 and 84 px are multiples of the 28 px merge factor; for p = 16 an
image is resized to the nearest multiple of 32 px, as the real processor would).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit, concat_units
from visent.models.tiny import seeded_model

__all__ = [
    "ADAPTERS",
    "CHAT_TEMPLATE",
    "KINDS",
    "SPECIAL_TOKENS",
    "build_processor",
    "build_qwen_tokenizer",
    "build_tiny",
    "tiny_config",
]

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Jinja chat template in Qwen's ChatML form. An image block (TRL inserts `{"type": "image"}` parts) becomes
# `<|vision_start|><|image_pad|><|vision_end|>`; the processor then expands the single `<|image_pad|>` to
# one token per merged patch of that image.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'video' -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)

KINDS: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5")

# OpenAI CLIP statistics (Qwen2/2.5-VL) and the 0.5/0.5 of the Qwen3-generation preprocessor configs.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)
_QWEN3 = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown tiny Qwen model kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def default_patch_size(kind: str) -> int:
    return 16 if kind in _QWEN3 else 14


def build_qwen_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 512, with_lab_texts: bool = True) -> Any:
    """The local BPE tokenizer with Qwen's special tokens (``visent.models.tokenizer.build_tokenizer``)."""
    from visent.models.tokenizer import build_tokenizer

    return build_tokenizer(
        texts,
        SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        vocab_size=vocab_size,
        with_lab_texts=with_lab_texts,
    )


def build_processor(
    kind: str, tokenizer: Any, *, max_image_side: int = 112, patch_size: int | None = None, merge_size: int = 2
) -> Any:
    """The family's real processor class around ``tokenizer`` and a small-pixel-range image processor."""
    import transformers
    from transformers import Qwen2VLImageProcessor

    _check_kind(kind)
    patch_size = patch_size or default_patch_size(kind)
    mean, std = (_HALF, _HALF) if kind in _QWEN3 else (_CLIP_MEAN, _CLIP_STD)
    factor = patch_size * merge_size
    image_processor = Qwen2VLImageProcessor(
        min_pixels=factor * factor,
        max_pixels=max(max_image_side, factor) ** 2,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
        image_mean=list(mean),
        image_std=list(std),
    )
    # The processor classes require a video processor; the lab never feeds videos.
    video_cls = transformers.Qwen3VLVideoProcessor if kind in _QWEN3 else transformers.Qwen2VLVideoProcessor
    video_processor = video_cls(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2)
    processor_cls = {
        "qwen2_5_vl": transformers.Qwen2_5_VLProcessor,
        "qwen2_vl": transformers.Qwen2VLProcessor,
    }.get(kind, transformers.Qwen3VLProcessor)
    return processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(
    kind: str,
    tokenizer: Any,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    vision_hidden_size: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 2,
    patch_size: int | None = None,
    merge_size: int = 2,
) -> Any:
    """A small config of the family whose token ids match ``tokenizer``."""
    import transformers

    _check_kind(kind)
    patch_size = patch_size or default_patch_size(kind)
    if hidden_size % num_heads or (hidden_size // num_heads) % 8:
        raise ValueError(
            f"hidden_size ({hidden_size}) / num_heads ({num_heads}) must be a multiple of 8 (M-RoPE splits "
            "the head dimension into temporal/height/width sections)"
        )
    head_dim = hidden_size // num_heads
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 2048,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }
    if kind in ("qwen2_vl", "qwen2_5_vl"):
        # M-RoPE: the rotary half of a head (head_dim / 2) split over (t, h, w) like Qwen's [16, 24, 24].
        half = head_dim // 2
        hw = (half * 3) // 8
        text["rope_parameters"] = {
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half - 2 * hw, hw, hw]
        }
    if kind == "qwen2_5_vl":
        vision = {
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_heads": vision_heads,
            "out_hidden_size": hidden_size,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": 2,
            # Windows of 112 px: the lab's images fit in one, as small real screenshots do.
            "window_size": 112,
            "fullatt_block_indexes": [vision_depth - 1],
        }
        return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    if kind == "qwen2_vl":
        vision = {
            "depth": vision_depth,
            "embed_dim": vision_hidden_size,
            "hidden_size": hidden_size,
            "mlp_ratio": 2,
            "num_heads": vision_heads,
            "patch_size": patch_size,
            "spatial_merge_size": merge_size,
            "temporal_patch_size": 2,
        }
        return transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **common)

    # Qwen3 generation: interleaved M-RoPE over (t, h, w); sections as in the releases ([24, 20, 20] of 64)
    # scaled to the rotary half of this head.
    text["head_dim"] = head_dim
    vision = {
        "depth": vision_depth,
        "hidden_size": vision_hidden_size,
        "intermediate_size": 2 * vision_hidden_size,
        "num_heads": vision_heads,
        "out_hidden_size": hidden_size,
        "patch_size": patch_size,
        "spatial_merge_size": merge_size,
        "temporal_patch_size": 2,
        # A 16×16 grid of learnt position embeddings, interpolated to each image's grid (as the real 48×48).
        "num_position_embeddings": 256,
    }
    if kind == "qwen3_5":
        # Qwen3.5 rotates a quarter of each head (partial_rotary_factor 0.25 in the release).
        rot_half = head_dim // 8
        hw = (rot_half * 3) // 8
        text["rope_parameters"] = {
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [rot_half - 2 * hw, hw, hw],
            "mrope_interleaved": True, "partial_rotary_factor": 0.25,
        }
        text.update(
            {
                # Three linear-attention (gated delta net) layers to one full-attention layer, as released.
                "layer_types": [
                    "full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(num_layers)
                ],
                "linear_conv_kernel_dim": 4,
                "linear_key_head_dim": 16,
                "linear_value_head_dim": 16,
                "linear_num_key_heads": 2,
                "linear_num_value_heads": 4,
            }
        )
        return transformers.Qwen3_5Config(text_config=text, vision_config=vision, **common)
    half = head_dim // 2
    hw = (half * 5) // 16
    text["rope_parameters"] = {
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half - 2 * hw, hw, hw],
        "mrope_interleaved": True,
    }
    # Deepstack: features of the first encoder layer(s) are added to the decoder's first layer(s).
    vision["deepstack_visual_indexes"] = list(range(min(vision_depth - 1, 1) or 1))
    if kind == "qwen3_vl_moe":
        text.update(
            {
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "moe_intermediate_size": hidden_size,
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
            }
        )
        return transformers.Qwen3VLMoeConfig(text_config=text, vision_config=vision, **common)
    return transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **common)


_MODEL_CLASSES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
}


def build_tiny(
    kind: str = "qwen2_5_vl",
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
    max_image_side: int = 112,
    patch_size: int | None = None,
    merge_size: int = 2,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, processor)``: a random-weight tiny model of the Qwen family ``kind`` and its processor.

    The tokenizer is trained on the lab corpus plus ``texts`` (``visent.models.tokenizer``). Weights are
    drawn from ``torch.manual_seed(seed)`` without disturbing the caller's global RNG state, so the same
    arguments give identical weights and an identical tokenizer. About a second on CPU.
    """
    import transformers

    _check_kind(kind)
    tokenizer = build_qwen_tokenizer(texts, vocab_size=vocab_size)
    processor = build_processor(
        kind, tokenizer, max_image_side=max_image_side, patch_size=patch_size, merge_size=merge_size
    )
    config = tiny_config(
        kind,
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        vision_hidden_size=vision_hidden_size,
        vision_depth=vision_depth,
        vision_heads=vision_heads,
        patch_size=patch_size,
        merge_size=merge_size,
    )
    model = seeded_model(
        getattr(transformers, _MODEL_CLASSES[kind]),
        config,
        seed,
        # Like Qwen's instruct checkpoints: a turn ends at <|im_end|> or <|endoftext|>; pad with <|endoftext|>.
        eos_token_ids=[config.text_config.eos_token_id, config.text_config.pad_token_id],
    )
    return model, processor


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


def _adapter(name: str, processor_class: str, *, shared_prefix: bool, notes: str, normalisation: str) -> Adapter:
    from functools import partial

    return Adapter(
        name=name,
        model_types=(name,),
        model_class=_MODEL_CLASSES[name],
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
        image_budget=set_pixel_budget,
        slice_positions=slice_mrope,
        join_positions=join_mrope,
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
