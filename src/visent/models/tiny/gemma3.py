"""A tiny Gemma 3 built locally: ``build_tiny()``.

Tiny builder: real classes; a local BPE tokenizer with Gemma's special tokens (``<bos>``,
``<start_of_turn>``, ``<end_of_turn>``, ``<start_of_image>``, ``<end_of_image>``, ``<image_soft_token>``)
named as ``Gemma3Processor`` reads them; images resized to ``image_size`` (64 px: the lab's 56–84 px
images change size, as every image does for Gemma 3); 8 px patches pooled 2 × 2 to 16 tokens per image;
a decoder of sliding-window and full-attention layers (the released 5:1 pattern shortened to 3:1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from visent.models.tiny import chat_template, named_tokenizer, seeded_model, tiny_text_dims, tiny_vision_dims

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_processor", "build_tiny", "build_tokenizer", "tiny_config"]

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)

# Gemma's turn format; `assistant` is called `model`. An image part becomes `<start_of_image>`, which
# Gemma3Processor expands to `\n\n<start_of_image>` + image tokens + `<end_of_image>\n\n`.
CHAT_TEMPLATE = chat_template(
    prefix="{{ bos_token }}",
    turn_start="<start_of_turn>",
    turn_end="<end_of_turn>{{ '\\n' }}",
    image="<start_of_image>",
    roles={"assistant": "model"},
    generation_prompt="<start_of_turn>model{{ '\\n' }}",
)


def build_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 512, with_lab_texts: bool = True) -> Any:
    from visent.models.tokenizer import build_tokenizer as build

    tok = build(
        texts,
        SPECIAL_TOKENS,
        eos_token="<end_of_turn>",
        pad_token="<pad>",
        bos_token="<bos>",
        vocab_size=vocab_size,
        with_lab_texts=with_lab_texts,
        role_text=("user\n", "model\n", "system\n"),
    )
    return named_tokenizer(
        tok, {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    )


def build_processor(tokenizer: Any, *, image_size: int = 64, tokens_per_image: int = 16) -> Any:
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    image_processor = Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=tokens_per_image,
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
    image_size: int = 64,
    patch_size: int = 8,
    tokens_per_image: int = 16,
    sliding_window: int = 128,
) -> Any:
    from transformers import Gemma3Config

    side = math.isqrt(tokens_per_image)
    if side * side != tokens_per_image or (image_size // patch_size) % side:
        raise ValueError(
            f"tokens_per_image ({tokens_per_image}) must be a square whose side divides the patch grid "
            f"({image_size // patch_size} patches per side)"
        )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        **tiny_text_dims(
            tokenizer,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
        ),
        "head_dim": hidden_size // num_heads,
        "sliding_window": sliding_window,
        "layer_types": ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(num_layers)],
        "pad_token_id": ids["<pad>"],
        "eos_token_id": ids["<end_of_turn>"],
        "bos_token_id": ids["<bos>"],
    }
    vision = {
        "model_type": "siglip_vision_model",
        **tiny_vision_dims(
            hidden_size=vision_hidden_size,
            depth=vision_depth,
            heads=vision_heads,
            image_size=image_size,
            patch_size=patch_size,
        ),
    }
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
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
    image_size: int = 64,
    patch_size: int = 8,
    tokens_per_image: int = 16,
    sliding_window: int = 128,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, processor)``: a random-weight tiny Gemma 3 and its processor (module docstring).

    Weights are drawn from ``torch.manual_seed(seed)`` without disturbing the caller's RNG state: the
    same arguments give identical weights and tokenizer. About a second on CPU.
    """
    from transformers import Gemma3ForConditionalGeneration

    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    processor = build_processor(tokenizer, image_size=image_size, tokens_per_image=tokens_per_image)
    config = tiny_config(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        vision_hidden_size=vision_hidden_size,
        vision_depth=vision_depth,
        vision_heads=vision_heads,
        image_size=image_size,
        patch_size=patch_size,
        tokens_per_image=tokens_per_image,
        sliding_window=sliding_window,
    )

    def draw_projection(model: torch.nn.Module) -> None:
        # transformers initialises the image projection to zeros, which makes a random-weight model blind
        # to its images (every perturbation would give JSD 0); draw it like the other weights instead.
        torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=config.initializer_range)

    model = seeded_model(
        Gemma3ForConditionalGeneration,
        config,
        seed,
        # As in Gemma's instruct checkpoints: a turn ends at <end_of_turn> or <eos>.
        eos_token_ids=[config.text_config.eos_token_id, tokenizer.convert_tokens_to_ids("<eos>")],
        init=draw_projection,
    )
    return model, processor
