"""The whole-image and tiled families (Gemma 3, SmolVLM2, LLaVA-OneVision): what is particular to their
layouts, checked against the real processors and models rather than against the adapters' own claims.

The table-wide checks (optimised counterfactual pass = plain pass, training runs) live with the adapter
table's parametrised tests; here: the tiny builders, the units and joins, padding, the geometry read from
the processor, the vision cache, and that every perturbation kind moves the model (identity exactly not).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from visent.core.stats import token_stats_from_hidden
from visent.models import adapter_named
from visent.perturb import PERTURBATIONS

FAMILIES = ("gemma3", "smolvlm", "llava_onevision")
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}]


@pytest.fixture(scope="module")
def built():
    return {name: adapter_named(name).build_tiny() for name in FAMILIES}


def _noise_image(w, h, seed):
    """An RGB image of noise in [30, 255]: no pixel is black, so letterbox padding is recognisable."""
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(30, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
    return Image.fromarray(arr)


# Sizes (w, h): the lab's square images, a wide and two tall ones (the last two give SmolVLM fewer tiles
# than the others, hence padding tiles in a batch with them).
SIZES = ((84, 60), (56, 56), (20, 70), (90, 33))


def _batch(processor, sizes=SIZES, completion="0"):
    text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    images = [[_noise_image(w, h, seed=w * 1000 + h)] for w, h in sizes]  # equal sizes, equal images
    inputs = processor(images=images, text=[text + completion] * len(sizes), padding=True, return_tensors="pt")
    batch = {k: v for k, v in inputs.items() if k != "batch_num_images"}
    batch["num_images"] = [1] * len(sizes)
    batch["completion_ids"] = inputs["input_ids"][:, -1:]
    return batch


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_builder_is_deterministic_and_leaves_the_global_rng_alone(name):
    adapter = adapter_named(name)
    state = torch.random.get_rng_state()
    a, pa = adapter.build_tiny(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, pb = adapter.build_tiny(seed=0)
    c, _ = adapter.build_tiny(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert pa.tokenizer.get_vocab() == pb.tokenizer.get_vocab()
    assert type(a).__name__ == adapter.model_class and type(pa).__name__ == adapter.processor_class
    assert adapter.model_types == (a.config.model_type,)


@pytest.mark.parametrize("name", FAMILIES)
def test_chat_template_takes_trl_image_parts_and_the_model_generates(name, built):
    model, processor = built[name]
    batch = _batch(processor, completion="")
    ids = batch["input_ids"]
    image_token = model.config.image_token_id
    # The placeholder was expanded to one token per image feature for every row.
    assert bool(((ids == image_token).sum(1) > 0).all())
    inputs = {k: v for k, v in batch.items() if k not in ("num_images", "completion_ids")}
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=True)
    assert ids.size(1) < out.size(1) <= ids.size(1) + 4
    assert torch.equal(out[:, : ids.size(1)], ids)


@pytest.mark.parametrize("name", FAMILIES)
def test_units_join_back_to_the_batch(name, built):
    _, processor = built[name]
    adapter = adapter_named(name)
    batch = _batch(processor)
    units = adapter.units(batch)
    assert [len(u) for u in units] == [1] * len(SIZES)
    joined = adapter.join_images(units)
    for key in adapter.image_keys:
        if key in batch:
            assert torch.equal(joined[key], batch[key]), key
    # Responses 1 and 3 alone: their slices, in order.
    some = adapter.join_images([units[1], units[3]])
    assert torch.equal(some["pixel_values"], batch["pixel_values"][[1, 3]])


def test_geometry_is_read_from_the_processor(built):
    import copy

    for name, cell in (("gemma3", 64 // 4), ("smolvlm", 32 // 2), ("llava_onevision", 14)):
        adapter = adapter_named(name)
        _, processor = built[name]
        geo = adapter.image_geometry(processor)
        tiles = getattr(geo, "tiles", geo)
        assert tiles.cell == cell, name
        ip = processor.image_processor
        assert tiles.image_mean == tuple(float(m) for m in ip.image_mean), name
        other = copy.deepcopy(processor)
        other.image_processor.image_mean = [0.25, 0.5, 0.75]
        other_tiles = getattr(adapter.image_geometry(other), "tiles", adapter.image_geometry(other))
        assert other_tiles.image_mean == (0.25, 0.5, 0.75), name


def test_llava_onevision_real_pixels_match_the_image_processor(built):
    """``valid_tiles`` recomputes the processor's letterboxed canvas: every pixel it calls padding is the
    processor's black fill, every pixel it calls real is not (the images have no black pixel), and
    padding tile slots are all zero."""
    from visent.models.llava_onevision import valid_tiles

    _, processor = built["llava_onevision"]
    geo = adapter_named("llava_onevision").image_geometry(processor)
    sizes = SIZES + ((30, 30), (100, 47), (47, 100), (61, 29))
    batch = _batch(processor, sizes)
    mean = torch.tensor(geo.tiles.image_mean).view(3, 1, 1)
    std = torch.tensor(geo.tiles.image_std).view(3, 1, 1)
    black = -mean / std
    for i, unit in enumerate(adapter_named("llava_onevision").units(batch)):
        tiles = unit[0]["pixel_values"][0]
        valid = valid_tiles(unit[0]["image_sizes"][0].tolist(), tiles.shape[0], geo)
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        n = image_size_to_num_patches(unit[0]["image_sizes"][0].tolist(), processor.image_processor.image_grid_pinpoints, geo.tile_size)
        assert bool(valid[:n].flatten(1).any(1).all()) and not bool(valid[n:].any()), sizes[i]
        assert bool((tiles[n:] == 0).all())
        is_black = ((tiles[:n] - black).abs() < 1e-5).all(1)
        assert torch.equal(~is_black, valid[:n]), sizes[i]


def test_smolvlm_padding_tiles_stay_padding_and_the_model_still_runs(built):
    model, processor = built["smolvlm"]
    adapter = adapter_named("smolvlm")
    batch = _batch(processor)
    pv = batch["pixel_values"]
    padding = (pv == 0).flatten(2).all(-1)  # (B, N_tiles)
    assert bool(padding.any()), "the test batch should need padding tiles"
    geo = adapter.image_geometry(processor)
    units = adapter.units(batch)
    for kind in PERTURBATIONS:
        noisy = [adapter.perturb(kind, row, torch.Generator().manual_seed(0), None, geo) for row in units]
        joined = adapter.join_images(noisy)
        assert torch.equal((joined["pixel_values"] == 0).flatten(2).all(-1), padding), kind
        assert torch.equal(joined["pixel_attention_mask"], batch["pixel_attention_mask"]), kind
        inputs = {k: v for k, v in batch.items() if k not in ("num_images", "completion_ids")}
        model.model(**{**inputs, "pixel_values": joined["pixel_values"]})  # image tokens still match


@pytest.mark.parametrize("name", FAMILIES)
def test_vision_cache_gives_the_decoder_what_pixel_values_give(name, built):
    model, processor = built[name]
    adapter = adapter_named(name)
    batch = _batch(processor)
    inputs = {k: v for k, v in batch.items() if k not in ("num_images", "completion_ids")}
    backbone = model.model
    with torch.no_grad():
        plain = backbone(**inputs).last_hidden_state
        units = [u for row in adapter.units(batch) for u in row]
        # Encoded one at a time (as a cache of distinct images would), handed over together.
        pieces = [p for u in units for p in adapter.encode_images(backbone, [u])]
        cached_inputs = {k: v for k, v in inputs.items() if k not in adapter.image_keys}
        cached_inputs["mm_encoder_outputs"] = {"image": adapter.encoder_outputs(pieces)}
        cached = backbone(**cached_inputs).last_hidden_state
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_kind_but_identity_moves_the_next_token_distribution(name, built):
    """Plain clean and perturbed forwards (no saving involved): identity gives JSD exactly 0, every other
    kind a positive JSD at the prediction after the image."""
    model, processor = built[name]
    adapter = adapter_named(name)
    batch = _batch(processor, sizes=((84, 60), (56, 56)))
    inputs = {k: v for k, v in batch.items() if k not in ("num_images", "completion_ids")}
    geo = adapter.image_geometry(processor)
    units = adapter.units(batch)
    head = model.get_output_embeddings()
    mask = torch.ones(len(units), 1)
    with torch.no_grad():
        clean = model.model(**inputs).last_hidden_state[:, -1:]
        for kind in PERTURBATIONS:
            noisy = [adapter.perturb(kind, row, torch.Generator().manual_seed(1), None, geo) for row in units]
            pert = model.model(**{**inputs, **adapter.join_images(noisy)}).last_hidden_state[:, -1:]
            jsd = token_stats_from_hidden(clean, pert, head.weight, mask).jsd
            if kind == "identity":
                assert bool((jsd == 0).all()), kind
            else:
                assert bool((jsd > 0).all()), (kind, jsd)


@pytest.mark.parametrize("name", FAMILIES)
def test_optimised_counterfactual_pass_equals_the_plain_one_with_padding_tiles(name, built, monkeypatch):
    """As the table-wide test, on images of mixed aspect ratios: SmolVLM rows then carry padding tiles and
    OneVision images letterboxed tiles and padding slots, and each prompt appears twice (K = 2)."""
    from visent.models.unwrap import backbone_and_head
    from visent.trainer import counterfactual as cf

    model, processor = built[name]
    adapter = adapter_named(name)
    sizes = [s for s in SIZES for _ in range(2)]
    batch = _batch(processor, sizes)
    n = len(sizes)
    prompt_ids, prompt_mask = batch.pop("input_ids"), batch.pop("attention_mask")
    completion = torch.randint(10, 60, (n, 4), generator=torch.Generator().manual_seed(0))
    batch.update(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion,
                 completion_mask=torch.ones_like(completion))
    if "token_type_ids" in batch:
        batch["token_type_ids"] = torch.cat([batch["token_type_ids"], torch.zeros_like(completion)], 1)
    rows = list(range(n))
    assert cf.prompt_groups(batch, adapter=adapter) == [b // 2 for b in rows]
    seeds = cf.prompt_seeds(batch, 0, 1, adapter=adapter)
    perturbed = cf.perturb_images(batch, seeds, "pixel_gaussian", None, adapter.image_geometry(processor), adapter=adapter)
    backbone, head = backbone_and_head(model)
    fast = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=3, adapter=adapter)
    from visent.trainer.counterfactual import forward as cf_forward
    from visent.trainer.counterfactual import grouping as cf_grouping
    from visent.trainer.counterfactual import images as cf_images

    monkeypatch.setattr(cf_images, "accepts_encoder_outputs", lambda backbone: False)
    monkeypatch.setattr(cf_forward, "position_ids", lambda *args: None)
    monkeypatch.setattr(cf_grouping, "distinct_responses", lambda batch, rows, groups: (list(rows), list(range(len(rows)))))
    plain = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=3, adapter=adapter,
                                    share_prefix=False)
    assert bool((plain.jsd.sum(1) > 0).all())
    for field in ("entropy", "entropy_perturbed", "jsd", "kl"):
        torch.testing.assert_close(getattr(fast, field), getattr(plain, field), atol=1e-5, rtol=0)


def test_llava_onevision_refuses_a_prompt_with_several_images_clearly(built):
    _, processor = built["llava_onevision"]
    batch = _batch(processor, sizes=((84, 60), (56, 56)))
    batch["num_images"] = [2, 0]
    with pytest.raises(ValueError, match="one image per prompt"):
        adapter_named("llava_onevision").units(batch)
