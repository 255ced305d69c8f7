"""``VisentGRPOTrainer``: TRL's ``GRPOTrainer`` with VEPO token selection and a scheduled entropy term.

Where this departs from TRL's GRPO (everything else — generation, vLLM, rewards, accelerate/DeepSpeed,
buffering of a generation batch over ``steps_per_generation × num_iterations`` updates — is TRL's):

1. **Token mask, once per generation batch.** After TRL samples and scores a generation batch, and
   before any update, ``after_generation`` teacher-forces the responses with the clean and a perturbed
   image (no gradient), computes per-token statistics, scores and selects tokens
   (``visent.core.scores`` / ``selection``), and stores the 0/1 mask in the batch as
   ``visent_token_mask``. TRL then shuffles and splits the batch; the mask travels with its rows and is
   reused by every update on them.
   **Deferred to the update** when the batch gets exactly one update (``steps_per_generation=1``,
   ``num_iterations=1``, one process, training): that update's own forward is a clean forward of the
   same weights the batch was sampled with, so its final hidden states are captured and the mask is
   built right there, before the loss, and only the perturbed rows get an extra forward. Same
   statistics, same mask, half the counterfactual forward (``visent_mask_deferred`` marks such rows).
   Within the pass, each prompt and its image are run once per pass, not once per response, and
   repeated responses are scored once (``visent.trainer.counterfactual``). Under ZeRO-3 / FSDP, where
   every forward is a collective, the pass instead makes one plain call per chunk on every process.
2. **Skipping.** A response whose advantage is exactly zero (every response of a group whose rewards
   are all equal) contributes zero policy gradient whatever its mask, so its counterfactual pass is
   skipped. To keep the selected-token mean exact, its row still counts the ``k`` tokens it would have
   kept (``visent_selected_count``). Applies with per-response selection only (with batch-level
   selection the threshold depends on every token). The KL term covers all valid tokens, so it is
   unaffected.
3. **Our own loss** (``compute_policy_loss``): ``visent.core.policy_loss`` (clipped surrogate with
   ε low/high, token mask, aggregation, k3 KL to the reference model, vLLM importance-sampling
   weights) plus ``coef(step) · visent.core.policy_loss.entropy_regularizer`` with the coefficient from
   ``visent.core.schedules`` at the current global step. Entropies carry gradient only when the
   coefficient is non-zero.

Rows without an image cannot be perturbed: they fall back to the entropy-only score
(``vepo/no_image_responses`` counts them).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from typing import Any

import torch

from visent.core import guards
from visent.core.perception_loss import implicit_perception_loss, negative_logp_mean
from visent.core.policy_loss import entropy_regularizer, policy_loss
from visent.core.schedules import entropy_coef, entropy_stage
from visent.core.scores import token_scores
from visent.core.selection import keep_count, select_tokens, selection_weights
from visent.core.stats import TokenStats
from visent.core.trajectory_shaping import trajectory_alpha_from_normalized
from visent.models.adapters import adapter_for, require_adapter
from visent.models.unwrap import backbone_and_head
from visent.trainer._trl_seam import SeamTrainer, lm_head_gather_ctx, no_gradient_checkpointing
from visent.trainer.baseline_settings import MULTI_PROCESS_DYNAMIC_SAMPLING
from visent.trainer.config import VisentConfig
from visent.trainer.counterfactual import (
    counterfactual_stats,
    lockstep_forwards,
    perturb_images,
    prompt_groups,
    prompt_seeds,
)
from visent.trainer.param_groups import split_vision_groups
from visent.trainer.perception_pass import (
    LOGP_SCORES,
    PERTURBED_LOGPS,
    S_HAT,
    SHAPED,
    kl_mask_and_shaping,
    perturbed_logps,
    rows_with_image,
)
from visent.trainer.precision import check_update_precision

__all__ = ["VisentGRPOTrainer"]

logger = logging.getLogger(__name__)

# Keys added to TRL's generation batch; per-row, so TRL's shuffle/split keeps them aligned.
TOKEN_MASK = "visent_token_mask"  # (B, C) float 0/1
SELECTED_COUNT = "visent_selected_count"  # (B,) float: tokens each response counts in the selected mean
#: Metrics that count things on each process (summed over processes when logged).
COUNT_METRICS = frozenset({"vepo/skipped_responses", "vepo/no_image_responses"})
SKIPPED = "visent_skipped"  # (B,) bool: counterfactual pass skipped (zero advantage)
DEFERRED = "visent_mask_deferred"  # (B,) bool: mask to be built at the batch's update (see module doc)
CLEAN_LOGPS = "visent_clean_logps"  # (B, C): θ_old log-probs from a deferred update's own forward


def _seed(*parts: int) -> int:
    h = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    n = mask.sum()
    return float((x * mask).sum() / n) if n > 0 else float("nan")


class VisentGRPOTrainer(SeamTrainer):
    """GRPO with VEPO token selection and the entropy schedule. Takes ``args: VisentConfig``;
    other arguments are ``trl.GRPOTrainer``'s."""

    def __init__(self, *args: Any, **kwargs: Any):
        config = kwargs.get("args")
        if not isinstance(config, VisentConfig):
            raise TypeError(f"VisentGRPOTrainer needs args=VisentConfig(...); got {type(config).__name__}")
        super().__init__(*args, **kwargs)
        # The model family's adapter (visent.models): how its image inputs are cut per response and
        # perturbed, and which counterfactual-pass savings are exact for it. No adapter: refused here.
        # Only token statistics need it: without them (token_score none / random) TRL's forward does all.
        self.model_adapter = adapter_for(self.model)
        if self.model_adapter is None and self.args.needs_clean_stats:
            self.model_adapter = require_adapter(self.model, what="VisentGRPOTrainer")  # raises, one line
        self._set_image_budget()
        if self.args.dynamic_sampling != "none" and self.accelerator.num_processes > 1:
            raise ValueError(MULTI_PROCESS_DYNAMIC_SAMPLING)
        self.image_geometry = (
            self.model_adapter.image_geometry(self.processing_class) if self.model_adapter is not None else None
        )
        check_update_precision(self.model, self.args)  # bf16 weights an lr-sized step cannot move: refused

    def create_optimizer(self, model=None):
        # transformers' two groups (decay / no decay), each split into language model and vision tower
        # when the tower trains at its own rate (visent.trainer.param_groups).
        optimizer = super().create_optimizer(model)
        if self.args.vision_lr_scale != 1.0:
            split_vision_groups(optimizer, self.model if model is None else model, self.args.vision_lr_scale)
        return optimizer

    def _set_image_budget(self) -> None:
        """``min_pixels`` / ``max_pixels`` into the processor through the family's adapter (refused where the
        family's processor has no pixel budget)."""
        args: VisentConfig = self.args
        if args.min_pixels is None and args.max_pixels is None:
            return
        adapter = self.model_adapter or adapter_for(self.model)
        if adapter is None or adapter.image_budget is None:
            family = adapter.name if adapter is not None else type(self.model).__name__
            raise ValueError(
                f"min_pixels / max_pixels: the {family} processor has no pixel budget (fixed-size or tiled images); "
                "leave them unset for this family"
            )
        adapter.image_budget(self.processing_class, args.min_pixels, args.max_pixels)

    # ---------------------------------------------------------------- once per generation batch

    def sample_batch(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], torch.Tensor | None]:
        """TRL's generation batch, or with ``dynamic_sampling`` one of informative groups only
        (``visent.trainer.dynamic_sampling``; TRL's captured clean pass is not reused then)."""
        if self.args.dynamic_sampling == "none" or not self.model.training:
            return super().sample_batch(inputs)
        from visent.trainer.dynamic_sampling import dynamic_batch

        return dynamic_batch(self, inputs), None

    def wants_raw_images(self) -> bool:
        from visent.image_views import RAW_VIEWS

        return (self.args.needs_perturbed_logps and self.args.perturbation in RAW_VIEWS) or (
            self.args.contrastive_perception_coef > 0
        )

    def wants_clean_hidden(self) -> bool:
        return self.args.needs_clean_stats and self.args.token_score not in LOGP_SCORES

    def defers_mask(self) -> bool:
        """Whether a batch generated inside a training step gets its mask at its update (module doc, 1.):
        it is then consumed by exactly one update, of the weights it was sampled with."""
        args: VisentConfig = self.args
        return (
            self.model.training
            and args.needs_clean_stats
            and args.steps_per_generation == 1
            and self.num_iterations == 1
            and self.accelerator.num_processes == 1
        )

    def training_step(self, *args: Any, **kwargs: Any):
        # Only a batch generated inside a training step is sure to reach that step's loss; batches built
        # elsewhere (generation_batch, evaluation) get their mask right away.
        self._visent_in_training_step = True
        try:
            return super().training_step(*args, **kwargs)
        finally:
            self._visent_in_training_step = False

    def after_generation(self, batch: dict[str, Any], clean_hidden: torch.Tensor | None) -> dict[str, Any]:
        self._mark_views(batch)
        if self.args.needs_perturbed_logps:
            # VPPO / PAPO: one no-grad forward with the perturbed images, now, under θ_old (perception_pass).
            start = time.perf_counter()
            with no_gradient_checkpointing(self), self.accelerator.autocast():
                batch[PERTURBED_LOGPS] = perturbed_logps(self, batch, batch.get("old_per_token_logps"))
            self.record_metric("time/perception_pass_s", time.perf_counter() - start)
        if getattr(self, "_visent_in_training_step", False) and clean_hidden is None and self.defers_mask():
            ids = batch["completion_ids"]
            batch[DEFERRED] = torch.ones(ids.size(0), dtype=torch.bool, device=ids.device)
            return batch
        self._add_mask(batch, clean_hidden)
        return batch

    def _mark_views(self, batch: dict[str, Any]) -> None:
        if self.args.contrastive_perception_coef > 0:  # CPPO: its views are drawn once per generation batch
            from visent.trainer.contrastive_pass import CPPO_SEED, view_seeds

            batch[CPPO_SEED] = view_seeds(self, batch)

    def _add_mask(
        self, batch: dict[str, Any], clean_hidden: torch.Tensor | None, clean_positions: torch.Tensor | None = None
    ) -> None:
        start = time.perf_counter()
        token_mask, selected_count, skipped = self._token_mask(batch, clean_hidden, clean_positions)
        batch[TOKEN_MASK] = token_mask
        batch[SELECTED_COUNT] = selected_count
        batch[SKIPPED] = skipped
        self.record_metric("vepo/skipped_responses", float(skipped.sum()))
        self.record_metric("time/counterfactual_s", time.perf_counter() - start)

    def _valid_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["completion_mask"]
        if batch.get("tool_mask") is not None:
            mask = mask * batch["tool_mask"]
        return mask.float()

    def _token_mask(
        self, batch: dict[str, Any], clean_hidden: torch.Tensor | None, clean_positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, C)`` mask, ``(B,)`` selected counts and ``(B,)`` skipped flags for the generation batch."""
        args: VisentConfig = self.args
        valid = self._valid_mask(batch)
        B, device = valid.size(0), valid.device
        skipped = torch.zeros(B, dtype=torch.bool, device=device)
        if args.token_score in LOGP_SCORES:  # VPPO: scored from sampled-token log-probs (perception_pass)
            mask = kl_mask_and_shaping(self, batch, self._old_logps(batch), valid)
            self._record_pass_metrics(no_image=int((~rows_with_image(batch)).sum()), jsd=float("nan"), gap=float("nan"))
            return mask, mask.sum(1), skipped
        if not args.selects_tokens:
            self._record_pass_metrics(no_image=0, jsd=float("nan"), gap=float("nan"))
            return valid, valid.sum(1), skipped

        step = int(self.state.global_step)
        gen = torch.Generator(device="cpu").manual_seed(
            _seed(args.perturbation_seed, step, self.accelerator.process_index, 1)
        )
        if not args.needs_clean_stats:  # random scores or random selection: nothing to compute
            zeros = torch.zeros_like(valid)
            stats = TokenStats(zeros, zeros, zeros, zeros)
            scores = token_scores(stats, valid, args.token_score, args.score_alpha, generator=gen)
            mask = select_tokens(scores, valid, args.selection_ratio, args.selection_granularity, args.selection_rule, gen)
            self._record_pass_metrics(no_image=0, jsd=float("nan"), gap=float("nan"))
            return mask, mask.sum(1), skipped

        if args.skip_uniform_groups and args.selection_granularity == "response":
            skipped = batch["advantages"].reshape(B) == 0
        rows = (~skipped).nonzero().squeeze(1).tolist()
        num_images = batch.get("num_images") or [0] * B
        has_image = torch.tensor([num_images[i] > 0 for i in rows], dtype=torch.bool, device=device)

        adapter = self.model_adapter
        groups = prompt_groups(batch, rows, adapter=adapter)
        perturbed = None
        if args.needs_perturbed_pass and batch.get("pixel_values") is not None:
            seeds = prompt_seeds(batch, args.perturbation_seed, step, groups, rows, adapter=adapter)
            perturbed = perturb_images(
                batch, seeds, args.perturbation, args.perturbation_strength, self.image_geometry, rows, groups,
                adapter=adapter,
            )
        backbone, head = backbone_and_head(self.model)
        batch_size = args.counterfactual_batch_size or args.per_device_train_batch_size
        with_perturbed = perturbed is not None
        lockstep = self._forwards_are_collective()
        forwards = 0
        if lockstep:
            # Skipping leaves processes with different numbers of rows; sharded models (ZeRO-3, FSDP) need
            # every process to make the same number of forward calls.
            # Same count as the pass itself makes (lockstep_forwards); the gather below is one more collective.
            forwards = lockstep_forwards(len(rows), batch_size, clean_hidden is not None, with_perturbed)
            forwards = int(self.accelerator.gather(torch.tensor([forwards], device=device)).max())
        with no_gradient_checkpointing(self):
            stats = counterfactual_stats(
                backbone,
                head,
                batch,
                rows,
                perturbed,
                clean_hidden=clean_hidden,
                clean_position_ids=clean_positions,
                with_perturbed=with_perturbed,
                temperature=self.policy_settings().temperature,
                chunk_size=args.stats_chunk_size,
                batch_size=batch_size,
                min_forwards=forwards,
                lockstep=lockstep,
                forward=args.counterfactual_forward,
                groups=groups,
                adapter=adapter,
                gather_ctx=lm_head_gather_ctx,
                # Same autocast as TRL's forwards: a reused clean pass and our perturbed pass must share
                # precision, or the JSD would measure bf16-vs-fp32 rounding instead of the image.
                forward_ctx=self.accelerator.autocast,
            )
        valid_r = valid[rows]
        scores = token_scores(stats, valid_r, args.token_score, args.score_alpha, generator=gen)
        if args.token_score != "entropy" and not bool(has_image.all()):
            # No image to perturb: these rows are scored by entropy alone.
            fallback = token_scores(stats, valid_r, "entropy", args.score_alpha, generator=gen)
            scores = torch.where(has_image[:, None], scores, fallback)
        mask_r = select_tokens(scores, valid_r, args.selection_ratio, args.selection_granularity, args.selection_rule, gen)

        mask = torch.zeros_like(valid)
        mask[rows] = mask_r
        count = mask.sum(1)
        if bool(skipped.any()):
            count[skipped] = keep_count(valid[skipped].sum(1), args.selection_ratio).to(count.dtype)

        with_img = valid_r * has_image[:, None].float()
        if perturbed is None:  # entropy-only scores: no perturbed pass, no JSD/gap to report
            with_img = torch.zeros_like(with_img)
        self._record_pass_metrics(
            no_image=int((~has_image).sum()),
            jsd=_masked_mean(stats.jsd, with_img),
            gap=_masked_mean(stats.gap, with_img),
        )
        return mask, count, skipped

    def _old_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        """``(B, C)`` θ_old log-probs: TRL's, a deferred update's own, or one no-grad forward now."""
        for key in ("old_per_token_logps", CLEAN_LOGPS):
            if batch.get(key) is not None:
                return batch[key].detach().float()
        with torch.no_grad(), no_gradient_checkpointing(self), self.accelerator.autocast():
            logps, _ = self.forward_logps_and_entropies(self.model, batch, compute_entropy=False)
        return logps.float()

    def _forwards_are_collective(self) -> bool:
        """Whether every model forward is a collective call across processes (parameters sharded by ZeRO-3
        or FSDP): then all processes must make the same number of calls in the counterfactual pass."""
        if self.accelerator.num_processes == 1:
            return False
        if self.is_fsdp_enabled:
            return True
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return plugin is not None and int(getattr(plugin, "zero_stage", 0) or 0) == 3

    def _record_pass_metrics(self, no_image: int, jsd: float, gap: float) -> None:
        # Always logged (NaN → null in metrics.jsonl when not computed) so every run has the same keys.
        self.record_metric("vepo/no_image_responses", float(no_image))
        self.record_metric("vepo/jsd_mean", jsd)
        self.record_metric("vepo/gap_mean", gap)

    # ---------------------------------------------------------------- logging

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the core's numerical-guard counters (totals since the last logging step) to the logs, and
        combine visent's metrics over processes (``_combine_over_processes``)."""
        counts = guards.pop()
        if "train_runtime" not in logs:  # not the end-of-training summary
            for name, value in counts.items():
                self.record_metric(name, float(value))
            if counts.get("guard/nonfinite_loss_terms", 0) > 0:
                logger.warning(
                    "step %d: %d loss terms had non-finite inputs and were left out (guard/nonfinite_loss_terms)",
                    self.state.global_step, counts["guard/nonfinite_loss_terms"],
                )
            if self.accelerator.num_processes > 1:
                self._combine_over_processes()
        super().log(logs, start_time)

    def _combine_over_processes(self) -> None:
        """Replace each visent metric in TRL's buffer by its value over all processes.

        TRL averages the buffer of the process that logs (the main one), so without this a count such as
        ``vepo/skipped_responses`` would be one process's share. Counts (``COUNT_METRICS``, ``guard/*``)
        become the sum over processes of each one's average per record, times (``time/*``) the slowest
        process's, and everything else the mean over all records of all processes (NaN records left
        out). Every process calls ``log`` at the same steps, so the two collectives here line up.
        """
        from accelerate.utils import gather_object

        buffer = self._metrics["train" if self.model.training else "eval"]
        mine = [name for name in buffer if name in getattr(self, "_visent_metric_names", ())]
        names = sorted(set().union(*gather_object([mine])))
        local = torch.zeros(len(names), 2, dtype=torch.float64)
        for i, name in enumerate(names):
            values = torch.tensor(buffer.get(name, []), dtype=torch.float64)
            values = values[torch.isfinite(values)]
            local[i, 0], local[i, 1] = values.sum(), values.numel()
        gathered = self.accelerator.gather(local.to(self.accelerator.device)[None]).cpu()  # (processes, N, 2)
        sums, counts = gathered[..., 0], gathered[..., 1]
        for i, name in enumerate(names):
            if counts[:, i].sum() == 0:
                value = float("nan")
            elif name in COUNT_METRICS or name.startswith("guard/"):
                seen = counts[:, i] > 0
                value = float((sums[seen, i] / counts[seen, i]).sum())
            elif name.startswith("time/"):
                seen = counts[:, i] > 0
                value = float((sums[seen, i] / counts[seen, i]).max())
            else:
                value = float(sums[:, i].sum() / counts[:, i].sum())
            buffer[name] = [value]

    # ---------------------------------------------------------------- every update

    def compute_policy_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        args: VisentConfig = self.args
        settings = self.policy_settings()
        total = max(int(self.state.max_steps), 1)
        step = int(self.state.global_step)
        coef = float(entropy_coef(step, total, args.entropy_schedule, args.entropy_coef_max, args.entropy_coef_min, args.entropy_switch))

        if inputs.get(DEFERRED) is not None and TOKEN_MASK not in inputs:
            # This update is the batch's only one: its forward is the clean pass (module doc, 1.).
            logps, entropies, clean_hidden, positions = self._forward_capturing_hidden(model, inputs)
            inputs[CLEAN_LOGPS] = logps.detach()
            self._add_mask(inputs, clean_hidden, positions)
        else:
            logps, entropies = self.forward_logps_and_entropies(model, inputs, compute_entropy=True)
        if coef == 0.0:
            entropies = entropies.detach()  # no gradient through the entropy when it is not in the loss
        mask = self._valid_mask(inputs)
        token_mask = inputs.get(TOKEN_MASK)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        normalizer = kl_normalizer = None
        if args.loss_aggregation == "selected_mean" and SELECTED_COUNT in inputs:
            # Skipped rows count the k tokens they would have kept, so skipping leaves the loss unchanged.
            normalizer = inputs[SELECTED_COUNT].sum().clamp_min(1.0)
            kl_normalizer = mask.sum().clamp_min(1.0)  # the KL term is a mean over all valid tokens
        weights = None
        if settings.vllm_is_correction and inputs.get("importance_sampling_ratio") is not None:
            weights = inputs["importance_sampling_ratio"].expand_as(logps)  # (B, 1) in sequence modes

        loss_mask = token_mask
        if token_mask is not None and args.selection_mode == "weight":
            loss_mask = selection_weights(token_mask, mask, args.selection_weight_lambda)  # VEPO's weight mode
        loss, metrics = policy_loss(
            logps,
            old,
            self._shaped_advantages(inputs),
            mask,
            loss_mask,
            eps_low=settings.eps_low,
            eps_high=settings.eps_high,
            aggregation=args.loss_aggregation,
            ref_logps=inputs.get("ref_per_token_logps"),
            beta=settings.beta,
            importance_weights=weights,
            normalizer=normalizer,
            max_completion_length=settings.max_completion_length,
            kl_normalizer=kl_normalizer,
            surrogate=args.surrogate,
        )
        loss = loss + self._perception_terms(inputs, logps, mask, metrics)
        if args.contrastive_perception_coef > 0:
            from visent.trainer.contrastive_pass import contrastive_term

            loss = loss + contrastive_term(self, model, inputs, logps, entropies, mask, metrics)
        if coef != 0.0:
            loss = loss + coef * entropy_regularizer(entropies, mask)
        if self.mode == "train":
            # TRL scales the loss for gradient accumulation itself (HF auto-scaling is off for GRPO).
            loss = loss / getattr(self, "current_gradient_accumulation_steps", args.gradient_accumulation_steps)

        self._log_loss_metrics(inputs, entropies.detach(), mask, token_mask, metrics, coef, step, total)
        return loss

    def _shaped_advantages(self, inputs: dict[str, Any]) -> torch.Tensor:
        """``(B,)`` advantages, times VPPO's α_i (μ over this update's rows) when trajectory shaping is on."""
        advantages = inputs["advantages"].reshape(-1)
        if inputs.get(S_HAT) is None:
            return advantages
        alpha = trajectory_alpha_from_normalized(inputs[S_HAT], inputs[SHAPED], self.args.trajectory_beta_min)
        self.record_metric("vppo/alpha_max", float(alpha.max()) if alpha.numel() else float("nan"))
        return advantages * alpha.to(advantages.dtype)

    def _perception_terms(self, inputs, logps, mask, metrics) -> torch.Tensor | float:
        """VPPO's / PAPO's entropy penalty and PAPO's implicit perception loss (``visent.core.perception_loss``)."""
        args: VisentConfig = self.args
        extra: torch.Tensor | float = 0.0
        if args.entropy_penalty_coef > 0.0:
            penalty = negative_logp_mean(logps, mask)  # + c·mean(−log π): lowers entropy
            extra = extra + args.entropy_penalty_coef * penalty
            metrics["entropy_penalty"] = penalty.detach()
        if args.perception_kl_coef > 0.0:
            term, kl = implicit_perception_loss(logps, inputs[PERTURBED_LOGPS], mask, args.perception_kl_coef)
            extra = extra + term
            metrics["perception_kl"] = kl
            metrics["perturbed_nll"] = negative_logp_mean(inputs[PERTURBED_LOGPS], mask).detach()
        return extra

    def _forward_capturing_hidden(self, model, inputs):
        """``forward_logps_and_entropies`` plus, from that forward, the detached ``(B, C, D)`` final hidden
        states predicting the completion tokens (position t predicts token t+1) and the position ids the
        model computed for its language model (in the layout of the family's adapter, e.g. Qwen-VL's
        M-RoPE ``(3, B, L)``; ``None`` if unavailable or the family does not reuse them), which the
        perturbed rows share since only their pixels differ."""
        backbone, _ = backbone_and_head(model)
        C = inputs["completion_ids"].size(1)
        B = inputs["completion_ids"].size(0)
        captured: list[torch.Tensor] = []
        positions: list[torch.Tensor | None] = []

        def hidden_hook(_module, _args, output):
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            captured.append(hidden[:, -C - 1 : -1].detach())

        def position_hook(_module, _args, kwargs):
            positions.append(kwargs.get("position_ids"))

        handles = [backbone.register_forward_hook(hidden_hook)]
        language_model = getattr(backbone, "language_model", None)
        reuse = self.model_adapter is not None and self.model_adapter.reuse_positions
        if reuse and isinstance(language_model, torch.nn.Module):
            handles.append(language_model.register_forward_pre_hook(position_hook, with_kwargs=True))
        try:
            logps, entropies = self.forward_logps_and_entropies(model, inputs, compute_entropy=True)
        finally:
            for handle in handles:
                handle.remove()
        clean_hidden = torch.cat(captured) if captured else None
        if clean_hidden is not None and clean_hidden.size(0) != B:
            clean_hidden = None  # defensive: _token_mask then runs the clean pass itself
        pos = None
        if positions and all(p is not None for p in positions):
            pos = self.model_adapter.join_positions([p.detach() for p in positions], B)
        return logps, entropies, clean_hidden, pos

    def _log_loss_metrics(self, inputs, entropies, mask, token_mask, metrics, coef, step, total) -> None:
        args: VisentConfig = self.args
        for name, value in metrics.items():
            self.record_metric(f"loss/{name}", float(value))
        self.record_metric("entropy/coef", coef)
        self.record_metric("entropy/stage", float(entropy_stage(step, total, args.entropy_schedule, args.entropy_switch)))
        self.record_metric("entropy/mean", _masked_mean(entropies, mask))
        if token_mask is None:
            token_mask = mask
        skipped = inputs.get(SKIPPED)
        scored = mask if skipped is None else mask * (~skipped)[:, None].float()
        selected = token_mask * scored
        self.record_metric("entropy/selected_mean", _masked_mean(entropies, selected))
        self.record_metric("select/fraction", float(selected.sum() / scored.sum()) if scored.sum() > 0 else float("nan"))
        # Share of selected tokens below their response's median entropy (the paper's "low-entropy,
        # vision-anchored" tokens), and Jaccard overlap with the entropy top-ρ mask.
        masked = torch.where(scored.bool(), entropies, torch.full_like(entropies, float("nan")))
        median = masked.nanmedian(dim=1, keepdim=True).values
        self.record_metric("select/low_entropy_fraction", _masked_mean((entropies < median).float(), selected))
        ratio = args.selection_ratio if args.selects_tokens else 1.0
        rows = scored.sum(1) > 0
        overlap = float("nan")
        if bool(rows.any()):
            top = select_tokens(entropies[rows], scored[rows], ratio, "response", "top")
            sel = selected[rows]
            union = ((top + sel) > 0).float().sum()
            overlap = float((top * sel).sum() / union) if union > 0 else float("nan")
        self.record_metric("select/overlap_entropy_top", overlap)
