"""Bad LoRA settings are refused before training with one line: on their own when the config is built
(``VisentConfig`` → ``visent.trainer.lora.lora_settings_error``), against the loaded model before the
trainer wraps it (``lora_config_for``), and by ``visent train`` with exit status 2 and no traceback."""

from __future__ import annotations

import re

import pytest
import torch

from visent.trainer.build import freeze_vision_tower
from visent.trainer.cli import main as train_main
from visent.trainer.config import VisentConfig
from visent.trainer.lora import language_model_targets, lora_config_for, matched_modules


def make(tmp_path, **overrides) -> VisentConfig:
    return VisentConfig(output_dir=str(tmp_path), report_to="none", **overrides)


SETTINGS = [
    ({"use_peft": True, "lora_r": 0}, "lora_r must be an integer >= 1"),
    ({"use_peft": True, "lora_alpha": 0}, "lora_alpha must be > 0"),
    ({"use_peft": True, "lora_dropout": 1.0}, "lora_dropout must be in [0, 1)"),
    ({"use_peft": True, "lora_dropout": 0.05}, "dropout noise"),  # VEPO's JSD needs the same masks
    ({"use_peft": True, "lora_target_modules": ["q_proj("]}, "is not one"),  # one value = a regex
    ({"use_peft": True, "lora_target_modules": ["q_proj", ""]}, "non-empty module names"),
    ({"use_peft": True, "beta": 0.04, "sync_ref_model": True}, "sync_ref_model is not supported with use_peft"),
    ({"lora_r": 8}, "lora_r set but use_peft is false"),
    ({"lora_target_modules": ["q_proj"]}, "use_peft is false"),
]


@pytest.mark.parametrize("overrides,fragment", SETTINGS, ids=[f for _, f in SETTINGS])
def test_bad_lora_settings_fail_with_one_message(tmp_path, overrides, fragment):
    with pytest.raises(ValueError) as info:
        make(tmp_path, **overrides)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_good_lora_settings_are_accepted(tmp_path):
    make(tmp_path, use_peft=True)
    make(tmp_path, use_peft=True, lora_dropout=0.05, token_score="entropy")  # no perturbed pass to disturb
    make(tmp_path, use_peft=True, lora_r=1, lora_alpha=2, lora_target_modules=["q_proj", "v_proj"], use_rslora=True)


@pytest.fixture(scope="module")
def frozen_tiny():
    from visent.trainer.sources import load_model

    model, _ = load_model("tiny:qwen2_5_vl")
    freeze_vision_tower(model)
    return model


def test_default_targets_are_the_language_models_linear_layers(frozen_tiny, tmp_path):
    model = frozen_tiny
    lora = lora_config_for(make(tmp_path, use_peft=True), model)
    assert lora.target_modules == language_model_targets(model)
    names = matched_modules(lora, model)
    decoder = model.get_decoder()
    expected = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                and any(m is d for d in decoder.modules())}
    assert set(names) == expected and expected
    # The vision tower has gate/up/down_proj too: a plain suffix list would have caught them.
    vision_mlps = [n for n, _ in model.named_modules() if ".visual." in n and n.endswith("up_proj")]
    assert vision_mlps and not set(vision_mlps) & set(names)
    assert "lm_head" not in names


MODEL_LEVEL = [
    (["nonexistent_proj"], "matches no module"),
    (["self_attn", "q_proj"], "which LoRA cannot wrap"),  # several values match name suffixes
    (["lm_head"], "LoRA on the LM head (lm_head) is not supported"),
    (["all-linear"], "puts adapters on frozen modules"),  # all-linear includes the frozen vision tower
    ([r"model\.visual\..*\.qkv"], "puts adapters on frozen modules"),
]


@pytest.mark.parametrize("targets,fragment", MODEL_LEVEL, ids=[f for _, f in MODEL_LEVEL])
def test_targets_that_do_not_fit_the_model_are_refused(frozen_tiny, tmp_path, targets, fragment):
    with pytest.raises(ValueError) as info:
        lora_config_for(make(tmp_path, use_peft=True, lora_target_modules=targets), frozen_tiny)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_lm_head_in_modules_to_save_is_refused(frozen_tiny, tmp_path):
    with pytest.raises(ValueError, match=re.escape("LoRA on the LM head")):
        lora_config_for(make(tmp_path, use_peft=True, lora_modules_to_save=["lm_head"]), frozen_tiny)


def test_modules_to_save_must_exist_and_be_trainable(frozen_tiny, tmp_path):
    with pytest.raises(ValueError, match="names no module"):
        lora_config_for(make(tmp_path, use_peft=True, lora_modules_to_save=["projector"]), frozen_tiny)
    with pytest.raises(ValueError, match="would train frozen modules"):
        lora_config_for(make(tmp_path, use_peft=True, lora_modules_to_save=["merger"]), frozen_tiny)
    lora = lora_config_for(make(tmp_path, use_peft=True, lora_modules_to_save=["embed_tokens"]), frozen_tiny)
    assert lora.modules_to_save == ["embed_tokens"]


@pytest.mark.parametrize(
    "extra,fragment",
    [(["--use_peft", "--lora_r", "0"], "lora_r must be an integer >= 1"),
     (["--use_peft", "--lora_target_modules", "nonexistent_proj"], "matches no module")],
    ids=["settings", "model"],
)
def test_visent_train_exits_2_with_one_line(tmp_path, capsys, extra, fragment):
    argv = ["--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", "lab:counting", "--report_to", "none",
            "--output_dir", str(tmp_path / "out"), *extra]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and err.startswith("visent train:") and len(err.splitlines()) == 1, err
