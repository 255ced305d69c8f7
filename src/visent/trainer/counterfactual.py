"""The counterfactual pass (METHOD §2): teacher-force the sampled responses with the clean and the
perturbed image, with no gradient, and reduce the two final-hidden-state tensors to per-token
statistics through ``visent.core.stats.token_stats_from_hidden`` (chunked: never ``(B, T, V)``).

Shapes: B responses, P prompt tokens (left-padded), C completion tokens (right-padded), D hidden size.
Images (Qwen2-VL / Qwen2.5-VL): ``pixel_values`` ``(N_rows, C·tp·p·p)`` patch rows of all images of all
responses in order, ``image_grid_thw`` ``(n_images, 3)``, ``num_images[b]`` images for response b
(0 for a text-only row). See ``visent.perturb`` for the patch layout.

Cost decisions:
- clean and perturbed rows go through the model as ONE batch of 2·b rows (b = ``batch_size``);
- when the trainer already ran a clean forward of the same policy (``clean_hidden``), only the
  perturbed rows are forwarded;
- the perturbed image is computed once per prompt, not once per response: the K responses of a prompt
  share the seed (derived from the prompt's tokens and image) and so the same noise;
- the vision encoder runs once per distinct image, not once per response: the K responses of a prompt
  carry K identical copies of its (clean, and by the above also perturbed) image, so the encoder's
  outputs are computed for one copy (``VisionCache``, exact equality of the pixels) and handed to the
  decoder as precomputed ``mm_encoder_outputs``, where the model accepts them (transformers 5
  Qwen2-VL / Qwen2.5-VL); other models get ``pixel_values`` as before.
"""

from __future__ import annotations

import hashlib
import inspect
import struct
from collections.abc import Sequence
from typing import Any

import torch

from visent.core.stats import TokenStats, token_stats_from_hidden
from visent.perturb import PatchLayout, perturb_pixel_values

__all__ = [
    "completion_hidden",
    "counterfactual_stats",
    "image_row_spans",
    "perturb_batch_images",
    "prompt_seeds",
]

# Per-response keys that are (B, ...) tensors aligned with the rows.
_ROW_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "mm_token_type_ids", "token_type_ids")


def image_row_spans(batch: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """Per response b: ``(row_start, row_end, img_start, img_end)`` into ``pixel_values`` / ``image_grid_thw``."""
    n = batch["completion_ids"].size(0)
    num_images = batch.get("num_images")
    grid = batch.get("image_grid_thw")
    if num_images is None or grid is None or batch.get("pixel_values") is None:
        return [(0, 0, 0, 0)] * n
    rows_per_image = grid.prod(-1).tolist()
    spans, row, img = [], 0, 0
    for k in num_images:
        r = sum(rows_per_image[img : img + k])
        spans.append((row, row + r, img, img + k))
        row, img = row + r, img + k
    return spans


def prompt_seeds(batch: dict[str, Any], base_seed: int, step: int) -> list[int]:
    """One 63-bit seed per response, equal for responses of the same prompt.

    Derived from (``base_seed``, ``step``, the prompt's unpadded token ids, a strided sample of its
    ``pixel_values``), so it does not depend on where a group's responses sit in the batch or on which
    process they landed: the K responses of a prompt always share one noise draw, and a run (or a resumed
    run, since ``step`` is the global step) is reproducible.
    """
    spans = image_row_spans(batch)
    pv = batch.get("pixel_values")
    seeds = []
    for b, (r0, r1, _, _) in enumerate(spans):
        ids = batch["prompt_ids"][b][batch["prompt_mask"][b].bool()]
        h = hashlib.blake2b(digest_size=8)
        h.update(struct.pack("<qq", int(base_seed), int(step)))
        h.update(ids.to("cpu", torch.int64).numpy().tobytes())
        if r1 > r0:
            flat = pv[r0:r1].reshape(-1)
            stride = max(1, flat.numel() // 4096)
            h.update(flat[::stride].to("cpu", torch.float32).numpy().tobytes())
        seeds.append(int.from_bytes(h.digest(), "little") >> 1)
    return seeds


def perturb_batch_images(
    batch: dict[str, Any],
    seeds: Sequence[int],
    kind: str,
    strength: float | None,
    layout: PatchLayout,
) -> torch.Tensor | None:
    """Perturbed ``pixel_values`` for the whole batch (same shape), one draw per distinct prompt seed."""
    pv = batch.get("pixel_values")
    if pv is None:
        return None
    grid = batch["image_grid_thw"]
    out = pv.clone()
    done: dict[int, torch.Tensor] = {}
    for (r0, r1, i0, i1), seed in zip(image_row_spans(batch), seeds):
        if r1 == r0:
            continue
        if seed not in done:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            done[seed] = perturb_pixel_values(kind, pv[r0:r1], grid[i0:i1], gen, strength, layout)
        out[r0:r1] = done[seed]
    return out


def _rows(batch: dict[str, Any], idx: Sequence[int], pixel_values: torch.Tensor | None) -> dict[str, Any]:
    """Model inputs for responses ``idx`` (full prompt+completion), taking images from ``pixel_values``."""
    spans = image_row_spans(batch)
    sel = torch.as_tensor(list(idx), dtype=torch.long, device=batch["completion_ids"].device)
    inputs = {
        "input_ids": torch.cat([batch["prompt_ids"][sel], batch["completion_ids"][sel]], dim=1),
        "attention_mask": torch.cat([batch["prompt_mask"][sel], batch["completion_mask"][sel]], dim=1),
    }
    for key in ("mm_token_type_ids", "token_type_ids"):
        if batch.get(key) is not None:
            inputs[key] = batch[key][sel]
    if pixel_values is not None:
        row_parts = [pixel_values[spans[i][0] : spans[i][1]] for i in idx]
        grid_parts = [batch["image_grid_thw"][spans[i][2] : spans[i][3]] for i in idx]
        if sum(p.size(0) for p in row_parts) > 0:
            inputs["pixel_values"] = torch.cat(row_parts)
            inputs["image_grid_thw"] = torch.cat(grid_parts)
    return inputs


class VisionCache:
    """Vision-encoder outputs of the distinct images of one or more ``pixel_values`` tensors, in one call.

    ``sources`` maps a name (``"clean"``, ``"perturbed"``) to a ``pixel_values`` tensor laid out by
    ``grid`` (``image_grid_thw``); ``image_embeds(name, i)`` is image ``i``'s ``(n_tokens_i, D)`` embedding in
    that source. Images are deduplicated by exact equality of their patch rows and grid, so each copy
    gets the result the model computes for it; Qwen's vision attention is block-diagonal per image, so
    encoding one copy instead of K does not change what the others would have got.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        sources: dict[str, torch.Tensor],
        grid: torch.Tensor,
        images: Sequence[int],
    ):
        rows_per_image = grid.prod(-1).tolist()
        starts = [0]
        for r in rows_per_image:
            starts.append(starts[-1] + r)
        self.owner: dict[tuple[str, int], int] = {}  # (source, image) -> index among the unique ones
        unique: list[torch.Tensor] = []
        unique_grid: list[int] = []
        by_key: dict[tuple, list[int]] = {}
        for name, pv in sources.items():
            for i in images:
                rows = pv[starts[i] : starts[i + 1]]
                # Cheap key first (grid and a strided sum); exact comparison decides.
                key = (tuple(grid[i].tolist()), float(rows[:: max(1, rows.shape[0] // 8)].sum()))
                for u in by_key.get(key, []):
                    if torch.equal(rows, unique[u]):
                        self.owner[name, i] = u
                        break
                else:
                    self.owner[name, i] = len(unique)
                    by_key.setdefault(key, []).append(len(unique))
                    unique.append(rows)
                    unique_grid.append(i)
        self.embeds: tuple[torch.Tensor, ...] = ()
        if unique:
            out = backbone.get_image_features(torch.cat(unique), grid[unique_grid], return_dict=True)
            self.embeds = tuple(out.pooler_output)
        self.num_unique = len(unique)

    def image_embeds(self, source: str, i: int) -> torch.Tensor:
        return self.embeds[self.owner[source, i]]


def accepts_encoder_outputs(backbone: torch.nn.Module) -> bool:
    """Whether ``backbone`` takes precomputed vision outputs (``mm_encoder_outputs``, transformers 5 Qwen-VL)."""
    try:
        params = inspect.signature(backbone.forward).parameters
    except (TypeError, ValueError):
        return False
    return "mm_encoder_outputs" in params and hasattr(backbone, "get_image_features")


def _with_cached_images(
    inputs: dict[str, Any], batch: dict[str, Any], idx: Sequence[int], cache: VisionCache, source: str
) -> dict[str, Any]:
    """``inputs`` with ``pixel_values`` replaced by the cached encoder outputs of rows ``idx``'s images."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if "pixel_values" not in inputs:
        return inputs
    spans = image_row_spans(batch)
    embeds = tuple(cache.image_embeds(source, i) for b in idx for i in range(spans[b][2], spans[b][3]))
    out = {k: v for k, v in inputs.items() if k != "pixel_values"}
    out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=embeds)}
    return out


def _position_ids(backbone: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor | None:
    """Qwen-VL's 3D rope positions ``(3, b, L)`` for ``inputs``, or ``None`` where the model has no such
    function or the rows have no image. They depend only on tokens, mask and image grids, so a perturbed
    copy of the rows shares them: computing them once saves the model's per-row Python loop."""
    get = getattr(backbone, "get_rope_index", None)
    if get is None or inputs.get("image_grid_thw") is None or inputs.get("mm_token_type_ids") is None:
        return None
    try:
        positions, _ = get(
            inputs["input_ids"],
            inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
    except TypeError:  # another signature (other model families / transformers versions)
        return None
    return positions


def _stack(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Concatenate two model-input dicts along the batch (clean rows first, then perturbed rows)."""
    out = {}
    for key, value in a.items():
        if key == "mm_encoder_outputs":
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            embeds = tuple(value["image"].pooler_output) + tuple(b[key]["image"].pooler_output)
            out[key] = {"image": BaseModelOutputWithPooling(pooler_output=embeds)}
        else:
            out[key] = torch.cat([value, b[key]], dim=0)
    return out


@torch.no_grad()
def completion_hidden(backbone: torch.nn.Module, inputs: dict[str, Any], completion_len: int) -> torch.Tensor:
    """``(b, C, D)`` final hidden states at the positions that predict each completion token."""
    out = backbone(**inputs, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return hidden[:, -completion_len - 1 : -1]


@torch.no_grad()
def counterfactual_stats(
    backbone: torch.nn.Module,
    lm_head: torch.nn.Module,
    batch: dict[str, Any],
    rows: Sequence[int],
    perturbed_pixel_values: torch.Tensor | None,
    *,
    clean_hidden: torch.Tensor | None = None,
    clean_position_ids: torch.Tensor | None = None,
    with_perturbed: bool = True,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    batch_size: int = 8,
    gather_ctx=None,
    forward_ctx=None,
    min_forwards: int = 0,
) -> TokenStats:
    """Token statistics ``(len(rows), C)`` for the responses ``rows`` of a generation batch.

    Args:
        backbone / lm_head: from ``_trl_seam.backbone_and_head``.
        batch: TRL's generation batch (keys above).
        rows: indices of the responses to score.
        perturbed_pixel_values: ``perturb_batch_images`` output (``None``: no images in the batch).
        clean_hidden: ``(B, C, D)`` clean hidden states already computed by the trainer, or ``None``.
        clean_position_ids: ``(k, B, L)`` position ids (Qwen-VL 3D rope) of that same clean forward, or
            ``None``; the perturbed rows reuse them instead of recomputing (same tokens, mask and grids).
        with_perturbed: ``False`` computes only the clean pass (entropy-only scores); the perturbed fields
            then equal the clean ones (JSD 0).
        temperature: τ, logits are divided by it (as in sampling).
        chunk_size: tokens per chunk in ``token_stats_from_hidden``.
        batch_size: responses per forward (clean + perturbed makes 2× this many rows).
        gather_ctx: callable ``(weight, bias) -> context manager`` gathering a sharded LM head (ZeRO-3).
        forward_ctx: callable ``() -> context manager`` around the model forwards only (the trainer's
            autocast); the statistics themselves are always computed in float32 outside it.
        min_forwards: run throw-away forwards until at least this many model calls were made. Under
            ZeRO-3 / FSDP every forward is a collective, so all processes must make the same number of
            calls even when skipping left them different numbers of rows.
    """
    mask_all = batch["completion_mask"]
    C = mask_all.size(1)
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
    pv = batch.get("pixel_values")
    parts: list[TokenStats] = []
    rows = list(rows)
    forwards = 0
    need_clean = clean_hidden is None
    need_pert = with_perturbed and perturbed_pixel_values is not None
    cache: VisionCache | None = None
    if pv is not None and rows and (need_clean or need_pert) and accepts_encoder_outputs(backbone):
        spans = image_row_spans(batch)
        images = sorted({i for b in rows for i in range(spans[b][2], spans[b][3])})
        sources = {"clean": pv} if need_clean else {}
        if need_pert:
            sources["perturbed"] = perturbed_pixel_values
        with forward_ctx() if forward_ctx is not None else _null():
            cache = VisionCache(backbone, sources, batch["image_grid_thw"], images)

    def inputs_for(idx, which: str) -> dict[str, Any]:
        inputs = _rows(batch, idx, pv if which == "clean" else perturbed_pixel_values)
        return _with_cached_images(inputs, batch, idx, cache, which) if cache is not None else inputs

    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        sel = torch.as_tensor(idx, dtype=torch.long, device=mask_all.device)
        with forward_ctx() if forward_ctx is not None else _null():
            if clean_hidden is not None:
                h_clean = clean_hidden[sel]
                if with_perturbed:
                    pert_inputs = inputs_for(idx, "perturbed")
                    if clean_position_ids is not None:
                        pert_inputs["position_ids"] = clean_position_ids[:, sel]
                    h_pert = completion_hidden(backbone, pert_inputs, C)
                else:
                    h_pert = h_clean
            elif with_perturbed:
                clean_inputs = inputs_for(idx, "clean")
                both = _stack(clean_inputs, inputs_for(idx, "perturbed"))
                positions = _position_ids(backbone, clean_inputs)
                if positions is not None:  # the perturbed rows have the clean rows' tokens and grids
                    both["position_ids"] = torch.cat([positions, positions], dim=1)
                h = completion_hidden(backbone, both, C)
                h_clean, h_pert = h[: len(idx)], h[len(idx) :]
            else:
                h_clean = h_pert = completion_hidden(backbone, inputs_for(idx, "clean"), C)
        forwards += int(clean_hidden is None or with_perturbed)
        ctx = gather_ctx(weight, bias) if gather_ctx is not None else _null()
        with ctx:
            parts.append(
                token_stats_from_hidden(
                    h_clean, h_pert, weight, mask_all[sel], temperature=temperature, chunk_size=chunk_size,
                    lm_head_bias=bias,
                )
            )
    while forwards < min_forwards and mask_all.size(0) > 0:
        with forward_ctx() if forward_ctx is not None else _null():
            completion_hidden(backbone, _rows(batch, [0], pv), C)  # result unused: keeps collectives in step
        forwards += 1
    if not parts:
        z = torch.zeros(0, C, device=mask_all.device)
        return TokenStats(entropy=z, entropy_perturbed=z, jsd=z, kl=z)
    return TokenStats(
        entropy=torch.cat([p.entropy for p in parts]),
        entropy_perturbed=torch.cat([p.entropy_perturbed for p in parts]),
        jsd=torch.cat([p.jsd for p in parts]),
        kl=torch.cat([p.kl for p in parts]),
    )


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
