"""Perturbations on whole images / tiles ``(N, C, H, W)`` (``visent.perturb.perturb_image_tiles``) against
plain float64 references, and the padding rules: masked pixels and padding tiles keep their values."""

import math

import pytest
import torch

from visent.perturb import (
    DEFAULT_STRENGTH,
    NO_IMAGE_OFFSET,
    PERTURBATIONS,
    TileLayout,
    diffusion_alpha_bar,
    perturb_image_tiles,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
LAYOUT = TileLayout(image_mean=MEAN, image_std=STD, cell=4)


def _images(n=3, h=8, w=12, seed=0):
    """Normalised images of real [0, 1] pixels."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((pixels - mean) / std).float()


def _noise(shape, seed):
    """The draw ``perturb_image_tiles`` makes first from a generator seeded ``seed``, in float64."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).double()


def _unnorm(x):
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return x.double() * std + mean, mean, std


def test_pixel_values_gaussian_matches_float64_reference():
    x = _images()
    out = perturb_image_tiles("pixel_values_gaussian", x, torch.Generator().manual_seed(5), 2.0, LAYOUT)
    ref = x.double() + 2.0 * _noise(x.shape, 5)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_pixel_gaussian_matches_float64_reference_and_is_a_real_image():
    x = _images()
    out = perturb_image_tiles("pixel_gaussian", x, torch.Generator().manual_seed(7), 0.5, LAYOUT)
    pixels, mean, std = _unnorm(x)
    ref = ((pixels + 0.5 * _noise(x.shape, 7)).clamp(0, 1) - mean) / std
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    back, _, _ = _unnorm(out)
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5


def test_diffusion_matches_float64_ddpm_reference():
    x = _images()
    out = perturb_image_tiles("diffusion", x, torch.Generator().manual_seed(3), 500, LAYOUT)
    pixels, mean, std = _unnorm(x)
    # ᾱ_t from the β schedule written out step by step, in float64.
    alpha_bar = 1.0
    for s in range(500):
        alpha_bar *= 1.0 - (1e-4 + (0.02 - 1e-4) * s / 999)
    assert math.isclose(alpha_bar, diffusion_alpha_bar(500), rel_tol=1e-9)
    xt = math.sqrt(alpha_bar) * (2 * pixels - 1) + math.sqrt(1 - alpha_bar) * _noise(x.shape, 3)
    ref = ((xt + 1) / 2 - mean) / std
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_identity_is_exactly_the_input_in_any_dtype():
    for dtype in (torch.float32, torch.bfloat16):
        x = _images().to(dtype)
        out = perturb_image_tiles("identity", x, torch.Generator().manual_seed(0), None, LAYOUT)
        assert out.dtype == dtype and torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("zero_is_padding", [False, True])
def test_no_image_sets_real_pixels_to_the_mean_colour(zero_is_padding):
    layout = TileLayout(MEAN, STD, cell=4, zero_is_padding=zero_is_padding)
    x = _images()
    out = perturb_image_tiles("no_image", x, torch.Generator().manual_seed(0), None, layout)
    expected = NO_IMAGE_OFFSET if zero_is_padding else 0.0
    assert torch.all(out == torch.tensor(expected, dtype=out.dtype))


def _blackened(out, x):
    """(N, H, W) bool: pixels whose every channel was changed to normalised black."""
    black = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    return ((out - black).abs() < 1e-6).all(1) & ~((x - black).abs() < 1e-6).all(1)


def test_patch_blackout_blacks_a_fraction_of_whole_cells_per_tile():
    x = _images(n=2, h=8, w=12)  # 2 × 3 = 6 cells of 4 px per tile
    out = perturb_image_tiles("patch_blackout", x, torch.Generator().manual_seed(1), 0.5, LAYOUT)
    black = _blackened(out, x)
    for i in range(2):
        cells = black[i].reshape(2, 4, 3, 4).permute(0, 2, 1, 3).reshape(6, 16)
        whole = cells.all(1)
        assert int(whole.sum()) == 3  # round(0.5 · 6)
        assert torch.equal(cells.any(1), whole)  # never a part of a cell
    changed = (out != x).any(1)
    assert torch.equal(changed, black)  # nothing else moved


def test_padding_tiles_and_masked_pixels_keep_their_values_under_every_kind():
    x = _images(n=3, h=8, w=8)
    x[2] = 0.0  # a padding tile, as SmolVLM / LLaVA-OneVision pad the tile axis
    valid = torch.ones(3, 8, 8, dtype=torch.bool)
    valid[0, :, 6:] = False  # letterbox / pixel_attention_mask padding on the right of tile 0
    valid[2] = False
    layout = TileLayout(MEAN, STD, cell=4, zero_is_padding=True)
    for kind in PERTURBATIONS:
        out = perturb_image_tiles(kind, x, torch.Generator().manual_seed(2), None, layout, valid=valid)
        keep = ~valid[:, None].expand_as(x)
        assert torch.equal(out[keep], x[keep]), kind
        assert torch.all(out[2] == 0), kind  # still padding: all zero
        if kind != "identity":
            assert (out[:2] != x[:2]).any(), kind


def test_patch_blackout_only_picks_cells_with_real_pixels():
    x = _images(n=1, h=8, w=8)  # 4 cells
    valid = torch.zeros(1, 8, 8, dtype=torch.bool)
    valid[0, :4, :4] = True  # one cell real
    for seed in range(5):
        out = perturb_image_tiles(
            "patch_blackout", x, torch.Generator().manual_seed(seed), 1.0, LAYOUT, valid=valid
        )
        assert torch.equal(_blackened(out, x)[0], valid[0])


def test_same_seed_same_draw_and_different_seed_different_draw():
    x = _images()
    for kind in ("pixel_values_gaussian", "pixel_gaussian", "diffusion", "patch_blackout"):
        a = perturb_image_tiles(kind, x, torch.Generator().manual_seed(9), None, LAYOUT)
        b = perturb_image_tiles(kind, x, torch.Generator().manual_seed(9), None, LAYOUT)
        c = perturb_image_tiles(kind, x, torch.Generator().manual_seed(10), None, LAYOUT)
        assert torch.equal(a, b) and not torch.equal(a, c), kind


def test_default_strengths_are_the_documented_ones():
    x = _images()
    for kind in ("pixel_values_gaussian", "pixel_gaussian", "diffusion", "patch_blackout"):
        a = perturb_image_tiles(kind, x, torch.Generator().manual_seed(4), None, LAYOUT)
        b = perturb_image_tiles(kind, x, torch.Generator().manual_seed(4), DEFAULT_STRENGTH[kind], LAYOUT)
        assert torch.equal(a, b), kind


def test_bad_inputs_are_refused_with_a_clear_error():
    x = _images()
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb_image_tiles("blur", x, gen, None, LAYOUT)
    with pytest.raises(ValueError, match=r"\(N, C=3, H, W\)"):
        perturb_image_tiles("identity", x[0], gen, None, LAYOUT)
    with pytest.raises(ValueError, match="valid must be"):
        perturb_image_tiles("identity", x, gen, None, LAYOUT, valid=torch.ones(3, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="fraction"):
        perturb_image_tiles("patch_blackout", x, gen, 1.5, LAYOUT)
    with pytest.raises(ValueError, match="multiple of the cell"):
        perturb_image_tiles("patch_blackout", x, gen, 0.5, TileLayout(MEAN, STD, cell=5))
    with pytest.raises(ValueError, match="step number"):
        perturb_image_tiles("diffusion", x, gen, 2.5, LAYOUT)
