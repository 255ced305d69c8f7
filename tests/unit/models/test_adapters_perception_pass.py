"""Every family in the adapter table, on its tiny model: VPPO's / PAPO's perception pass through the
counterfactual pass's forward (``counterfactual.perturbed_token_logps`` with TRL's log-prob kernel on the
hidden states) gives the sampled tokens' log-probs of TRL's own forward of every row with the perturbed
``pixel_values`` (the reference path, ``counterfactual_forward: full``), within 1e-5:

(a) one draw per prompt (PAPO: vision cache and shared prompt prefix where the adapter allows them), with
    left padding, a text-only row, a response repeated token for token and short responses;
(b) one draw per response (VPPO: nothing shared, every row its own image);
(c) PAPO's raw-image view re-processed by the family's processor, where the processor re-processes
    images alone into the batch's layout, whole or (``raw_view_units``) one draw per prompt, cut per image.

A family registered in the table is covered here without any edit to this file.
"""

from __future__ import annotations

import contextlib
import functools
from types import SimpleNamespace

import pytest
import torch
from family_batches import make_batch

from visent.models import all_adapters
from visent.models.unwrap import backbone_and_head
from visent.trainer import counterfactual as cf
from visent.trainer._trl_seam import RAW_IMAGES, SeamTrainer, fused_head_logps
from visent.trainer.counterfactual import forward as cf_forward
from visent.trainer.perception_pass import _response_seed, raw_view_pixels, raw_view_units

ADAPTERS = {a.name: a for a in all_adapters()}
TEXTS = ["How many?", "Count the red shapes in the picture, please.", "How many?", "How many?",
         "Count the red shapes in the picture, please.", "How many?", "Anything?"]
WITH_IMAGE = [0, 1, 0, 0, 1, 2, None]
TEMPERATURE = 0.7  # not 1: the kernel must divide as TRL's fused head does


@pytest.fixture(scope="module", params=list(ADAPTERS))
def family(request):
    from trl.trainer.utils import add_fused_lm_head

    adapter = ADAPTERS[request.param]
    model, processor = adapter.build_tiny()
    add_fused_lm_head(model, temperature=TEMPERATURE, outputs=("log_probs", "entropy"))  # as GRPOTrainer does
    return adapter, model.eval(), processor


def _batch(processor, with_image=WITH_IMAGE):
    batch, _, imgs = make_batch(processor, with_image, texts=TEXTS[: len(with_image)], completion_len=5)
    batch["completion_mask"][[1, 4], 2:] = 0  # short responses
    batch["completion_ids"][5] = batch["completion_ids"][3]  # a repeat within group {0, 2, 3, 5}
    batch["completion_mask"][5] = batch["completion_mask"][3]
    batch[RAW_IMAGES] = imgs
    return batch


def _batches(processor):
    """The batch with a text-only last row, and the same batch without it (row for row the same tokens,
    padding and images). TRL's forward with replaced ``pixel_values`` needs the batch's own image layout,
    which for some families (SmolVLM: one padded tile stack per row) a text-only row changes, so the
    reference runs the image rows without it and the text-only row with its clean inputs."""
    full, images_only = _batch(processor), _batch(processor, WITH_IMAGE[:-1])
    n = images_only["completion_ids"].size(0)
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert torch.equal(full[key][:n], images_only[key]), key
    return full, images_only


def _reference(model, full, images_only, pixels):
    """TRL's forward: the image rows with the perturbed ``pixels`` (of ``images_only``), the text-only row clean."""
    n = images_only["completion_ids"].size(0)
    return torch.cat([_trl_logps(model, images_only, pixels), _trl_logps(model, full, full["pixel_values"])[n:]])


def _trl_logps(model, batch, pixels):
    """TRL's forward (``SeamTrainer.forward_logps_and_entropies``) of every row with ``pixels``."""
    fake = SimpleNamespace(accelerator=SimpleNamespace(autocast=contextlib.nullcontext, is_main_process=True))
    with torch.no_grad():
        logps, _ = SeamTrainer.forward_logps_and_entropies(fake, model, {**batch, "pixel_values": pixels},
                                                           compute_entropy=False)
    return logps.float() * batch["completion_mask"]


def _fast(adapter, model, batch, pixels, groups, monkeypatch):
    backbone, _ = backbone_and_head(model)
    calls = []
    real = cf_forward.shared_prefix_hidden
    monkeypatch.setattr(cf_forward, "shared_prefix_hidden", lambda *a, **k: calls.append(1) or real(*a, **k))
    logps = cf.perturbed_token_logps(
        backbone, batch, range(batch["completion_ids"].size(0)), pixels,
        functools.partial(fused_head_logps, model, temperature=TEMPERATURE), groups=groups, batch_size=4,
        adapter=adapter,
    )  # fmt: skip
    monkeypatch.undo()
    return logps, bool(calls)


def _check(fast, reference, batch):
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    valid = batch["completion_mask"].bool()
    assert bool((reference[valid] < 0).all())  # real log-probs at every valid token, zeros at padding only


def test_one_draw_per_prompt_equals_trls_forward(family, monkeypatch):
    adapter, model, processor = family
    full, images_only = _batches(processor)
    geometry = adapter.image_geometry(processor)
    seeds, groups = _seeds_and_groups(adapter, full)
    assert groups == [0, 1, 0, 0, 1, 2, 3]
    pixels = cf.perturb_images(full, seeds, "blackout_14px", 0.5, geometry, groups=groups, adapter=adapter)
    fast, shared = _fast(adapter, model, full, pixels, groups, monkeypatch)
    assert shared == adapter.shared_prefix  # the saving the adapter claims is the one that ran
    whole = _perturb_whole(images_only, *_seeds_and_groups(adapter, images_only), geometry, adapter)
    reference = _reference(model, full, images_only, whole)
    assert not torch.allclose(reference, _reference(model, full, images_only, images_only["pixel_values"]))
    _check(fast, reference, full)


def _seeds_and_groups(adapter, batch, per_response=False):
    groups = cf.prompt_groups(batch, adapter=adapter)
    seeds = cf.prompt_seeds(batch, 0, 3, groups, adapter=adapter)
    if per_response:
        seeds = [None if s is None else _response_seed(s, b) for b, s in enumerate(seeds)]
        groups = list(range(len(seeds)))
    return seeds, groups


def _perturb_whole(batch, seeds, groups, geometry, adapter):
    return cf.perturb_batch_images(batch, seeds, "blackout_14px", 0.5, geometry, groups=groups, adapter=adapter)


def test_one_draw_per_response_equals_trls_forward(family, monkeypatch):
    adapter, model, processor = family
    full, images_only = _batches(processor)
    geometry = adapter.image_geometry(processor)
    seeds, groups = _seeds_and_groups(adapter, full, per_response=True)
    pixels = cf.perturb_images(full, seeds, "blackout_14px", 0.5, geometry, groups=groups, adapter=adapter)
    fast, shared = _fast(adapter, model, full, pixels, groups, monkeypatch)
    assert not shared  # nothing to share between responses
    whole = _perturb_whole(images_only, *_seeds_and_groups(adapter, images_only, per_response=True), geometry, adapter)
    _check(fast, _reference(model, full, images_only, whole), full)


def test_raw_image_view_equals_trls_forward(family, monkeypatch):
    adapter, model, processor = family
    full, batch = _batches(processor)  # a text-only row changes some processors' layout: refused for those
    seeds, groups = _seeds_and_groups(adapter, batch)
    trainer = SimpleNamespace(processing_class=processor, model_adapter=adapter)
    try:
        whole = raw_view_pixels(trainer, batch, "raw_blackout", 0.6, seeds)
    except ValueError as e:  # refused in one line for a processor that re-processes images differently
        assert "use a pixel_values perturbation" in str(e)
        pytest.skip(f"{adapter.name}: {e}")
    # Each draw processed once and cut per image: the images of the whole batch processed at once.
    units = raw_view_units(trainer, batch, "raw_blackout", 0.6, seeds)
    reference_units = cf.BatchImages({**batch, "pixel_values": whole}, adapter).units
    assert units is not None and sorted(units) == list(range(len(reference_units)))
    for i, unit in enumerate(reference_units):
        assert torch.equal(units[i], unit["pixel_values"]), i
    with_text_row = raw_view_units(trainer, full, "raw_blackout", 0.6, _seeds_and_groups(adapter, full)[0])
    assert with_text_row is None or all(torch.equal(with_text_row[i], units[i]) for i in units)
    for pixels in (whole, units):
        fast, shared = _fast(adapter, model, batch, pixels, groups, monkeypatch)
        assert shared == adapter.shared_prefix
        _check(fast, _trl_logps(model, batch, whole), batch)


def test_whole_batch_pixels_of_a_mixed_batch_equal_trls_forward(family):
    """The ``counterfactual_forward: full`` path: ``perturb_batch_images`` of a batch with a text-only row
    keeps the batch's own ``pixel_values`` layout (SmolVLM: the text-only row's all-zero tile stack), so TRL's
    forward of every row takes it and gives the reference's log-probs."""
    adapter, model, processor = family
    full, images_only = _batches(processor)
    geometry = adapter.image_geometry(processor)
    whole_full = _perturb_whole(full, *_seeds_and_groups(adapter, full), geometry, adapter)
    assert tuple(whole_full.shape) == tuple(full["pixel_values"].shape)
    whole = _perturb_whole(images_only, *_seeds_and_groups(adapter, images_only), geometry, adapter)
    _check(_trl_logps(model, full, whole_full), _reference(model, full, images_only, whole), full)


def test_raw_image_view_of_a_mixed_batch_equals_trls_forward(family):
    """PAPO's raw-image view re-processed whole (the ``full`` path): a batch with a text-only row is accepted
    wherever the image rows alone are (SmolVLM: the processor is given the text-only row's empty image list,
    as the batch was), and TRL's forward with it gives the reference's log-probs."""
    adapter, model, processor = family
    full, images_only = _batches(processor)
    trainer = SimpleNamespace(processing_class=processor, model_adapter=adapter)
    try:
        whole = raw_view_pixels(trainer, images_only, "raw_blackout", 0.6, _seeds_and_groups(adapter, images_only)[0])
    except ValueError as e:
        pytest.skip(f"{adapter.name}: refused on the image rows alone: {e}")
    whole_full = raw_view_pixels(trainer, full, "raw_blackout", 0.6, _seeds_and_groups(adapter, full)[0])
    _check(_trl_logps(model, full, whole_full), _reference(model, full, images_only, whole), full)
