"""Perturbed images, drawn once per prompt, and vision-encoder outputs, computed once per distinct image.

- ``perturb_images``: the K responses of a prompt share its seed and so its noise; the adapter's
  ``perturb`` draws it once per group and the copies are views of that draw (nothing copied K times).
- ``VisionCache``: the K responses of a prompt carry K identical copies of its (clean, and by the above
  also perturbed) image, so the encoder runs on one copy and the decoder gets the cached outputs as
  precomputed ``mm_encoder_outputs`` in the model's own format (``Adapter.encoder_outputs``; for Qwen3-VL
  with its deepstack features). Only where the adapter says the encoder sees each image on its own
  (``vision_cache``) and the model accepts them (``accepts_encoder_outputs``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit
from visent.trainer.counterfactual.grouping import prompt_groups, same_unit, unit_key
from visent.trainer.counterfactual.units import BatchImages, Pixels

__all__ = [
    "EncoderPieces",
    "VisionCache",
    "accepts_encoder_outputs",
    "perturb_batch_images",
    "perturb_images",
    "with_cached_images",
]


def perturb_images(
    batch: dict[str, Any],
    seeds: Sequence[int | None],
    kind: str,
    strength: float | None,
    layout: Any,
    rows: Sequence[int] | None = None,
    groups: Sequence[int] | None = None,
    *,
    adapter: Adapter,
) -> Pixels:
    """Perturbed ``pixel_values`` of image i (numbered over the batch, ``BatchImages``), for the images of
    responses ``rows`` (``None``: all), one draw per prompt group, by the adapter's ``perturb``.

    ``layout``: the adapter's ``image_geometry(processor)``. ``groups`` (``prompt_groups``' output, computed
    if ``None``) decides which responses share a draw; ``seeds[b]`` seeds response b's group. Only the
    pixels change: an image's other inputs (grid, sizes, masks) are the clean ones.
    """
    if batch.get("pixel_values") is None:
        return {}
    images = BatchImages(batch, adapter)
    groups = prompt_groups(batch, rows, adapter=adapter) if groups is None else groups
    wanted = None if rows is None else set(rows)
    draws: dict[int, list[torch.Tensor]] = {}  # group -> its images' perturbed pixels
    out: Pixels = {}
    for b, (i0, i1) in enumerate(images.spans):
        if i1 == i0 or (wanted is not None and b not in wanted):
            continue
        if groups[b] not in draws:
            if seeds[b] is None:
                raise ValueError(f"response {b} is to be perturbed but has no seed")
            gen = torch.Generator(device="cpu").manual_seed(int(seeds[b]))
            noisy = adapter.perturb(kind, images.units[i0:i1], gen, strength, layout)
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
    *,
    adapter: Adapter,
) -> torch.Tensor | None:
    """Perturbed ``pixel_values`` for the whole batch in its own layout (``perturb_images`` joined back by
    the adapter). ``rows``: only these responses' images are perturbed (the others keep their clean
    pixels); ``None``: all of them."""
    if batch.get("pixel_values") is None:
        return None
    images = BatchImages(batch, adapter)
    noisy = perturb_images(batch, seeds, kind, strength, layout, rows, groups, adapter=adapter)
    source = {i: noisy.get(i, images.units[i]["pixel_values"]) for i in range(len(images.units))}
    return images.inputs(range(len(images.spans)), source)["pixel_values"]


class EncoderPieces:
    """Cached vision-encoder outputs of the images of some rows, turned into the model's
    ``mm_encoder_outputs`` only when the model is called (so clean and perturbed rows can be stacked)."""

    def __init__(self, pieces: list[Any], adapter: Adapter):
        self.pieces, self.adapter = pieces, adapter

    def __add__(self, other: EncoderPieces) -> EncoderPieces:
        return EncoderPieces(self.pieces + other.pieces, self.adapter)

    def value(self) -> dict[str, Any]:
        return {"image": self.adapter.encoder_outputs(self.pieces)}


class VisionCache:
    """Vision-encoder outputs of the distinct images of one or more image sources, in one encoder call.

    ``sources`` maps a name (``"clean"``, ``"perturbed"``) to ``None`` (the batch's own images) or
    ``perturb_images``' per-image pixels; ``pieces(name, i)`` is image ``i``'s encoder output in that
    source (whatever the adapter's ``encode_images`` returns per image). Images are deduplicated by exact
    equality of every image input, so each copy gets the result the model computes for it. ``alias`` maps
    an image to one known to be identical (a copy in the same prompt group): lookups of the former are
    answered from the latter, which is all that is compared and encoded.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        images: BatchImages,
        sources: dict[str, Pixels | None],
        wanted: Sequence[int],
        alias: dict[int, int] | None = None,
    ):
        self.alias = alias or {}
        self.owner: dict[tuple[str, int], int] = {}  # (source, image) -> index among the unique ones
        unique: list[ImageUnit] = []
        by_key: dict[tuple, list[int]] = {}
        for name, source in sources.items():
            for i in wanted:
                unit = images.unit(source, i)
                key = unit_key(unit)
                match = next((u for u in by_key.get(key, []) if same_unit(unit, unique[u])), None)
                if match is None:
                    match = len(unique)
                    by_key.setdefault(key, []).append(match)
                    unique.append(unit)
                self.owner[name, i] = match
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


def with_cached_images(inputs: dict[str, Any], images: BatchImages, idx: Sequence[int], cache: VisionCache,
                       source: str) -> dict[str, Any]:
    """``inputs`` with ``pixel_values`` replaced by the cached encoder outputs of rows ``idx``'s images
    (the other image inputs, e.g. ``image_grid_thw``, stay: the decoder still reads them)."""
    if "pixel_values" not in inputs:
        return inputs
    pieces = [cache.pieces(source, i) for b in idx for i in range(*images.spans[b])]
    out = {k: v for k, v in inputs.items() if k != "pixel_values"}
    out["mm_encoder_outputs"] = EncoderPieces(pieces, images.adapter)
    return out
