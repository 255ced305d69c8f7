"""Every family in the adapter table (``visent.models.all_adapters()``), on its tiny model:

(a) the optimised counterfactual pass (the adapter's savings: vision cache, shared prompt prefix, reused
    rope positions, merged repeats) gives the statistics of the plain pass, which forwards every response
    in full with its own images; and the plain pass's clean entropy equals a forward of each response on
    its own, straight from the processor (so cutting and re-joining image inputs per response is right);
(b) ``identity`` gives JSD exactly 0 and every other perturbation kind a positive JSD on image rows.

A family registered in the table is covered here without any edit to this file.
"""

from __future__ import annotations

import pytest
import torch
from family_batches import make_batch

from visent.core.stats import token_stats_from_hidden
from visent.models import all_adapters
from visent.models.unwrap import backbone_and_head
from visent.perturb import PERTURBATIONS
from visent.trainer import counterfactual as cf
from visent.trainer.counterfactual import forward as cf_forward
from visent.trainer.counterfactual import grouping as cf_grouping
from visent.trainer.counterfactual import images as cf_images

ADAPTERS = {a.name: a for a in all_adapters()}
FIELDS = ("entropy", "entropy_perturbed", "jsd", "kl")
# Rows: prompt groups of different text lengths (left padding), a repeated prompt whose first response is
# skipped, and a response repeated token for token.
TEXTS = ["How many?", "Count the red shapes in the picture, please.", "How many?", "How many?",
         "Count the red shapes in the picture, please.", "How many?"]
WITH_IMAGE = [0, 1, 0, 0, 1, 2]
ROWS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module", params=list(ADAPTERS))
def family(request):
    adapter = ADAPTERS[request.param]
    model, processor = adapter.build_tiny()
    return adapter, model, processor


def _plain(monkeypatch):
    """The unoptimised pass: no vision cache, no shared prefix or reused positions, no merged repeats."""
    monkeypatch.setattr(cf_images, "accepts_encoder_outputs", lambda backbone: False)
    monkeypatch.setattr(cf_forward, "position_ids", lambda *args: None)
    monkeypatch.setattr(cf_grouping, "distinct_responses", lambda batch, rows, groups: (list(rows), list(range(len(rows)))))


def _batch(processor):
    batch, prompts, imgs = make_batch(processor, WITH_IMAGE, texts=TEXTS, completion_len=5)
    batch["completion_mask"][[1, 4], 2:] = 0  # short responses: worth a call of their own (length_parts)
    batch["completion_ids"][5] = batch["completion_ids"][3]  # a repeat within group {0, 2, 3, 5}
    batch["completion_mask"][5] = batch["completion_mask"][3]
    return batch, prompts, imgs


def _perturbed(adapter, processor, batch, kind="pixel_values_gaussian", rows=ROWS):
    seeds = cf.prompt_seeds(batch, 0, 3, rows=rows, adapter=adapter)
    geometry = adapter.image_geometry(processor)
    return cf.perturb_images(batch, seeds, kind, None, geometry, rows, adapter=adapter)


def test_optimised_pass_equals_the_plain_pass(family, monkeypatch):
    adapter, model, processor = family
    batch, prompts, imgs = _batch(processor)
    backbone, head = backbone_and_head(model)
    assert cf.prompt_groups(batch, adapter=adapter) == [0, 1, 0, 0, 1, 2]
    perturbed = _perturbed(adapter, processor, batch)
    shared_calls = []
    with monkeypatch.context() as m:
        real = cf_forward.shared_prefix_hidden
        m.setattr(cf_forward, "shared_prefix_hidden", lambda *a, **k: shared_calls.append(1) or real(*a, **k))
        fast = cf.counterfactual_stats(backbone, head, batch, ROWS, perturbed, batch_size=4, adapter=adapter)
    # The saving the adapter claims is the one that ran (and is compared with the plain pass below).
    assert bool(shared_calls) == adapter.shared_prefix
    with monkeypatch.context() as m:
        m.setattr(cf_forward, "MIN_SPLIT_SAVING", 0)  # split each shared-prefix chunk by length (cache copies)
        split = cf.counterfactual_stats(backbone, head, batch, ROWS, perturbed, batch_size=5, adapter=adapter)
    with monkeypatch.context() as m:
        _plain(m)
        plain = cf.counterfactual_stats(backbone, head, batch, ROWS, perturbed, batch_size=4, adapter=adapter,
                                        share_prefix=False)
    assert float(plain.jsd.sum()) > 0  # the perturbed pass saw another image
    for field in FIELDS:
        torch.testing.assert_close(getattr(fast, field), getattr(plain, field), atol=1e-5, rtol=0)
        torch.testing.assert_close(getattr(split, field), getattr(plain, field), atol=1e-5, rtol=0)

    # Independent of the adapter's split/join: each response alone, straight from the processor.
    C = batch["completion_ids"].size(1)
    for j, b in enumerate(ROWS):
        enc = processor(images=[imgs[b]], text=[prompts[b]], return_tensors="pt")
        inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
        n = int(batch["completion_mask"][b].sum())
        comp = batch["completion_ids"][b : b + 1, :n]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], comp], 1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(comp)], 1)
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in inputs:
                inputs[key] = torch.cat([inputs[key], torch.zeros_like(comp, dtype=inputs[key].dtype)], 1)
        with torch.no_grad():
            hidden = backbone(**inputs, use_cache=False).last_hidden_state[:, -n - 1 : -1]
        alone = token_stats_from_hidden(hidden, hidden, head.weight, torch.ones(1, n))
        torch.testing.assert_close(plain.entropy[j : j + 1, :n], alone.entropy, atol=1e-5, rtol=0)
        assert C >= n


def test_identity_is_exactly_zero_and_every_other_kind_moves_the_model(family):
    adapter, model, processor = family
    batch, _, _ = _batch(processor)
    backbone, head = backbone_and_head(model)
    rows = [0, 1, 5]  # one response per prompt
    for kind in PERTURBATIONS:
        perturbed = _perturbed(adapter, processor, batch, kind, rows)
        stats = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=4, adapter=adapter)
        valid = batch["completion_mask"][rows].bool()
        jsd = stats.jsd[valid]
        if kind == "identity":
            assert torch.equal(jsd, torch.zeros_like(jsd)), f"{adapter.name}: identity moved the model"
        else:
            assert bool((stats.jsd * valid).sum(1).gt(0).all()), f"{adapter.name}: {kind} left a row unmoved"


def test_gemma3_shared_prefix_with_a_window_shorter_than_an_image_block(monkeypatch):
    """Gemma 3's shared prefix with sliding-window layers whose window (4) is shorter than the prompt and than
    an image block (16 tokens, bidirectional inside): the cache keeps only the window, and the prompt call
    builds the image-block attention from ``token_type_ids``; statistics equal the plain full forward's."""
    adapter = ADAPTERS["gemma3"]
    model, processor = adapter.build_tiny(sliding_window=4)
    batch, _, _ = _batch(processor)
    backbone, head = backbone_and_head(model)
    perturbed = _perturbed(adapter, processor, batch)
    shared_calls = []
    with monkeypatch.context() as m:
        real = cf_forward.shared_prefix_hidden
        m.setattr(cf_forward, "shared_prefix_hidden", lambda *a, **k: shared_calls.append(1) or real(*a, **k))
        m.setattr(cf_forward, "MIN_SPLIT_SAVING", 0)  # and a split by length (a copied sliding cache)
        fast = cf.counterfactual_stats(backbone, head, batch, ROWS, perturbed, batch_size=5, adapter=adapter)
    assert shared_calls
    plain = cf.counterfactual_stats(backbone, head, batch, ROWS, perturbed, batch_size=5, adapter=adapter,
                                    forward="full", share_prefix=False)
    assert float(plain.jsd.sum()) > 0
    for field in FIELDS:
        torch.testing.assert_close(getattr(fast, field), getattr(plain, field), atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [4, 128])
def test_gemma3_uncached_masks_are_the_models_own(window):
    """``uncached_masks`` (built without vmap) equals the masks Gemma 3 builds itself from ``token_type_ids``
    for a prompt call, element for element, with left padding, two image blocks and a window shorter than one."""
    from transformers.models.gemma3.modeling_gemma3 import (
        create_masks_for_vision_model,
        get_block_sequence_ids_for_mask,
    )

    adapter = ADAPTERS["gemma3"]
    model, processor = adapter.build_tiny(sliding_window=window)
    batch, _, _ = _batch(processor)
    backbone, _ = backbone_and_head(model)
    P = batch["prompt_ids"].size(1)
    inputs = {"input_ids": batch["prompt_ids"], "attention_mask": batch["prompt_mask"],
              "token_type_ids": batch["token_type_ids"][:, :P]}
    inputs["position_ids"] = adapter.rope_positions(backbone, inputs)
    ours = adapter.uncached_masks(backbone, inputs)
    config = backbone.config.get_text_config()
    embeds = backbone.get_input_embeddings()(inputs["input_ids"])
    theirs = create_masks_for_vision_model(
        config=config, inputs_embeds=embeds, attention_mask=inputs["attention_mask"], cache=None,
        position_ids=inputs["position_ids"], block_sequence_ids=get_block_sequence_ids_for_mask(inputs["token_type_ids"]),
    )
    assert set(ours) == set(theirs) == {"full_attention", "sliding_attention"}
    for kind in ours:
        assert theirs[kind].dtype == torch.bool and torch.equal(ours[kind], theirs[kind].expand_as(ours[kind])), kind
    assert not torch.equal(ours["full_attention"], ours["sliding_attention"]) or window >= P
