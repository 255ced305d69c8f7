"""What ``visent study``'s tables call each lab method, which table a method belongs to, and which pairs of
methods the study compares (``PAIRS``). Names only: the methods themselves are ``visent.lab.rl.METHODS``."""

from __future__ import annotations

__all__ = ["BASELINE_FAMILY", "LABELS", "PAIRS", "SCHEDULE_FAMILY", "SELECTION_FAMILY", "plain"]

SELECTION_FAMILY: tuple[str, ...] = (
    "grpo",
    "entropy_top20",
    "random20",
    "vepo",
    "vepo_jsd_only",
    "vepo_no_entropy",
    "vepo_product",
)
SCHEDULE_FAMILY: tuple[str, ...] = ("grpo", "entropy_min", "entropy_max", "min_then_max", "two_stage")
# The perception-aware baselines of issue #23 (PAPERS.md), beside the two methods they are measured against.
BASELINE_FAMILY: tuple[str, ...] = (
    "grpo", "vepo", "vppo", "papo_g", "papo_d", "cppo", "dapo", "grpo_rollout_matched",
)  # fmt: skip

LABELS = {
    "grpo": "GRPO",
    "entropy_top20": "entropy top-20%",
    "random20": "random 20%",
    "vepo": "**VEPO**",
    "vepo_matched_step": "VEPO, GRPO's per-token step (token_mean)",
    "vepo_jsd_only": "VEPO ablation: JSD only",
    "vepo_no_entropy": "VEPO ablation: no entropy factor",
    "vepo_product": "VEPO ablation: plain product",
    "vepo_linear": "VEPO ablation: linear mix",
    "vepo_kl": "VEPO ablation: KL for JSD",
    "vepo_positive_gap": "VEPO ablation: positive gap",
    "vepo_noisy_or_all": "VEPO ablation: noisy-OR of all three",
    "vepo_weight": "VEPO, weight mode (w = 1 + λ·m)",
    "entropy_min": "+ entropy min",
    "entropy_max": "+ entropy max",
    "min_then_max": "min → max",
    "two_stage": "**two-stage** (max → min)",
    "vppo": "VPPO",
    "papo_g": "PAPO-G",
    "papo_d": "PAPO-D",
    "cppo": "CPPO",
    "dapo": "DAPO (dynamic sampling)",
    "grpo_rollout_matched": "GRPO, 2.5× prompts a step (DAPO's rollouts)",
}

# (a, b): "a − b" paired over seeds (same seed ⇒ same prompts, sampling seed and perturbations);
# b None: a minus the warm-start. The papers' comparisons first, then each VEPO variant against VEPO and
# each perception-aware baseline against GRPO (what its paper compares with), against VEPO and, for the
# filtering ones, against DAPO.
PAIRS: tuple[tuple[str, str | None], ...] = (
    ("grpo", None),
    ("vepo", "grpo"),
    ("vepo", "entropy_top20"),
    ("vepo", "random20"),
    ("entropy_top20", "random20"),
    ("entropy_top20", "grpo"),
    ("vepo_jsd_only", "vepo"),
    ("vepo_no_entropy", "vepo"),
    ("vepo_product", "vepo"),
    ("vepo_linear", "vepo"),
    ("vepo_kl", "vepo"),
    ("vepo_positive_gap", "vepo"),
    ("vepo_noisy_or_all", "vepo"),
    ("vepo_matched_step", "vepo"),
    ("vepo_weight", "vepo"),
    ("two_stage", "grpo"),
    ("two_stage", "min_then_max"),
    ("two_stage", "entropy_max"),
    ("entropy_max", "grpo"),
    ("entropy_min", "grpo"),
    ("min_then_max", "grpo"),
    ("vppo", "grpo"),
    ("papo_g", "grpo"),
    ("papo_d", "grpo"),
    ("cppo", "grpo"),
    ("dapo", "grpo"),
    ("vppo", "vepo"),
    ("papo_d", "vepo"),
    # VPPO and PAPO-D train on DAPO's filtered batches: against DAPO, what their perception parts add; PAPO-D
    # against PAPO-G, what the filter (and its clip-higher / no-KL settings) adds to PAPO.
    ("vppo", "dapo"),
    ("papo_d", "dapo"),
    ("papo_d", "papo_g"),
    # DAPO's filter against GRPO given as many rollouts a step as the filter generates, and those
    # rollouts alone against GRPO.
    ("dapo", "grpo_rollout_matched"),
    ("grpo_rollout_matched", "grpo"),
)


def plain(method: str | None) -> str:
    """The method's label without markdown emphasis; ``None`` is the warm-start."""
    return "warm-start" if method is None else LABELS.get(method, method).replace("**", "")
