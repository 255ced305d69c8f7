"""The one place that touches TRL's private API. Written against TRL 1.16 (``trl==1.16.*``).

``SeamTrainer`` subclasses ``trl.GRPOTrainer`` and turns its private hooks into three small public
methods that ``visent.trainer.grpo.VisentGRPOTrainer`` implements, so the visent trainer never names a
private TRL attribute:

==========================================  =====================================================
TRL 1.16 private hook / attribute            what the seam offers instead
==========================================  =====================================================
``_generate_and_score_completions(inputs)``  ``after_generation(batch, clean_hidden)``: gets TRL's
                                             batch dict (keys ``GENERATION_KEYS``) once per
                                             generation batch, before it is shuffled, split and
                                             buffered for ``steps_per_generation × num_iterations``
                                             updates; whatever per-row tensors it adds travel with
                                             the rows through TRL's shuffle and split.
``_get_per_token_logps_and_entropies(...)``  ``forward_logps_and_entropies(model, inputs, ...)``;
                                             and, when TRL runs its own no-grad clean forward for
                                             ``old_per_token_logps`` (vLLM IS correction or
                                             misaligned steps), the final hidden states of that
                                             forward are captured and handed to
                                             ``after_generation`` so the clean pass is not redone.
``_compute_loss(model, inputs)``             ``compute_policy_loss(model, inputs)``
``_metrics[mode][name].append(v)``           ``record_metric(name, value)``
``epsilon_low/high, beta, use_vllm, ...``    ``policy_settings()``
==========================================  =====================================================

``generation_batch(rows)`` runs the whole generation path on a list of dataset rows (tools, tests).
``lm_head_gather_ctx`` and ``no_gradient_checkpointing`` wrap TRL internals the counterfactual pass needs
(ZeRO-3 gathering of the LM head, TRL's gradient-checkpointing switch); ``fused_head_logps`` (and the trainer's
``sampled_token_logps``) is TRL's fused LM head (``trl.kernels.ChunkedLogProbFunction``) applied to hidden
states from another forward. Helpers that only need
transformers/PEFT live in ``visent.models``: ``models.unwrap`` (``transformers_model``,
``backbone_and_head``, ``adapters_disabled``) and ``models.checkpoint`` (``load_checkpoint_weights``).

``_tokenize_prompts(prompts)`` is overridden so that a batch mixing image and text-only prompts works
with transformers generation: TRL marks a text-only prompt's images as ``None``, which the Hugging Face
processor it calls later with the whole batch's images rejects; an empty list means the same to it.
(vLLM's input builder needs the ``None``, so there it is left alone.)

``_load_from_checkpoint`` (transformers' ``Trainer``) is overridden so that resuming restores the model
weights: transformers 5 saves Qwen2(.5)-VL checkpoints under their legacy key names (``model.layers.*``)
but its resume path loads them non-strictly under the in-memory names (``model.language_model.layers.*``),
so without this the language model silently restarts from its initial weights (see
``load_checkpoint_weights``).

``__init__`` gives a policy built in memory (a ``tiny:<family>`` model: its ``config._name_or_path`` is
empty) a reference model when ``beta > 0``. TRL 1.16 takes no reference model argument; it rebuilds
one with ``create_model_from_path(config._name_or_path)``, which cannot load a model that names no
checkpoint. For such a policy the seam deep-copies it, frozen, before TRL touches it, and hands that
copy to TRL's reference-model call in ``grpo_trainer`` (patched for the duration of ``__init__`` only),
so the reference is exactly the initial policy and TRL then prepares it as it would its own (dropout
off, fused LM head, ``accelerator.prepare``). A policy loaded from a checkpoint keeps TRL's own reload;
a LoRA policy needs no reference model (TRL disables the adapter instead).

``tests/unit/test_trl_seam.py`` checks every name, signature and returned key used here and fails
with a message pointing to this file when a TRL upgrade changes one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import trl
from trl import GRPOTrainer

from visent.models.checkpoint import load_checkpoint_weights
from visent.models.unwrap import adapters_disabled, backbone_and_head, transformers_model

__all__ = [
    "GENERATION_KEYS",
    "PINNED_TRL",
    "PRIVATE_HOOKS",
    "RAW_IMAGES",
    "PolicySettings",
    "SeamTrainer",
    "concat_generation_batches",
    "lm_head_gather_ctx",
    "no_gradient_checkpointing",
    "raw_images",
    "select_generation_rows",
]

PINNED_TRL = "1.16"

#: Keys TRL 1.16's ``_generate_and_score_completions`` always returns, and optional ones visent reads.
GENERATION_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "num_items_in_batch")
OPTIONAL_GENERATION_KEYS = (
    "old_per_token_logps",
    "ref_per_token_logps",
    "importance_sampling_ratio",
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "mm_token_type_ids",
)

#: Private hooks overridden or called here, with the leading parameters the seam relies on.
PRIVATE_HOOKS: dict[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_get_per_token_logps_and_entropies": (
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
        "pixel_values",
        "image_grid_thw",
        "num_images",
    ),
    "_compute_loss": ("self", "model", "inputs"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_load_from_checkpoint": ("self", "resume_from_checkpoint", "model"),
    "_tokenize_prompts": ("self", "prompts"),
}

#: Attributes of a constructed ``GRPOTrainer`` the seam reads.
PRIVATE_ATTRIBUTES = (
    "_metrics",
    "epsilon_low",
    "epsilon_high",
    "beta",
    "use_vllm",
    "vllm_importance_sampling_correction",
    "num_iterations",
    "temperature",
    "ref_model",
    "max_completion_length",
    "reward_weights",
    "reward_func_names",
    "scale_rewards",
    "num_generations",
)

# Inputs of `_get_per_token_logps_and_entropies` that come from the generation batch.
_FORWARD_INPUT_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)

if not trl.__version__.startswith(PINNED_TRL + "."):
    import warnings

    warnings.warn(
        f"visent's TRL seam (visent/trainer/_trl_seam.py) is written for trl {PINNED_TRL}.x; found "
        f"{trl.__version__}. Run tests/unit/test_trl_seam.py to see whether the hooks it uses changed.",
        stacklevel=2,
    )


@dataclass(frozen=True)
class PolicySettings:
    """What the loss needs from the engine, read from TRL's attributes."""

    eps_low: float
    eps_high: float
    beta: float
    vllm_is_correction: bool
    max_completion_length: int
    temperature: float


def _needs_reference_copy(model: Any, args: Any, peft_config: Any) -> bool:
    """Whether TRL would build a reference model for ``model`` and has no checkpoint to build it from."""
    from accelerate.utils import is_peft_model  # the test TRL applies before building its reference

    return (
        isinstance(model, torch.nn.Module)
        and args is not None
        and float(getattr(args, "beta", 0.0)) != 0.0
        and peft_config is None
        and not is_peft_model(model)
        and not getattr(getattr(model, "config", None), "_name_or_path", "")
    )


@contextlib.contextmanager
def _reference_model_from(reference: torch.nn.Module):
    """While open, TRL's ``create_model_from_path("")`` (its reference-model build for a policy naming no
    checkpoint) returns ``reference`` (once) instead of failing; every other call goes to TRL."""
    from trl.trainer import grpo_trainer

    original = grpo_trainer.create_model_from_path
    pending = [reference]

    def create_model_from_path(model_id, architecture=None, **kwargs):
        if model_id == "" and architecture is None and pending:
            ref = pending.pop()
            dtype = kwargs.get("dtype")
            return ref.to(dtype) if isinstance(dtype, torch.dtype) else ref
        return original(model_id, architecture, **kwargs)

    grpo_trainer.create_model_from_path = create_model_from_path
    try:
        yield
    finally:
        grpo_trainer.create_model_from_path = original


#: Vocabulary tile of TRL's fused LM head (``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE`` in TRL 1.16).
_LOGPROB_VOCAB_CHUNK = 32768
#: Text-config fields by which TRL's fused head scales logits (``trl.trainer.utils.add_fused_lm_head``).
_LOGIT_SCALE_NAMES = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


class SeamTrainer(GRPOTrainer):
    """``GRPOTrainer`` with its private hooks routed to public methods (see module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        import copy
        import inspect

        bound = inspect.signature(GRPOTrainer.__init__).bind(self, *args, **kwargs).arguments
        model = bound.get("model")
        if not _needs_reference_copy(model, bound.get("args"), bound.get("peft_config")):
            super().__init__(*args, **kwargs)
            return
        # Copied before TRL touches the policy (PEFT, gradient checkpointing, fused head): the reference
        # is the initial policy, weight for weight, and never trained.
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        with _reference_model_from(reference):
            super().__init__(*args, **kwargs)
        if self.ref_model is None or transformers_model(self.ref_model) is not reference:
            raise RuntimeError(
                "TRL did not take visent's reference model for a policy built in memory: update "
                f"visent/trainer/_trl_seam.py (pinned to trl {PINNED_TRL}) for trl {trl.__version__}"
            )

    # ---- the three methods a subclass implements -------------------------------------------------

    def after_generation(self, batch: dict[str, Any], clean_hidden: torch.Tensor | None) -> dict[str, Any]:
        """Called once per generation batch with TRL's batch; returns it (possibly with added keys).

        ``clean_hidden``: ``(B, C, D)`` final hidden states at the positions predicting each completion
        token from TRL's own no-grad forward of the current policy, or ``None`` when TRL ran none.
        """
        return batch

    def compute_policy_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def wants_clean_hidden(self) -> bool:
        """Whether TRL's clean forward (if any) should be captured for ``after_generation``."""
        return False

    # ---- helpers over private API ------------------------------------------------------------------

    def generation_batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Sample, score and post-process one generation batch from dataset rows (tools, tests, benchmarks)."""
        return self._generate_and_score_completions(inputs)

    @property
    def mode(self) -> str:
        return "train" if self.model.training else "eval"

    def record_metric(self, name: str, value: float) -> None:
        """Append a scalar to TRL's metric buffer; TRL averages it over the logging window."""
        self._metrics[self.mode][name].append(float(value))
        if not hasattr(self, "_visent_metric_names"):
            self._visent_metric_names: set[str] = set()
        self._visent_metric_names.add(name)

    def policy_settings(self) -> PolicySettings:
        return PolicySettings(
            eps_low=float(self.epsilon_low),
            eps_high=float(self.epsilon_high),
            beta=float(self.beta),
            vllm_is_correction=bool(self.use_vllm and self.vllm_importance_sampling_correction),
            max_completion_length=int(self.max_completion_length),
            temperature=float(self.temperature),
        )

    def forward_logps_and_entropies(
        self, model: torch.nn.Module, inputs: dict[str, Any], compute_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs and entropies ``(B, C)`` of the completion tokens, through TRL's fused LM head.

        The entropy carries gradient (TRL's kernel differentiates it); detach it when not needed.
        """
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, entropies, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            self,
            model,
            input_ids,
            attention_mask,
            inputs["completion_ids"].size(1),
            compute_entropy=compute_entropy,
            **{k: inputs.get(k) for k in _FORWARD_INPUT_KEYS},
        )
        return logps, entropies

    def sampled_token_logps(self, hidden: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``fused_head_logps`` with the policy's head and the settings TRL's fused head was added with."""
        return fused_head_logps(self.model, hidden, targets, valid, temperature=float(self.temperature),
                                cast_lm_head_to_fp32=bool(self.args.cast_lm_head_to_fp32))

    def sampled_logps_supported(self) -> bool:
        return fused_head_reproducible(self.model)

    # ---- the private hooks ---------------------------------------------------------------------------

    def sample_batch(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], torch.Tensor | None]:
        """One generation batch for the dataset rows ``inputs`` and TRL's clean hidden states (or None);
        a subclass may sample several chunks (dynamic sampling) with ``generate_chunk``."""
        batch, _, clean_hidden = self.generate_chunk(inputs)
        return batch, clean_hidden

    def generate_chunk(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]:
        """TRL's sample-and-score of ``inputs``: ``(batch, rewards_per_func (N_all, F), clean_hidden)``.

        ``rewards_per_func`` holds every process's responses (TRL gathers them to normalise per group).
        """
        captured: list[torch.Tensor] = []
        self._seam_capture = captured if (self.wants_clean_hidden() and self.model.training) else None
        self._seam_rewards = None
        try:
            batch = super()._generate_and_score_completions(inputs)
        finally:
            self._seam_capture = None
        clean_hidden = torch.cat(captured, dim=0) if captured else None
        if clean_hidden is not None and clean_hidden.size(0) != batch["completion_ids"].size(0):
            clean_hidden = None  # defensive: never pair hidden states with the wrong rows
        if self.wants_raw_images():
            batch[RAW_IMAGES] = raw_images(inputs)
        return batch, self._seam_rewards, clean_hidden

    def wants_raw_images(self) -> bool:
        """Whether each row's dataset images (PIL) are kept in the batch as ``RAW_IMAGES`` (raw-image views)."""
        return False

    def _generate_and_score_completions(self, inputs):
        batch, clean_hidden = self.sample_batch(inputs)
        return self.after_generation(batch, clean_hidden)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._seam_rewards = rewards  # (N_all, F), read by generate_chunk
        return rewards

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        # TRL passes the processor's whole output to its no-grad forwards (reference, old log-probs), which
        # for LLaVA-OneVision includes ``batch_num_images``, a keyword this method does not take. The loss
        # forward, built from the buffered batch, never gets it, so dropping it keeps all three alike.
        kwargs.pop("batch_num_images", None)
        capture = getattr(self, "_seam_capture", None)
        # Only the policy's own no-grad forward (old log-probs) is a clean pass of the current weights; the
        # reference forward, when TRL runs no old-log-probs forward the first no-grad call, is not.
        if capture is None or torch.is_grad_enabled() or self._is_reference_forward(model):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        # Capture the final hidden states of that forward, then stop capturing.
        self._seam_capture = None
        backbone, _ = backbone_and_head(model)

        def hook(_module, _args, output):
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            # Position t's hidden state predicts token t+1: the completion is predicted by [-C-1:-1].
            capture.append(hidden[:, -logits_to_keep - 1 : -1].detach())

        handle = backbone.register_forward_hook(hook)
        try:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        finally:
            handle.remove()

    def _is_reference_forward(self, model) -> bool:
        """Whether a forward of ``model`` now gives TRL's reference log-probs: another model (``ref_model``),
        or the LoRA policy under ``disable_adapter()`` (a new adapter) or with the frozen copy TRL 1.16 adds
        as adapter ``"ref"`` for a model passed already wrapped in PEFT (``use_adapter(model, "ref")``)."""
        if transformers_model(model) is not transformers_model(self.model) or adapters_disabled(model):
            return True
        while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        return "ref" in (getattr(model, "peft_config", None) or {}) and getattr(model, "active_adapter", None) == "ref"

    def _compute_loss(self, model, inputs):
        return self.compute_policy_loss(model, inputs)

    def _tokenize_prompts(self, prompts):
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        if images is not None and not self.use_vllm:
            images = [[] if row is None else row for row in images]  # module doc: mixed image/text batches
        return prompt_ids, images, multimodal_fields

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.model if model is None else model
        plain = not (self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(target, "peft_config"))
        if plain and load_checkpoint_weights(target, resume_from_checkpoint):
            return None
        return super()._load_from_checkpoint(resume_from_checkpoint, model)


#: (B, L) keys padded on the left (prompt side); keys split at the prompt width: prompt part left-padded,
#: completion part right-padded (TRL extends the processor's per-token ids with zeros for the completion).
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_PROMPT_THEN_COMPLETION = ("token_type_ids", "mm_token_type_ids")


#: Batch key of each row's raw dataset images: a list (one entry per row) of lists of PIL images (or []).
RAW_IMAGES = "visent_raw_images"


def raw_images(inputs: list[dict[str, Any]]) -> list[list[Any]]:
    """Each dataset row's images as TRL 1.16 reads them (``images``, else ``[image]``), ``[]`` for none."""
    out = []
    for row in inputs:
        images = row.get("images") if "images" in row else ([row["image"]] if row.get("image") is not None else [])
        out.append(list(images or []))
    return out


def select_generation_rows(batch: dict[str, Any], idx: torch.Tensor) -> dict[str, Any]:
    """The generation batch restricted to responses ``idx`` (images, grids and per-row lists follow).

    Image tensors are first split per row with TRL's ``split_pixel_values_by_grid`` and left split (lists);
    :func:`concat_generation_batches` joins them back.
    """
    from trl.trainer.utils import split_pixel_values_by_grid

    split = split_pixel_values_by_grid(batch)
    rows = idx.tolist()
    out: dict[str, Any] = {}
    for key, value in split.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            out[key] = value[idx.to(value.device)]
        elif isinstance(value, list):
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return out


def _pad_cat(tensors: list[torch.Tensor], left: bool) -> torch.Tensor:
    width = max(t.size(1) for t in tensors)
    padded = []
    for t in tensors:
        fill = t.new_zeros((t.size(0), width - t.size(1), *t.shape[2:]))
        padded.append(torch.cat([fill, t] if left else [t, fill], dim=1))
    return torch.cat(padded, dim=0)


def concat_generation_batches(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Responses of several ``select_generation_rows`` results as one generation batch, re-padded.

    ``num_items_in_batch`` becomes the merged batch's number of completion tokens. A key whose per-row
    shapes cannot be joined raises ``ValueError`` naming it.
    """
    from trl.trainer.utils import unsplit_pixel_values_by_grid

    out: dict[str, Any] = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        first = values[0]
        if isinstance(first, list):
            out[key] = [v for value in values for v in value]
        elif not isinstance(first, torch.Tensor) or first.ndim == 0:
            out[key] = first
        elif key in _PROMPT_THEN_COMPLETION:
            widths = [b["prompt_ids"].size(1) for b in batches]
            prompt = _pad_cat([v[:, :w] for v, w in zip(values, widths)], left=True)
            out[key] = torch.cat([prompt, _pad_cat([v[:, w:] for v, w in zip(values, widths)], left=False)], dim=1)
        elif first.ndim == 1 or all(v.shape[1:] == first.shape[1:] for v in values):
            out[key] = torch.cat(values, dim=0)
        elif first.ndim >= 2 and all(v.shape[2:] == first.shape[2:] for v in values):
            out[key] = _pad_cat(values, left=key in _LEFT_PADDED)
        else:
            raise ValueError(f"dynamic sampling cannot join the generation batches' {key!r} (shapes differ)")
    out = unsplit_pixel_values_by_grid(out)
    if "num_items_in_batch" in out:
        mask = out["completion_mask"] if out.get("tool_mask") is None else out["completion_mask"] * out["tool_mask"]
        out["num_items_in_batch"] = mask.sum().to(batches[0]["num_items_in_batch"].dtype)
    return out


def fused_head_logps(
    model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, *,
    temperature: float = 1.0, cast_lm_head_to_fp32: bool = False,
) -> torch.Tensor:
    """``(n, C)`` float32 log-probs of ``targets`` (sampled tokens) from ``model``'s final hidden states
    ``hidden`` ``(n, C, D)`` (position t predicts token t), zero where ``valid`` ``(n, C)`` is False; no gradient.

    The LM head of TRL's own forward (``SeamTrainer.forward_logps_and_entropies``): TRL's chunked log-prob
    kernel (the sampled token's logit gathered per row, a log-sum-exp over vocabulary tiles in float32, the
    projection in the autocast dtype) with the settings of TRL's fused head (``temperature``,
    ``cast_lm_head_to_fp32``, the config's final-logit soft-capping), so a row run through another forward
    of the same weights gets TRL's numbers. Call inside the trainer's autocast, as TRL's forward runs.
    A model whose head scales its logits otherwise is refused (``fused_head_reproducible``).
    """
    from trl.kernels import ChunkedLogProbFunction

    if not fused_head_reproducible(model):
        raise ValueError("this model scales its logits in a way fused_head_logps does not reproduce")
    _, head = backbone_and_head(model)
    weight, bias = head.weight, getattr(head, "bias", None)
    softcap = getattr(transformers_model(model).config.get_text_config(), "final_logit_softcapping", None)
    h = hidden[valid].to(weight.device)
    ctx: Any = contextlib.nullcontext()
    if cast_lm_head_to_fp32:
        h, ctx = h.float(), torch.autocast(h.device.type, enabled=False)
    with torch.no_grad(), ctx, lm_head_gather_ctx(weight, bias):
        logps = ChunkedLogProbFunction.apply(
            h, weight, bias, targets[valid].to(weight.device), float(temperature), _LOGPROB_VOCAB_CHUNK, softcap,
            1.0, ("log_probs",),
        )[0]
    out = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device)
    out[valid] = logps.float().to(hidden.device)
    return out


def fused_head_reproducible(model: torch.nn.Module) -> bool:
    """Whether ``fused_head_logps`` gives TRL's fused head's numbers for ``model``: not for a model whose
    head multiplies or divides its logits (TRL reads ``logit_scale`` and three synonyms from the config)."""
    config = transformers_model(model).config.get_text_config()
    return all(getattr(config, name, None) is None for name in _LOGIT_SCALE_NAMES)


def lm_head_gather_ctx(weight: torch.Tensor, bias: torch.Tensor | None):
    """Context gathering a ZeRO-3-partitioned LM head for direct use of its weight (null otherwise)."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    return maybe_gather_lm_head_ctx(weight, bias)


@contextlib.contextmanager
def no_gradient_checkpointing(trainer: GRPOTrainer):
    """Temporarily disable gradient checkpointing for a no-grad forward (TRL does the same)."""
    from trl.models.utils import disable_gradient_checkpointing

    with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        yield
