"""A checkpoint stored in bf16 (as every released Qwen/Gemma checkpoint is) trained through the real
trainer at the papers' lr 1e-6: loaded in float32 (visent's default, ``visent.trainer.precision``) one step
changes >= 90% of the trained language-model weights; loaded in bf16 the trainer is refused before the
first step, and the control (the refusal bypassed) shows why: almost nothing moves."""

from __future__ import annotations

import pytest
import torch

import visent.trainer.grpo as grpo_module
from visent.trainer.build import freeze_vision_tower
from visent.trainer.config import VisentConfig
from visent.trainer.grpo import VisentGRPOTrainer
from visent.trainer.precision import SetupRefused
from visent.trainer.sources import load_model, load_train_dataset, resolve_rewards


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("bf16_ckpt")
    model, processor = load_model("tiny:qwen3_vl")
    model.to(torch.bfloat16).save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def _trainer(checkpoint, tmp_path, model_init_kwargs=None, **overrides):
    from visent.trainer.lora import lora_config_for

    model, processor = load_model(checkpoint, model_init_kwargs)
    freeze_vision_tower(model)  # as `visent train` does by default: the language model is trained
    config = VisentConfig(**{
        "output_dir": str(tmp_path), "report_to": "none", "save_strategy": "no", "gradient_checkpointing": False,
        "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 8, "max_steps": 1,
        "learning_rate": 1e-6, "dataset": "lab:counting", "dataset_size": 16, "seed": 0, "token_score": "none",
        "use_cpu": True, **overrides,
    })
    return VisentGRPOTrainer(
        model=model, peft_config=lora_config_for(config, model), reward_funcs=resolve_rewards(["random"]),
        args=config, train_dataset=load_train_dataset("lab:counting", 16, 0), processing_class=processor,
    )


def _changed_fraction(trainer) -> float:
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = total = 0
    for n, p in model.named_parameters():
        if n in before:
            changed += int((p.detach() != before[n]).sum())
            total += p.numel()
    return changed / total


def test_bf16_checkpoint_loaded_by_default_learns_at_lr_1e6(bf16_checkpoint, tmp_path):
    trainer = _trainer(bf16_checkpoint, tmp_path)
    assert trainer.model.dtype == torch.float32
    # embed_tokens rows of tokens absent from the batch get no gradient: the 10% that may stay
    assert _changed_fraction(trainer) >= 0.9


def test_bf16_weights_are_refused_and_would_not_learn(bf16_checkpoint, tmp_path, monkeypatch):
    with pytest.raises(SetupRefused, match=r"bfloat16.*learning_rate 1e-06.*updates vanish"):
        _trainer(bf16_checkpoint, tmp_path, {"dtype": "bfloat16"})
    # The control: the same run with the refusal bypassed barely moves (the reason for the refusal).
    monkeypatch.setattr(grpo_module, "check_update_precision", lambda *a: None)
    trainer = _trainer(bf16_checkpoint, tmp_path, {"dtype": "bfloat16"})
    assert trainer.model.dtype == torch.bfloat16
    assert _changed_fraction(trainer) < 0.1


def test_lora_on_a_bf16_base_trains_an_fp32_adapter(bf16_checkpoint, tmp_path):
    trainer = _trainer(bf16_checkpoint, tmp_path, {"dtype": "bfloat16"}, use_peft=True, learning_rate=1e-5)
    trained = [p for p in trainer.model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # PEFT's adapter: not refused
    assert any(p.dtype == torch.bfloat16 for p in trainer.model.parameters() if not p.requires_grad)
