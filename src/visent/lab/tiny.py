"""A tiny, locally built Qwen2-VL / Qwen2.5-VL: random weights and a BPE tokenizer trained on the fly.

Nothing is downloaded. The model is the real ``transformers`` class (``Qwen2_5_VLForConditionalGeneration``
or ``Qwen2VLForConditionalGeneration``) with a small config, and the processor is the real
``Qwen2_5_VLProcessor`` / ``Qwen2VLProcessor`` around a ``PreTrainedTokenizerFast`` and a
``Qwen2VLImageProcessor``, so every code path that handles a real checkpoint (chat template with image
placeholders, patch-flattened ``pixel_values`` + ``image_grid_thw``, M-RoPE positions, generation)
runs unchanged on it.

Departures from a real checkpoint, on purpose:

- The vocabulary is a few hundred byte-level BPE tokens learnt from the lab tasks' text (plus any
  ``texts`` given), with Qwen's special tokens. ``<think>``/``</think>``/``<answer>``/``</answer>`` are
  single (non-special) tokens so responses stay short; real Qwen2.5 splits them. The model's vocabulary
  is exactly the tokenizer's length, so a sampled id always decodes.
- The chat template renders no default system prompt (fewer tokens to generate through on CPU).
- The image processor's pixel range is capped at ``max_image_side²`` so the lab's 56–84 px images are
  never resized (coordinates in the original image are coordinates in the resized one).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Learnt as whole tokens but not "special": `skip_special_tokens=True` keeps them in decoded text.
TAG_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

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

# Scaffolding the tokenizer must see besides the task text (roles of the chat template).
_TEMPLATE_TEXT = ("user\n", "assistant\n", "system\n")

KINDS: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl")


def build_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` with Qwen's special tokens.

    Digits are always single tokens (as in Qwen), so numbers such as counts and click coordinates are
    spelt digit by digit. Training is deterministic for a given ``texts`` and ``vocab_size``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Role names appear once per turn in real use: repeat them so BPE learns them as whole words.
    tok.train_from_iterator(list(texts) + list(_TEMPLATE_TEXT) * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        # Generation (ours and TRL's) pads prompts on the left.
        padding_side="left",
        model_max_length=4096,
    )
    fast.add_tokens(list(TAG_TOKENS))
    return fast


def _processor_class(kind: str) -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

    return {"qwen2_5_vl": Qwen2_5_VLProcessor, "qwen2_vl": Qwen2VLProcessor}[kind]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def build_processor(
    kind: str, tokenizer: Any, *, max_image_side: int = 112, patch_size: int = 14, merge_size: int = 2
) -> Any:
    """The real Qwen processor class around ``tokenizer`` and a small-pixel-range image processor."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    _check_kind(kind)
    factor = patch_size * merge_size
    image_processor = Qwen2VLImageProcessor(
        min_pixels=factor * factor,
        max_pixels=max_image_side * max_image_side,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
    )
    # The processor classes require a video processor; the lab never feeds videos.
    video_processor = Qwen2VLVideoProcessor(
        patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2
    )
    return _processor_class(kind)(
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
    patch_size: int = 14,
    merge_size: int = 2,
) -> Any:
    """A small ``Qwen2_5_VLConfig`` / ``Qwen2VLConfig`` whose token ids match ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    _check_kind(kind)
    if hidden_size % num_heads or (hidden_size // num_heads) % 8:
        raise ValueError(
            f"hidden_size ({hidden_size}) / num_heads ({num_heads}) must be a multiple of 8 (M-RoPE splits "
            "the head dimension into temporal/height/width sections)"
        )
    head_dim = hidden_size // num_heads
    # M-RoPE: the rotary half of a head (head_dim / 2) is split over (t, h, w) like Qwen's [16, 24, 24].
    half = head_dim // 2
    hw = (half * 3) // 8
    mrope_section = [half - 2 * hw, hw, hw]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
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
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
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
    return Qwen2VLConfig(text_config=text, vision_config=vision, **common)


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
    patch_size: int = 14,
    merge_size: int = 2,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, processor)``: a random-weight tiny Qwen2(.5)-VL and its locally trained processor.

    The tokenizer is trained on the lab tasks' prompts and target responses plus ``texts``. Weights are
    drawn from ``torch.manual_seed(seed)`` without disturbing the caller's global RNG state, so the same
    arguments give identical weights and an identical tokenizer. Takes about a second on CPU.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    from visent.lab.tasks import task_texts

    _check_kind(kind)
    tokenizer = build_tokenizer(task_texts() + list(texts or []), vocab_size=vocab_size)
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
    model_cls = (
        Qwen2_5_VLForConditionalGeneration if kind == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.eval()
    gen = model.generation_config
    # Like Qwen's instruct checkpoints: a turn ends at <|im_end|> or <|endoftext|>; pad with <|endoftext|>.
    gen.eos_token_id = [config.text_config.eos_token_id, config.text_config.pad_token_id]
    gen.pad_token_id = config.text_config.pad_token_id
    gen.bos_token_id = config.text_config.bos_token_id
    return model, processor


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable description (used to key cached tiny models)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


TINY_MODELS: dict[str, str] = {"tiny:qwen2_5_vl": "qwen2_5_vl", "tiny:qwen2_vl": "qwen2_vl"}


def load_model_and_processor(name_or_path: str, **kw: Any) -> tuple[Any, Any]:
    """Resolve a model name to ``(model, processor)``.

    - ``tiny:qwen2_5_vl`` / ``tiny:qwen2_vl``: built locally with ``build_tiny(kind, **kw)``.
    - anything else (a Hub id, a local checkpoint directory, a saved tiny model): loaded with
      ``AutoModelForImageTextToText.from_pretrained(name_or_path, **kw)`` and ``AutoProcessor``.
    """
    if name_or_path.startswith("tiny:"):
        if name_or_path not in TINY_MODELS:
            raise ValueError(f"unknown tiny model {name_or_path!r}; valid names: {', '.join(TINY_MODELS)}")
        return build_tiny(TINY_MODELS[name_or_path], **kw)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if os.path.isdir(name_or_path) and not os.path.exists(os.path.join(name_or_path, "config.json")):
        raise FileNotFoundError(f"{name_or_path}: a directory without config.json is not a saved model")
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kw)
    processor = AutoProcessor.from_pretrained(name_or_path)
    return model, processor
