"""Tiny Qwen-family models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5) built locally: ``build_tiny(kind)``.

Tiny builders: random weights, the real processor class around ``visent.models.tokenizer``'s local
tokenizer with Qwen's special tokens, a chat template in ChatML form without a default system prompt, and
an image processor whose pixel range is capped at ``max_image_side²`` so the lab's small images keep
their size (exactly for p = 14, where 56 and 84 px are multiples of the 28 px merge factor; for p = 16 an
image is resized to the nearest multiple of 32 px, as the real processor would).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visent.models.tiny import seeded_model

__all__ = ["CHAT_TEMPLATE", "KINDS", "MODEL_CLASSES", "SPECIAL_TOKENS", "build_processor", "build_qwen_tokenizer", "build_tiny", "tiny_config"]

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
    _check_kind(kind)
    patch_size = patch_size or default_patch_size(kind)
    if hidden_size % num_heads or (hidden_size // num_heads) % 8:
        raise ValueError(
            f"hidden_size ({hidden_size}) / num_heads ({num_heads}) must be a multiple of 8 (M-RoPE splits "
            "the head dimension into temporal/height/width sections)"
        )
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
    vision = {"depth": vision_depth, "num_heads": vision_heads, "patch_size": patch_size,
              "spatial_merge_size": merge_size, "temporal_patch_size": 2}
    if kind in _QWEN3:
        return _qwen3_config(kind, text, vision, common, hidden_size, num_heads, vision_hidden_size)
    return _qwen2_config(kind, text, vision, common, hidden_size, num_heads, vision_hidden_size)


def _qwen2_config(
    kind: str, text: dict, vision: dict, common: dict, hidden_size: int, num_heads: int, vision_hidden_size: int
) -> Any:
    """Qwen2-VL / Qwen2.5-VL: M-RoPE over (t, h, w) sections of the rotary half of a head."""
    import transformers

    # M-RoPE: the rotary half of a head (head_dim / 2) split over (t, h, w) like Qwen's [16, 24, 24].
    half = (hidden_size // num_heads) // 2
    hw = (half * 3) // 8
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half - 2 * hw, hw, hw]}
    if kind == "qwen2_5_vl":
        vision.update(
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            out_hidden_size=hidden_size,
            # Windows of 112 px: the lab's images fit in one, as small real screenshots do.
            window_size=112,
            fullatt_block_indexes=[vision["depth"] - 1],
        )
        return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    vision.update(embed_dim=vision_hidden_size, hidden_size=hidden_size, mlp_ratio=2)
    return transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **common)


def _qwen3_config(
    kind: str, text: dict, vision: dict, common: dict, hidden_size: int, num_heads: int, vision_hidden_size: int
) -> Any:
    """The Qwen3 generation: interleaved M-RoPE over (t, h, w); sections as in the releases ([24, 20, 20]
    of 64) scaled to the rotary part of this head; learnt vision position embeddings; deepstack (not 3.5)."""
    import transformers

    head_dim = hidden_size // num_heads
    text["head_dim"] = head_dim
    vision.update(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        out_hidden_size=hidden_size,
        # A 16×16 grid of learnt position embeddings, interpolated to each image's grid (as the real 48×48).
        num_position_embeddings=256,
    )
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
                    "full_attention" if (i + 1) % 4 == 0 else "linear_attention"
                    for i in range(text["num_hidden_layers"])
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
    vision["deepstack_visual_indexes"] = list(range(min(vision["depth"] - 1, 1) or 1))
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


MODEL_CLASSES = {
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
        getattr(transformers, MODEL_CLASSES[kind]),
        config,
        seed,
        # Like Qwen's instruct checkpoints: a turn ends at <|im_end|> or <|endoftext|>; pad with <|endoftext|>.
        eos_token_ids=[config.text_config.eos_token_id, config.text_config.pad_token_id],
    )
    return model, processor
