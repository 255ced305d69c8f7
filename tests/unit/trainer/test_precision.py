"""visent.trainer.precision: the half-ulp formula against what bf16/fp16 arithmetic really does, and the
refusal/warning thresholds of ``check_update_precision``."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from visent.trainer.precision import (
    SetupRefused,
    check_update_precision,
    training_load_kwargs,
    update_vanishes,
    vanishing_lr,
    vanishing_update_fraction,
)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("step", [1e-6, 1e-5, 1e-4, 1e-3])
def test_predicted_vanishing_matches_real_rounding(dtype, step):
    g = torch.Generator().manual_seed(0)
    # magnitudes over several decades, both signs, plus zeros
    w64 = torch.randn(20000, generator=g, dtype=torch.float64) * 10 ** torch.empty(20000, dtype=torch.float64).uniform_(
        -4, 0, generator=g
    )
    w64[:50] = 0
    w = w64.to(dtype)
    moved = (w + torch.tensor(step, dtype=torch.float64)).to(dtype) != w  # exact sum, one rounding to dtype
    predicted = ~update_vanishes(w, step)
    # Ties (|u| exactly half an ulp) and the halved spacing below a power of two (negative w moving up in
    # magnitude is fine; positive w crossing down is not what +step does) are the only disagreements.
    assert (moved == predicted).float().mean() > 0.999
    assert moved[:50].all(), "a zero weight takes any step"


def test_fraction_and_lr_are_by_element_count():
    small = torch.full((100,), 1e-3, dtype=torch.bfloat16)  # half-ulp 2^-10·2^-8... ≈ 1.9e-6
    big = torch.full((10000,), 1.0, dtype=torch.bfloat16)  # half-ulp 2^-8 ≈ 3.9e-3
    assert vanishing_update_fraction([small, big], 1e-4) == pytest.approx(10000 / 10100)
    assert vanishing_update_fraction([small, big], 1e-2) == 0.0
    assert vanishing_lr([small, big], 0.5) == pytest.approx(2.0**-8)
    assert vanishing_lr([small], 0.5) == pytest.approx(torch.finfo(torch.bfloat16).eps / 2 * 2.0**-10)


def _model(dtype, scale=0.02):
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p, dtype=torch.float32).to(dtype) * scale)
    return model


def test_bf16_weights_at_rl_learning_rate_are_refused_in_one_line():
    with pytest.raises(SetupRefused) as e:
        check_update_precision(_model(torch.bfloat16), SimpleNamespace(learning_rate=1e-6, optim="adamw_torch_fused"))
    msg = str(e.value)
    assert "\n" not in msg and "bfloat16" in msg and "learning_rate 1e-06" in msg and "below lr ≈" in msg
    assert "float32" in msg  # says what to do


def test_fp32_weights_and_frozen_bf16_weights_pass(caplog):
    args = SimpleNamespace(learning_rate=1e-6, optim="adamw_torch")
    check_update_precision(_model(torch.float32), args)
    frozen = _model(torch.bfloat16).requires_grad_(False)
    check_update_precision(frozen, args)  # a frozen bf16 base (LoRA) is fine
    with caplog.at_level(logging.WARNING):
        check_update_precision(_model(torch.bfloat16), SimpleNamespace(learning_rate=1e-2, optim="adamw_torch"))
    assert not caplog.records  # at lr 1e-2 bf16 weights of size 0.02 move


def test_deepspeed_keeps_its_own_fp32_master_weights():
    args = SimpleNamespace(learning_rate=1e-6, optim="adamw_torch", deepspeed_plugin=object())
    check_update_precision(_model(torch.bfloat16), args)


def test_unknown_step_size_optimizers_only_warn(caplog):
    with caplog.at_level(logging.WARNING):
        check_update_precision(_model(torch.bfloat16), SimpleNamespace(learning_rate=1e-6, optim="sgd"))
    assert len(caplog.records) == 1 and "step size is unknown" in caplog.records[0].getMessage()


def test_training_loads_float32_unless_told_otherwise():
    assert training_load_kwargs(None) == {"dtype": torch.float32}
    assert training_load_kwargs({"dtype": "bfloat16", "attn_implementation": "sdpa"}) == {
        "dtype": "bfloat16", "attn_implementation": "sdpa"
    }
