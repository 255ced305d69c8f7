"""Everything that differs between vision-language model families, in one place.

- ``adapters``: the ``Adapter`` dataclass, the table of families and the lookup by ``config.model_type``
  (how a family lays out image inputs, what its counterfactual pass may save; how to add a family);
- ``loading``: ``load_model_and_processor`` for ``tiny:<family>``, Hub ids and local checkpoints, and
  which models are refused;
- ``tokenizer``: the locally trained tokenizer of every tiny model;
- one module per family group with its adapters (``qwen``, ``gemma3``, ``idefics3``, ``llava_onevision``);
- ``tiny``: the tiny-model builders, one module per family (``build_tiny(family)`` calls them);
- ``unwrap`` (DDP/PEFT wrappers, decoder backbone + LM head) and ``checkpoint`` (strict weight loading).
"""

from visent.models.adapters import (
    Adapter,
    ImageUnit,
    UnsupportedModel,
    adapter_for,
    adapter_named,
    all_adapters,
    require_adapter,
    supported_families,
)
from visent.models.loading import (
    TINY_PREFIX,
    build_tiny,
    check_supported,
    load_model_and_processor,
    tiny_names,
)

__all__ = [
    "TINY_PREFIX",
    "Adapter",
    "ImageUnit",
    "UnsupportedModel",
    "adapter_for",
    "adapter_named",
    "all_adapters",
    "build_tiny",
    "check_supported",
    "load_model_and_processor",
    "require_adapter",
    "supported_families",
    "tiny_names",
]
