"""Image perturbations: patch layout, each kind's contract, seeding, and their effect on the JSD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visent.perturb import (
    DEFAULT_STRENGTH,
    PERTURBATIONS,
    PatchLayout,
    diffusion_alpha_bar,
    flatten_patches,
    perturb_pixel_values,
    unflatten_patches,
)

LAYOUT = PatchLayout()


@pytest.fixture(scope="module")
def processed():
    """Two images of different sizes through the real Qwen2-VL image processor (one prompt, two images)."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    rng = np.random.RandomState(0)
    images = [
        Image.fromarray((rng.rand(56, 84, 3) * 255).astype("uint8")),
        Image.fromarray((rng.rand(28, 56, 3) * 255).astype("uint8")),
    ]
    ip = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=112 * 112)
    out = ip(images=images, return_tensors="pt")
    return images, out["pixel_values"], out["image_grid_thw"], PatchLayout.from_processor(ip)


def test_unflatten_recovers_the_processors_image(processed):
    images, pv, grid, layout = processed
    start = 0
    for img, g in zip(images, grid.tolist()):
        n = g[0] * g[1] * g[2]
        frames = unflatten_patches(pv[start : start + n], g, layout)
        mean = torch.tensor(layout.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(layout.image_std).view(1, 3, 1, 1)
        pixels = frames * std + mean
        ref = torch.tensor(np.asarray(img)).permute(2, 0, 1).float() / 255
        assert frames.shape == (layout.temporal_patch_size, 3, *ref.shape[1:])
        for f in pixels:  # both temporal copies are the image
            torch.testing.assert_close(f, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(flatten_patches(frames, g, layout), pv[start : start + n], atol=0, rtol=0)
        start += n


@pytest.mark.parametrize("kind", sorted(PERTURBATIONS))
def test_shape_dtype_and_seeding(processed, kind):
    _, pv, grid, layout = processed

    def run(seed):
        return perturb_pixel_values(kind, pv, grid, torch.Generator().manual_seed(seed), layout=layout)

    a, b, c = run(1), run(1), run(2)
    assert a.shape == pv.shape and a.dtype == pv.dtype
    assert torch.equal(a, b), "same seed must give the same perturbed image"
    if kind == "identity":
        assert torch.equal(a, pv)
    elif kind == "no_image":
        assert torch.equal(a, torch.zeros_like(pv))
    else:
        assert not torch.equal(a, pv)
        assert not torch.equal(a, c), "different seeds must give different noise"
    assert torch.equal(pv, processed[1]), "input must not be modified"


def test_pixel_values_gaussian_std(processed):
    _, pv, grid, layout = processed
    out = perturb_pixel_values("pixel_values_gaussian", pv, grid, torch.Generator().manual_seed(0), 2.0, layout)
    noise = out - pv
    assert abs(noise.std().item() - 2.0) < 0.05
    assert out.abs().max() > 3.0  # no clipping


def test_pixel_gaussian_stays_an_image(processed):
    _, pv, grid, layout = processed
    out = perturb_pixel_values("pixel_gaussian", pv, grid, torch.Generator().manual_seed(0), 0.3, layout)
    mean = torch.tensor(layout.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(layout.image_std).view(1, 3, 1, 1)
    start = 0
    for g in grid.tolist():
        n = g[0] * g[1] * g[2]
        frames = unflatten_patches(out[start : start + n], g, layout) * std + mean
        assert frames.min() >= -1e-5 and frames.max() <= 1 + 1e-5  # clipped to [0, 1]
        assert torch.equal(frames[0], frames[1])  # still image: temporal copies identical
        start += n


def test_diffusion_alpha_bar_against_hand_product():
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    expected = math.prod(1 - b for b in betas[:500])
    assert diffusion_alpha_bar(500) == pytest.approx(expected, rel=1e-12)
    assert diffusion_alpha_bar(0) == 1.0
    # METHOD.md: step 500 is "about 0.5 in [0,1] pixel units" of noise
    assert 0.45 < math.sqrt(1 - diffusion_alpha_bar(500)) / 2 < 0.5
    with pytest.raises(ValueError, match="diffusion step"):
        diffusion_alpha_bar(1001)


def test_patch_blackout_blacks_out_whole_merged_patches(processed):
    _, pv, grid, layout = processed
    out = perturb_pixel_values("patch_blackout", pv, grid, torch.Generator().manual_seed(0), 0.5, layout)
    black = torch.tensor([-m / s for m, s in zip(layout.image_mean, layout.image_std)])
    black_row = black.repeat_interleave(layout.temporal_patch_size * layout.patch_size**2)
    is_black = (out == black_row).all(dim=1)
    start = 0
    for g in grid.tolist():
        n = g[0] * g[1] * g[2]
        groups = is_black[start : start + n].view(-1, layout.merge_size**2)
        assert (groups.all(1) | ~groups.any(1)).all(), "a merged patch is blacked out entirely or not at all"
        assert groups.all(1).sum().item() == round(0.5 * groups.size(0))
        start += n
    assert torch.equal(out[~is_black], pv[~is_black])


def test_unknown_kind_and_bad_shapes(processed):
    _, pv, grid, layout = processed
    with pytest.raises(ValueError, match="valid: .*pixel_values_gaussian"):
        perturb_pixel_values("blur", pv, grid, torch.Generator())
    with pytest.raises(ValueError, match="patch rows"):
        perturb_pixel_values("identity", pv[:-4], grid, torch.Generator(), layout=layout)
    assert set(DEFAULT_STRENGTH) == set(PERTURBATIONS)


# --- effect on the token statistics, through the tiny model's real forward -------------------------


@pytest.fixture(scope="module")
def tiny_batch():
    from PIL import Image

    from visent.models import build_tiny

    model, processor = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=2)
    rng = np.random.RandomState(1)
    imgs = [Image.fromarray((rng.rand(56, 56, 3) * 255).astype("uint8")) for _ in range(2)]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc = processor(images=[[i] for i in imgs], text=[text, text], return_tensors="pt", padding=True)
    completion = torch.randint(10, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    cmask = torch.ones_like(completion)
    cmask[1, 5:] = 0
    batch = {
        "prompt_ids": enc["input_ids"],
        "prompt_mask": enc["attention_mask"],
        "completion_ids": completion,
        "completion_mask": cmask,
        "pixel_values": enc["pixel_values"],
        "image_grid_thw": enc["image_grid_thw"],
        "num_images": [1, 1],
        "mm_token_type_ids": torch.cat([enc["mm_token_type_ids"], torch.zeros_like(completion)], 1),
    }
    return model, processor, batch


def _stats(tiny_batch, kind, seed=0):
    from visent.models.unwrap import backbone_and_head
    from visent.trainer.counterfactual import counterfactual_stats, perturb_batch_images, prompt_seeds

    model, processor, batch = tiny_batch
    from visent.models import adapter_for

    adapter = adapter_for(model)
    seeds = prompt_seeds(batch, seed, step=0, adapter=adapter)
    perturbed = perturb_batch_images(batch, seeds, kind, None, PatchLayout.from_processor(processor), adapter=adapter)
    backbone, head = backbone_and_head(model)
    return counterfactual_stats(backbone, head, batch, [0, 1], perturbed, batch_size=2), perturbed


def test_identity_gives_exactly_zero_jsd(tiny_batch):
    stats, _ = _stats(tiny_batch, "identity")
    assert torch.equal(stats.jsd, torch.zeros_like(stats.jsd))
    assert torch.equal(stats.gap, torch.zeros_like(stats.gap))
    assert (stats.entropy[tiny_batch[2]["completion_mask"].bool()] > 0).all()


@pytest.mark.parametrize("kind", ["pixel_values_gaussian", "pixel_gaussian", "diffusion", "patch_blackout", "no_image"])
def test_real_perturbations_give_positive_jsd(tiny_batch, kind):
    stats, _ = _stats(tiny_batch, kind)
    valid = tiny_batch[2]["completion_mask"].bool()
    assert (stats.jsd[valid] > 0).all()
    assert (stats.jsd[~valid] == 0).all()


def test_statistics_reproducible_by_seed(tiny_batch):
    a, pa = _stats(tiny_batch, "pixel_values_gaussian", seed=3)
    b, pb = _stats(tiny_batch, "pixel_values_gaussian", seed=3)
    _, pc = _stats(tiny_batch, "pixel_values_gaussian", seed=4)
    assert torch.equal(pa, pb) and torch.equal(a.jsd, b.jsd)
    assert not torch.equal(pa, pc)
