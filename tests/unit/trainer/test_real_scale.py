"""visent.trainer.real_scale: FSDP with token statistics and vLLM colocate that cannot fit are refused in one
line before loading; the memory arithmetic matches hand-computed numbers (docs/training.md)."""

from __future__ import annotations

import pytest

from visent.trainer.cli import main, parse_config
from visent.trainer.precision import SetupRefused
from visent.trainer.real_scale import (
    ModelSize,
    check_real_scale,
    colocate_memory_problem,
    model_size,
    training_state_bytes,
)

TINY = ["--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", "lab:counting"]
# Qwen2.5-VL-7B: 8,291,249,152 parameters, 676,550,144 of them in the vision tower (counted from its config
# on the meta device, benchmarks/gpu/real_scale.py); KV: 28 layers x 2 x 4 heads x 128 x 2 bytes per token.
Q7B = ModelSize(total=8_291_249_152, vision=676_550_144, kv_bytes_per_token=28 * 2 * 4 * 128 * 2)
T7B = Q7B.total - Q7B.vision
GPU = 80e9


def _config(name, *extra):
    return parse_config(["--config", name, *TINY, *extra])


def test_fsdp_with_token_statistics_is_refused_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    code = main(["--config", "vepo", *TINY, "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "FSDP" in err and "ZeRO-3" in err
    check_real_scale(_config("grpo"))  # no token statistics: TRL's own forward, not refused


def test_vllm_colocate_without_max_model_length_is_refused_before_loading(capsys, tmp_path):
    argv = ["--config", "grpo", *TINY, "--use_vllm", "true",
            "--output_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vllm_max_model_length" in err
    with pytest.raises(SetupRefused):
        check_real_scale(_config("grpo", "--use_vllm", "true"))
    check_real_scale(_config("grpo", "--use_vllm", "true", "--vllm_max_model_length", "2048"))  # no GPU here
    check_real_scale(_config("grpo", "--use_vllm", "true", "--vllm_mode", "server"))


def test_training_state_matches_the_hand_arithmetic():
    # fp32 master weights, no DeepSpeed: 4 bytes x every weight + (4 grad + 8 Adam) x every trained weight
    full = training_state_bytes(Q7B, trained=T7B, lora=False, zero_stage=0, world=1, weight_bytes=4)
    assert full / 1e9 == pytest.approx(4 * 8.291249152 + 12 * 7.614699008)  # 124.5 GB
    # ZeRO-3 on 8 GPUs, DeepSpeed bf16: (2 x all + (2 + 12) x trained) / 8
    z3 = training_state_bytes(Q7B, trained=T7B, lora=False, zero_stage=3, world=8, weight_bytes=4)
    assert z3 / 1e9 == pytest.approx((2 * 8.291249152 + 14 * 7.614699008) / 8)  # 15.4 GB
    lora = training_state_bytes(Q7B, trained=T7B, lora=True, zero_stage=0, world=1, weight_bytes=2)
    assert lora / 1e9 == pytest.approx(2 * 8.291249152)


def test_colocate_fits_or_not():
    full = training_state_bytes(Q7B, trained=T7B, lora=False, zero_stage=0, world=1, weight_bytes=4)
    level, msg = colocate_memory_problem(Q7B, full, GPU, 0.3, 2048)
    assert level == "refuse" and "LoRA" in msg
    lora = training_state_bytes(Q7B, trained=T7B, lora=True, zero_stage=0, world=1, weight_bytes=2)
    assert colocate_memory_problem(Q7B, lora, GPU, 0.3, 2048) is None
    assert colocate_memory_problem(Q7B, lora, GPU, 0.15, 2048)[0] == "refuse"  # 12 GB < 16.6 GB of weights
    assert colocate_memory_problem(Q7B, lora, GPU, 0.25, 128_000)[0] == "warn"  # 7.3 GB of KV for one sequence
    z3 = training_state_bytes(Q7B, trained=T7B, lora=False, zero_stage=3, world=8, weight_bytes=4)
    assert colocate_memory_problem(Q7B, z3, GPU, 0.3, 2048) is None


def test_model_size_counts_the_real_model(tmp_path):
    from visent.trainer.sources import load_model

    model, _ = load_model("tiny:qwen2_5_vl")
    model.save_pretrained(tmp_path)
    size = model_size(str(tmp_path))
    assert size.total == sum(p.numel() for p in model.parameters())
    assert size.vision == sum(p.numel() for p in model.model.visual.parameters())
    text = model.config.get_text_config()
    head_dim = text.hidden_size // text.num_attention_heads
    assert size.kv_bytes_per_token == 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 2
