"""Adding a family is adding an adapter entry: a family registered here, in the test (not in ``src``), gets
the counterfactual pass with every saving (vision cache, shared prompt prefix with length split, reused
positions) and trains with VEPO, through its own hooks, without any edit to the pass or the trainer. A
model no adapter serves is refused.

The fake family is a tiny Qwen2-VL relabelled ``fake_vl``: its image handling reuses the patch-rows
functions, and its position and cache hooks are written here (counting their calls), so the pass can only
have reached the family's mechanics through the adapter.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from test_counterfactual import make_batch

from visent.models import UnsupportedModel, adapter_named, adapters, qwen
from visent.models.unwrap import backbone_and_head
from visent.trainer import counterfactual as cf
from visent.trainer.counterfactual import forward as cf_forward
from visent.trainer.counterfactual import grouping as cf_grouping

CALLS: Counter = Counter()


def _slice(positions, rows, columns=slice(None)):
    CALLS["slice_positions"] += 1
    return positions[:, rows, columns]


def _join(parts, rows):
    CALLS["join_positions"] += 1
    if not parts or any(p is None or p.dim() != 3 for p in parts):
        return None
    out = torch.cat(list(parts), dim=1)
    return out if out.size(1) == rows else None


def _copy(kv):
    CALLS["copy_cache"] += 1
    return adapters.copy_layered_cache(kv)


def _reorder(kv, index):
    CALLS["reorder_cache"] += 1
    kv.reorder_cache(index)
    return kv


def _rope(backbone, inputs):
    CALLS["rope_positions"] += 1
    return qwen.mrope_positions(backbone, inputs)


FAKE = adapters.Adapter(
    name="fake_vl",
    model_types=("fake_vl",),
    model_class="Qwen2VLForConditionalGeneration",
    processor_class="Qwen2VLProcessor",
    layout="patch_rows",
    image_keys=("pixel_values", "image_grid_thw"),
    token_keys=("mm_token_type_ids",),
    vision_cache=True,
    shared_prefix=True,
    reuse_positions=True,
    split_images=qwen.split_patch_rows,
    image_geometry=qwen.patch_geometry,
    perturb=qwen.perturb_patch_rows,
    encode_images=qwen.encode_patch_rows,
    encoder_outputs=qwen.encoder_outputs_patch_rows,
    rope_positions=_rope,
    slice_positions=_slice,
    join_positions=_join,
    copy_cache=_copy,
    reorder_cache=_reorder,
    vision_modules=("visual",),
)


@pytest.fixture
def fake_family(monkeypatch):
    """The fake adapter in the table (for this test only) and a tiny model of its ``model_type``."""
    monkeypatch.setitem(adapters._table(), FAKE.name, FAKE)
    model, processor = adapter_named("qwen2_vl").build_tiny(hidden_size=64, num_layers=2)
    model.config.model_type = "fake_vl"
    assert adapters.adapter_for(model) is FAKE
    CALLS.clear()
    return model, processor


def test_a_family_registered_as_an_adapter_entry_gets_the_optimised_pass(fake_family, monkeypatch):
    model, processor = fake_family
    backbone, head = backbone_and_head(model)
    batch = make_batch(processor, [0, 1, 0, 0, 1, None], completion_len=7)
    batch["completion_mask"][[1, 3], 2:] = 0  # short responses: a part of their own (cache copies)
    rows = [1, 2, 3, 4, 5]
    seeds = cf.prompt_seeds(batch, 0, 1, adapter=FAKE)
    perturbed = cf.perturb_images(batch, seeds, "pixel_values_gaussian", None, FAKE.image_geometry(processor),
                                  adapter=FAKE)
    monkeypatch.setattr(cf_forward, "MIN_SPLIT_SAVING", 0)
    fast = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=5)  # adapter looked up
    assert CALLS["rope_positions"] and CALLS["slice_positions"] and CALLS["copy_cache"] and CALLS["reorder_cache"]
    with monkeypatch.context() as m:
        m.setattr(cf_grouping, "distinct_responses", lambda batch, rows, groups: (list(rows), list(range(len(rows)))))
        plain = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=5, forward="full")
    assert float(plain.jsd.sum()) > 0
    for field in ("entropy", "entropy_perturbed", "jsd", "kl"):
        torch.testing.assert_close(getattr(fast, field), getattr(plain, field), atol=1e-5, rtol=0)


def test_a_model_no_adapter_serves_is_refused(fake_family):
    model, processor = fake_family
    stranger = copy.deepcopy(model)
    stranger.config.model_type = "nobody_vl"
    backbone, head = backbone_and_head(stranger)
    batch = make_batch(processor, [0])
    with pytest.raises(UnsupportedModel, match="'nobody_vl'"):
        cf.counterfactual_stats(backbone, head, batch, [0], None)


def test_the_registered_family_trains_with_vepo_through_its_hooks(fake_family, tmp_path):
    from visent.trainer.config import VisentConfig
    from visent.trainer.grpo import VisentGRPOTrainer
    from visent.trainer.sources import load_train_dataset, resolve_rewards

    model, processor = fake_family
    config = VisentConfig(output_dir=str(tmp_path), report_to="none", save_strategy="no", gradient_checkpointing=False,
                          num_generations=4, per_device_train_batch_size=8, max_completion_length=8, max_steps=1,
                          token_score="vepo", selection_ratio=0.3, learning_rate=1e-2, logging_steps=1)
    trainer = VisentGRPOTrainer(model=model, reward_funcs=resolve_rewards(["random"]), args=config,
                                train_dataset=load_train_dataset("lab:counting", 8, 0), processing_class=processor)
    assert trainer.model_adapter is FAKE
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    # The deferred mask reused the training forward's positions through the family's join hook.
    assert CALLS["join_positions"] and CALLS["slice_positions"]
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
