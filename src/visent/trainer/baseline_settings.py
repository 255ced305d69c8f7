"""Validation of the perception-aware baselines' settings (``VisentConfig`` fields; docs/training.md).

One function per concern, each returning a one-line message saying what to do, or None. Settings whose
trainer side is not wired yet are refused here in one line rather than accepted and ignored.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["DYNAMIC_SAMPLING_RULES", "MULTI_PROCESS_DYNAMIC_SAMPLING", "ON_EXHAUST", "baseline_settings_error"]

DYNAMIC_SAMPLING_RULES = ("none", "easyr1", "verl")
#: What dynamic sampling does when ``dynamic_sampling_max_tries`` rounds did not fill the batch.
ON_EXHAUST = ("error", "top_up")
#: The refusal of dynamic sampling over several processes (here from WORLD_SIZE, in the trainer from accelerate).
MULTI_PROCESS_DYNAMIC_SAMPLING = (
    "dynamic_sampling over several processes is not yet implemented (each process would filter its own "
    "groups); run on one process or set dynamic_sampling: none"
)


def _selection_error(c: Any) -> str | None:
    if not c.selection_weight_lambda >= 0:
        return f"selection_weight_lambda must be >= 0 (extra weight of selected tokens); got {c.selection_weight_lambda}"
    if c.selection_mode == "weight" and c.selection_granularity != "response":
        return "selection_mode=weight weights VEPO's per-response top tokens: set selection_granularity=response"
    if c.selection_mode == "weight" and c.loss_aggregation != "token_mean":
        return "selection_mode=weight divides Σ w·ℓ by the number of valid tokens (VEPO's weight mode): set loss_aggregation=token_mean"
    return None


def _coefficients_error(c: Any) -> str | None:
    if not c.contrastive_perception_tau > 0 or not 0.0 < c.contrastive_perception_ratio <= 1.0:
        return "contrastive_perception_tau must be > 0 and contrastive_perception_ratio in (0, 1]"
    for name in ("entropy_penalty_coef", "perception_kl_coef", "contrastive_perception_coef"):
        if not getattr(c, name) >= 0:
            return f"{name} must be >= 0 (the sign is part of the term); got {getattr(c, name)}"
    if c.trajectory_beta_min is not None and not 0.0 <= c.trajectory_beta_min <= 1.0:
        return f"trajectory_beta_min must be in [0, 1] (VPPO: 0.9); got {c.trajectory_beta_min}"
    if c.trajectory_beta_min is not None and c.token_score != "perception_kl":
        return "trajectory_beta_min shapes advantages by VPPO's perception score: set token_score=perception_kl"
    if c.perturbation_scope not in ("prompt", "response"):
        return f"perturbation_scope={c.perturbation_scope!r} is not known; valid: prompt, response"
    from visent.image_views import RAW_VIEWS

    stats_pass = c.needs_perturbed_pass and c.token_score != "perception_kl"  # VEPO's counterfactual statistics
    if c.perturbation in RAW_VIEWS and (stats_pass or not c.needs_perturbed_logps):
        return (
            f"perturbation={c.perturbation!r} is drawn on the raw images for the sampled-token pass "
            "(token_score=perception_kl, perception_kl_coef); VEPO's statistics perturb pixel_values: use e.g. patch_blackout"
        )
    if c.perturbation_scope == "response" and not c.needs_perturbed_logps:
        return (
            "perturbation_scope=response draws one image per response for VPPO's sampled-token pass "
            "(token_score=perception_kl or perception_kl_coef > 0); VEPO's statistics score a prompt's responses "
            "against one draw: use perturbation_scope=prompt"
        )
    return None


def _dynamic_sampling_error(c: Any) -> str | None:
    if c.dynamic_sampling not in DYNAMIC_SAMPLING_RULES:
        return f"dynamic_sampling={c.dynamic_sampling!r} is not known; valid: {', '.join(DYNAMIC_SAMPLING_RULES)}"
    bounds = list(c.dynamic_sampling_bounds or [])
    if len(bounds) != 2 or not 0.0 <= bounds[0] < bounds[1] <= 1.0:
        return f"dynamic_sampling_bounds must be [low, high] with 0 <= low < high <= 1; got {c.dynamic_sampling_bounds}"
    if c.dynamic_sampling_max_tries < 1:
        return f"dynamic_sampling_max_tries must be >= 1; got {c.dynamic_sampling_max_tries}"
    if c.dynamic_sampling_on_exhaust not in ON_EXHAUST:
        return f"dynamic_sampling_on_exhaust={c.dynamic_sampling_on_exhaust!r} is not known; valid: {', '.join(ON_EXHAUST)}"
    if c.dynamic_sampling != "none" and c.scale_rewards == "batch" and c.multi_objective_aggregation != "sum_then_normalize":
        return "dynamic_sampling with scale_rewards=batch recomputes advantages as sum_then_normalize: set multi_objective_aggregation=sum_then_normalize"
    # Also checked by the trainer (API users who set up processes themselves); here it is refused from
    # the launcher's WORLD_SIZE before any model is loaded.
    if c.dynamic_sampling != "none" and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return MULTI_PROCESS_DYNAMIC_SAMPLING
    metric = c.dynamic_sampling_metric
    if metric is not None and metric not in (c.reward_funcs or []):
        return (
            f"dynamic_sampling_metric={metric!r} must be one of reward_funcs ({', '.join(c.reward_funcs or []) or 'none set'}), "
            "e.g. reward_funcs: [authors_accuracy, authors_format] with reward_weights: [0.9, 0.1]"
        )
    if c.dynamic_sampling == "easyr1":
        return _easyr1_scale_error(c, metric)
    return None


def _easyr1_scale_error(c: Any, metric: str | None) -> str | None:
    """EasyR1's bounds are on a [0, 1] accuracy: refuse a filter on a registered reward (or the total of one)
    that ranges wider, e.g. ``r1_counting`` (counting + format, [0, 2]) whose groups would all read "too easy"."""
    from visent.rewards import REWARDS

    names = [metric] if metric is not None else list(c.reward_funcs or [])
    if len(names) != 1 or names[0] not in REWARDS:
        return None  # several functions or a custom one: its range is not known here
    reward = REWARDS[names[0]]
    if reward.low >= 0.0 and reward.high <= 1.0:
        return None
    terms = getattr(reward, "terms", None)
    hint = (
        f": give it as its terms (reward_funcs: [{', '.join(t for t, _ in terms)}], reward_weights: "
        f"[{', '.join(f'{w:g}' for _, w in terms)}]) and set dynamic_sampling_metric: {reward.accuracy_term}"
        if terms
        else ": filter on a [0, 1] reward with dynamic_sampling_metric, or use dynamic_sampling: verl"
    )
    return (
        f"dynamic_sampling easyr1 keeps groups with {c.dynamic_sampling_bounds[0]:g} < mean < "
        f"{c.dynamic_sampling_bounds[1]:g} of an accuracy, but {reward.name} ranges over [{reward.low:g}, {reward.high:g}]{hint}"
    )


def _image_budget_error(c: Any) -> str | None:
    for name in ("min_pixels", "max_pixels"):
        value = getattr(c, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            return f"{name} must be a positive number of pixels; got {value!r}"
    if c.min_pixels is not None and c.max_pixels is not None and c.min_pixels > c.max_pixels:
        return f"min_pixels ({c.min_pixels}) must be <= max_pixels ({c.max_pixels})"
    return None


def baseline_settings_error(config: Any) -> str | None:
    """The first problem with the baselines' settings of ``config`` (a ``VisentConfig``), or None."""
    for check in (_selection_error, _coefficients_error, _dynamic_sampling_error, _image_budget_error):
        message = check(config)
        if message:
            return message
    return None
