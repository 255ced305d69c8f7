"""Resolve a model name to ``(model, processor)``: ``tiny:<family>`` or a Hub id / local checkpoint.

- ``tiny:<family>`` (``<family>`` a name in ``visent.models.adapters``' table): built locally by the
  family's ``build_tiny`` (random weights, offline, about a second).
- anything else: ``AutoModelForImageTextToText.from_pretrained`` and ``AutoProcessor.from_pretrained``.

Which models are refused, and where. Every command that trains or scores images (``visent train``,
``visent eval``, ``visent inspect``) loads through ``load_model_and_processor`` with the default
``require_supported=True``: a checkpoint whose ``config.json`` names a ``model_type`` without an adapter
(a text-only model, an unknown architecture) raises ``UnsupportedModel`` — one line naming the supported
families — before any weight is loaded, and the CLIs exit with status 2. A Hub id is checked the same
way from its config alone (``AutoConfig``), before its weights are fetched. The reason to refuse rather
than fall back to a plain forward: the counterfactual pass must cut image inputs per response and
perturb them in the family's own layout and normalisation, which only an adapter knows; a guess would
be silently wrong, not slow. Library callers who only generate may pass ``require_supported=False``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from visent.models.adapters import UnsupportedModel, adapter_named, all_adapters, require_adapter

__all__ = ["TINY_PREFIX", "check_supported", "load_model_and_processor", "tiny_names"]

TINY_PREFIX = "tiny:"


def tiny_names() -> list[str]:
    """``["tiny:qwen2_5_vl", ...]``: every family's tiny model name."""
    return [TINY_PREFIX + a.name for a in all_adapters() if a.build_tiny is not None]


def _checkpoint_model_type(name_or_path: str) -> str | None:
    """``model_type`` from a local checkpoint's ``config.json`` (``None`` for a Hub id)."""
    if not os.path.isdir(name_or_path):
        return None
    path = os.path.join(name_or_path, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name_or_path}: a directory without config.json is not a saved model")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UnsupportedModel(f"{path}: not a readable model config ({e})") from None
    return config.get("model_type") if isinstance(config, dict) else None


def check_supported(name_or_path: str) -> None:
    """Refuse early, without loading weights: an unknown ``tiny:`` family, or a local checkpoint whose
    ``config.json`` names a ``model_type`` without an adapter, raises ``UnsupportedModel`` (one line). A Hub
    id is checked when it is loaded (its config is not read here, to stay offline)."""
    if name_or_path.startswith(TINY_PREFIX):
        family = name_or_path[len(TINY_PREFIX):]
        try:
            adapter_named(family)
        except KeyError:
            raise UnsupportedModel(
                f"unknown tiny model {name_or_path!r}; valid names: {', '.join(tiny_names())}"
            ) from None
        return
    model_type = _checkpoint_model_type(name_or_path)
    if model_type is not None or os.path.isdir(name_or_path):
        require_adapter(model_type, what=name_or_path)


# ``from_pretrained`` arguments that also locate a Hub config (the rest are model-loading options).
_CONFIG_KWARGS = ("revision", "trust_remote_code", "token", "cache_dir", "local_files_only", "subfolder")


def _check_hub_config(name: str, kw: dict[str, Any]) -> None:
    """Refuse a Hub id without adapter from its config alone, before any weight is downloaded or loaded."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, **{k: kw[k] for k in _CONFIG_KWARGS if k in kw})
    except ValueError as e:  # a model_type transformers itself does not know
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedModel(
            f"{name}: {reason}; supported families: " + ", ".join(a.name for a in all_adapters())
        ) from None
    require_adapter(config, what=name)


def load_model_and_processor(name_or_path: str, *, require_supported: bool = True, **kw: Any) -> tuple[Any, Any]:
    """``(model, processor)`` for ``tiny:<family>``, a local checkpoint or a Hub id (module docstring).

    ``kw`` goes to the tiny builder or to ``from_pretrained``. Raises ``UnsupportedModel`` (a
    ``ValueError``) for an unknown tiny family or, with ``require_supported``, a model without adapter.
    """
    if name_or_path.startswith(TINY_PREFIX):
        family = name_or_path[len(TINY_PREFIX):]
        try:
            adapter = adapter_named(family)
        except KeyError:
            raise UnsupportedModel(
                f"unknown tiny model {name_or_path!r}; valid names: {', '.join(tiny_names())}"
            ) from None
        if adapter.build_tiny is None:
            raise UnsupportedModel(f"{name_or_path}: family {family} has no tiny builder")
        return adapter.build_tiny(**kw)
    if require_supported:
        check_supported(name_or_path)
    else:
        _checkpoint_model_type(name_or_path)  # a folder without config.json is still an error
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if require_supported and not os.path.isdir(name_or_path):
        _check_hub_config(name_or_path, kw)

    try:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kw)
    except ValueError as e:
        # transformers' "Unrecognized configuration class ..." for a model that is not image-text-to-text.
        if require_supported and "Unrecognized configuration class" in str(e):
            raise UnsupportedModel(
                f"{name_or_path}: not an image-text-to-text model; supported families: "
                + ", ".join(a.name for a in all_adapters())
            ) from None
        raise
    if require_supported:
        require_adapter(model, what=name_or_path)
    processor = AutoProcessor.from_pretrained(name_or_path)
    return model, processor
