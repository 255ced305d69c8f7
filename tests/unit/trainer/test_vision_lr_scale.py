"""`vision_lr_scale`: the vision tower's parameters get their own optimizer group at lr × scale, every
trained parameter is stepped exactly once, the schedule keeps the ratio, and a frozen tower refuses it."""

from __future__ import annotations

import pytest
import torch

from visent.trainer.build import build_trainer
from visent.trainer.config import VisentConfig
from visent.trainer.param_groups import vision_modules


def _trainer(tmp_path, **overrides):
    cfg = {
        "model_name_or_path": "tiny:qwen2_5_vl",
        "dataset": "lab:counting",
        "dataset_size": 8,
        "reward_funcs": ["random"],
        "output_dir": str(tmp_path),
        "report_to": "none",
        "save_strategy": "no",
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "max_completion_length": 4,
        "max_steps": 10,
        "learning_rate": 1e-2,
        "freeze_vision_tower": False,
        "optim": "sgd",  # the update is lr × gradient: the ratio can be read off the weights
        "lr_scheduler_type": "linear",
        "warmup_steps": 2,
        "seed": 0,
    }
    cfg.update(overrides)
    return build_trainer(VisentConfig(**cfg))


def _updates(trainer):
    """One SGD step with every gradient = 1: returns {parameter name: -Δw (all elements equal)}."""
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.lr_scheduler.step()  # past the first warmup step, where linear warmup's lr is 0
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p) if p.requires_grad else None
    trainer.optimizer.step()
    return {n: (before[n] - p.detach()).flatten() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_vision_parameters_step_at_the_scaled_rate_and_the_rest_at_the_base_rate(tmp_path):
    base = _updates(_trainer(tmp_path / "a"))
    trainer = _trainer(tmp_path / "b", vision_lr_scale=0.25)
    scaled = _updates(trainer)
    vision_ids = {id(p) for m in vision_modules(trainer.model) for p in m.parameters()}
    vision_names = {n for n, p in trainer.model.named_parameters() if id(p) in vision_ids}
    assert vision_names and len(vision_names) < len(scaled)
    assert base.keys() == scaled.keys()
    for name, delta in scaled.items():
        expected = base[name] * (0.25 if name in vision_names else 1.0)
        # w − lr·1 rounds to float32 at |w| (norm weights are 1.0): half an ulp of 1 is 6e-8
        torch.testing.assert_close(delta, expected, rtol=1e-5, atol=2e-7, msg=name)
    # every trained tensor is in exactly one group, and the scheduler keeps the ratio
    ids = [id(p) for g in trainer.optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(scaled)
    lrs = sorted({round(g["lr"], 12) for g in trainer.optimizer.param_groups})
    assert len(lrs) == 2 and lrs[0] == pytest.approx(0.25 * lrs[1])


def test_scaling_a_frozen_tower_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="freeze_vision_tower is true"):
        VisentConfig(output_dir=str(tmp_path), freeze_vision_tower=True, vision_lr_scale=0.5)
    with pytest.raises(ValueError, match="vision_lr_scale must be > 0"):
        VisentConfig(output_dir=str(tmp_path), freeze_vision_tower=False, vision_lr_scale=0.0)
