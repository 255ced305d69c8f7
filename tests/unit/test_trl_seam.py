"""Fails loudly when a TRL upgrade changes a private hook that visent/trainer/_trl_seam.py relies on."""

from __future__ import annotations

import inspect

import pytest
import torch
import trl
from trl import GRPOTrainer

from visent.trainer import _trl_seam as seam

FIX = f"update visent/trainer/_trl_seam.py (pinned to trl {seam.PINNED_TRL}) for trl {trl.__version__}"


def test_trl_version_is_the_pinned_one():
    assert trl.__version__.startswith(seam.PINNED_TRL + "."), f"trl {trl.__version__} is not {seam.PINNED_TRL}.x: {FIX}"


@pytest.mark.parametrize("name", sorted(seam.PRIVATE_HOOKS))
def test_private_hook_signatures(name):
    hook = getattr(GRPOTrainer, name, None)
    assert hook is not None, f"GRPOTrainer.{name} no longer exists: {FIX}"
    params = list(inspect.signature(hook).parameters)
    expected = list(seam.PRIVATE_HOOKS[name])
    assert params[: len(expected)] == expected, (
        f"GRPOTrainer.{name} parameters changed: expected to start with {expected}, got {params}: {FIX}"
    )


def test_generation_batch_keys_are_still_returned():
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for key in seam.GENERATION_KEYS:
        assert f'"{key}": ' in source, f"_generate_and_score_completions no longer returns {key!r}: {FIX}"
    for key in seam.OPTIONAL_GENERATION_KEYS:
        assert f'output["{key}"]' in source, f"_generate_and_score_completions no longer sets {key!r}: {FIX}"
    # The captured clean forward is the policy's old-log-prob pass inside generation, before the reference one.
    assert source.index("old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies") < source.index(
        "ref_per_token_logps, _, _ = self._get_per_token_logps_and_entropies"
    ), f"the order of TRL's no-grad forwards changed: {FIX}"


def test_private_attributes_are_set_in_init():
    source = inspect.getsource(GRPOTrainer.__init__)
    for attr in seam.PRIVATE_ATTRIBUTES:
        assert f"self.{attr} =" in source, f"GRPOTrainer.__init__ no longer sets self.{attr}: {FIX}"
    assert "self._metrics = {\"train\": defaultdict(list)" in source, f"TRL's metric buffer changed: {FIX}"


def test_buffered_batches_are_shuffled_and_split_by_rows():
    # after_generation adds per-row tensors; TRL must shuffle and split them with the rows they belong to.
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    source = inspect.getsource(GRPOTrainer._prepare_inputs)
    assert "shuffle_sequence_dict(generation_batch)" in source and "split_tensor_dict(" in source, FIX
    rows = torch.arange(6)
    batch = {
        "completion_ids": rows[:, None].repeat(1, 3),
        "visent_token_mask": rows[:, None].repeat(1, 3).float(),
        "visent_skipped": rows % 2 == 0,
        "num_items_in_batch": torch.tensor(18),
    }
    for part in split_tensor_dict(shuffle_sequence_dict(batch), 3):
        ids = part["completion_ids"][:, 0]
        assert torch.equal(part["visent_token_mask"][:, 0].long(), ids), FIX
        assert torch.equal(part["visent_skipped"], ids % 2 == 0), FIX


def test_fused_lm_head_api():
    from trl.trainer.utils import FusedCausalLMOutput, add_fused_lm_head, maybe_gather_lm_head_ctx  # noqa: F401

    fields = set(FusedCausalLMOutput.__dataclass_fields__)
    assert {"log_probs", "entropy"} <= fields, f"FusedCausalLMOutput lost log_probs/entropy: {FIX}"
    source = inspect.getsource(add_fused_lm_head)
    assert 'backbone_attr = "base_model"' in source, f"TRL's fused head no longer calls model.base_model: {FIX}"
    init = inspect.getsource(GRPOTrainer.__init__)
    assert 'outputs=("log_probs", "entropy")' in init, f"GRPOTrainer no longer asks the fused head for entropy: {FIX}"


def test_chunked_logprob_kernel_api():
    """``fused_head_logps`` calls TRL's kernel as TRL's fused head does (same arguments, same tile size)."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer import utils

    params = list(inspect.signature(ChunkedLogProbFunction.forward).parameters)
    assert params[1:] == ["hidden", "weight", "bias", "targets", "temperature", "chunk_size",
                          "final_logit_softcapping", "logit_scale", "outputs"], FIX
    assert utils._CHUNKED_LOGPROB_CHUNK_SIZE == seam._LOGPROB_VOCAB_CHUNK, FIX
    source = inspect.getsource(utils.add_fused_lm_head)
    for name in seam._LOGIT_SCALE_NAMES:
        assert f'"{name}"' in source, f"TRL's fused head no longer reads {name}: {FIX}"


def test_gradient_checkpointing_helper_exists():
    from trl.models.utils import disable_gradient_checkpointing

    assert list(inspect.signature(disable_gradient_checkpointing).parameters)[:2] == [
        "model",
        "gradient_checkpointing_kwargs",
    ], FIX


def test_reference_model_is_still_built_through_create_model_from_path():
    # SeamTrainer.__init__ hands TRL a copy of an in-memory policy by patching this call (module docstring).
    from trl.trainer import grpo_trainer

    assert callable(getattr(grpo_trainer, "create_model_from_path", None)), FIX
    source = inspect.getsource(GRPOTrainer.__init__)
    assert "self.ref_model = create_model_from_path(get_config_model_id(self.model.config)" in source, (
        f"GRPOTrainer no longer rebuilds its reference model from the policy's name: {FIX}"
    )
    assert "is_peft_model(model):" in source, f"GRPOTrainer's PEFT test before the reference build changed: {FIX}"


def test_reference_copy_is_handed_over_once_and_other_calls_reach_trl(monkeypatch):
    from trl.trainer import grpo_trainer

    calls = []
    monkeypatch.setattr(grpo_trainer, "create_model_from_path", lambda *a, **k: calls.append((a, k)) or "trl")
    ref = torch.nn.Linear(2, 2)
    with seam._reference_model_from(ref):
        assert grpo_trainer.create_model_from_path("", dtype=torch.float64) is ref
        assert ref.weight.dtype == torch.float64  # TRL asks for the policy's dtype
        assert grpo_trainer.create_model_from_path("") == "trl"  # only once
        assert grpo_trainer.create_model_from_path("org/reward", "Seq") == "trl"
    assert grpo_trainer.create_model_from_path("x") == "trl" and len(calls) == 3
