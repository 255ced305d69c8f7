"""The perception-aware baselines' configs train 2 steps through `visent train` on every family's tiny model.

tiny:qwen2_5_vl runs every one in the default suite (tests/integration/test_trainer_configs.py); here every
baseline runs on the other Qwen families in the default suite (issue #23 item 9), and on the other families in
the slow tier. Families whose processor has no pixel budget get the configs without
`min_pixels` / `max_pixels` (the knob is refused for them: test_image_budget_refused_where_the_family_has_none).
"""

from __future__ import annotations

import os

import pytest
import yaml

from visent.configs import resolve_config
from visent.trainer.callbacks import read_metrics
from visent.trainer.cli import main

METHODS = ("vppo", "papo_g", "papo_d", "cppo", "dapo", "vepo_weight")
QWEN = ("qwen2_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5")
OTHERS = ("gemma3", "smolvlm", "llava_onevision")
TINY_BUDGET = {"min_pixels": 784, "max_pixels": 12544}


def _run(method: str, family: str, tmp_path) -> int:
    with open(resolve_config(method)) as f:
        data = yaml.safe_load(f)
    for key in ("min_pixels", "max_pixels"):
        data.pop(key, None)
    if family in QWEN and method in ("vppo", "papo_g", "papo_d"):
        data.update(TINY_BUDGET)
    cfg = tmp_path / f"{method}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    argv = [
        "--config", str(cfg), "--model_name_or_path", f"tiny:{family}", "--dataset", "lab:counting",
        "--max_steps", "2", "--output_dir", str(out), "--reward_funcs", "random", "--num_generations", "4",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_completion_length", "12",
        "--dataset_size", "16", "--save_strategy", "no", "--gradient_checkpointing", "false",
    ]
    code = main(argv)
    if code == 0:
        assert [r["step"] for r in read_metrics(str(out))] == [1, 2]
    return code


#: In the default suite on every Qwen family: every baseline (the Qwen families are the ones users train these
#: methods on). The other families are slow-tier.
DEFAULT_TIER = set(METHODS)


def _cases():
    for method in METHODS:
        for family in QWEN + OTHERS:
            fast = method in DEFAULT_TIER and family in QWEN
            yield pytest.param(method, family, marks=() if fast else pytest.mark.slow, id=f"{method}-{family}")


@pytest.mark.parametrize("method, family", list(_cases()))
def test_baseline_trains_two_steps(method, family, tmp_path):
    assert _run(method, family, tmp_path) == 0


def test_image_budget_refused_where_the_family_has_none(tmp_path):
    from visent.trainer.config import VisentConfig
    from visent.trainer.grpo import VisentGRPOTrainer
    from visent.trainer.sources import load_model, load_train_dataset, resolve_rewards

    model, processor = load_model("tiny:gemma3")
    config = VisentConfig(output_dir=str(tmp_path), token_score="none", min_pixels=784, report_to="none",
                          num_generations=4, per_device_train_batch_size=4)
    with pytest.raises(ValueError, match="gemma3 processor has no pixel budget") as info:
        VisentGRPOTrainer(model=model, reward_funcs=resolve_rewards(["random"]), args=config,
                          train_dataset=load_train_dataset("lab:counting", 8, 0), processing_class=processor)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=() if f == "qwen2_5_vl" else pytest.mark.slow) for f in ("qwen2_5_vl", *QWEN, *OTHERS)]
)
def test_raw_views_rebuild_the_batch_pixels_exactly(family, tmp_path):
    """A raw-image view that changes nothing (blackout with p = 0) gives back the batch's own pixel_values: the
    raw path re-processes images in the batch's layout for every family, or refuses in one line."""
    import sys

    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from test_trainer import make_trainer, rows_for

    from visent.trainer.perception_pass import raw_view_pixels

    trainer = make_trainer(tmp_path, kind=family, token_score="none", perception_kl_coef=0.01,
                           perturbation="raw_blackout", perturbation_strength=0.0)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    n = batch["completion_ids"].size(0)
    try:
        pixels = raw_view_pixels(trainer, batch, "raw_blackout", 0.0, list(range(n)))
    except ValueError as e:
        assert "\n" not in str(e) and "use a pixel_values perturbation" in str(e)
        return
    torch.testing.assert_close(pixels, batch["pixel_values"], atol=1e-6, rtol=0)
