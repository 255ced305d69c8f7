"""LoRA VEPO on tiny models through ``visent train``'s own path (``build_trainer``: TRL wraps the model
with the ``peft_config`` built from the ``use_peft`` / ``lora_*`` fields).

Covers: training changes the adapter and leaves every base weight bit-identical (Qwen2.5-VL); for every
family with a ``tiny:`` builder, the counterfactual statistics (eager and deferred mask paths) are those
of the model with the adapter merged into its weights; the clean forward reused for the mask is the
adapted policy's, never TRL's reference forward (adapter disabled); checkpoints hold the adapter and
resuming restores it.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from visent.models.unwrap import backbone_and_head
from visent.trainer import counterfactual as cf
from visent.trainer import grpo
from visent.trainer.build import build_trainer
from visent.trainer.callbacks import read_metrics
from visent.trainer.config import VisentConfig
from visent.trainer.grpo import DEFERRED, SELECTED_COUNT, SKIPPED, TOKEN_MASK

K = 4  # responses per prompt
FIELDS = ("entropy", "entropy_perturbed", "jsd", "kl")


def lora_trainer(tmp_path, **overrides):
    cfg = {
        "model_name_or_path": "tiny:qwen2_5_vl",
        "dataset": "lab:counting",
        "dataset_size": 16,
        "reward_funcs": ["random"],  # reward variance on an untrained model, so the policy gradient is not zero
        "output_dir": str(tmp_path),
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "gradient_checkpointing": False,
        "num_generations": K,
        "per_device_train_batch_size": 8,
        "max_completion_length": 12,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "seed": 0,
        "use_peft": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "token_score": "vepo",
        "selection_ratio": 0.3,
    }
    cfg.update(overrides)
    return build_trainer(VisentConfig(**cfg))


def rows_for(trainer, n_prompts):
    ds = trainer.train_dataset
    return [ds[i] for i in range(n_prompts) for _ in range(K)]


def randomise_adapter(model, std=0.2, seed=0):
    """LoRA's B starts at zero (the adapter is then the identity): make it matter, so that a computation
    which ignored the adapter would give different statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B.default." in name:  # the trained adapter, not TRL's frozen "ref" copy
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def test_a_lora_vepo_run_changes_only_the_adapter(tmp_path):
    trainer = lora_trainer(tmp_path, gradient_checkpointing=True)  # TRL's PEFT + checkpointing path
    model = trainer.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), trainable[:5]
    # Default targets: the language model's projections only.
    assert all(".language_model." in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    base_changed = [n for n in before if "lora_" not in n and not torch.equal(before[n], after[n])]
    assert base_changed == []
    lora_changed = [n for n in before if "lora_" in n and not torch.equal(before[n], after[n])]
    assert lora_changed, "two updates with non-zero advantages must move the adapter"

    rows = read_metrics(str(tmp_path))
    jsd = [r["vepo/jsd_mean"] for r in rows if r.get("vepo/jsd_mean") is not None]
    assert jsd and all(math.isfinite(v) for v in jsd) and any(v > 0 for v in jsd)


def _merged_stats(trainer, call):
    """The recorded ``counterfactual_stats`` call redone on a copy of the policy with its adapter merged
    into the weights (``merge_and_unload``), running its own clean pass."""
    merged = copy.deepcopy(trainer.model).merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    backbone, head = backbone_and_head(merged)
    kwargs = dict(call["kwargs"], clean_hidden=None, clean_position_ids=None)
    return cf.counterfactual_stats(backbone, head, *call["args"][2:], **kwargs)


def _family_cases():
    from visent.models import tiny_names

    for name in tiny_names():  # every family: about a second each on CPU
        for route in ("eager", "deferred"):
            yield pytest.param(name, route, id=f"{name[5:]}-{route}")


@pytest.mark.parametrize("model_name,route", list(_family_cases()))
def test_counterfactual_statistics_are_those_of_the_merged_model(tmp_path, monkeypatch, model_name, route):
    trainer = lora_trainer(tmp_path, model_name_or_path=model_name, skip_uniform_groups=False)
    randomise_adapter(trainer.model)
    trainer.model.train()
    calls = []
    real = grpo.counterfactual_stats

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append({"args": args, "kwargs": kwargs, "out": out})
        return out

    monkeypatch.setattr(grpo, "counterfactual_stats", spy)
    batch = trainer.generation_batch(rows_for(trainer, 2))  # outside a training step: mask built now
    if route == "deferred":
        # The batch's only update builds the mask from its own (adapted) training forward.
        deferred = {k: v for k, v in batch.items() if k not in (TOKEN_MASK, SELECTED_COUNT, SKIPPED)}
        deferred[DEFERRED] = torch.ones(batch["completion_ids"].size(0), dtype=torch.bool)
        trainer.compute_policy_loss(trainer.model, deferred)
        assert calls[-1]["kwargs"]["clean_hidden"] is not None, "the deferred path reuses the training forward"
        assert torch.equal(deferred[TOKEN_MASK], batch[TOKEN_MASK])
    call = calls[-1]
    adapted = call["out"]
    merged = _merged_stats(trainer, call)
    for field in FIELDS:
        torch.testing.assert_close(getattr(adapted, field), getattr(merged, field), atol=1e-5, rtol=0)
    assert float(adapted.jsd.sum()) > 0

    # The comparison can fail: without the adapter the statistics are far from these.
    with trainer.model.disable_adapter():
        base = real(*call["args"], **dict(call["kwargs"], clean_hidden=None, clean_position_ids=None))
    assert (base.entropy - adapted.entropy).abs().max() > 1e-3


def prewrapped_trainer(tmp_path, **overrides):
    """A LoRA model wrapped by the user (Python API) before the trainer: with beta > 0 TRL then keeps a
    frozen copy of the adapter as adapter "ref" for the reference log-probs."""
    from peft import LoraConfig, get_peft_model

    from visent.trainer.grpo import VisentGRPOTrainer
    from visent.trainer.sources import load_model, load_train_dataset, resolve_rewards

    config = VisentConfig(output_dir=str(tmp_path), report_to="none", save_strategy="no", gradient_checkpointing=False,
                          num_generations=K, per_device_train_batch_size=8, max_completion_length=12, max_steps=2,
                          token_score="vepo", selection_ratio=0.3, **overrides)
    model, processor = load_model("tiny:qwen2_5_vl")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainer = VisentGRPOTrainer(model=model, reward_funcs=resolve_rewards(["random"]), args=config,
                                train_dataset=load_train_dataset("lab:counting", 16, 0), processing_class=processor)
    assert "ref" in trainer.model.peft_config
    return trainer


@pytest.mark.parametrize("setup", ["new_adapter", "new_adapter_old_logps", "prewrapped_ref_adapter"])
def test_the_reused_clean_forward_is_the_adapted_policy_not_the_reference(tmp_path, monkeypatch, setup):
    """With beta > 0 TRL computes reference log-probs with the adapter disabled (or, for a model passed
    already wrapped, with a frozen copy of the adapter). When TRL runs no forward for old log-probs, that
    reference forward is its first no-grad forward; it must not be taken for the clean pass. With
    ``steps_per_generation=2`` TRL does run the old-log-probs forward, which is reused."""
    old_logps_forward = setup == "new_adapter_old_logps"
    extra = {"steps_per_generation": 2} if old_logps_forward else {}
    if setup == "prewrapped_ref_adapter":
        trainer = prewrapped_trainer(tmp_path, beta=0.04, skip_uniform_groups=False)
    else:
        trainer = lora_trainer(tmp_path, beta=0.04, skip_uniform_groups=False, **extra)
    randomise_adapter(trainer.model)  # the policy's adapter now differs from the reference (B = 0)
    trainer.model.train()
    seen = {}
    real = trainer.after_generation

    def spy(batch, clean_hidden):
        seen["clean_hidden"] = clean_hidden
        return real(batch, clean_hidden)

    monkeypatch.setattr(trainer, "after_generation", spy)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    assert batch.get("ref_per_token_logps") is not None
    if not old_logps_forward:
        assert seen["clean_hidden"] is None
        return
    assert seen["clean_hidden"] is not None
    rows = list(range(batch["completion_ids"].size(0)))
    C = batch["completion_ids"].size(1)
    backbone, _ = backbone_and_head(trainer.model)
    with torch.no_grad():
        inputs = cf.row_inputs(batch, rows, cf.BatchImages(batch, trainer.model_adapter), with_images=True)
        adapted = cf.completion_hidden(backbone, inputs, C)
        with trainer.model.disable_adapter():
            base = cf.completion_hidden(backbone, inputs, C)
    valid = batch["completion_mask"].bool()
    torch.testing.assert_close(seen["clean_hidden"][valid], adapted[valid], atol=1e-5, rtol=1e-4)
    assert (base[valid] - adapted[valid]).abs().max() > 1e-3


def test_checkpoints_hold_the_adapter_and_resume_restores_it(tmp_path):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    out = tmp_path / "run"
    trainer = lora_trainer(out, save_strategy="steps", save_steps=1, max_steps=1)
    trainer.train()
    ckpt = out / "checkpoint-1"
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    saved = load_file(str(ckpt / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items()), "the trained adapter was saved"

    resumed = lora_trainer(out, save_strategy="no", max_steps=1)  # already at step 1: resuming only loads
    fresh = get_peft_model_state_dict(resumed.model)
    assert fresh.keys() == saved.keys()
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)
    resumed.train(resume_from_checkpoint=str(ckpt))
    restored = get_peft_model_state_dict(resumed.model)
    for key, value in saved.items():
        assert torch.equal(restored[key], value), key
    assert os.path.isfile(ckpt / "trainer_state.json")
