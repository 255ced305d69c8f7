"""``VisentConfig``: TRL's ``GRPOConfig`` plus visent's orthogonal knobs.

Every method and baseline of METHOD.md is a combination of independent settings:

- **which tokens carry the policy gradient**: ``token_score`` (a ``visent.core.scores.SCORES`` name, or
  ``none`` for all tokens), ``selection_ratio``, ``selection_granularity``, ``selection_mode``,
  ``score_alpha``;
- **the counterfactual image** those scores compare against: ``perturbation``,
  ``perturbation_strength``, ``perturbation_seed``;
- **the entropy regulariser**: ``entropy_schedule`` (a ``visent.core.schedules.SCHEDULES`` kind),
  ``entropy_coef_max`` (λ_max), ``entropy_coef_min`` (λ_min), ``entropy_switch``;
- **how token losses are averaged**: ``loss_aggregation`` (a ``visent.core.policy_loss.AGGREGATIONS`` name).
- **LoRA**: ``use_peft``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``,
  ``lora_modules_to_save``, ``use_rslora`` (TRL ``ModelConfig``'s names; ``visent.trainer.lora``).

Clipping (``epsilon``, ``epsilon_high``), KL (``beta``), sampling (``temperature``,
``num_generations``), vLLM and the rest are TRL's own ``GRPOConfig`` fields, used unchanged.
TRL's ``loss_type``, ``top_entropy_quantile`` and ``entropy_coef`` are superseded by the knobs above;
setting them to anything but their defaults is an error rather than silently ignored.

The field ``help`` strings are the CLI help (``visent train --help``). YAML files in ``visent/configs/`` are
plain serialisations of this dataclass.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields

from trl import GRPOConfig

from visent.core.schedules import DEFAULT_COEF_MAX, DEFAULT_COEF_MIN, DEFAULT_SWITCH

__all__ = ["VisentConfig", "config_field_names"]

# λ_max = λ_min = 1e-3 and switch = 0.8 come from visent.core.schedules, which documents why (the paper
# publishes no λ; 1e-3 is the VEPO authors' entropy bonus).

_SUPERSEDED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _help(text: str) -> dict:
    return {"help": text}


# Integer settings that must be >= 1 when set (None means "derive it"; see _validate_visent).
_POSITIVE_FIELDS = (
    "max_completion_length",
    "num_generations",
    "num_generations_eval",
    "generation_batch_size",
    "steps_per_generation",
    "num_iterations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "vllm_max_model_length",
    "dataset_size",
    "stats_chunk_size",
)


@dataclass
class VisentConfig(GRPOConfig):
    """TRL ``GRPOConfig`` extended with VEPO token selection and the entropy schedule (see module doc)."""

    # --- model and data (used by `visent train`; the Python API takes objects instead) ---
    model_name_or_path: str | None = field(
        default=None,
        metadata=_help(
            "Model to train: a Hub id or local path of a supported family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, "
            "Qwen3-VL-MoE, Qwen3.5, Gemma 3, SmolVLM2, LLaVA-OneVision: docs/models.md), or `tiny:<family>` "
            "(e.g. `tiny:qwen3_vl`) for a tiny random model built locally (CPU smoke tests)."
        ),
    )
    dataset: str | None = field(
        default=None,
        metadata=_help(
            "Training data: `lab:counting`, `lab:tally`, `lab:grounding`, `lab:classification` (synthetic, offline), or a "
            "dataset path understood by `visent.data.loaders`."
        ),
    )
    dataset_size: int = field(default=64, metadata=_help("Number of examples drawn for `lab:` datasets."))
    dataset_seed: int = field(default=0, metadata=_help("Seed of the `lab:` example generator and of label noise."))
    label_noise: float = field(
        default=0.0,
        metadata=_help("Fraction of training labels replaced by a wrong one (0 = clean); the clean label is kept."),
    )
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Reward functions by name (keys of `visent.rewards.REWARDS`); weights via `reward_weights`. "
            "Empty with a `lab:<task>` dataset = the task's `r1_*` reward (accuracy + format; tally: `r1_counting`)."
        ),
    )
    freeze_vision_tower: bool = field(
        default=True, metadata=_help("Freeze the vision encoder (VEPO trains the language model only).")
    )
    vision_lr_scale: float = field(
        default=1.0,
        metadata=_help(
            "The vision encoder's (and its projection's) learning rate as a multiple of learning_rate, "
            "when freeze_vision_tower is false (1 = one rate for the whole model; <1 is the usual choice "
            "for a pretrained encoder). The schedule scales both rates alike."
        ),
    )

    # --- LoRA (TRL ModelConfig's names; visent.trainer.lora turns them into the trainer's peft_config) ---
    use_peft: bool = field(
        default=False, metadata=_help("Train a LoRA adapter instead of the full weights (needs `peft`).")
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank r (adapter matrices are r × d)."))
    lora_alpha: int = field(
        default=32, metadata=_help("LoRA alpha: the adapter's output is scaled by lora_alpha / lora_r.")
    )
    lora_dropout: float = field(
        default=0.0,
        metadata=_help(
            "Dropout on the adapter input, in [0, 1). 0 (TRL: 0.05): with VEPO the clean and perturbed "
            "forwards would otherwise draw different dropout masks, so non-zero is refused for JSD scores."
        ),
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata=_help(
            "Modules that get an adapter: several names match module-name suffixes (q_proj v_proj), one value "
            "is a regex over full names or `all-linear`. Unset = every linear layer of the language model "
            "(attention + MLP projections), not the vision tower or the LM head."
        ),
    )
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata=_help("Modules trained in full and saved next to the adapter (e.g. embed_tokens). Not lm_head."),
    )
    use_rslora: bool = field(
        default=False, metadata=_help("Rank-stabilised LoRA: scale by lora_alpha / sqrt(lora_r) instead of / lora_r.")
    )

    # --- token selection (METHOD §3) ---
    token_score: str = field(
        default="vepo",
        metadata=_help(
            "Per-token score that picks the tokens carrying the policy gradient: a name in "
            "`visent.core.scores.SCORES` (vepo, entropy, jsd, random, ablations), `perception_kl` (VPPO: "
            "clamp(k3(π_old, π_old with the perturbed image), 0, 10) on the sampled token) or `none` (all tokens: GRPO)."
        ),
    )
    selection_ratio: float = field(
        default=0.2, metadata=_help("Fraction ρ of valid response tokens kept, in (0, 1]. Ignored when token_score=none.")
    )
    selection_granularity: str = field(
        default="response",
        metadata=_help("`response`: keep ceil(ρ·n) tokens of each response (VEPO); `batch`: one quantile threshold over the batch (80/20)."),
    )
    selection_mode: str = field(
        default="top",
        metadata=_help(
            "`top` (highest scores), `bottom` (ablation), `random` (control) or `weight` (VEPO's weight mode: "
            "every token kept, the top ones weighted 1 + selection_weight_lambda)."
        ),
    )
    score_alpha: float = field(
        default=0.7, metadata=_help("α in [0, 1]: weight of the JSD vs the entropy gap in the VEPO score.")
    )

    # --- the perturbed image (METHOD §2) ---
    perturbation: str = field(
        default="pixel_values_gaussian",
        metadata=_help(
            "Image perturbation for the counterfactual pass: a name in `visent.perturb.PERTURBATIONS` "
            "(pixel_values_gaussian, pixel_gaussian, diffusion, patch_blackout, blackout_14px, no_image, identity)."
        ),
    )
    perturbation_strength: float | None = field(
        default=None,
        metadata=_help(
            "Strength of the perturbation (std, diffusion step or blackout fraction); unset = the kind's "
            "default (pixel_values_gaussian 2.0, pixel_gaussian 0.5, diffusion 500, patch_blackout 0.5, "
            "blackout_14px 0.5)."
        ),
    )
    perturbation_scope: str = field(
        default="prompt",
        metadata=_help(
            "`prompt`: one perturbation draw shared by a prompt's responses (VEPO, PAPO); `response`: one draw per "
            "response (VPPO; only for token_score=perception_kl / perception_kl_coef)."
        ),
    )
    perturbation_seed: int = field(
        default=0, metadata=_help("Seed of the perturbation noise (one draw per prompt and generation batch).")
    )

    # --- the entropy regulariser (METHOD §4) ---
    entropy_schedule: str = field(
        default="none",
        metadata=_help(
            "Entropy-coefficient schedule (`visent.core.schedules.SCHEDULES`): none, max (+λ_max), min (−λ_min), "
            "two_stage (+λ_max then −λ_min), min_then_max, linear, cosine. A positive coefficient raises entropy."
        ),
    )
    entropy_coef_max: float = field(
        default=DEFAULT_COEF_MAX, metadata=_help("λ_max ≥ 0: magnitude of the entropy-raising coefficient.")
    )
    entropy_coef_min: float = field(
        default=DEFAULT_COEF_MIN, metadata=_help("λ_min ≥ 0: magnitude of the entropy-lowering coefficient.")
    )
    entropy_switch: float = field(
        default=DEFAULT_SWITCH,
        metadata=_help("Fraction of max_steps at which two-stage schedules switch, in (0, 1) (step ceil(switch·max_steps))."),
    )

    # --- the policy loss (METHOD §1) ---
    loss_aggregation: str = field(
        default="selected_mean",
        metadata=_help(
            "How token losses are averaged (`visent.core.policy_loss.AGGREGATIONS`): selected_mean (VEPO), "
            "token_mean (DAPO), sequence_mean (original GRPO), dr_grpo (sum / (B·max_completion_length))."
        ),
    )

    # --- perception-aware baselines (PAPERS.md: VPPO, PAPO, DAPO, VEPO weight mode; docs/training.md) ---
    selection_weight_lambda: float = field(
        default=1.0,
        metadata=_help("λ ≥ 0 of selection_mode=weight (VEPO's weight mode): selected tokens weigh 1 + λ, the rest 1."),
    )
    trajectory_beta_min: float | None = field(
        default=None,
        metadata=_help(
            "VPPO's trajectory advantage shaping: A_i ← α_i·A_i with α_i = β_min + (1−β_min)·ŝ_i/mean ŝ from the "
            "response's mean token_score=perception_kl (β_min in [0, 1], VPPO 0.9). Unset = off."
        ),
    )
    entropy_penalty_coef: float = field(
        default=0.0,
        metadata=_help(
            "c ≥ 0: adds c·mean(−log π(o_t)) over all response tokens, which LOWERS entropy (VPPO 0.06, PAPO's "
            "η_ori 0.03-0.05). Unlike entropy_schedule it uses the sampled token only."
        ),
    )
    perception_kl_coef: float = field(
        default=0.0,
        metadata=_help(
            "PAPO's γ ≥ 0: adds −γ·mean k3(π_θ(·|image), π_old(·|perturbed image)) on the sampled tokens, "
            "so the policy is pushed to depend on the image (PAPO-G 0.02, PAPO-D 0.01)."
        ),
    )
    contrastive_perception_coef: float = field(
        default=0.0,
        metadata=_help(
            "CPPO's coefficient ≥ 0 (0.01) of its contrastive perception loss: two extra forwards WITH gradient per "
            "update, on an information-preserving and an information-removing view of each prompt's raw images."
        ),
    )
    contrastive_perception_tau: float = field(default=0.1, metadata=_help("CPPO's margin temperature τ > 0 (0.1)."))
    contrastive_perception_ratio: float = field(
        default=0.5, metadata=_help("CPPO: fraction in (0, 1] of each response's entropy-rising tokens in the loss (0.5).")
    )
    contrastive_perception_gate: bool = field(
        default=True, metadata=_help("CPPO: the contrastive loss acts only on tokens of responses with A > 0.")
    )
    dual_clip: float | None = field(
        default=None, metadata=_help("Dual-clip bound c > 1: the loss of a token with A < 0 is at most −c·A (VPPO 3).")
    )
    dynamic_sampling: str = field(
        default="none",
        metadata=_help(
            "DAPO dynamic sampling: `none`; `easyr1` (keep a group iff low < mean metric < high); `verl` "
            "(keep iff the metric's std > 0). Dropped groups are refilled from the dataset."
        ),
    )
    dynamic_sampling_metric: str | None = field(
        default=None,
        metadata=_help("Reward function (a reward_funcs name) whose score groups are filtered on; unset = the total reward."),
    )
    dynamic_sampling_bounds: list[float] = field(
        default_factory=lambda: [0.01, 0.99], metadata=_help("`easyr1`'s (low, high) on the group mean.")
    )
    dynamic_sampling_max_tries: int = field(
        default=20, metadata=_help("Generation rounds per batch before giving up (EasyR1: 20).")
    )
    dynamic_sampling_on_exhaust: str = field(
        default="error",
        metadata=_help(
            "After dynamic_sampling_max_tries rounds without a full batch: `error` stops the run (EasyR1, verl); "
            "`top_up` fills it with the last round's uninformative groups (zero group-scaled advantage)."
        ),
    )
    min_pixels: int | None = field(
        default=None,
        metadata=_help("Image budget: fewest pixels an image is resized to (Qwen families; VPPO/PAPO 200704 = 256·28·28)."),
    )
    max_pixels: int | None = field(
        default=None,
        metadata=_help("Image budget: most pixels an image is resized to (Qwen families; VPPO/PAPO 1003520 = 1280·28·28)."),
    )

    # --- cost of the counterfactual pass ---
    stats_chunk_size: int = field(
        default=1024,
        metadata=_help("Tokens per chunk when computing statistics from hidden states (≈ chunk·V floats alive at once)."),
    )
    skip_uniform_groups: bool = field(
        default=True,
        metadata=_help(
            "Skip the counterfactual pass for groups whose rewards are all equal (zero advantage: their mask "
            "cannot change the policy gradient). Exact; applies with selection_granularity=response."
        ),
    )
    counterfactual_batch_size: int | None = field(
        default=None,
        metadata=_help(
            "Responses per counterfactual forward (each run clean and perturbed in one batch of twice this "
            "size). Unset = per_device_train_batch_size."
        ),
    )
    counterfactual_forward: str = field(
        default="prefix_cached",
        metadata=_help(
            "How the perturbed rows are forwarded, in VEPO's counterfactual pass and VPPO's / PAPO's perception "
            "pass: `prefix_cached` (each prompt once per draw, its responses against its cache; vision encoder "
            "once per image; the perception pass's LM head only at completion positions) or `full` (the clean "
            "pass's full-sequence forward, whose bf16 rounding the clean states share: no floor under JSD and the "
            "gap, docs/metrics.md; the perception pass then runs TRL's own forward of every row)."
        ),
    )

    # --- overridden GRPOConfig defaults ---
    bf16: bool | None = field(
        default=None,
        metadata=_help("bf16 mixed precision; unset = on when a bf16-capable GPU is present, off on CPU."),
    )

    def __post_init__(self):
        self._validate_visent()
        if self.bf16 is None:
            import torch

            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not self.fp16
        super().__post_init__()

    # Cross-field checks run before TRL's own, so a typo fails with our message, not a deep one.
    def _validate_visent(self) -> None:
        from visent.core.policy_loss import AGGREGATIONS
        from visent.core.schedules import SCHEDULES
        from visent.core.scores import SCORES
        from visent.core.selection import GRANULARITIES, MODES
        from visent.perturb import PERTURBATIONS

        def one_of(name: str, value: str, valid) -> None:
            if value not in valid:
                raise ValueError(f"{name}={value!r} is not known; valid: {', '.join(valid)}")

        one_of("token_score", self.token_score, ["none", *SCORES, "perception_kl"])
        one_of("selection_granularity", self.selection_granularity, list(GRANULARITIES))
        one_of("selection_mode", self.selection_mode, [*MODES, "weight"])
        from visent.image_views import RAW_VIEWS

        one_of("perturbation", self.perturbation, [*PERTURBATIONS, *RAW_VIEWS])
        one_of("entropy_schedule", self.entropy_schedule, list(SCHEDULES))
        one_of("loss_aggregation", self.loss_aggregation, list(AGGREGATIONS))
        from visent.trainer.counterfactual import COUNTERFACTUAL_FORWARDS

        one_of("counterfactual_forward", self.counterfactual_forward, list(COUNTERFACTUAL_FORWARDS))

        if not 0.0 < self.selection_ratio <= 1.0:
            raise ValueError(f"selection_ratio must be in (0, 1] (fraction of tokens kept); got {self.selection_ratio}")
        if not 0.0 <= self.score_alpha <= 1.0:
            raise ValueError(f"score_alpha must be in [0, 1]; got {self.score_alpha}")
        if not 0.0 < self.entropy_switch < 1.0:
            raise ValueError(
                f"entropy_switch must be in (0, 1) (fraction of max_steps before the switch); got {self.entropy_switch}"
            )
        for name in ("entropy_coef_max", "entropy_coef_min"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must be >= 0: it is a magnitude λ, the schedule chooses the sign; got {getattr(self, name)}"
                )
        if self.perturbation_strength is not None and self.perturbation_strength < 0:
            raise ValueError(f"perturbation_strength must be >= 0; got {self.perturbation_strength}")
        # Lengths and counts that must be positive: left to TRL / transformers, 0 fails deep inside a run
        # (a generate() ValueError for max_completion_length 0, a ZeroDivisionError for num_generations 0).
        for name in _POSITIVE_FIELDS:
            value = getattr(self, name, None)
            if value is not None and not isinstance(value, bool) and value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if self.counterfactual_batch_size is not None and self.counterfactual_batch_size < 1:
            raise ValueError(f"counterfactual_batch_size must be >= 1; got {self.counterfactual_batch_size}")
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"label_noise must be in [0, 1]; got {self.label_noise}")
        from visent.trainer.lora import lora_settings_error
        from visent.trainer.param_groups import vision_lr_scale_error

        for error in (lora_settings_error(self), vision_lr_scale_error(self)):
            if error:
                raise ValueError(error)
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        if self.reward_funcs:
            from visent.rewards import REWARDS

            unknown = [r for r in self.reward_funcs if r not in REWARDS]
            if unknown:
                raise ValueError(f"unknown reward(s) {', '.join(map(repr, unknown))}; valid: {', '.join(REWARDS)}")
            from visent.rewards.registry import reward_unavailable

            for name in self.reward_funcs:
                if reward_unavailable(name):
                    raise ValueError(reward_unavailable(name))

        # TRL's own versions of these features would act inside the loss we replace: refuse them instead of
        # silently ignoring them.
        if self.top_entropy_quantile != 1.0:
            raise ValueError(
                "top_entropy_quantile is TRL's entropy mask; with visent use token_score=entropy, "
                "selection_granularity=batch, selection_ratio=<quantile> instead"
            )
        if self.entropy_coef != 0.0 or self.use_adaptive_entropy:
            raise ValueError(
                "entropy_coef / use_adaptive_entropy are TRL's entropy bonus; with visent use entropy_schedule=max "
                "and entropy_coef_max=<coef> (or another schedule) instead"
            )
        loss_error = _loss_type_error(self)
        if loss_error:
            raise ValueError(loss_error)
        from visent.trainer.baseline_settings import baseline_settings_error

        baselines_error = baseline_settings_error(self)
        if baselines_error:
            raise ValueError(baselines_error)
        liger = self.liger_kernel_config or {}
        # Liger enables the fused linear cross-entropy unless its config says otherwise.
        if self.use_liger_kernel and liger.get("fused_linear_cross_entropy", True) and (
            self.token_score != "none" or self.entropy_schedule != "none"
        ):
            raise ValueError(
                "Liger's fused linear cross-entropy never materialises per-token distributions, which token "
                "selection and the entropy schedule need; set liger_kernel_config.fused_linear_cross_entropy=false "
                "(layer kernels are fine) or token_score=none and entropy_schedule=none"
            )

    # --- derived properties the trainer reads ---
    @property
    def selects_tokens(self) -> bool:
        """Whether a token mask other than 'all valid tokens' is built."""
        return self.token_score != "none" and self.selection_ratio < 1.0

    @property
    def selection_rule(self) -> str:
        """The ``select_tokens`` mode: ``weight`` weights the ``top`` tokens instead of keeping only them."""
        return "top" if self.selection_mode == "weight" else self.selection_mode

    @property
    def surrogate(self):
        """The per-token objective (``visent.core.surrogates.Surrogate``) for TRL's loss_type and friends."""
        from visent.core.surrogates import Surrogate

        return Surrogate(
            kind=self.loss_type if self.loss_type in _OBJECTIVE_LOSS_TYPES else "clip",
            dual_clip=self.dual_clip,
            delta=self.delta,
            sapo_tau_pos=self.sapo_temperature_pos,
            sapo_tau_neg=self.sapo_temperature_neg,
            sequence_level=self.importance_sampling_level == "sequence",
        )

    @property
    def needs_perturbed_logps(self) -> bool:
        """Whether the sampled-token perception pass runs (VPPO's score, PAPO's term; trainer.perception_pass)."""
        return self.token_score == "perception_kl" or self.perception_kl_coef > 0

    @property
    def needs_clean_stats(self) -> bool:
        """Whether the mask needs the clean pass's statistics (entropy)."""
        return self.selects_tokens and self.selection_mode != "random" and self.token_score != "random"

    @property
    def needs_perturbed_pass(self) -> bool:
        """Whether the mask needs the perturbed pass (every score but entropy-only and random)."""
        return self.needs_clean_stats and self.token_score != "entropy"


#: TRL loss types visent's loss runs as a per-token objective (visent.core.surrogates); a token mask composes.
_OBJECTIVE_LOSS_TYPES = ("cispo", "sapo")
_REFUSED_LOSS_TYPES = {
    "luspo": "LUSPO scales each response's loss by its length, which is loss_aggregation's job in visent: use "
    "importance_sampling_level=sequence with loss_aggregation=dr_grpo (a sum over tokens) instead",
    "vespo": "TRL's VESPO is a sequence-level soft policy optimisation (unrelated to VEPO) whose per-response "
    "Gamma weight does not decompose over tokens, so a token mask has no meaning for it",
}


def _loss_type_error(config: VisentConfig) -> str | None:
    """Why TRL's ``loss_type`` / ``importance_sampling_level`` / ``delta`` cannot run in the visent loss, or None."""
    from visent.core.policy_loss import AGGREGATIONS

    kind = config.loss_type
    if kind in _REFUSED_LOSS_TYPES:
        return f"loss_type={kind!r} is refused: {_REFUSED_LOSS_TYPES[kind]}"
    if kind not in (*_SUPERSEDED_LOSS_TYPES, *_OBJECTIVE_LOSS_TYPES):
        return (
            f"loss_type={kind!r} is not supported by the visent loss; valid: {', '.join(_OBJECTIVE_LOSS_TYPES)} "
            f"(objectives) or leave it (aggregation is loss_aggregation: {', '.join(AGGREGATIONS)})"
        )
    if kind == "cispo" and config.importance_sampling_level == "sequence":
        return "loss_type=cispo with importance_sampling_level=sequence: CISPO's ratio is a stop-gradient weight; use token"
    if kind == "cispo" and (config.epsilon_high is None or config.epsilon_high < 1.0):
        return "loss_type=cispo caps the ratio at epsilon_high itself (TRL's ε_max; ScaleRL: 5.0): set epsilon_high >= 1"
    if config.delta is not None and (kind in _OBJECTIVE_LOSS_TYPES or not config.delta > 1.0):
        return "delta (two-sided clip) needs the clipped objective (no cispo/sapo loss_type) and a value > 1"
    if config.dual_clip is not None and (kind in _OBJECTIVE_LOSS_TYPES or not config.dual_clip > 1.0):
        return "dual_clip needs the clipped objective (no cispo/sapo loss_type) and a value > 1"
    if config.off_policy_mask_threshold is not None:
        return "off_policy_mask_threshold (TRL's sequence masking) is not supported by the visent loss; leave it unset"
    return None


def config_field_names() -> list[str]:
    """All settable field names of ``VisentConfig`` (for CLI/YAML validation)."""
    return [f.name for f in fields(VisentConfig) if f.init]


def suggest(name: str) -> str:
    """' (did you mean …?)' for a misspelt field name, or ''."""
    close = difflib.get_close_matches(name, config_field_names(), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""
