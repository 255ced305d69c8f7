"""Resolve a model name to ``(model, processor)``: ``tiny:<family>`` or a Hub id / local checkpoint.

- ``tiny:<family>`` (``<family>`` a name in ``visent.models.adapters``' table): built locally by the
  family's ``build_tiny`` (random weights, offline, about a second).
- anything else: ``AutoModelForImageTextToText.from_pretrained`` and ``AutoProcessor.from_pretrained``.

Which models are accepted, and when (``check_supported``; every check reads a config only: a local
checkpoint's ``config.json``, or a Hub id's config fetched alone, so nothing is refused after its weights
were loaded):

- a model of a family with an adapter: always;
- an image-text-to-text model without adapter (transformers can load it, visent has no adapter for its
  ``model_type``, e.g. plain LLaVA): only where nothing needs the adapter, i.e. ``need_adapter=False``.
  ``visent train`` passes that for configs that never run the counterfactual pass (``token_score: none``
  or ``random``, random selection: GRPO, Dr. GRPO, the entropy schedules, random-token baselines), where
  TRL's own forward handles the images and visent adds only a loss; ``visent eval`` passes it too
  (generation only). The counterfactual pass itself is never run without an adapter, and there is no
  plain-forward fallback for it: cutting a batch's image inputs per response and perturbing them in the
  family's layout and normalisation is exactly what an adapter knows; a guess would be silently wrong
  statistics, not a slow run;
- anything else (a text-only model, an unknown ``model_type``, an unknown ``tiny:`` name): never.

A refusal raises ``UnsupportedModel``: one line naming the supported families (and, where a config
without token statistics would run, saying so); the CLIs exit with status 2.
"""

from __future__ import annotations

import json
import os
from typing import Any

from visent.models.adapters import (
    UnsupportedModel,
    adapter_for,
    adapter_named,
    all_adapters,
    supported_families,
)

__all__ = ["TINY_PREFIX", "build_tiny", "check_supported", "is_image_text_to_text", "load_model_and_processor", "tiny_names"]

TINY_PREFIX = "tiny:"

# ``from_pretrained`` arguments that also locate a Hub config (the rest are model-loading options).
_CONFIG_KWARGS = ("revision", "trust_remote_code", "token", "cache_dir", "local_files_only", "subfolder")


def tiny_names() -> list[str]:
    """``["tiny:qwen2_5_vl", ...]``: every family's tiny model name."""
    return [TINY_PREFIX + a.name for a in all_adapters() if a.build_tiny is not None]


def build_tiny(family: str = "qwen2_5_vl", **kw: Any) -> tuple[Any, Any]:
    """``(model, processor)`` of ``tiny:<family>``, built by the family's builder with ``kw``."""
    try:
        adapter = adapter_named(family)
    except KeyError:
        valid = ", ".join(a.name for a in all_adapters())
        raise ValueError(f"unknown tiny model family {family!r}; valid: {valid}") from None
    if adapter.build_tiny is None:
        raise UnsupportedModel(f"{TINY_PREFIX}{family}: family {adapter.name} has no tiny builder")
    return adapter.build_tiny(**kw)


def is_image_text_to_text(model_type: str | None) -> bool:
    """Whether transformers' ``AutoModelForImageTextToText`` knows ``model_type``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def _checkpoint_model_type(name_or_path: str) -> str | None:
    """``model_type`` from a local checkpoint's ``config.json``."""
    path = os.path.join(name_or_path, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name_or_path}: a directory without config.json is not a saved model")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UnsupportedModel(f"{path}: not a readable model config ({e})") from None
    return config.get("model_type") if isinstance(config, dict) else None


def _hub_model_type(name: str, kw: dict[str, Any]) -> str | None:
    """``model_type`` of a Hub id's config, fetched alone (no weights)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, **{k: kw[k] for k in _CONFIG_KWARGS if k in kw})
    except ValueError as e:  # a model_type transformers itself does not know
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModel(f"{name}: {reason}; supported families: {supported_families()}") from None
    return getattr(config, "model_type", None)


def check_supported(name_or_path: str, need_adapter: bool = True, **kw: Any) -> None:
    """Refuse, from its config alone, a model visent cannot run (module docstring); ``UnsupportedModel``.

    ``need_adapter``: the caller will run the counterfactual pass or perturb images (VEPO-style token
    scores, ``visent inspect``); otherwise any image-text-to-text model is accepted. ``kw``: the
    ``from_pretrained`` arguments (only those that locate a Hub config are used).
    """
    if name_or_path.startswith(TINY_PREFIX):
        try:
            adapter_named(name_or_path[len(TINY_PREFIX):])
        except KeyError:
            raise UnsupportedModel(
                f"unknown tiny model {name_or_path!r}; valid names: {', '.join(tiny_names())}"
            ) from None
        return
    if os.path.isdir(name_or_path):
        model_type = _checkpoint_model_type(name_or_path)
    elif os.path.exists(name_or_path):
        raise UnsupportedModel(f"{name_or_path}: a file, not a saved model folder or Hub id")
    elif name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"{name_or_path}: no such model folder (and not a Hub id)")
    else:
        model_type = _hub_model_type(name_or_path, kw)
    if adapter_for(model_type or "") is not None:
        return
    if not is_image_text_to_text(model_type):
        raise UnsupportedModel(
            f"{name_or_path}: model_type {model_type!r} is not a supported vision-language family; supported: "
            f"{supported_families()}"
        )
    if need_adapter:
        raise UnsupportedModel(
            f"{name_or_path}: model_type {model_type!r} has no visent adapter, which token statistics and image "
            f"perturbations need (configs with token_score none or random train it with TRL's own forward); "
            f"supported: {supported_families()}"
        )


def load_model_and_processor(
    name_or_path: str, *, require_supported: bool = True, need_adapter: bool = True, **kw: Any
) -> tuple[Any, Any]:
    """``(model, processor)`` for ``tiny:<family>``, a local checkpoint or a Hub id (module docstring).

    ``kw`` goes to the tiny builder or to ``from_pretrained``. With ``require_supported`` (default), runs
    ``check_supported(name_or_path, need_adapter)`` first: ``UnsupportedModel`` (a ``ValueError``) before
    any weight is loaded.
    """
    if require_supported:
        check_supported(name_or_path, need_adapter, **kw)
    if name_or_path.startswith(TINY_PREFIX):
        check_supported(name_or_path)  # an unknown tiny name is refused whatever require_supported says
        return build_tiny(name_or_path[len(TINY_PREFIX):], **kw)
    if os.path.isdir(name_or_path):
        _checkpoint_model_type(name_or_path)  # a folder without config.json: a clear error, not transformers'
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kw)
    processor = AutoProcessor.from_pretrained(name_or_path)
    return model, processor
