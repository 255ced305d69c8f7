"""DAPO dynamic sampling through TRL's real GRPOTrainer on tiny Qwen2.5-VL (CPU): uniform groups are dropped
and refilled, the merged batch is a valid generation batch, and the batch-scaled advantages are recomputed."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import K, make_trainer, rows_for

from visent.trainer._trl_seam import concat_generation_batches, select_generation_rows
from visent.trainer.callbacks import read_metrics


def even_prompt_uniform(completions, answer, **kw):
    """1.0 for every response of a prompt whose answer is even (a uniform group); the response's length
    parity otherwise (varied groups, mostly)."""
    out = []
    for c, a in zip(completions, answer):
        text = c[-1]["content"] if isinstance(c, list) else c
        out.append(1.0 if int(a) % 2 == 0 else float(len(text) % 2))
    return out


def test_select_and_concat_rebuild_a_generation_batch(tmp_path):
    trainer = make_trainer(tmp_path, token_score="none")
    batch = trainer.generation_batch(rows_for(trainer, 3))
    n = batch["completion_ids"].size(0)
    a = select_generation_rows(batch, torch.arange(0, K))
    b = select_generation_rows(batch, torch.arange(K, n))
    merged = concat_generation_batches([a, b])
    for key in ("completion_ids", "completion_mask", "advantages", "pixel_values", "image_grid_thw"):
        assert torch.equal(merged[key], batch[key]), key
    assert merged["num_images"] == batch["num_images"]
    # prompt-side keys are re-padded on the left: the real tokens are unchanged
    w = batch["prompt_ids"].size(1)
    assert merged["prompt_ids"].size(1) == w  # the widest part sets the width
    assert torch.equal(merged["prompt_ids"], batch["prompt_ids"]) and torch.equal(merged["prompt_mask"], batch["prompt_mask"])
    assert torch.equal(merged["mm_token_type_ids"], batch["mm_token_type_ids"])
    assert int(merged["num_items_in_batch"]) == int(batch["completion_mask"].sum())


def test_uniform_groups_are_dropped_and_refilled(tmp_path):
    trainer = make_trainer(
        tmp_path, rewards=(even_prompt_uniform,), token_score="none", dynamic_sampling="verl",
        scale_rewards="batch", max_steps=2,
    )
    trainer.model.train()
    answers = [int(trainer.train_dataset[i]["answer"]) for i in range(2)]
    rows = rows_for(trainer, 2)
    batch = trainer._generate_and_score_completions(rows)
    adv = batch["advantages"].view(-1, K)
    # every kept group varies, so no group has all-zero advantages; batch-scaled advantages are centred per group
    assert batch["completion_ids"].size(0) == 2 * K
    assert torch.allclose(adv.mean(dim=1), torch.zeros(2), atol=1e-5)
    assert bool((adv.abs().sum(dim=1) > 0).all())  # no uniform group survived
    if any(a % 2 == 0 for a in answers):  # a uniform group was drawn first: a refill was needed
        assert trainer._metrics["train"]["dynamic_sampling/dropped_groups"][-1] >= 1
        assert trainer._metrics["train"]["dynamic_sampling/tries"][-1] >= 2
    trainer.train()
    rows = read_metrics(str(tmp_path))
    assert all(r["dynamic_sampling/tries"] >= 1 and r["dynamic_sampling/kept_groups"] == 2 for r in rows)


def always_right(completions, **kw):
    """1.0 for every response: every group is uniform, so no batch can be filled with informative groups."""
    return [1.0] * len(completions)


def test_top_up_fills_an_unfillable_batch_with_zero_advantage_groups(tmp_path):
    import pytest

    from visent.trainer.dynamic_sampling import DynamicSamplingError

    kw = {"rewards": (always_right,), "token_score": "none", "dynamic_sampling": "verl", "dynamic_sampling_max_tries": 2}
    trainer = make_trainer(tmp_path / "error", **kw)
    trainer.model.train()  # dynamic sampling filters training batches only
    with pytest.raises(DynamicSamplingError, match="found 0 of 2 groups"):
        trainer._generate_and_score_completions(rows_for(trainer, 2))
    trainer = make_trainer(tmp_path / "top_up", dynamic_sampling_on_exhaust="top_up", **kw)
    trainer.model.train()
    batch = trainer._generate_and_score_completions(rows_for(trainer, 2))
    assert batch["completion_ids"].size(0) == 2 * K
    assert torch.equal(batch["advantages"], torch.zeros_like(batch["advantages"]))
    metrics = trainer._metrics["train"]
    assert metrics["dynamic_sampling/topped_up_groups"][-1] == 2 and metrics["dynamic_sampling/tries"][-1] == 2
