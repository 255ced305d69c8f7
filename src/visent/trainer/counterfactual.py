"""The counterfactual pass (METHOD §2): teacher-force the sampled responses with the clean and the
perturbed image, with no gradient, and reduce the two final-hidden-state tensors to per-token
statistics through ``visent.core.stats.token_stats_from_hidden`` (chunked: never ``(B, T, V)``).

Shapes: B responses, P prompt tokens (left-padded), C completion tokens (right-padded), D hidden size.
Images: whatever the family's processor returned (TRL passes it on), ``num_images[b]`` images for
response b (0 for a text-only row). Nothing here reads a family's layout: the model's adapter
(``visent.models.adapters``) cuts the batch's image inputs into one unit per image, perturbs a prompt's
units, joins the units of some responses back into model inputs, and encodes units for the vision
cache. Images are numbered over the batch in order (``image_spans``); ``Pixels`` maps an image number to
its perturbed ``pixel_values``. The adapter also says which of the savings below are exact for the family
(``vision_cache``, ``shared_prefix``, ``reuse_positions``); a family with none of them gets the plain
clean-plus-perturbed forward.

Cost decisions:
- clean and perturbed rows go through the model as ONE batch of 2·b rows (b = ``batch_size``);
- when the trainer already ran a clean forward of the same policy (``clean_hidden``), only the
  perturbed rows are forwarded;
- responses are grouped by prompt (``prompt_groups``: same tokens and images, compared exactly), and the
  perturbed image is drawn once per group, not once per response: the K responses of a prompt share the
  seed (derived from the prompt's tokens and image) and so the same noise (``perturb_images``);
- the vision encoder runs once per distinct image, not once per response: the K responses of a prompt
  carry K identical copies of its (clean, and by the above also perturbed) image, so the encoder's
  outputs are computed for one copy (``VisionCache``, exact equality of the pixels) and handed to the
  decoder as precomputed ``mm_encoder_outputs`` in the model's own format (for Qwen3-VL with its
  deepstack features), where the adapter allows it and the model accepts them; otherwise the rows get
  their pixels;
- the prompt is run once per prompt and pass, not once per response (``share_prefix``): the K
  responses of a prompt share its tokens and (clean or perturbed) image, so the prompt's keys and
  values are computed for one copy and indexed out to the K completions, which then run against that
  cache. Decoder tokens per prompt and pass go from K·(P + C) to P + K·(C − 1). The price is that
  cache, alive for one call: keys and values of (P + C) positions per response and layer (on
  Qwen2.5-VL-7B in bf16 about 57 kB per position, ~80 MB for a 1,400-token response);
  ``counterfactual_batch_size`` bounds how many responses share a call. For a hybrid decoder
  (Qwen3.5) the cache also holds each linear-attention layer's conv and recurrent state at the
  prompt's end, indexed out the same way;
- a response that repeats another of the same prompt token for token has the same statistics: it is
  scored once (short lab answers repeat often; long ones rarely do);
- responses are sorted by length into chunks, and each call runs only as far as the longest response
  it holds, a chunk being split in two by length when that saves enough (``length_parts``).
- a response whose "perturbed" images equal its clean ones (``identity``, or no image) gets the clean
  states as its perturbed ones, so its JSD is exactly 0 even where a kernel's float result depends on
  the batch row.
Each of these computes the same function of the same inputs (exact in real arithmetic; float results
differ from the plain path only by summation order, ~1e-6 in float32; tested for every family in
``tests/unit/models/test_adapters_counterfactual.py``).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import struct
from collections.abc import Sequence
from typing import Any

import torch

from visent.core.stats import TokenStats, token_stats_from_hidden
from visent.models.adapters import Adapter, ImageUnit, adapter_for, adapter_named, require_adapter

__all__ = [
    "COUNTERFACTUAL_FORWARDS",
    "completion_hidden",
    "counterfactual_stats",
    "distinct_responses",
    "image_row_spans",
    "image_spans",
    "length_parts",
    "lockstep_forwards",
    "perturb_batch_images",
    "perturb_images",
    "prompt_groups",
    "prompt_seeds",
]

#: ``counterfactual_forward`` values: ``prefix_cached`` takes the savings the adapter allows (module doc);
#: ``full`` runs every row through the model's own full-sequence forward (pixels in, positions computed
#: by the model), the path of TRL's clean forward, so in bf16 both passes round alike.
COUNTERFACTUAL_FORWARDS = ("prefix_cached", "full")

# Per-response keys that are (B, ...) tensors aligned with the rows.
_ROW_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "mm_token_type_ids", "token_type_ids")


def image_row_spans(batch: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """Patch-rows layouts (Qwen-VL) only: per response b ``(row_start, row_end, img_start, img_end)`` into
    ``pixel_values`` / ``image_grid_thw``. Other layouts: ``image_spans``."""
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


def _adapter(batch_or_model: Any, adapter: Adapter | None) -> Adapter:
    """``adapter`` or, when ``None``, the one for ``batch_or_model``: a model, or a batch, for which only
    the patch-rows layout can be recognised (``image_grid_thw``; the callers that predate adapters)."""
    if adapter is not None:
        return adapter
    if isinstance(batch_or_model, dict):
        if batch_or_model.get("pixel_values") is None or batch_or_model.get("image_grid_thw") is not None:
            return adapter_named("qwen2_5_vl")  # every Qwen adapter cuts and perturbs patch rows alike
        raise ValueError("this batch's image layout needs the model's adapter (pass adapter=)")
    return require_adapter(batch_or_model)


class _Images:
    """A batch's images as units (``visent.models.adapters``): ``units[i]`` is image i (numbered over the
    batch in order), ``spans[b] = (i0, i1)`` the images of response b."""

    def __init__(self, batch: dict[str, Any], adapter: Adapter):
        self.adapter = adapter
        per_response = adapter.units(batch)
        self.units: list[ImageUnit] = [u for row in per_response for u in row]
        self.spans: list[tuple[int, int]] = []
        i = 0
        for row in per_response:
            self.spans.append((i, i + len(row)))
            i += len(row)

    def pixels(self, source: Pixels | None, i: int) -> torch.Tensor:
        """Image i's ``pixel_values`` in ``source`` (``None``: the batch's own, clean)."""
        if source is None:
            return self.units[i]["pixel_values"]
        if i not in source:
            raise KeyError(f"image {i} was not perturbed (its response was not among the rows)")
        return source[i]

    def unit(self, source: Pixels | None, i: int) -> ImageUnit:
        return self.units[i] if source is None else {**self.units[i], "pixel_values": self.pixels(source, i)}

    def inputs(self, idx: Sequence[int], source: Pixels | None, with_pixels: bool = True) -> dict[str, torch.Tensor]:
        """The image inputs of responses ``idx`` (``adapter.join_images``), pixels from ``source``."""
        units = []
        for b in idx:
            i0, i1 = self.spans[b]
            row = [self.unit(source, i) for i in range(i0, i1)]
            if not with_pixels:
                row = [{k: v for k, v in u.items() if k != "pixel_values"} for u in row]
            units.append(row)
        if not any(units):
            return {}
        return self.adapter.join_images(units)


def image_spans(batch: dict[str, Any], adapter: Adapter | None = None) -> list[tuple[int, int]]:
    """Per response b ``(i0, i1)``: its images are images ``i0 … i1−1`` of the batch (any layout)."""
    return _Images(batch, _adapter(batch, adapter)).spans


def _source(images: _Images, pixels: Pixels | torch.Tensor | None, batch: dict[str, Any]) -> Pixels | None:
    """A ``Pixels`` value (``None`` = the batch's clean images) from the ``pixel_values`` argument forms the
    public functions accept: ``None``, ``perturb_images``' dict, or a whole-batch ``pixel_values`` tensor."""
    if pixels is None or isinstance(pixels, dict):
        return pixels
    if pixels is batch.get("pixel_values"):
        return None
    replaced = _Images({**batch, "pixel_values": pixels}, images.adapter)
    return {i: u["pixel_values"] for i, u in enumerate(replaced.units)}


def _token_keys(ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    """A cheap key per row of ``(n, L)`` token ids under a 0/1 ``mask``: a position-weighted sum of the valid
    tokens and the mask itself. Equal rows (tokens and mask) have equal keys; equal keys prove nothing,
    callers compare rows exactly. int64 arithmetic may wrap, deterministically, which a key tolerates."""
    weights = torch.arange(1, ids.size(1) + 1, device=ids.device, dtype=torch.int64) * 1_000_003
    mask = mask.long()
    return ((ids.long() * mask + mask) * weights).sum(1).tolist()


def _unit_key(unit: ImageUnit) -> tuple:
    """A cheap key of one image unit: its shapes and a strided sum of its pixels. Equal units have equal
    keys; equal keys prove nothing (callers compare exactly)."""
    pv = unit["pixel_values"]
    flat = pv.reshape(-1)
    return (tuple(pv.shape), float(flat[:: max(1, flat.numel() // 64)].sum()))


def _same_units(images: _Images, b: int, f: int) -> bool:
    """Whether responses b and f have equal images (every image key, compared exactly)."""
    (i0, i1), (j0, j1) = images.spans[b], images.spans[f]
    if i1 - i0 != j1 - j0:
        return False
    for i, j in zip(range(i0, i1), range(j0, j1)):
        u, v = images.units[i], images.units[j]
        if u.keys() != v.keys() or not all(u[k].shape == v[k].shape and torch.equal(u[k], v[k]) for k in u):
            return False
    return True


def prompt_groups(
    batch: dict[str, Any], rows: Sequence[int] | None = None, adapter: Adapter | None = None
) -> list[int]:
    """Group index per response (dense, in order of first appearance): responses of one group have the
    same prompt tokens, prompt mask and images, compared exactly.

    TRL repeats each prompt K times, so a generation batch of B responses has B/K groups; nothing here
    assumes that the copies are adjacent (TRL shuffles a batch before splitting it) or that every group
    has K members. ``rows``: only these responses are compared; every other one gets a group of its own
    (for responses whose counterfactual pass is skipped, which need no grouping). ``adapter``: the
    model's (``visent.models``); ``None`` reads a patch-rows batch.
    """
    images = _Images(batch, _adapter(batch, adapter))
    ids, pmask = batch["prompt_ids"], batch["prompt_mask"]
    B = ids.size(0)
    wanted = set(range(B)) if rows is None else set(rows)
    # Cheap keys (a weighted sum of the tokens, strided sums of the pixels): equal prompts have equal keys;
    # exact comparison below decides among rows whose keys collide.
    token_key = _token_keys(ids, pmask)
    keys = []
    for b in range(B):
        i0, i1 = images.spans[b]
        pixel_key = tuple(_unit_key(images.units[i]) for i in range(i0, i1)) if b in wanted else ()
        keys.append((token_key[b], i1 - i0, pixel_key))
    # The usual case, one pass: the first row with a key is its group's candidate representative.
    candidate: dict[tuple, int] = {}
    for b, key in enumerate(keys):
        if b in wanted:
            candidate.setdefault(key, b)
    rep = torch.as_tensor([candidate.get(k, b) for b, k in enumerate(keys)], dtype=torch.long, device=ids.device)
    same_text = ((ids == ids[rep]) & (pmask == pmask[rep])).all(1).tolist()

    firsts: list[int] = []  # first response of each group
    by_key: dict[tuple, list[int]] = {}
    groups = []
    for b, key in enumerate(keys):
        if b not in wanted:
            groups.append(len(firsts))
            firsts.append(b)
            continue
        f = candidate[key]
        if f != b and same_text[b] and _same_units(images, b, f):
            groups.append(groups[f])
            continue
        # First of its key, or a key collision: compare with every group of this key.
        for g in by_key.get(key, []):
            f = firsts[g]
            if torch.equal(ids[b], ids[f]) and torch.equal(pmask[b], pmask[f]) and _same_units(images, b, f):
                groups.append(g)
                break
        else:
            by_key.setdefault(key, []).append(len(firsts))
            groups.append(len(firsts))
            firsts.append(b)
    return groups


def prompt_seeds(
    batch: dict[str, Any],
    base_seed: int,
    step: int,
    groups: Sequence[int] | None = None,
    rows: Sequence[int] | None = None,
    adapter: Adapter | None = None,
) -> list[int | None]:
    """One 63-bit seed per response, equal for responses of the same prompt.

    Derived from (``base_seed``, ``step``, the prompt's unpadded token ids, a strided sample of its
    images' pixels), so it does not depend on where a group's responses sit in the batch or on which
    process they landed: the K responses of a prompt always share one noise draw, and a run (or a resumed
    run, since ``step`` is the global step) is reproducible. ``groups`` (``prompt_groups``' output, computed
    here if ``None``) lets the hash run once per prompt: its inputs are equal within a group. ``rows``:
    only these responses get a seed (the others ``None``).
    """
    images = _Images(batch, _adapter(batch, adapter))
    groups = prompt_groups(batch, rows, images.adapter) if groups is None else groups
    wanted = None if rows is None else set(rows)
    by_group: dict[int, int] = {}
    seeds: list[int | None] = []
    for b, (i0, i1) in enumerate(images.spans):
        if wanted is not None and b not in wanted:
            seeds.append(None)
            continue
        if groups[b] not in by_group:
            ids = batch["prompt_ids"][b][batch["prompt_mask"][b].bool()]
            h = hashlib.blake2b(digest_size=8)
            h.update(struct.pack("<qq", int(base_seed), int(step)))
            h.update(ids.to("cpu", torch.int64).numpy().tobytes())
            if i1 > i0:
                # For patch rows this is the response's block of pixel_values, as before adapters.
                flat = torch.cat([images.units[i]["pixel_values"].reshape(-1) for i in range(i0, i1)])
                stride = max(1, flat.numel() // 4096)
                h.update(flat[::stride].to("cpu", torch.float32).numpy().tobytes())
            by_group[groups[b]] = int.from_bytes(h.digest(), "little") >> 1
        seeds.append(by_group[groups[b]])
    return seeds


def perturb_images(
    batch: dict[str, Any],
    seeds: Sequence[int | None],
    kind: str,
    strength: float | None,
    layout: Any,
    rows: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
    adapter: Adapter | None = None,
) -> dict[int, torch.Tensor]:
    """Perturbed ``pixel_values`` of image i (numbered over the batch, as ``image_spans``), for the images
    of responses ``rows`` (``None``: all), one draw per prompt group, by the adapter's ``perturb``.

    ``layout``: the adapter's ``image_geometry(processor)`` (a ``visent.perturb.PatchLayout`` for Qwen).
    The K responses of a prompt carry K copies of its images; their entries here are the same tensors
    (views of one draw), so nothing is copied K times. ``groups`` (``prompt_groups``' output, computed if
    ``None``) decides which responses share a draw; ``seeds[b]`` seeds response b's group. Only the pixels
    change: an image's other inputs (grid, sizes, masks) are the clean ones.
    """
    if batch.get("pixel_values") is None:
        return {}
    images = _Images(batch, _adapter(batch, adapter))
    groups = prompt_groups(batch, rows, images.adapter) if groups is None else groups
    wanted = None if rows is None else set(rows)
    draws: dict[int, list[torch.Tensor]] = {}  # group -> its images' perturbed pixels
    out: dict[int, torch.Tensor] = {}
    for b, (i0, i1) in enumerate(images.spans):
        if i1 == i0 or (wanted is not None and b not in wanted):
            continue
        if groups[b] not in draws:
            if seeds[b] is None:
                raise ValueError(f"response {b} is to be perturbed but has no seed")
            gen = torch.Generator(device="cpu").manual_seed(int(seeds[b]))
            units = images.units[i0:i1]
            noisy = images.adapter.perturb(kind, units, gen, strength, layout)
            draws[groups[b]] = [u["pixel_values"] for u in noisy]
        for k, pixels in enumerate(draws[groups[b]]):
            out[i0 + k] = pixels
    return out


def perturb_batch_images(
    batch: dict[str, Any],
    seeds: Sequence[int | None],
    kind: str,
    strength: float | None,
    layout: Any,
    rows: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
    adapter: Adapter | None = None,
) -> torch.Tensor | None:
    """Perturbed ``pixel_values`` for the whole batch (same layout), one draw per prompt group
    (``perturb_images`` joined back by the adapter).

    ``rows``: only these responses' images are perturbed (the others keep their clean pixels, for
    responses whose counterfactual pass is skipped); ``None``: all of them.
    """
    if batch.get("pixel_values") is None:
        return None
    images = _Images(batch, _adapter(batch, adapter))
    noisy = perturb_images(batch, seeds, kind, strength, layout, rows, groups, images.adapter)
    source = {i: noisy.get(i, images.units[i]["pixel_values"]) for i in range(len(images.units))}
    return images.inputs(range(len(images.spans)), source)["pixel_values"]


def _image_starts(grid: torch.Tensor) -> list[int]:
    """Patch rows: first row of each image in ``pixel_values`` (and the total at the end)."""
    starts = [0]
    for r in grid.prod(-1).tolist():
        starts.append(starts[-1] + r)
    return starts


Pixels = dict[int, torch.Tensor]
"""Perturbed images of a batch: ``perturb_images``' pixels per image index (only the perturbed ones).
Where a function takes ``Pixels | None``, ``None`` means the batch's own clean images; the public
functions also accept a whole-batch ``pixel_values`` tensor (``perturb_batch_images``)."""


class _Pieces:
    """Cached vision-encoder outputs of the images of some rows, turned into the model's
    ``mm_encoder_outputs`` only when the model is called (so clean and perturbed rows can be stacked)."""

    def __init__(self, pieces: list[Any], adapter: Adapter):
        self.pieces, self.adapter = pieces, adapter

    def __add__(self, other: _Pieces) -> _Pieces:
        return _Pieces(self.pieces + other.pieces, self.adapter)


def _call(backbone: torch.nn.Module, inputs: dict[str, Any], **kw: Any) -> Any:
    """``backbone(**inputs, **kw)`` with cached encoder pieces turned into ``mm_encoder_outputs``."""
    pieces = inputs.get("mm_encoder_outputs")
    if isinstance(pieces, _Pieces):
        inputs = {**inputs, "mm_encoder_outputs": {"image": pieces.adapter.encoder_outputs(pieces.pieces)}}
    return backbone(**inputs, **kw)


def _rows(
    batch: dict[str, Any],
    idx: Sequence[int],
    pixel_values: Pixels | torch.Tensor | None,
    adapter: Adapter | None = None,
    images: _Images | None = None,
) -> dict[str, Any]:
    """Model inputs for responses ``idx`` (full prompt+completion), images from ``pixel_values``
    (``None``: no images at all; the batch's ``pixel_values``: the clean ones; ``Pixels``: perturbed)."""
    sel = torch.as_tensor(list(idx), dtype=torch.long, device=batch["completion_ids"].device)
    inputs = {
        "input_ids": torch.cat([batch["prompt_ids"][sel], batch["completion_ids"][sel]], dim=1),
        "attention_mask": torch.cat([batch["prompt_mask"][sel], batch["completion_mask"][sel]], dim=1),
    }
    images = images or _Images(batch, _adapter(batch, adapter))
    for key in _token_keys_of(images.adapter):
        if batch.get(key) is not None:
            inputs[key] = batch[key][sel]
    if pixel_values is not None:
        inputs.update(images.inputs(idx, _source(images, pixel_values, batch)))
    return inputs


def _token_keys_of(adapter: Adapter) -> tuple[str, ...]:
    # The adapter's per-token inputs, plus the two TRL may hand any family (harmless when absent).
    return tuple(dict.fromkeys((*adapter.token_keys, "mm_token_type_ids", "token_type_ids")))


class VisionCache:
    """Vision-encoder outputs of the distinct images of one or more image sources, in one encoder call.

    ``sources`` maps a name (``"clean"``, ``"perturbed"``) to ``None`` (the batch's own images) or
    ``perturb_images``' per-image pixels; ``pieces(name, i)`` is image ``i``'s encoder output in that
    source (whatever the adapter's ``encode_images`` returns per image, e.g. its ``(n_tokens_i, D)``
    embedding and, for Qwen3-VL, its deepstack features). Images are deduplicated by exact equality of
    every image input, so each copy gets the result the model computes for it; the adapter switches the
    cache on only where the encoder sees each image on its own, so encoding one copy instead of K does
    not change what the others would have got.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        images: _Images,
        sources: dict[str, Pixels | None],
        wanted: Sequence[int],
        alias: dict[int, int] | None = None,
    ):
        # ``alias`` maps an image to one known to be identical (a copy in the same prompt group): lookups of
        # the former are answered from the latter, which is all that is compared and encoded.
        self.alias = alias or {}
        self.owner: dict[tuple[str, int], int] = {}  # (source, image) -> index among the unique ones
        unique: list[ImageUnit] = []
        by_key: dict[tuple, list[int]] = {}
        for name, source in sources.items():
            for i in wanted:
                unit = images.unit(source, i)
                key = _unit_key(unit)
                for u in by_key.get(key, []):
                    other = unique[u]
                    if unit.keys() == other.keys() and all(
                        unit[k].shape == other[k].shape and torch.equal(unit[k], other[k]) for k in unit
                    ):
                        self.owner[name, i] = u
                        break
                else:
                    self.owner[name, i] = len(unique)
                    by_key.setdefault(key, []).append(len(unique))
                    unique.append(unit)
        self.adapter = images.adapter
        self.encoded: list[Any] = images.adapter.encode_images(backbone, unique) if unique else []
        self.num_unique = len(unique)

    def pieces(self, source: str, i: int) -> Any:
        return self.encoded[self.owner[source, self.alias.get(i, i)]]


def accepts_encoder_outputs(backbone: torch.nn.Module) -> bool:
    """Whether ``backbone`` takes precomputed vision outputs (``mm_encoder_outputs``, transformers 5)."""
    try:
        params = inspect.signature(backbone.forward).parameters
    except (TypeError, ValueError):
        return False
    return "mm_encoder_outputs" in params and hasattr(backbone, "get_image_features")


def _with_cached_images(inputs: dict[str, Any], images: _Images, idx: Sequence[int], cache: VisionCache,
                        source: str) -> dict[str, Any]:
    """``inputs`` with ``pixel_values`` replaced by the cached encoder outputs of rows ``idx``'s images
    (the other image inputs, e.g. ``image_grid_thw``, stay: the decoder still reads them)."""
    if "pixel_values" not in inputs:
        return inputs
    pieces = [cache.pieces(source, i) for b in idx for i in range(*images.spans[b])]
    out = {k: v for k, v in inputs.items() if k != "pixel_values"}
    out["mm_encoder_outputs"] = _Pieces(pieces, images.adapter)
    return out


def _position_ids(backbone: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor | None:
    """The rope positions the decoder would compute for ``inputs`` (the model family's
    ``rope_positions``: for Qwen-VL its 3D ``(3, b, L)`` M-RoPE positions), or ``None`` where the family has
    none or the rows have no image. Called only for adapters with ``reuse_positions``: the positions depend
    on tokens, mask and image grids only, so a perturbed copy of the rows shares them, and computing them
    once saves the model's per-row Python loop."""
    adapter = adapter_for(backbone)
    if adapter is None or adapter.rope_positions is None:
        return None
    return adapter.rope_positions(backbone, inputs)


def _position_inputs(batch: dict[str, Any], idx: Sequence[int], images: _Images | None = None) -> dict[str, Any]:
    """What ``_position_ids`` reads for responses ``idx``: tokens, mask, token types and the image inputs
    other than pixels (``_rows`` without copying the pixels)."""
    images = images or _Images(batch, _adapter(batch, None))
    inputs = _rows(batch, idx, None, images=images)
    inputs.update(images.inputs(idx, None, with_pixels=False))
    return inputs


def _stack(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Concatenate two model-input dicts along the batch (clean rows first, then perturbed rows)."""
    out = {}
    for key, value in a.items():
        out[key] = value + b[key] if isinstance(value, _Pieces) else torch.cat([value, b[key]], dim=0)
    return out


@torch.no_grad()
def completion_hidden(backbone: torch.nn.Module, inputs: dict[str, Any], completion_len: int) -> torch.Tensor:
    """``(b, C, D)`` final hidden states at the positions that predict each completion token."""
    out = _call(backbone, inputs, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return hidden[:, -completion_len - 1 : -1]


def distinct_responses(batch: dict[str, Any], rows: Sequence[int], groups: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(unique, inverse)``: the responses of ``rows`` that are not token-for-token repeats (same valid
    tokens, same mask) of an earlier one of the same prompt group, and for each of ``rows`` its position
    in ``unique``."""
    rows = list(rows)
    if not rows:
        return [], []
    sel = torch.as_tensor(rows, dtype=torch.long, device=batch["completion_ids"].device)
    mask = batch["completion_mask"][sel].long()
    ids = batch["completion_ids"][sel].long() * mask
    # A cheap key per row; exact comparison decides among equal keys.
    keys = _token_keys(ids, mask)
    seen: dict[tuple, list[int]] = {}  # key -> positions (in rows) of the distinct responses with it
    position: dict[int, int] = {}  # position in rows -> index in unique
    unique: list[int] = []
    inverse: list[int] = []
    for j, b in enumerate(rows):
        key = (groups[b], keys[j])
        for u in seen.get(key, []):
            if torch.equal(mask[j], mask[u]) and torch.equal(ids[j], ids[u]):
                inverse.append(position[u])
                break
        else:
            seen.setdefault(key, []).append(j)
            position[j] = len(unique)
            unique.append(b)
            inverse.append(position[j])
    return unique, inverse


def _shared_prefix_hidden(
    backbone: torch.nn.Module,
    batch: dict[str, Any],
    idx: Sequence[int],
    groups: Sequence[int],
    sources: Sequence[str],
    cache: VisionCache,
    positions: torch.Tensor,
    completion_len: int,
    images: _Images,
) -> torch.Tensor:
    """``(len(sources)·b, C, D)`` final hidden states predicting the completion tokens of responses ``idx``
    (b of them), for each image source in turn, with each prompt run once per source.

    Two model calls: (1) the distinct prompts of ``idx`` (one representative response per group and
    source) with ``use_cache``, giving their keys/values and the last prompt position's hidden state,
    which predicts completion token 0; (2) completion tokens ``0 … C−2`` of every response against its
    prompt's cache (indexed out to the responses), predicting tokens ``1 … C−1``, in one call or, when
    the responses' lengths differ enough (``length_parts``), two. ``positions`` ``(3, b, P + C)`` are
    the responses' rope positions (Qwen-VL 3D), sliced for each call, so the model never recomputes
    them and never reads stale ``rope_deltas``. Positions after a part's longest response are not
    computed (zeros in the output: they predict padding). When only token 0 is valid the completion
    call still runs on one token (its output unused).
    """
    P, C = batch["prompt_ids"].size(1), completion_len
    reps: dict[int, int] = {}  # group -> position of its representative among idx
    for j, b in enumerate(idx):
        reps.setdefault(groups[b], j)
    rep_pos = list(reps.values())
    rep_rows = [idx[j] for j in rep_pos]
    n = len(rep_rows)
    rep_sel = torch.as_tensor(rep_rows, dtype=torch.long, device=batch["prompt_ids"].device)
    prefix = {
        "input_ids": batch["prompt_ids"][rep_sel].repeat(len(sources), 1),
        "attention_mask": batch["prompt_mask"][rep_sel].repeat(len(sources), 1),
    }
    rep_positions = positions[:, rep_pos, :P]
    prefix["position_ids"] = rep_positions.repeat(1, len(sources), 1)
    pieces: list[Any] = []
    for source in sources:
        pieces += [cache.pieces(source, i) for b in rep_rows for i in range(*images.spans[b])]
    if pieces:
        prefix["mm_encoder_outputs"] = _Pieces(pieces, images.adapter)
    out = _call(backbone, prefix, use_cache=True)
    last = (out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])[:, -1]  # (S·n, D)
    kv = out.past_key_values
    owner = {g: k for k, g in enumerate(reps)}
    b = len(idx)
    order = [s * n + owner[groups[r]] for s in range(len(sources)) for r in idx]  # prefix row of each output row
    sel = torch.as_tensor(list(idx), dtype=torch.long, device=batch["completion_ids"].device)
    # Positions past a response's last valid token predict padding, which is never scored: each part below
    # runs only as far as its longest response.
    valid = batch["completion_mask"][sel].bool()
    lengths = [int(v.nonzero().max()) + 1 if bool(v.any()) else 1 for v in valid]
    rest = last.new_zeros(len(order), C - 1, last.size(-1))  # stays zero where it predicts padding
    parts = length_parts(lengths) if hasattr(kv, "layers") else [list(range(b))]
    for part in parts:
        longest = max(lengths[j] for j in part)
        steps = max(longest - 1, 1)
        rows_out = [s * b + j for s in range(len(sources)) for j in part]
        index = torch.as_tensor([order[r] for r in rows_out], dtype=torch.long, device=last.device)
        part_kv = kv if len(parts) == 1 else _copy_cache(kv)
        part_kv.reorder_cache(index)  # (rows, heads, P, d) per layer: each response's copy of its prompt's cache
        psel = sel[torch.as_tensor(part, dtype=torch.long, device=sel.device)]
        completion = {
            "input_ids": batch["completion_ids"][psel, :steps].repeat(len(sources), 1),
            "attention_mask": torch.cat(
                [batch["prompt_mask"][psel], batch["completion_mask"][psel, :steps]], 1
            ).repeat(len(sources), 1),
            "position_ids": positions[:, part, P : P + steps].repeat(1, len(sources), 1),
        }
        out = _call(backbone, completion, past_key_values=part_kv, use_cache=True)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        rest[torch.as_tensor(rows_out, dtype=torch.long, device=rest.device), : longest - 1] = hidden[:, : longest - 1]
    first = last[torch.as_tensor(order, dtype=torch.long, device=last.device)][:, None]
    return torch.cat([first, rest], dim=1)


#: A part of a chunk's responses costs one more model call; below this many saved token positions (on a
#: CPU, the lab model's per-call overhead is worth ~70), splitting does not pay.
_MIN_SPLIT_SAVING = 64


def length_parts(lengths: Sequence[int]) -> list[list[int]]:
    """Split positions ``0 … b−1`` of responses with valid ``lengths`` into one or two parts, each to be run
    only as far as its own longest response: two when the shorter part saves at least a quarter of the
    token positions and ``_MIN_SPLIT_SAVING`` of them. Responses sampled together often share a typical
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
    if best_k == 0 or saving < max(_MIN_SPLIT_SAVING, total / 4):
        return [list(range(len(lengths)))]
    return [sorted(order[:best_k]), sorted(order[best_k:])]


def _copy_cache(kv):
    """A cache object sharing ``kv``'s tensors whose ``reorder_cache`` leaves ``kv`` untouched (reordering
    replaces each layer's tensors, it does not write into them). Layers that keep their tensors in lists
    (the recurrent layers' conv / recurrent states) get their own lists, which reordering rebinds."""
    part = copy.copy(kv)
    part.layers = []
    for layer in kv.layers:
        own = copy.copy(layer)
        for name, value in vars(layer).items():
            if isinstance(value, (list, dict)):
                setattr(own, name, copy.copy(value))
        part.layers.append(own)
    return part


@torch.no_grad()
def counterfactual_stats(
    backbone: torch.nn.Module,
    lm_head: torch.nn.Module,
    batch: dict[str, Any],
    rows: Sequence[int],
    perturbed_pixel_values: Pixels | None,
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
    share_prefix: bool = True,
    lockstep: bool = False,
    forward: str = "prefix_cached",
    groups: Sequence[int] | None = None,
    adapter: Adapter | None = None,
) -> TokenStats:
    """Token statistics ``(len(rows), C)`` for the responses ``rows`` of a generation batch.

    Args:
        backbone / lm_head: from ``_trl_seam.backbone_and_head``.
        batch: TRL's generation batch (keys above).
        rows: indices of the responses to score.
        perturbed_pixel_values: ``perturb_images`` or ``perturb_batch_images`` output covering the images
            of ``rows`` (``None``: no images in the batch).
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
            calls even when skipping left them different numbers of rows; pass ``lockstep=True`` there
            and the maximum over processes of ``lockstep_forwards``.
        share_prefix: run each prompt once per pass and its responses against its cache (module doc),
            where the model takes precomputed image features and 3D rope positions are known.
        lockstep: make every chunk exactly one model call whatever a process's rows hold (sharded models):
            no shared prefix and no separate vision-encoder call, whose count would depend on the rows;
            a chunk without an image carries a throwaway image row so that every call runs the vision
            encoder too (when the batch has images). Each process then issues: its forwards (equal in
            number), then one LM-head gather (``gather_ctx``, entered once per call whatever the rows).
        forward: a ``COUNTERFACTUAL_FORWARDS`` name; ``full`` switches off the vision cache, the shared
            prefix and reused positions (the clean pass's path; its states round as the clean ones do).
        groups: ``prompt_groups(batch)`` if the caller has it (computed here otherwise).
        adapter: the model family's (``visent.models``); ``None`` looks it up from ``backbone``. Its
            ``vision_cache`` / ``shared_prefix`` / ``reuse_positions`` decide which savings run; a family
            with none of them gets the plain clean-plus-perturbed forward.
    """
    mask_all = batch["completion_mask"]
    C = mask_all.size(1)
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
    adapter = _adapter(backbone, adapter)
    images = _Images(batch, adapter)
    has_images = batch.get("pixel_values") is not None
    clean_src: Pixels | None = None  # the batch's own images
    pert_src = _source(images, perturbed_pixel_values, batch) if perturbed_pixel_values is not None else None
    groups = prompt_groups(batch, rows, adapter) if groups is None else list(groups)
    # Token-for-token repeats of a response of the same prompt get its statistics.
    rows, inverse = distinct_responses(batch, list(rows), groups)
    if len(rows) > batch_size:
        # Chunks of similar lengths: each forward runs only as far as its longest response.
        lengths = mask_all[torch.as_tensor(rows, dtype=torch.long, device=mask_all.device)].sum(1).tolist()
        by_length = sorted(range(len(rows)), key=lambda j: lengths[j])
        new_pos = {old: new for new, old in enumerate(by_length)}
        rows, inverse = [rows[j] for j in by_length], [new_pos[j] for j in inverse]
    forwards = 0
    need_clean = clean_hidden is None
    need_pert = with_perturbed and perturbed_pixel_values is not None
    cache: VisionCache | None = None
    # The images of a group's responses are equal (prompt_groups compares them; the perturbed ones share
    # the group's seed): encode one scored response's. Not the batch's first of the group: that one may be
    # skipped, and then its "perturbed" pixels were never perturbed.
    first_of: dict[int, int] = {}
    for b in rows:
        first_of.setdefault(groups[b], b)
    if forward not in COUNTERFACTUAL_FORWARDS:
        raise ValueError(f"counterfactual forward {forward!r} is not known; valid: {', '.join(COUNTERFACTUAL_FORWARDS)}")
    full = forward == "full"
    if lockstep:
        share_prefix = False  # every chunk must be exactly one model call (argument doc)
    share_prefix = share_prefix and adapter.shared_prefix and not full
    reuse_positions = adapter.reuse_positions and not full
    if not reuse_positions:
        clean_position_ids = None
    if (
        has_images and rows and (need_clean or need_pert) and not lockstep and not full
        and adapter.vision_cache and accepts_encoder_outputs(backbone)
    ):
        wanted = sorted({i for b in first_of.values() for i in range(*images.spans[b])})
        sources: dict[str, Pixels | None] = {"clean": clean_src} if need_clean else {}
        if need_pert:
            sources["perturbed"] = pert_src
        with forward_ctx() if forward_ctx is not None else _null():
            alias = _image_alias(images.spans, rows, groups, first_of)
            cache = VisionCache(backbone, images, sources, wanted, alias=alias)

    # Responses whose "perturbed" images are their clean ones (``identity``; or no image at all).
    same_as_clean: dict[int, bool] = {}
    if with_perturbed:
        for b in rows:
            i0, i1 = images.spans[b]
            same_as_clean[b] = pert_src is None or all(
                torch.equal(images.pixels(pert_src, i), images.pixels(None, i)) for i in range(i0, i1)
            )

    def inputs_for(idx, which: str) -> dict[str, Any]:
        source = clean_src if which == "clean" else pert_src
        inputs = _rows(batch, idx, None, images=images)
        if has_images:
            inputs.update(images.inputs(idx, source))
        return _with_cached_images(inputs, images, idx, cache, which) if cache is not None else inputs

    # Under lockstep every forward must run the same modules on every process (ZeRO-3 gathers each
    # module's parameters as it runs): a chunk without an image gets a throwaway image row (``anchor``).
    anchor = _anchor_row(images) if lockstep and has_images else None
    if anchor is not None and pert_src is not None:
        pert_src = {**{i: images.pixels(None, i) for i in range(*images.spans[anchor])}, **pert_src}
    hidden: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (sel, clean, perturbed) per chunk
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        sel = torch.as_tensor(idx, dtype=torch.long, device=mask_all.device)
        fwd = idx + [anchor] if anchor is not None and not any(images.spans[b][1] > images.spans[b][0] for b in idx) else idx
        n = len(idx)
        with forward_ctx() if forward_ctx is not None else _null():
            positions = None
            if clean_position_ids is not None:
                positions = clean_position_ids[:, torch.as_tensor(fwd, dtype=torch.long, device=mask_all.device)]
            elif reuse_positions and (need_clean or need_pert) and (share_prefix or clean_hidden is None):
                positions = _position_ids(backbone, _position_inputs(batch, fwd, images))
            shared = share_prefix and cache is not None and positions is not None and positions.dim() == 3
            if clean_hidden is not None:
                h_clean = clean_hidden[sel]
                if with_perturbed and shared:
                    h_pert = _shared_prefix_hidden(backbone, batch, idx, groups, ["perturbed"], cache, positions, C, images)
                elif with_perturbed:
                    pert_inputs = inputs_for(fwd, "perturbed")
                    if positions is not None:
                        pert_inputs["position_ids"] = positions
                    h_pert = completion_hidden(backbone, pert_inputs, C)[:n]
                else:
                    h_pert = h_clean
            elif shared:
                names = ["clean", "perturbed"] if with_perturbed else ["clean"]
                h = _shared_prefix_hidden(backbone, batch, idx, groups, names, cache, positions, C, images)
                h_clean, h_pert = h[:n], h[-n:]
            elif with_perturbed:
                both = _stack(inputs_for(fwd, "clean"), inputs_for(fwd, "perturbed"))
                if positions is not None:  # the perturbed rows have the clean rows' tokens and grids
                    both["position_ids"] = torch.cat([positions, positions], dim=1)
                h = completion_hidden(backbone, both, C)
                h_clean, h_pert = h[:n], h[len(fwd) : len(fwd) + n]
            else:
                h_clean = h_pert = completion_hidden(backbone, inputs_for(fwd, "clean"), C)[:n]
            unchanged = [j for j, b in enumerate(idx) if same_as_clean.get(b, False)]
            if unchanged and h_pert is not h_clean:
                # Same inputs, same function: the clean states are the perturbed ones (bit for bit, which a
                # second forward need not give: some kernels' float results depend on the batch row).
                h_pert = h_pert.clone()
                h_pert[unchanged] = h_clean[unchanged]
        forwards += int(clean_hidden is None or with_perturbed)
        hidden.append((sel, h_clean, h_pert))
    pad = [anchor if anchor is not None else 0]
    while forwards < min_forwards and mask_all.size(0) > 0:
        with forward_ctx() if forward_ctx is not None else _null():
            completion_hidden(backbone, inputs_for(pad, "clean"), C)  # result unused: keeps collectives in step
        forwards += 1
    # The LM head is gathered once per call, after every forward and whatever the rows held, so each
    # process issues the same collectives: its forwards (equal in number), then this one gather.
    with gather_ctx(weight, bias) if gather_ctx is not None else _null():
        parts = [
            token_stats_from_hidden(
                h_clean, h_pert, weight, mask_all[sel], temperature=temperature, chunk_size=chunk_size,
                lm_head_bias=bias,
            )
            for sel, h_clean, h_pert in hidden
        ]
    if not parts:
        z = torch.zeros(0, C, device=mask_all.device)
        return TokenStats(entropy=z, entropy_perturbed=z, jsd=z, kl=z)
    back = torch.as_tensor(inverse, dtype=torch.long, device=mask_all.device)
    return TokenStats(
        entropy=torch.cat([p.entropy for p in parts])[back],
        entropy_perturbed=torch.cat([p.entropy_perturbed for p in parts])[back],
        jsd=torch.cat([p.jsd for p in parts])[back],
        kl=torch.cat([p.kl for p in parts])[back],
    )


def lockstep_forwards(num_rows: int, batch_size: int, reuses_clean: bool, with_perturbed: bool) -> int:
    """Model calls ``counterfactual_stats(..., lockstep=True)`` makes at most for ``num_rows`` rows (fewer
    when repeats merge): one per chunk, none when a reused clean forward leaves nothing to run. The
    maximum of this over processes is every process's ``min_forwards``."""
    if reuses_clean and not with_perturbed:
        return 0
    return -(-num_rows // batch_size)


def _anchor_row(images: _Images) -> int:
    """The first response with an image (0 if none): the throwaway row of lockstep chunks and padding
    forwards, so that every lockstep forward runs the vision encoder when the batch has images."""
    return next((b for b, (i0, i1) in enumerate(images.spans) if i1 > i0), 0)


def _image_alias(spans, rows: Sequence[int], groups: Sequence[int], first_of: dict[int, int]) -> dict[int, int]:
    """Image index -> the same-position image of its group's representative response (equal pixels and
    grid), for the images of ``rows``; ``spans``: ``_Images.spans``."""
    alias = {}
    for b in rows:
        i0, i1 = spans[b]
        j0 = spans[first_of[groups[b]]][0]
        for k in range(i1 - i0):
            alias[i0 + k] = j0 + k
    return alias


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
