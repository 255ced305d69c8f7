"""Kept for the lab's imports: tiny models now live in ``visent.models`` (one builder per family).

``build_tiny(kind, ...)`` builds ``tiny:<kind>`` for any family in ``visent.models``' table (the Qwen
families take the keyword arguments of ``visent.models.qwen.build_tiny``); ``load_model_and_processor``
is ``visent.models.load_model_and_processor``. ``build_tokenizer`` / ``build_processor`` /
``tiny_config`` / ``SPECIAL_TOKENS`` / ``CHAT_TEMPLATE`` are the Qwen ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from visent.models import load_model_and_processor
from visent.models.qwen import CHAT_TEMPLATE, SPECIAL_TOKENS, build_processor, tiny_config
from visent.models.tokenizer import TAG_TOKENS

__all__ = [
    "CHAT_TEMPLATE",
    "KINDS",
    "SPECIAL_TOKENS",
    "TAG_TOKENS",
    "TINY_MODELS",
    "build_processor",
    "build_tiny",
    "build_tokenizer",
    "config_hash",
    "load_model_and_processor",
    "tiny_config",
]

#: The lab's historical kinds (its warm-start cache keys and studies use these two).
KINDS: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl")
TINY_MODELS: dict[str, str] = {f"tiny:{k}": k for k in KINDS}


def build_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """The Qwen-token BPE tokenizer trained on ``texts`` only (no lab corpus added)."""
    from visent.models.qwen import build_qwen_tokenizer

    return build_qwen_tokenizer(texts, vocab_size=vocab_size, with_lab_texts=False)


def build_tiny(kind: str = "qwen2_5_vl", **kw: Any) -> tuple[Any, Any]:
    """``(model, processor)`` of ``tiny:<kind>`` (``visent.models``), built with ``kw``."""
    from visent.models import adapter_named, all_adapters

    try:
        adapter = adapter_named(kind)
    except KeyError:
        valid = ", ".join(a.name for a in all_adapters())
        raise ValueError(f"unknown tiny model kind {kind!r}; valid kinds: {valid}") from None
    return adapter.build_tiny(**kw)


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable description (used to key cached tiny models)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
