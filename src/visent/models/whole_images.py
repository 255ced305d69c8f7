"""Pieces shared by the families whose processors hand the model whole images or tiles ``(…, C, H, W)``
(Gemma 3, SmolVLM2 / Idefics3, LLaVA-OneVision) rather than Qwen's patch rows.

- ``named_tokenizer``: a tiny model's tokenizer with the named special tokens the family's processor
  reads (``tokenizer.image_token``, ``tokenizer.boi_token``, ...), which survive ``save_pretrained``;
- ``image_stats``: the family's own normalisation, read from its image processor;
- ``perturb_units``: one prompt's image units perturbed through ``visent.perturb.perturb_image_tiles`` in
  a single draw, given how a family reads tiles (and their real-pixel masks) out of a unit and puts
  perturbed tiles back;
- ``packed_encoder_outputs``: the ``mm_encoder_outputs["image"]`` value of the families whose decoder takes
  a list ``pooler_output``, one ``(n_tokens_i, D)`` piece per unit in order (SmolVLM2, LLaVA-OneVision);
- ``chat_template``: the small Jinja chat templates of the tiny builders (an ``{"type": "image"}``
  part, which TRL inserts, becomes the family's image placeholder);
- ``tiny_text_dims`` / ``tiny_vision_dims``: the sizes every tiny builder gives its decoder and its
  vision tower (MLP width twice the hidden size), to which each family adds its own keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from visent.models.adapters import ImageUnit

__all__ = [
    "chat_template",
    "image_stats",
    "named_tokenizer",
    "packed_encoder_outputs",
    "perturb_units",
    "picture",
    "tiny_text_dims",
    "tiny_vision_dims",
]


def named_tokenizer(tokenizer: Any, names: dict[str, str]) -> Any:
    """``tokenizer`` (a ``PreTrainedTokenizerFast``) rebuilt with ``names`` as named special tokens, e.g.
    ``{"image_token": "<image>"}`` gives ``tokenizer.image_token`` and ``tokenizer.image_token_id``. The
    vocabulary, added tokens and settings are kept (same backend tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        bos_token=tokenizer.bos_token,
        unk_token=None,
        padding_side=tokenizer.padding_side,
        model_max_length=tokenizer.model_max_length,
        extra_special_tokens=dict(names),
    )


def image_stats(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(image_mean, image_std)`` of the processor's image processor (per channel, [0, 1] pixels)."""
    ip = getattr(processor, "image_processor", processor)
    mean, std = getattr(ip, "image_mean", None), getattr(ip, "image_std", None)
    if mean is None or std is None:
        raise ValueError(f"{type(ip).__name__} has no image_mean / image_std to un-normalise with")
    if isinstance(mean, (int, float)):
        mean, std = [mean] * 3, [std] * 3
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def perturb_units(
    kind: str,
    units: Sequence[ImageUnit],
    generator: torch.Generator,
    strength: float | None,
    layout: Any,
    tiles_of: Callable[[ImageUnit], tuple[torch.Tensor, torch.Tensor | None]],
    with_tiles: Callable[[ImageUnit, torch.Tensor], ImageUnit],
) -> list[ImageUnit]:
    """The images of ONE prompt perturbed together (one generator, one draw over all their tiles).

    ``tiles_of(unit)``: ``(tiles (n, C, H, W), valid (n, H, W) bool or None)``, the unit's tiles and real
    pixels; ``with_tiles(unit, tiles)``: the unit with its tiles replaced. ``layout``: the family's
    ``visent.perturb.TileLayout``.
    """
    from visent.perturb import perturb_image_tiles

    if not units:
        return []
    parts = [tiles_of(u) for u in units]
    tiles = torch.cat([t for t, _ in parts])
    valid = None
    if any(v is not None for _, v in parts):
        valid = torch.cat(
            [
                v if v is not None else torch.ones(t.shape[0], *t.shape[2:], dtype=torch.bool, device=t.device)
                for t, v in parts
            ]
        )
    noisy = perturb_image_tiles(kind, tiles, generator, strength, layout, valid)
    pieces = torch.split(noisy, [t.shape[0] for t, _ in parts])
    return [with_tiles(u, p) for u, p in zip(units, pieces)]


def packed_encoder_outputs(pieces: Sequence[torch.Tensor]) -> Any:
    """``mm_encoder_outputs["image"]`` as a list ``pooler_output`` of the per-unit ``(n_tokens_i, D)`` pieces,
    in order: the decoder concatenates them as it does its own encoder's output."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(pooler_output=list(pieces))


def picture(tile: torch.Tensor, layout: Any) -> Any:
    """A normalised ``(C, H, W)`` image or tile as an RGB PIL image, un-normalised with ``layout``'s
    (a ``TileLayout``) mean/std and clipped to [0, 1] for display (``visent inspect``)."""
    from PIL import Image

    mean = torch.tensor(layout.image_mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(layout.image_std, dtype=torch.float32).view(-1, 1, 1)
    pixels = (tile.detach().float().cpu() * std + mean).clamp(0.0, 1.0)
    return Image.fromarray((pixels * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()).convert("RGB")


def chat_template(
    *, turn_start: str, turn_end: str, image: str, roles: dict[str, str] | None = None, prefix: str = "",
    role_suffix: str = "\\n", generation_prompt: str,
) -> str:
    """A Jinja chat template: ``prefix``, then per message ``turn_start + role + role_suffix + content +
    turn_end``; an image part becomes ``image``; ``roles`` renames roles (Gemma's ``assistant`` is
    ``model``). No default system prompt (fewer tokens to generate through on a CPU)."""
    role = "message['role']"
    for old, new in (roles or {}).items():
        role = f"('{new}' if message['role'] == '{old}' else {role})"
    return (
        prefix
        + "{%- for message in messages -%}"
        + turn_start
        + "{{ " + role + " }}"
        + "{{ '" + role_suffix + "' }}"
        + "{%- if message['content'] is string -%}{{ message['content'] }}"
        + "{%- else -%}{%- for part in message['content'] -%}"
        + "{%- if part['type'] == 'image' -%}" + image
        + "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
        + "{%- endif -%}{%- endfor -%}{%- endif -%}"
        + turn_end
        + "{%- endfor -%}"
        + "{%- if add_generation_prompt -%}" + generation_prompt + "{%- endif -%}"
    )


def tiny_text_dims(
    tokenizer: Any, *, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int
) -> dict:
    """The ``text_config`` keys every tiny builder sets the same way (the vocabulary is exactly the
    tokenizer's, so a sampled id always decodes); the family adds its model type and token ids."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 2048,
    }


def tiny_vision_dims(*, hidden_size: int, depth: int, heads: int, image_size: int, patch_size: int) -> dict:
    """The ``vision_config`` keys every tiny SigLIP-style tower sets the same way; ``image_size`` is the
    side of one image or tile in pixels."""
    return {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": depth,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }
