"""The floor under JSD and the entropy gap in bf16 (issue 20, item 5).

A perturbation of 1e-6 in normalised pixel units leaves the bf16 model's input unchanged, so every bit of
JSD and entropy gap it reports is rounding: the clean states come from a full-sequence forward (TRL's),
the perturbed ones from the counterfactual pass. With ``forward="prefix_cached"`` the perturbed rows take
another path (vision encoder once per image, prompt once with its responses against its cache), which in
bf16 may round differently; with ``forward="full"`` they take the clean pass's path. The floors are printed
(``pytest -s``) and recorded in docs/metrics.md.
"""

from __future__ import annotations

import pytest
import torch
from test_counterfactual import QWEN, full_inputs, make_batch

from visent.models.unwrap import backbone_and_head
from visent.perturb import PatchLayout
from visent.trainer import counterfactual as cf

#: The full path's floor (max JSD and max |gap| over valid tokens), measured 0 on CPU: the perturbed rows are
#: the clean rows' inputs through the clean rows' forward, so bf16 rounds them alike.
FULL_FLOOR_BOUND = 0.0


@pytest.fixture(scope="module")
def bf16_tiny():
    from visent.models import build_tiny

    model, processor = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=2)
    return model.to(torch.bfloat16), processor


def floors(model, processor, forward: str) -> dict[str, float]:
    """Max JSD and max |entropy gap| over valid tokens at a 1e-6 perturbation; the clean states come from
    the model run as TRL runs it: every response in full, with its pixels."""
    # 16-token responses: with 8 the cached path happened to round as the full one does on CPU.
    batch = make_batch(processor, [0, 0, 1, 1, 2, 0], completion_len=16)
    backbone, head = backbone_and_head(model)
    rows = list(range(6))
    seeds = cf.prompt_seeds(batch, 0, 0, adapter=QWEN)
    perturbed = cf.perturb_images(batch, seeds, "pixel_values_gaussian", 1e-6, PatchLayout.from_processor(processor),
                                 adapter=QWEN)
    clean = cf.completion_hidden(backbone, full_inputs(batch, rows), 16)
    stats = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, clean_hidden=clean, batch_size=6,
                                    forward=forward)
    valid = batch["completion_mask"].bool()
    return {"jsd": float(stats.jsd[valid].max()), "gap": float(stats.gap[valid].abs().max())}


def test_the_full_forward_removes_the_bf16_floor_of_the_prefix_cached_one(bf16_tiny):
    model, processor = bf16_tiny
    cached, full = floors(model, processor, "prefix_cached"), floors(model, processor, "full")
    print(f"\nbf16 floor at perturbation 1e-6 (CPU): prefix_cached max JSD {cached['jsd']:.3e}, max |gap| "
          f"{cached['gap']:.3e}; full max JSD {full['jsd']:.3e}, max |gap| {full['gap']:.3e}")
    # The cached path has a floor (the prompt run once, its responses against its cache round otherwise in
    # bf16): measured ~4.5e-8 JSD and ~2.6e-5 gap on this model. So this test can see one.
    assert cached["jsd"] > 0 and cached["gap"] > 0
    for key in ("jsd", "gap"):
        assert full[key] <= FULL_FLOOR_BOUND, f"full path floor {key} {full[key]:.3e} > {FULL_FLOOR_BOUND}"
        assert full[key] < cached[key]


def test_an_unknown_forward_is_refused(bf16_tiny):
    model, processor = bf16_tiny
    batch = make_batch(processor, [0])
    backbone, head = backbone_and_head(model)
    with pytest.raises(ValueError, match="prefix_cached, full"):
        cf.counterfactual_stats(backbone, head, batch, [0], None, forward="fast")
