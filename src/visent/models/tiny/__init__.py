"""Tiny models built locally (random weights, offline, about a second): one builder module per family.

``qwen`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5), ``gemma3``, ``idefics3`` (SmolVLM2) and
``llava_onevision``; each family's adapter (``visent.models.<family>``) names its builder, and
``visent.models.build_tiny(family)`` / ``load_model_and_processor("tiny:<family>")`` call it. This
module holds what the builders share:

- ``seeded_model``: the step every builder ends with, a random-weight model drawn from a fixed seed;
- ``named_tokenizer``: a tiny model's tokenizer with the named special tokens the family's processor
  reads (``tokenizer.image_token``, ``tokenizer.boi_token``, ...), which survive ``save_pretrained``;
- ``chat_template``: the small Jinja chat templates of the builders (an ``{"type": "image"}`` part, which
  TRL inserts, becomes the family's image placeholder);
- ``tiny_text_dims`` / ``tiny_vision_dims``: the sizes every builder gives its decoder and its vision
  tower (MLP width twice the hidden size), to which each family adds its own keys.

``seeded_model`` builds ``model_class(config)`` under ``torch.manual_seed(seed)`` inside
``torch.random.fork_rng``, so the same arguments give identical weights and the caller's global RNG
state is left alone; the model comes back in eval mode with its generation config's ``eos`` / ``pad``
/ ``bos`` ids set from the text config (``eos_token_ids`` as the family's instruct checkpoints end a
turn). The families' tokenizers are in ``visent.models.tokenizer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["chat_template", "named_tokenizer", "seeded_model", "tiny_text_dims", "tiny_vision_dims"]


def seeded_model(
    model_class: Callable[[Any], torch.nn.Module],
    config: Any,
    seed: int,
    *,
    eos_token_ids: Sequence[int],
    init: Callable[[torch.nn.Module], None] | None = None,
) -> Any:
    """``model_class(config)`` with weights from ``torch.manual_seed(seed)``, in eval mode.

    ``init(model)`` runs under the same seeded RNG right after construction (a family's fix-up of
    transformers' initialisation); ``eos_token_ids`` becomes ``generation_config.eos_token_id``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
        if init is not None:
            init(model)
    model.eval()
    gen = model.generation_config
    gen.eos_token_id = list(eos_token_ids)
    gen.pad_token_id = config.text_config.pad_token_id
    gen.bos_token_id = config.text_config.bos_token_id
    return model


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
