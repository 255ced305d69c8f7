"""Each perturbation kind is written once, on whole images (``visent.perturb.ImageSet``); the families
convert their layouts. Every random draw is the one the code before made (``perturb_before_unification.py``,
a frozen copy of it), so every kind gives its results within 1e-6 (bit for bit but for the blackout colour on
tiles, which the old tile code computed in float32 and both now round once from float64): on Qwen patch rows of prompts with one and with two
images of different sizes, and on tiles with letterbox and padding tiles.
"""

from __future__ import annotations

import numpy as np
import perturb_before_unification as old
import pytest
import torch

from visent.perturb import PERTURBATIONS, PatchLayout, TileLayout, perturb_image_tiles, perturb_pixel_values


@pytest.fixture(scope="module")
def patch_rows():
    """Two images of different sizes through the real Qwen2-VL image processor."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    rng = np.random.RandomState(3)
    images = [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for h, w in ((56, 84), (28, 56))]
    ip = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=112 * 112)
    out = ip(images=images, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"], PatchLayout.from_processor(ip)


@pytest.mark.parametrize("kind", sorted(k for k in PERTURBATIONS if k in old.PERTURBATIONS))
@pytest.mark.parametrize("images", ["one", "two"])
def test_patch_rows_equal_the_code_before(patch_rows, kind, images):
    pv, grid, layout = patch_rows
    if images == "one":
        rows = int(grid[0].prod())
        pv, grid = pv[:rows], grid[:1]
    old_layout = old.PatchLayout(**{k: getattr(layout, k) for k in old.PatchLayout.__dataclass_fields__})
    for seed in (0, 1):
        new = perturb_pixel_values(kind, pv, grid, torch.Generator().manual_seed(seed), None, layout)
        before = old.perturb_pixel_values(kind, pv, grid, torch.Generator().manual_seed(seed), None, old_layout)
        assert new.shape == before.shape and new.dtype == before.dtype
        torch.testing.assert_close(new, before, atol=1e-6, rtol=0)


def _tiles(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 8, 8, generator=g)
    valid = torch.ones(3, 8, 8, dtype=torch.bool)
    valid[1, :, 6:] = False  # letterbox
    valid[2] = False  # a padding tile
    return x, valid


@pytest.mark.parametrize("kind", sorted(k for k in PERTURBATIONS if k in old.PERTURBATIONS))
@pytest.mark.parametrize("zero_is_padding", [False, True])
def test_tiles_equal_the_code_before(kind, zero_is_padding):
    x, valid = _tiles()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    layout = TileLayout(mean, std, cell=2, zero_is_padding=zero_is_padding)
    old_layout = old.TileLayout(mean, std, cell=2, zero_is_padding=zero_is_padding)
    for v in (None, valid):
        new = perturb_image_tiles(kind, x, torch.Generator().manual_seed(5), None, layout, v)
        before = old.perturb_image_tiles(kind, x, torch.Generator().manual_seed(5), None, old_layout, v)
        torch.testing.assert_close(new, before, atol=1e-6, rtol=0)
