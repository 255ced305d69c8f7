"""A generation batch's images as units, and the model inputs of some of its responses.

The model's adapter (``visent.models.adapters``) cuts the batch's image inputs into one unit per image
(``Adapter.units``) and joins units back into model inputs (``Adapter.join_images``); nothing here reads a
family's layout. Images are numbered over the batch in order: ``BatchImages.units[i]`` is image i and
``BatchImages.spans[b] = (i0, i1)`` the images of response b. ``Pixels`` maps an image number to its
perturbed ``pixel_values``; where a function takes ``Pixels | None``, ``None`` means the batch's own
clean images.

Shapes: B responses, P prompt tokens (left-padded), C completion tokens (right-padded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit

__all__ = ["BatchImages", "Pixels", "pixel_source", "position_inputs", "row_inputs"]

Pixels = dict[int, torch.Tensor]
"""Perturbed images of a batch: ``perturb_images``' pixels per image index (only the perturbed ones)."""

#: Per-token inputs TRL may hand any family besides the adapter's own (harmless when absent).
_SHARED_TOKEN_KEYS = ("mm_token_type_ids", "token_type_ids")


class BatchImages:
    """A batch's images as units: ``units[i]`` is image i (numbered over the batch in order),
    ``spans[b] = (i0, i1)`` the images of response b."""

    def __init__(self, batch: dict[str, Any], adapter: Adapter):
        self.adapter = adapter
        per_response = adapter.units(batch)
        self.units: list[ImageUnit] = [u for row in per_response for u in row]
        self.spans: list[tuple[int, int]] = []
        i = 0
        for row in per_response:
            self.spans.append((i, i + len(row)))
            i += len(row)

    def has_images(self, b: int) -> bool:
        return self.spans[b][1] > self.spans[b][0]

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


def pixel_source(images: BatchImages, pixels: Pixels | torch.Tensor | None, batch: dict[str, Any]) -> Pixels | None:
    """A ``Pixels`` value (``None`` = the batch's clean images) from the forms the public functions accept:
    ``None``, ``perturb_images``' dict, or a whole-batch ``pixel_values`` tensor (``perturb_batch_images``)."""
    if pixels is None or isinstance(pixels, dict):
        return pixels
    if pixels is batch.get("pixel_values"):
        return None
    replaced = BatchImages({**batch, "pixel_values": pixels}, images.adapter)
    return {i: u["pixel_values"] for i, u in enumerate(replaced.units)}


def row_inputs(
    batch: dict[str, Any], idx: Sequence[int], images: BatchImages, pixels: Pixels | torch.Tensor | None = None,
    with_images: bool = False,
) -> dict[str, Any]:
    """Model inputs for responses ``idx`` (full prompt + completion): ids, mask, per-token inputs and, with
    ``with_images``, their image inputs with pixels from ``pixels`` (``pixel_source``' forms)."""
    sel = torch.as_tensor(list(idx), dtype=torch.long, device=batch["completion_ids"].device)
    inputs = {
        "input_ids": torch.cat([batch["prompt_ids"][sel], batch["completion_ids"][sel]], dim=1),
        "attention_mask": torch.cat([batch["prompt_mask"][sel], batch["completion_mask"][sel]], dim=1),
    }
    for key in dict.fromkeys((*images.adapter.token_keys, *_SHARED_TOKEN_KEYS)):
        if batch.get(key) is not None:
            inputs[key] = batch[key][sel]
    if with_images:
        inputs.update(images.inputs(idx, pixel_source(images, pixels, batch)))
    return inputs


def position_inputs(batch: dict[str, Any], idx: Sequence[int], images: BatchImages) -> dict[str, Any]:
    """What the adapter's ``rope_positions`` reads for responses ``idx``: tokens, mask, per-token inputs and
    the image inputs other than pixels (no pixel is copied)."""
    inputs = row_inputs(batch, idx, images)
    inputs.update(images.inputs(idx, None, with_pixels=False))
    return inputs
