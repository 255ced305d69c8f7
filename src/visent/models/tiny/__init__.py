"""The step every ``tiny:<family>`` builder ends with: a random-weight model drawn from a fixed seed.

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

__all__ = ["seeded_model"]


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
