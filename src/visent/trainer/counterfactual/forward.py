"""Model calls of the counterfactual pass: final hidden states predicting the completion tokens.

- ``completion_hidden``: the plain call, every response in full (prompt + completion) with its images.
- ``shared_prefix_hidden``: each prompt run once per image source, its responses against its cached keys
  and values (``Adapter.shared_prefix``). The K responses of a prompt share its tokens and (clean or
  perturbed) image, so decoder tokens per prompt and pass go from K·(P + C) to P + K·(C − 1). The price
  is that cache, alive for one call: keys and values of (P + C) positions per response and layer (on
  Qwen2.5-VL-7B in bf16 about 57 kB per position, ~80 MB for a 1,400-token response). For a hybrid
  decoder (Qwen3.5) the cache also holds each linear-attention layer's conv and recurrent state at the
  prompt's end, indexed out the same way. Responses are split in two by length when that saves enough
  (``length_parts``); each part runs only as far as its longest response.

The family's mechanics go through its adapter's hooks: ``rope_positions`` / ``slice_positions`` (the
position ids the decoder would compute, and their layout), ``copy_cache`` / ``reorder_cache`` (the decoder
cache). Shapes: b responses, P prompt tokens, C completion tokens, D hidden size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visent.models.adapters import Adapter
from visent.trainer.counterfactual.images import EncoderPieces, VisionCache
from visent.trainer.counterfactual.units import BatchImages, position_inputs

__all__ = ["call", "completion_hidden", "length_parts", "position_ids", "shared_prefix_hidden", "stack_inputs"]

#: A part of a chunk's responses costs one more model call; below this many saved token positions (on a
#: CPU, the lab model's per-call overhead is worth ~70), splitting does not pay.
MIN_SPLIT_SAVING = 64


def call(backbone: torch.nn.Module, inputs: dict[str, Any], **kw: Any) -> Any:
    """``backbone(**inputs, **kw)`` with cached encoder pieces turned into ``mm_encoder_outputs``."""
    pieces = inputs.get("mm_encoder_outputs")
    if isinstance(pieces, EncoderPieces):
        inputs = {**inputs, "mm_encoder_outputs": pieces.value()}
    return backbone(**inputs, **kw)


def _last_hidden(out: Any) -> torch.Tensor:
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


@torch.no_grad()
def completion_hidden(backbone: torch.nn.Module, inputs: dict[str, Any], completion_len: int) -> torch.Tensor:
    """``(b, C, D)`` final hidden states at the positions that predict each completion token."""
    return _last_hidden(call(backbone, inputs, use_cache=False))[:, -completion_len - 1 : -1]


def stack_inputs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Concatenate two model-input dicts along the batch (clean rows first, then perturbed rows)."""
    return {k: v + b[k] if isinstance(v, EncoderPieces) else torch.cat([v, b[k]], dim=0) for k, v in a.items()}


def position_ids(backbone: torch.nn.Module, adapter: Adapter, batch: dict[str, Any], idx: Sequence[int],
                 images: BatchImages) -> torch.Tensor | None:
    """The rope positions the decoder would compute for responses ``idx`` (the adapter's
    ``rope_positions``), or ``None``. They depend on tokens, mask and image grids only, so a perturbed copy
    of the rows shares them, and computing them once saves the model's per-row Python loop."""
    if adapter.rope_positions is None:
        return None
    return adapter.rope_positions(backbone, position_inputs(batch, idx, images))


def length_parts(lengths: Sequence[int]) -> list[list[int]]:
    """Split positions ``0 … b−1`` of responses with valid ``lengths`` into one or two parts, each to be run
    only as far as its own longest response: two when the shorter part saves at least a quarter of the
    token positions and ``MIN_SPLIT_SAVING`` of them. Responses sampled together often share a typical
    length with a few long ones; padding every row to the longest wastes most of the call."""
    order = sorted(range(len(lengths)), key=lambda j: lengths[j])
    steps = [max(lengths[j] - 1, 1) for j in order]
    total = len(steps) * steps[-1]
    best_k, best_cost = 0, total
    for k in range(1, len(steps)):
        if steps[k - 1] == steps[k]:
            continue  # split only between different lengths
        cost = k * steps[k - 1] + (len(steps) - k) * steps[-1]
        if cost < best_cost:
            best_k, best_cost = k, cost
    saving = total - best_cost
    if best_k == 0 or saving < max(MIN_SPLIT_SAVING, total / 4):
        return [list(range(len(lengths)))]
    return [sorted(order[:best_k]), sorted(order[best_k:])]


def _long(values: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(list(values), dtype=torch.long, device=device)


def shared_prefix_hidden(
    backbone: torch.nn.Module,
    batch: dict[str, Any],
    idx: Sequence[int],
    groups: Sequence[int],
    sources: Sequence[str],
    cache: VisionCache,
    positions: torch.Tensor,
    completion_len: int,
    images: BatchImages,
) -> torch.Tensor:
    """``(len(sources)·b, C, D)`` final hidden states predicting the completion tokens of responses ``idx``
    (b of them), for each image source in turn, with each prompt run once per source.

    Two model calls: (1) the distinct prompts of ``idx`` (one representative response per group and
    source) with ``use_cache``, giving their keys/values and the last prompt position's hidden state,
    which predicts completion token 0; (2) completion tokens ``0 … C−2`` of every response against its
    prompt's cache (indexed out to the responses), predicting tokens ``1 … C−1``, in one call or, when
    the responses' lengths differ enough (``length_parts``) and the cache can be copied, two.
    ``positions``: the responses' rope positions over ``P + C`` (the adapter's layout), sliced for each
    call, so the model never recomputes them and never reads stale ``rope_deltas``. Positions after a
    part's longest response are not computed (zeros in the output: they predict padding).
    """
    adapter, device = images.adapter, batch["completion_ids"].device
    P, C, S = batch["prompt_ids"].size(1), completion_len, len(sources)
    reps: dict[int, int] = {}  # group -> position of its representative among idx
    for j, b in enumerate(idx):
        reps.setdefault(groups[b], j)
    rep_rows = [idx[j] for j in reps.values()]
    n = len(rep_rows)
    rep_sel = _long(rep_rows, device)
    prefix = {
        "input_ids": batch["prompt_ids"][rep_sel].repeat(S, 1),
        "attention_mask": batch["prompt_mask"][rep_sel].repeat(S, 1),
        "position_ids": adapter.slice_positions(positions, _long(list(reps.values()) * S, positions.device), slice(0, P)),
    }
    for key in adapter.prefix_token_keys:  # e.g. Gemma 3's image blocks (bidirectional attention)
        if batch.get(key) is not None:
            prefix[key] = batch[key][rep_sel, :P].repeat(S, 1)
    masks = adapter.uncached_masks(backbone, prefix) if adapter.uncached_masks is not None else None
    if masks is not None:  # the adapter's, equal to the model's own (Gemma 3: built without vmap)
        prefix["attention_mask"] = masks
    pieces = [cache.pieces(source, i) for source in sources for b in rep_rows for i in range(*images.spans[b])]
    if pieces:
        prefix["mm_encoder_outputs"] = EncoderPieces(pieces, adapter)
    out = call(backbone, prefix, use_cache=True)
    last = _last_hidden(out)[:, -1]  # (S·n, D)
    kv = out.past_key_values
    owner = {g: k for k, g in enumerate(reps)}
    b = len(idx)
    order = [s * n + owner[groups[r]] for s in range(S) for r in idx]  # prefix row of each output row
    sel = _long(idx, device)
    valid = batch["completion_mask"][sel].bool()
    lengths = [int(v.nonzero().max()) + 1 if bool(v.any()) else 1 for v in valid]
    rest = last.new_zeros(len(order), C - 1, last.size(-1))  # stays zero where it predicts padding
    parts = length_parts(lengths)
    # Every part but the last runs on a copy of the prompts' cache (reordering replaces its rows).
    caches = [adapter.copy_cache(kv) for _ in parts[:-1]] + [kv]
    if any(c is None for c in caches):
        parts, caches = [list(range(b))], [kv]
    for part, part_kv in zip(parts, caches):
        longest = max(lengths[j] for j in part)
        steps = max(longest - 1, 1)  # one step even when only token 0 is valid (its output unused)
        rows_out = [s * b + j for s in range(S) for j in part]
        part_kv = adapter.reorder_cache(part_kv, _long([order[r] for r in rows_out], last.device))
        psel = sel[_long(part, device)]
        completion = {
            "input_ids": batch["completion_ids"][psel, :steps].repeat(S, 1),
            "attention_mask": torch.cat([batch["prompt_mask"][psel], batch["completion_mask"][psel, :steps]], 1).repeat(S, 1),
            "position_ids": adapter.slice_positions(positions, _long(part * S, positions.device), slice(P, P + steps)),
        }
        hidden = _last_hidden(call(backbone, completion, past_key_values=part_kv, use_cache=True))
        rest[_long(rows_out, rest.device), : longest - 1] = hidden[:, : longest - 1]
    first = last[_long(order, last.device)][:, None]
    return torch.cat([first, rest], dim=1)
