"""Which responses share a prompt, a perturbation seed, or their whole statistics.

TRL repeats each prompt K times, so a generation batch of B responses has B/K prompt groups; nothing here
assumes that the copies are adjacent (TRL shuffles a batch before splitting it) or that every group has K
members. Equality is always decided exactly (tokens, masks, every image input); cheap keys only narrow
the candidates.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

import torch

from visent.models.adapters import Adapter, ImageUnit
from visent.trainer.counterfactual.units import BatchImages

__all__ = ["distinct_responses", "image_alias", "prompt_groups", "prompt_seeds", "same_unit", "unit_key"]


def _token_keys(ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    """A cheap key per row of ``(n, L)`` token ids under a 0/1 ``mask``: a position-weighted sum of the valid
    tokens and the mask itself. Equal rows (tokens and mask) have equal keys; equal keys prove nothing,
    callers compare rows exactly. int64 arithmetic may wrap, deterministically, which a key tolerates."""
    weights = torch.arange(1, ids.size(1) + 1, device=ids.device, dtype=torch.int64) * 1_000_003
    mask = mask.long()
    return ((ids.long() * mask + mask) * weights).sum(1).tolist()


def unit_key(unit: ImageUnit) -> tuple:
    """A cheap key of one image unit: its shapes and a strided sum of its pixels. Equal units have equal
    keys; equal keys prove nothing (callers compare exactly)."""
    pv = unit["pixel_values"]
    flat = pv.reshape(-1)
    return (tuple(pv.shape), float(flat[:: max(1, flat.numel() // 64)].sum()))


def same_unit(u: ImageUnit, v: ImageUnit) -> bool:
    """Whether two image units are equal: same keys, and every input equal in shape and value."""
    return u.keys() == v.keys() and all(u[k].shape == v[k].shape and torch.equal(u[k], v[k]) for k in u)


def _same_images(images: BatchImages, b: int, f: int) -> bool:
    """Whether responses b and f have equal images (every image key, compared exactly)."""
    (i0, i1), (j0, j1) = images.spans[b], images.spans[f]
    if i1 - i0 != j1 - j0:
        return False
    return all(same_unit(images.units[i], images.units[j]) for i, j in zip(range(i0, i1), range(j0, j1)))


def prompt_groups(batch: dict[str, Any], rows: Sequence[int] | None = None, *, adapter: Adapter) -> list[int]:
    """Group index per response (dense, in order of first appearance): responses of one group have the
    same prompt tokens, prompt mask and images, compared exactly.

    ``rows``: only these responses are compared; every other one gets a group of its own (for responses
    whose counterfactual pass is skipped, which need no grouping). ``adapter``: the model's.
    """
    images = BatchImages(batch, adapter)
    ids, pmask = batch["prompt_ids"], batch["prompt_mask"]
    B = ids.size(0)
    wanted = set(range(B)) if rows is None else set(rows)
    token_key = _token_keys(ids, pmask)
    keys = []
    for b in range(B):
        i0, i1 = images.spans[b]
        pixel_key = tuple(unit_key(images.units[i]) for i in range(i0, i1)) if b in wanted else ()
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
        if f != b and same_text[b] and _same_images(images, b, f):
            groups.append(groups[f])
            continue
        # First of its key, or a key collision: compare with every group of this key.
        for g in by_key.get(key, []):
            f = firsts[g]
            if torch.equal(ids[b], ids[f]) and torch.equal(pmask[b], pmask[f]) and _same_images(images, b, f):
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
    *,
    adapter: Adapter,
) -> list[int | None]:
    """One 63-bit seed per response, equal for responses of the same prompt.

    Derived from (``base_seed``, ``step``, the prompt's unpadded token ids, a strided sample of its
    images' pixels), so it does not depend on where a group's responses sit in the batch or on which
    process they landed: the K responses of a prompt always share one noise draw, and a run (or a resumed
    run, since ``step`` is the global step) is reproducible. ``groups`` (``prompt_groups``' output, computed
    here if ``None``) lets the hash run once per prompt. ``rows``: only these responses get a seed (the
    others ``None``).
    """
    images = BatchImages(batch, adapter)
    groups = prompt_groups(batch, rows, adapter=adapter) if groups is None else groups
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
                flat = torch.cat([images.units[i]["pixel_values"].reshape(-1) for i in range(i0, i1)])
                stride = max(1, flat.numel() // 4096)
                h.update(flat[::stride].to("cpu", torch.float32).numpy().tobytes())
            by_group[groups[b]] = int.from_bytes(h.digest(), "little") >> 1
        seeds.append(by_group[groups[b]])
    return seeds


def distinct_responses(batch: dict[str, Any], rows: Sequence[int], groups: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(unique, inverse)``: the responses of ``rows`` that are not token-for-token repeats (same valid
    tokens, same mask) of an earlier one of the same prompt group, and for each of ``rows`` its position
    in ``unique``. A repeat has the same statistics, so it is scored once."""
    rows = list(rows)
    if not rows:
        return [], []
    sel = torch.as_tensor(rows, dtype=torch.long, device=batch["completion_ids"].device)
    mask = batch["completion_mask"][sel].long()
    ids = batch["completion_ids"][sel].long() * mask
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


def image_alias(spans: Sequence[tuple[int, int]], rows: Sequence[int], groups: Sequence[int],
                first_of: dict[int, int]) -> dict[int, int]:
    """Image index -> the same-position image of its group's representative response ``first_of[group]``
    (equal pixels and inputs), for the images of ``rows``; ``spans``: ``BatchImages.spans``."""
    alias = {}
    for b in rows:
        i0, i1 = spans[b]
        j0 = spans[first_of[groups[b]]][0]
        for k in range(i1 - i0):
            alias[i0 + k] = j0 + k
    return alias
