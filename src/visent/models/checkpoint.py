"""Loading a ``save_pretrained`` checkpoint's weights into a model built in memory, strictly and by name.

transformers 5 saves Qwen2(.5)-VL checkpoints under their legacy key names (``model.layers.*``) but its
resume path loads them non-strictly under the in-memory names (``model.language_model.layers.*``), so a
resumed language model would silently restart from its initial weights; ``load_checkpoint_weights``
pairs every saved tensor with its parameter instead (the trainer's resume uses it).
"""

from __future__ import annotations

import json
import os

import torch

__all__ = ["load_checkpoint_weights"]


def load_checkpoint_weights(model: torch.nn.Module, checkpoint_dir: str) -> bool:
    """Load the safetensors weights of a ``save_pretrained`` folder into ``model``, strictly, by name.

    ``save_pretrained`` renames weights to the checkpoint format (``revert_weight_conversion``); this
    applies the same renaming to the model's own ``state_dict`` to pair every saved tensor with its
    parameter. Returns ``False`` (caller falls back to transformers) when the folder has no safetensors
    weights or the conversion is more than a renaming. Raises ``RuntimeError`` naming the keys when the
    checkpoint does not cover the model exactly: a resume must never silently keep initial weights.
    """
    from safetensors.torch import load_file
    from transformers.core_model_loading import revert_weight_conversion

    single = os.path.join(checkpoint_dir, "model.safetensors")
    index = os.path.join(checkpoint_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index) as f:
            files = [os.path.join(checkpoint_dir, n) for n in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        return False
    current = model.state_dict()
    by_id = {id(t): k for k, t in current.items()}
    saved_view = revert_weight_conversion(model, dict(current))
    if any(id(t) not in by_id for t in saved_view.values()):
        return False  # a real conversion (fused/split tensors), not a renaming
    saved_to_model = {k: by_id[id(t)] for k, t in saved_view.items()}

    loaded: dict[str, torch.Tensor] = {}
    for path in files:
        for key, tensor in load_file(path).items():
            loaded[saved_to_model.get(key, key)] = tensor
    unexpected = sorted(k for k in loaded if k not in current)
    covered = {id(current[k]) for k in loaded if k in current}
    missing = sorted(k for k, t in current.items() if id(t) not in covered)
    if unexpected or missing:
        raise RuntimeError(
            f"checkpoint {checkpoint_dir} does not match the model: missing {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict(loaded, strict=False)  # strictness checked above (tied weights share a tensor)
    return True
