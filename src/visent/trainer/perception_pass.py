"""The sampled-token perception pass of VPPO and PAPO: log π_old(o_t | perturbed image), one no-grad forward.

Unlike VEPO's counterfactual pass (``visent.trainer.counterfactual``: full-vocabulary statistics from hidden
states), VPPO's token score and PAPO's implicit perception loss need only the log-prob of each sampled token
under the policy that generated the batch, with the image perturbed. This is one no-grad forward of the batch
with the perturbed images, made once per generation batch, before any update (so under θ_old), through the
counterfactual pass's forward (``counterfactual.perturbed_token_logps``: each distinct perturbed image
encoded once, each prompt run once per draw with its responses continued from its cache, inference mode,
the LM head only at the completion positions, TRL's log-prob kernel on the final hidden states); with
``counterfactual_forward: full``, under ZeRO-3 / FSDP, or for a model whose head scales its logits, through
TRL's own forward of every row (the reference the fast path equals within float summation order):

* ``PERTURBED_LOGPS`` ``(B, C)`` — stored with the batch; PAPO's term reads it at every update;
* with ``token_score: perception_kl`` the per-token score ``clamp(k3(old, perturbed), 0, 10)``
  (:func:`visent.core.kl_scores.perception_kl_score`) selects the top ``selection_ratio`` of each response, and
  with ``trajectory_beta_min`` set, the normalised response scores ``ŝ_i`` over the generation batch are stored
  for VPPO's advantage shaping (α per update micro-batch, :mod:`visent.core.trajectory_shaping`).

The clean log-probs ``old`` come from TRL's ``old_per_token_logps`` when it computed them, else from the
update's own forward when the batch gets exactly one update (the mask is then built at that update, as for
VEPO), else from one more no-grad forward here.

Draws: ``perturbation_scope: prompt`` shares one draw among a prompt's responses (PAPO), ``response`` draws one
per response (VPPO). A response without an image scores 0 and its perturbed log-probs equal the clean ones.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import torch

from visent.core.kl_scores import perception_kl_score
from visent.core.selection import select_tokens
from visent.core.trajectory_shaping import normalized_trajectory_scores
from visent.image_views import RAW_VIEWS, perturb_raw_images
from visent.models.unwrap import backbone_and_head
from visent.trainer._trl_seam import RAW_IMAGES
from visent.trainer.counterfactual import (
    BatchImages,
    Pixels,
    perturb_batch_images,
    perturb_images,
    perturbed_token_logps,
    prompt_groups,
    prompt_seeds,
)

__all__ = [
    "LOGP_SCORES",
    "PERTURBED_LOGPS",
    "SHAPED",
    "S_HAT",
    "kl_mask_and_shaping",
    "perturbed_logps",
    "raw_view_pixels",
    "raw_view_units",
    "rows_with_image",
    "uses_counterfactual_forward",
]

#: token_score values computed from sampled-token log-probs (not from ``visent.core.scores.SCORES``).
LOGP_SCORES = ("perception_kl",)
PERTURBED_LOGPS = "visent_perturbed_logps"  # (B, C) float: log π_old(o_t | perturbed image)
S_HAT = "visent_trajectory_s_hat"  # (B,) float: VPPO's normalised response score ŝ_i
SHAPED = "visent_trajectory_shaped"  # (B,) bool: whether α_i is computed for the row


def _response_seed(seed: int, row: int) -> int:
    h = hashlib.blake2b(struct.pack("<qq", int(seed), int(row)), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


def rows_with_image(batch: dict[str, Any]) -> torch.Tensor:
    """``(B,)`` bool: the response's prompt has at least one image."""
    ids = batch["completion_ids"]
    num_images = batch.get("num_images") or [0] * ids.size(0)
    return torch.tensor([n > 0 for n in num_images], dtype=torch.bool, device=ids.device)


@torch.no_grad()
def perturbed_logps(trainer: Any, batch: dict[str, Any], clean_logps: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, C)`` float32 log-probs of the sampled tokens with every image perturbed (no gradient).

    ``clean_logps`` (when known) fills the rows without an image; otherwise they get a clean forward's values.
    """
    args = trainer.args
    B = batch["completion_ids"].size(0)
    with_image = rows_with_image(batch)
    if batch.get("pixel_values") is None or not bool(with_image.any()):
        return clean_logps.float() if clean_logps is not None else _forward(trainer, batch)
    adapter = trainer.model_adapter
    step = int(trainer.state.global_step)
    groups = prompt_groups(batch, adapter=adapter)
    seeds = prompt_seeds(batch, args.perturbation_seed, step, groups, adapter=adapter)
    if args.perturbation_scope == "response":
        seeds = [None if s is None else _response_seed(s, b) for b, s in enumerate(seeds)]
        groups = list(range(B))
    fast = uses_counterfactual_forward(trainer)
    pixels = _perturbed_pixels(trainer, batch, seeds, groups, fast)
    if fast:
        return _counterfactual_forward(trainer, batch, pixels, groups, with_image, clean_logps)
    aug = _forward(trainer, {**batch, "pixel_values": pixels})
    if not bool(with_image.all()):
        clean = clean_logps.float() if clean_logps is not None else _forward(trainer, batch)
        aug = torch.where(with_image[:, None], aug, clean)
    return aug


def _perturbed_pixels(trainer: Any, batch: dict[str, Any], seeds: list[int | None], groups: list[int], per_image: bool):
    """The batch's perturbed images: ``Pixels`` per image with ``per_image`` (the counterfactual forward's
    input, no whole-batch copy) where the family allows, else ``pixel_values`` in the batch's own layout."""
    args = trainer.args
    kind, strength = args.perturbation, args.perturbation_strength
    if kind in RAW_VIEWS:  # drawn on the raw images, then through the processor (PAPO)
        units = raw_view_units(trainer, batch, kind, strength, seeds) if per_image else None
        return units if units is not None else raw_view_pixels(trainer, batch, kind, strength, seeds)
    draw = perturb_images if per_image else perturb_batch_images
    return draw(batch, seeds, kind, strength, trainer.image_geometry, groups=groups, adapter=trainer.model_adapter)


def uses_counterfactual_forward(trainer: Any) -> bool:
    """Whether the perturbed rows go through the counterfactual pass's forward (``counterfactual_forward:
    prefix_cached``, the default) rather than TRL's full forward of every row (``full``, the reference). Also
    TRL's under ZeRO-3 / FSDP, where every forward is a collective and the pass's number of model calls
    would depend on each process's rows, and for a model whose LM head scales its logits in a way
    ``sampled_token_logps`` does not reproduce."""
    return (
        trainer.args.counterfactual_forward == "prefix_cached"
        and not trainer._forwards_are_collective()
        and trainer.sampled_logps_supported()
    )


def _counterfactual_forward(
    trainer: Any, batch: dict[str, Any], pixels: Any, groups: list[int], with_image: torch.Tensor,
    clean_logps: torch.Tensor | None,
) -> torch.Tensor:
    """The perturbed log-probs through ``counterfactual.perturbed_token_logps``: every prompt's perturbed
    image encoded and its prompt run once per draw (PAPO: once per prompt; VPPO: once per response), the
    model in inference mode, the LM head at completion positions only. Rows without an image take
    ``clean_logps`` when given (else they run too: with no image to replace, that is their clean forward)."""
    args = trainer.args
    B = batch["completion_ids"].size(0)
    rows = with_image.nonzero().squeeze(1).tolist() if clean_logps is not None else list(range(B))
    backbone, _ = backbone_and_head(trainer.model)
    logps = perturbed_token_logps(
        backbone, batch, rows, pixels, trainer.sampled_token_logps, groups=groups,
        batch_size=args.counterfactual_batch_size or args.per_device_train_batch_size, adapter=trainer.model_adapter,
    )  # fmt: skip
    if clean_logps is None:
        return logps
    out = clean_logps.detach().float().clone()
    out[torch.as_tensor(rows, dtype=torch.long, device=out.device)] = logps.to(out.device)
    return out


def raw_view_pixels(
    trainer: Any, batch: dict[str, Any], kind: str, strength: float | None, seeds: list[int | None]
) -> torch.Tensor:
    """``pixel_values`` of the batch with every row's raw images through the view ``kind``
    (:mod:`visent.image_views`), seeded by ``seeds[row]`` (rows with one seed share one draw), re-processed by
    the processor's image processor; same layout as ``batch["pixel_values"]`` (the views keep image sizes)."""
    rows = batch.get(RAW_IMAGES)
    if rows is None:
        raise ValueError(f"perturbation {kind!r} needs the batch's raw images (trainer.wants_raw_images())")
    drawn: dict[int, list[Any]] = {}
    per_row: list[list[Any]] = []
    for b, images in enumerate(rows):
        if images and seeds[b] not in drawn:
            drawn[seeds[b]] = perturb_raw_images(images, kind, seeds[b], strength)
        per_row.append(drawn[seeds[b]] if images else [])
    clean = batch["pixel_values"]
    ip = trainer.processing_class.image_processor
    # Flat for processors that concatenate images (Qwen, Gemma 3), one list per row for those that stack
    # rows of padded tiles (SmolVLM / Idefics3) — with an empty list for a text-only row, which such a
    # processor gives an all-zero stack as it did the batch; whichever gives the batch's own layout.
    for images in ([im for row in per_row for im in row], per_row):
        out = ip(images=images, return_tensors="pt")["pixel_values"]
        if tuple(out.shape) == tuple(clean.shape):
            break
    else:
        raise ValueError(
            f"perturbation {kind!r}: the processor made pixel_values of shape {tuple(out.shape)} from the perturbed "
            f"raw images, the batch has {tuple(clean.shape)}; this family's processor does not re-process images "
            "alone the same way: use a pixel_values perturbation (e.g. patch_blackout)"
        )
    return out.to(device=clean.device, dtype=clean.dtype)


def raw_view_units(
    trainer: Any, batch: dict[str, Any], kind: str, strength: float | None, seeds: list[int | None]
) -> Pixels | None:
    """``raw_view_pixels``' images as ``Pixels`` (per image of the batch, ``counterfactual.BatchImages``
    numbering), with each distinct draw through the image processor once, not once per response (a prompt's
    K responses share one draw). ``None`` when the processor's output for the draws does not cut into units
    equal to the batch's own in every input but the pixels (then use ``raw_view_pixels``)."""
    rows = batch.get(RAW_IMAGES)
    if rows is None:
        raise ValueError(f"perturbation {kind!r} needs the batch's raw images (trainer.wants_raw_images())")
    draw_of: dict[int | None, int] = {}
    draws: list[list[Any]] = []
    owner: list[int | None] = []
    for b, raw in enumerate(rows):
        if raw and seeds[b] not in draw_of:
            draw_of[seeds[b]] = len(draws)
            draws.append(perturb_raw_images(raw, kind, seeds[b], strength))
        owner.append(draw_of[seeds[b]] if raw else None)
    if not draws:
        return None
    images = BatchImages(batch, trainer.model_adapter)
    # Flat or one list per draw, as in raw_view_pixels: whichever cuts into the batch's own units.
    for form in ([im for d in draws for im in d], draws):
        out = trainer.processing_class.image_processor(images=form, return_tensors="pt")
        processed = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        pseudo = {**processed, "completion_ids": torch.empty(len(draws), 0), "num_images": [len(d) for d in draws]}
        pixels = _matching_units(trainer.model_adapter.units(pseudo), owner, images)
        if pixels is not None:
            return pixels
    return None


def _matching_units(units: list[list[Any]], owner: list[int | None], images: BatchImages) -> Pixels | None:
    """``Pixels`` for the batch's images from ``units[owner[b]]`` (response b's draw), or ``None`` unless each
    such unit equals the batch's own in every input but the pixels (keys, shapes, values)."""
    pixels: Pixels = {}
    for b, (i0, i1) in enumerate(images.spans):
        mine = units[owner[b]] if owner[b] is not None else []
        if len(mine) != i1 - i0:
            return None
        for k, unit in enumerate(mine):
            clean = images.units[i0 + k]
            if unit.keys() != clean.keys() or any(unit[key].shape != clean[key].shape for key in unit):
                return None
            if any(not torch.equal(unit[key].to(clean[key].device), clean[key]) for key in unit if key != "pixel_values"):
                return None
            pixels[i0 + k] = unit["pixel_values"].to(device=clean["pixel_values"].device, dtype=clean["pixel_values"].dtype)
    return pixels


def _forward(trainer: Any, batch: dict[str, Any]) -> torch.Tensor:
    logps, _ = trainer.forward_logps_and_entropies(trainer.model, batch, compute_entropy=False)
    return logps.detach().float()


def kl_mask_and_shaping(trainer: Any, batch: dict[str, Any], old_logps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """VPPO's token mask ``(B, C)`` from the perception score; stores ``S_HAT`` / ``SHAPED`` in ``batch`` when
    trajectory shaping is on; records ``vppo/score_mean`` and ``vppo/score_selected_mean``."""
    args = trainer.args
    scores = perception_kl_score(old_logps, batch[PERTURBED_LOGPS], valid)
    mask = select_tokens(scores, valid, args.selection_ratio, args.selection_granularity, args.selection_rule)
    if args.trajectory_beta_min is not None:
        s_hat, shaped = normalized_trajectory_scores(scores, valid)
        batch[S_HAT], batch[SHAPED] = s_hat, shaped
    n, n_sel = valid.sum(), mask.sum()
    trainer.record_metric("vppo/score_mean", float((scores * valid).sum() / n) if n > 0 else float("nan"))
    trainer.record_metric("vppo/score_selected_mean", float((scores * mask).sum() / n_sel) if n_sel > 0 else float("nan"))
    return mask
