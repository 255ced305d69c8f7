"""A tiny LLaVA-OneVision built locally: ``build_tiny()``.

Tiny builder: a Qwen2 decoder and a SigLIP encoder with 28 px tiles of 14 px patches (4 tokens a tile),
pinpoints of 1 × 1 to 2 × 2 tiles, ChatML template, ``vision_feature_select_strategy="full"`` as in the
released OneVision configs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visent.models.tiny import chat_template, named_tokenizer, seeded_model, tiny_text_dims, tiny_vision_dims

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_processor", "build_tiny", "build_tokenizer", "tiny_config"]

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
