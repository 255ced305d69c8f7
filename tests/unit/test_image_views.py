"""image_views: PAPO's raw-image blackout and CPPO's views — hand cases, the authors' blackout loop as written,
size, range and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visent.image_views import RAW_VIEWS, cppo_preserving, cppo_removing, grid_blackout, perturb_raw_images


def _papo_blackout_as_written(img: np.ndarray, draws: np.ndarray, patch_size=14, black_prob=0.6):
    """``MikeWangWZHL/PAPO`` @ fb63bf4533b78da5a2bb17bc812375dcb620887d, ``verl/trainer/papo_utils.py:17-30``
    (``random_patch_blackening``), with ``np.random.rand()`` replaced by the same uniform draws in loop order."""
    img = img.astype(np.float32).copy()
    h, w = img.shape[:2]
    k = 0
    for y in range(0, h, patch_size):
        for x in range(0, w, patch_size):
            if draws[k] < black_prob:
                img[y : min(y + patch_size, h), x : min(x + patch_size, w), :] = 0
            k += 1
    return img.astype(np.uint8)


def test_blackout_hand_computed():
    img = torch.ones(3, 20, 30)
    assert torch.equal(grid_blackout(img, torch.Generator().manual_seed(0), p=0.0), img)
    assert grid_blackout(img, torch.Generator().manual_seed(0), p=1.0).sum() == 0
    out = grid_blackout(img, torch.Generator().manual_seed(1), p=0.5)
    # every 14-px cell (edge cells cropped: 2 × 3 cells) is all black or all white
    for y0, y1 in ((0, 14), (14, 20)):
        for x0, x1 in ((0, 14), (14, 28), (28, 30)):
            cell = out[:, y0:y1, x0:x1]
            assert cell.min() == cell.max()


@pytest.mark.parametrize("shape", [(45, 31), (14, 14), (100, 57)])
def test_blackout_equals_papos_loop(shape):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    g = torch.Generator().manual_seed(5)
    ours = perturb_raw_images([Image.fromarray(arr)], "raw_blackout", seed=5, strength=0.6)[0]
    draws = torch.rand((-(-shape[0] // 14), -(-shape[1] // 14)), generator=g).numpy().reshape(-1)
    theirs = _papo_blackout_as_written(arr, draws)
    assert np.array_equal(np.asarray(ours), theirs)


@pytest.mark.parametrize("view", [cppo_preserving, cppo_removing])
def test_views_keep_size_and_range_and_are_seeded(view):
    img = torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(0))
    outs = [view(img, torch.Generator().manual_seed(s)) for s in (1, 1, 2, 3, 4, 5)]
    for out in outs:
        assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(outs[0], outs[1])
    assert sum(not torch.allclose(o, img) for o in outs) >= 4  # perspective may be skipped (p = 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_removing_view_changes_a_large_area(seed):
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(9))
    out = cppo_removing(img, torch.Generator().manual_seed(seed))
    assert (out - img).abs().gt(1e-3).float().mean() > 0.2  # 50 noise patches or a 0.6-0.7 zoom: most pixels move


def test_unknown_view_refused():
    with pytest.raises(ValueError, match="valid: " + ", ".join(RAW_VIEWS)):
        perturb_raw_images([], "blur", 0)


def _vppo_blackout_as_written(img: np.ndarray, draws: np.ndarray, patch_size=14, black_prob=0.5):
    """``huaixuheqing/VPPO-RL`` @ a23c54b83565c48e9e1fb54cc1e18a1c63557c99, ``verl/workers/perc_utils.py:5-18``
    (``random_patch_blackening`` on the resized PIL image), ``np.random.rand()`` replaced by the same draws."""
    return _papo_blackout_as_written(img, draws, patch_size, black_prob)


@pytest.mark.parametrize("shape", [(28, 42), (30, 47)])
def test_blackout_14px_kind_equals_vppos_loop_on_the_processed_image(shape):
    from visent.perturb import TileLayout, perturb_image_tiles

    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # Qwen3-VL's normalisation: pixel = x·0.5 + 0.5
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    x = (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    out = perturb_image_tiles("blackout_14px", x[None], torch.Generator().manual_seed(3), 0.5,
                              TileLayout(mean, std, cell=16))
    draws = torch.rand((1, -(-shape[0] // 14), -(-shape[1] // 14)), generator=torch.Generator().manual_seed(3))
    theirs = _vppo_blackout_as_written(arr, draws.numpy().reshape(-1))
    ours = ((out[0] * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, theirs)
