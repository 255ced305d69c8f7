"""A tiny SmolVLM2 (Idefics3 layout) built locally: ``build_tiny()``.

Tiny builder: a local BPE tokenizer with SmolVLM's special tokens (``<fake_token_around_image>``,
``<global-img>``, ``<image>``, ``<end_of_utterance>`` and the ``<row_i_col_j>`` tile markers of up to a
4 × 4 grid); tiles of 32 px (8 px patches, shuffled 2 × 2: 4 tokens a tile), images resized to a longest
edge of 64 px, so a lab image becomes up to 2 × 2 tiles plus the global view; a Llama decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visent.models.tiny import chat_template, named_tokenizer, seeded_model, tiny_text_dims, tiny_vision_dims

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_processor", "build_tiny", "build_tokenizer", "tiny_config"]

_GRID = 4  # tile-marker tokens <row_i_col_j> for grids up to _GRID × _GRID
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    "<video>",
) + tuple(f"<row_{i}_col_{j}>" for i in range(1, _GRID + 1) for j in range(1, _GRID + 1))

# SmolVLM2's turn format: "<|im_start|>User:<image>question<end_of_utterance>\nAssistant:".
CHAT_TEMPLATE = chat_template(
    prefix="<|im_start|>",
    turn_start="",
    turn_end="<end_of_utterance>{{ '\\n' }}",
    image="<image>",
    roles={"user": "User", "assistant": "Assistant", "system": "System"},
    role_suffix=":",
    generation_prompt="Assistant:",
)


def build_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 512, with_lab_texts: bool = True) -> Any:
    from visent.models.tokenizer import build_tokenizer as build

    tok = build(
        texts,
        SPECIAL_TOKENS,
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        vocab_size=vocab_size,
        with_lab_texts=with_lab_texts,
        role_text=("User:", "Assistant:", "System:"),
    )
    return named_tokenizer(
        tok,
        {
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
    )


def build_processor(tokenizer: Any, *, tile_size: int = 32, max_side: int = 64, tokens_per_tile: int = 4) -> Any:
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    if max_side > _GRID * tile_size:
        raise ValueError(f"max_side {max_side} needs more than {_GRID}×{_GRID} tiles of {tile_size} px")
    image_processor = SmolVLMImageProcessor(
        size={"longest_edge": max_side},
        max_image_size={"longest_edge": tile_size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        do_image_splitting=True,
    )
    # The processor class requires a video processor; the lab never feeds videos.
    video_processor = SmolVLMVideoProcessor(max_image_size={"longest_edge": tile_size})
    return SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
        image_seq_len=tokens_per_tile,
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
    tile_size: int = 32,
    patch_size: int = 8,
    scale_factor: int = 2,
) -> Any:
    from transformers import SmolVLMConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "model_type": "llama",
        **tiny_text_dims(
            tokenizer,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
        ),
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<end_of_utterance>"],
        "bos_token_id": ids["<|im_start|>"],
    }
    vision = tiny_vision_dims(
        hidden_size=vision_hidden_size,
        depth=vision_depth,
        heads=vision_heads,
        image_size=tile_size,
        patch_size=patch_size,
    )
    return SmolVLMConfig(
        text_config=text,
        vision_config=vision,
        scale_factor=scale_factor,
        image_token_id=ids["<image>"],
        pad_token_id=ids["<|endoftext|>"],
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
    tile_size: int = 32,
    max_side: int = 64,
    patch_size: int = 8,
    scale_factor: int = 2,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, processor)``: a random-weight tiny SmolVLM2 and its processor (module docstring).

    Same arguments, same weights and tokenizer; the caller's RNG state is left alone. About a second.
    """
    from transformers import SmolVLMForConditionalGeneration

    if (tile_size // patch_size) % scale_factor:
        raise ValueError(f"tile_size/patch_size ({tile_size}/{patch_size}) must be a multiple of scale_factor")
    tokens_per_tile = (tile_size // patch_size // scale_factor) ** 2
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    processor = build_processor(tokenizer, tile_size=tile_size, max_side=max_side, tokens_per_tile=tokens_per_tile)
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
        scale_factor=scale_factor,
    )
    model = seeded_model(
        SmolVLMForConditionalGeneration,
        config,
        seed,
        eos_token_ids=[config.text_config.eos_token_id, config.text_config.pad_token_id],
    )
    return model, processor
