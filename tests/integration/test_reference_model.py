"""KL to a reference model (``beta > 0``) without LoRA, through ``visent train``'s own trainer build.

TRL 1.16 rebuilds the reference model from the policy's ``config._name_or_path``; a ``tiny:<family>``
model names no checkpoint, so the seam (``visent.trainer._trl_seam``) hands TRL a frozen deep copy of
the initial policy instead. A policy loaded from a checkpoint keeps TRL's own reload.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from visent.trainer.build import build_trainer
from visent.trainer.callbacks import read_metrics
from visent.trainer.cli import parse_config
from visent.trainer.sources import load_model

ROOT = Path(__file__).resolve().parents[2]


def _argv(model: str, out) -> list[str]:
    return [
        "--config", "grpo",
        "--model_name_or_path", model,
        "--dataset", "lab:counting",
        "--dataset_size", "8",
        "--reward_funcs", "random",
        "--beta", "0.04",
        "--num_generations", "4",
        "--per_device_train_batch_size", "8",
        "--max_completion_length", "8",
        "--max_steps", "2",
        "--learning_rate", "1e-2",
        "--logging_steps", "1",
        "--save_strategy", "no",
        "--report_to", "none",
        "--gradient_checkpointing", "false",
        "--output_dir", str(out),
    ]  # fmt: skip


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _shares_storage(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    ptrs = {p.data_ptr() for p in a.parameters()}
    return any(p.data_ptr() in ptrs for p in b.parameters())


# LLaVA-OneVision: TRL's reference forward also gets the processor's ``batch_num_images`` (the seam drops it).
@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_tiny_model_trains_with_kl_to_a_frozen_copy_of_the_initial_policy(tmp_path, monkeypatch, family):
    trainer = build_trainer(parse_config(_argv(f"tiny:{family}", tmp_path)))
    ref = trainer.ref_model
    assert ref is not None and ref is not trainer.model
    assert not _shares_storage(ref, trainer.model), "the reference must be a copy, not the policy's tensors"
    assert not any(p.requires_grad for p in ref.parameters())
    initial = _weights(trainer.model)
    ref_weights = _weights(ref)
    assert ref_weights.keys() == initial.keys()
    assert all(torch.equal(ref_weights[k], initial[k]) for k in initial), "reference != initial policy"

    trainer.train()

    after_ref = _weights(ref)
    assert all(torch.equal(after_ref[k], initial[k]) for k in initial), "the reference model was trained"
    after = _weights(trainer.model)
    assert any(not torch.equal(after[k], initial[k]) for k in initial), "the policy did not move"
    kl = [row["loss/kl"] for row in read_metrics(tmp_path) if "loss/kl" in row]
    assert len(kl) == 2 and all(math.isfinite(v) for v in kl), kl
    # Step 1 samples from the initial policy, which the reference equals: KL 0. Step 2's policy moved.
    assert abs(kl[0]) < 1e-6 and kl[1] > 0, kl


def test_a_checkpoint_policy_keeps_trls_reload_of_the_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    model, processor = load_model("tiny:qwen2_5_vl")
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    argv = _argv(str(ckpt), tmp_path / "run") + ["--max_steps", "1"]
    trainer = build_trainer(parse_config(argv))
    ref = trainer.ref_model
    assert ref is not None and not _shares_storage(ref, trainer.model)
    assert ref.config._name_or_path == str(ckpt)  # TRL loaded it from the checkpoint, as before
    policy, reloaded = _weights(trainer.model), _weights(ref)
    assert reloaded.keys() == policy.keys()
    assert all(torch.equal(reloaded[k], policy[k]) for k in policy)
