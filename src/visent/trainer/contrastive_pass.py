"""CPPO's contrastive perception loss in the trainer: two extra forwards with gradient at every update.

Per update (``vbdi/cppo`` @ cb1da3e, ``cppo_dp_actor.py``, ``use_vision_cpl_loss``): the update's rows are run
again with each prompt's raw images through CPPO's information-preserving view and its information-removing
view (:mod:`visent.image_views`, one draw per prompt, fixed for the generation batch by ``CPPO_SEED``), both
**with gradient**; tokens whose entropy rises most without the image's information, in responses with A > 0,
are selected (:func:`visent.core.entropy_shift_selection.entropy_shift_selection`), and
``coef · mean_selected softplus((k3(lp, lp_preserving) − k3(lp, lp_removing)) / τ)`` is added to the loss
(:func:`visent.core.perception_loss.contrastive_perception_loss`).

Cost: every update runs the two views forward and backward besides its own pass — up to 3× GRPO's update
compute and activation memory (the two views' graphs are alive until the backward), plus the image
processing of two views per prompt on the CPU. With the advantage gate (CPPO's default) only responses with
A > 0 can select a token and the selection is per response, so the views run on those rows alone: the term
and its gradient are the same, and the extra cost scales with the share of positive-advantage responses
(about half of a mixed group's, none of a uniform group's). Nothing of it can be cached across updates,
unlike VEPO's / VPPO's / PAPO's no-grad passes, because the views' log-probs carry gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from visent.core.entropy_shift_selection import entropy_shift_selection
from visent.core.perception_loss import contrastive_perception_loss
from visent.trainer._trl_seam import RAW_IMAGES

__all__ = ["CPPO_SEED", "contrastive_term", "view_seeds"]

CPPO_SEED = "visent_cppo_seed"  # (B,) int64: the views' seed of the row's prompt, drawn at generation


def view_seeds(trainer: Any, batch: dict[str, Any]) -> torch.Tensor:
    """``(B,)`` one seed per prompt (its responses share it), from ``perturbation_seed`` and the step."""
    from visent.trainer.counterfactual import prompt_seeds

    seeds = prompt_seeds(batch, trainer.args.perturbation_seed, int(trainer.state.global_step), adapter=trainer.model_adapter)
    return torch.tensor([-1 if s is None else s for s in seeds], dtype=torch.int64, device=batch["completion_ids"].device)


def contrastive_term(
    trainer: Any, model: torch.nn.Module, inputs: dict[str, Any], logps: torch.Tensor, entropies: torch.Tensor,
    mask: torch.Tensor, metrics: dict[str, torch.Tensor],
) -> torch.Tensor | float:  # fmt: skip
    """``coef · CPL`` for this update's rows (0 without images), recording ``contrastive_perception`` and
    ``contrastive_selected_fraction`` in ``metrics``."""
    from visent.trainer.perception_pass import raw_view_pixels

    args = trainer.args
    if inputs.get("pixel_values") is None or not any(inputs.get(RAW_IMAGES) or []):
        return 0.0
    advantages = inputs["advantages"].reshape(-1)
    rows = _rows_that_can_select(advantages, args.contrastive_perception_gate)
    if rows is None and trainer._forwards_are_collective():
        # ZeRO-3 / FSDP: every forward is a collective, so each process must make the same calls; run the
        # views on every row (they select nothing, the term is 0) rather than skip them on this process alone.
        rows = torch.arange(advantages.numel(), device=advantages.device)
    if rows is None:  # no response can select a token: the term is 0 and the views need not run
        metrics["contrastive_perception"] = logps.new_zeros(())
        metrics["contrastive_selected_fraction"] = logps.new_zeros(())
        return 0.0
    sub = inputs if rows.numel() == advantages.numel() else _take_rows(inputs, rows)
    seeds = sub[CPPO_SEED].tolist()
    views = []
    for kind, offset in (("cppo_preserving", 0), ("cppo_removing", 1)):
        pixels = raw_view_pixels(trainer, sub, kind, None, [s * 2 + offset for s in seeds])
        lp, h = trainer.forward_logps_and_entropies(model, {**sub, "pixel_values": pixels}, compute_entropy=offset == 1)
        views.append((lp, h))
    (lp_pres, _), (lp_chg, h_chg) = views
    r_mask, r_logps, r_h = mask[rows], logps[rows], entropies[rows]  # the sub-batch keeps the completion width
    selected = entropy_shift_selection(
        r_h.detach(), h_chg.detach(), r_mask, advantages[rows], args.contrastive_perception_ratio,
        args.contrastive_perception_gate,
    )  # fmt: skip
    cpl = contrastive_perception_loss(r_logps, lp_pres, lp_chg, selected, args.contrastive_perception_tau)
    metrics["contrastive_perception"] = cpl.detach()
    metrics["contrastive_selected_fraction"] = (selected.sum() / mask.sum().clamp_min(1.0)).detach()
    return args.contrastive_perception_coef * cpl


def _rows_that_can_select(advantages: torch.Tensor, gate: bool) -> torch.Tensor | None:
    """``(R,)`` indices of the rows whose tokens the selection may keep (all rows, or A > 0 under the gate);
    ``None`` when there are none."""
    rows = (advantages > 0).nonzero().reshape(-1) if gate else torch.arange(advantages.numel(), device=advantages.device)
    return rows if rows.numel() else None


def _take_rows(inputs: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The update's inputs restricted to ``rows``, images and per-row lists included, as one batch."""
    from visent.trainer._trl_seam import concat_generation_batches, select_generation_rows

    return concat_generation_batches([select_generation_rows(inputs, rows.cpu())])
