"""A frozen copy of ``visent/perturb.py`` as it was before each kind was written once (issue 22 item 3):
the reference that ``test_perturb_unified.py`` compares the single implementation with. Not imported by
``src``; do not edit (it is what the old code computed).
"""
# ruff: noqa
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DEFAULT_STRENGTH",
    "NO_IMAGE_OFFSET",
    "PERTURBATIONS",
    "PatchLayout",
    "TileLayout",
    "diffusion_alpha_bar",
    "flatten_patches",
    "perturb_image_tiles",
    "perturb_pixel_values",
    "unflatten_patches",
]

# OpenAI CLIP statistics: the Qwen2-VL / Qwen2.5-VL image processor's defaults.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PatchLayout:
    """How the image processor flattened images into ``pixel_values`` rows.

    Attributes:
        patch_size: p, pixels per patch side (14 for Qwen2/2.5-VL).
        temporal_patch_size: tp, frames per patch (2; a still image is repeated).
        merge_size: m, patches per side fused by the vision merger (2).
        channels: C (3).
        image_mean / image_std: per-channel normalisation of [0, 1] pixels.
    """

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    channels: int = 3
    image_mean: tuple[float, ...] = _CLIP_MEAN
    image_std: tuple[float, ...] = _CLIP_STD

    @property
    def row_dim(self) -> int:
        return self.channels * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_processor(cls, processor) -> PatchLayout:
        """Read the layout from a Qwen2-VL-style processor (or its ``image_processor``)."""
        ip = getattr(processor, "image_processor", processor)

        def get(name, default):
            value = getattr(ip, name, None)
            return default if value is None else value

        mean = tuple(float(x) for x in get("image_mean", _CLIP_MEAN))
        std = tuple(float(x) for x in get("image_std", _CLIP_STD))
        return cls(
            patch_size=int(get("patch_size", 14)),
            temporal_patch_size=int(get("temporal_patch_size", 2)),
            merge_size=int(get("merge_size", 2)),
            channels=len(mean),
            image_mean=mean,
            image_std=std,
        )


def _check(pixel_values: torch.Tensor, grid_thw: torch.Tensor, layout: PatchLayout) -> list[int]:
    if pixel_values.dim() != 2 or pixel_values.shape[1] != layout.row_dim:
        raise ValueError(
            f"pixel_values must be (N_rows, C·tp·p·p = {layout.row_dim}) for this processor layout; "
            f"got {tuple(pixel_values.shape)}"
        )
    if grid_thw.dim() != 2 or grid_thw.shape[1] != 3:
        raise ValueError(f"image_grid_thw must be (n_images, 3); got {tuple(grid_thw.shape)}")
    rows = [int(t * h * w) for t, h, w in grid_thw.tolist()]
    if sum(rows) != pixel_values.shape[0]:
        raise ValueError(
            f"image_grid_thw describes {sum(rows)} patch rows but pixel_values has {pixel_values.shape[0]}"
        )
    return rows


def unflatten_patches(rows: torch.Tensor, grid: Sequence[int], layout: PatchLayout) -> torch.Tensor:
    """Patch rows of ONE image ``(t·h·w, C·tp·p·p)`` → frames ``(t·tp, C, h·p, w·p)``."""
    t, h, w = (int(x) for x in grid)
    m, p, tp, c = layout.merge_size, layout.patch_size, layout.temporal_patch_size, layout.channels
    x = rows.reshape(t, h // m, w // m, m, m, c, tp, p, p)
    # → (t, tp, C, h/m, m, p, w/m, m, p)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)
    return x.reshape(t * tp, c, h * p, w * p)


def flatten_patches(frames: torch.Tensor, grid: Sequence[int], layout: PatchLayout) -> torch.Tensor:
    """Inverse of ``unflatten_patches``: frames ``(t·tp, C, h·p, w·p)`` → rows ``(t·h·w, C·tp·p·p)``."""
    t, h, w = (int(x) for x in grid)
    m, p, tp, c = layout.merge_size, layout.patch_size, layout.temporal_patch_size, layout.channels
    x = frames.reshape(t, tp, c, h // m, m, p, w // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # → (t, h/m, w/m, m, m, C, tp, p, p)
    return x.reshape(t * h * w, c * tp * p * p)


def _stats(layout: PatchLayout, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, layout.channels, 1, 1)
    mean = torch.tensor(layout.image_mean, dtype=torch.float32, device=like.device).view(shape)
    std = torch.tensor(layout.image_std, dtype=torch.float32, device=like.device).view(shape)
    return mean, std


def _randn(shape, generator: torch.Generator, device) -> torch.Tensor:
    # Draw on the generator's device, then move: the same seed gives the same noise on CPU and GPU.
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)


def _pixel_space(
    pixel_values: torch.Tensor,
    grid_thw: torch.Tensor,
    layout: PatchLayout,
    generator: torch.Generator,
    perturb_frames: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
) -> torch.Tensor:
    """Un-normalise every image to [0, 1] pixels, apply ``perturb_frames`` to ``(t, 1, C, H, W)``, re-normalise."""
    sizes = _check(pixel_values, grid_thw, layout)
    out = []
    for rows, grid in zip(torch.split(pixel_values, sizes), grid_thw.tolist()):
        frames = unflatten_patches(rows.float(), grid, layout)  # (t·tp, C, H, W)
        mean, std = _stats(layout, frames)
        pixels = frames * std + mean
        t, tp = grid[0], layout.temporal_patch_size
        pixels = pixels.reshape(t, tp, *pixels.shape[1:])
        # Perturb the first copy of each temporal patch and repeat it: a still image stays still.
        noisy = perturb_frames(pixels[:, :1], generator).expand_as(pixels)
        noisy = noisy.reshape(t * tp, *pixels.shape[2:])
        out.append(flatten_patches((noisy - mean) / std, grid, layout))
    return torch.cat(out).to(pixel_values.dtype) if out else pixel_values.clone()


# --- the perturbations: (pixel_values, image_grid_thw, layout, generator, strength) -> pixel_values ---


def identity(pixel_values, grid_thw, layout, generator, strength):
    """No change: a control under which the clean and perturbed passes are bit-identical."""
    _check(pixel_values, grid_thw, layout)
    return pixel_values.clone()


def pixel_values_gaussian(pixel_values, grid_thw, layout, generator, strength):
    """Add ``N(0, strength²)`` to the normalised ``pixel_values``; no clipping (VEPO code default 2.0)."""
    _check(pixel_values, grid_thw, layout)
    noise = _randn(pixel_values.shape, generator, pixel_values.device)
    return (pixel_values.float() + strength * noise).to(pixel_values.dtype)


def pixel_gaussian(pixel_values, grid_thw, layout, generator, strength):
    """Add ``N(0, strength²)`` in [0, 1] pixel units and clip to [0, 1]."""

    def noisy(pixels, gen):
        return (pixels + strength * _randn(pixels.shape, gen, pixels.device)).clamp(0.0, 1.0)

    return _pixel_space(pixel_values, grid_thw, layout, generator, noisy)


def diffusion_alpha_bar(step: int, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> float:
    """``ᾱ_t = Π_{s≤t} (1 − β_s)`` of the linear-β DDPM schedule, steps counted from 1."""
    if not 0 <= step <= num_steps:
        raise ValueError(f"diffusion step must be in [0, {num_steps}], got {step}")
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return float(torch.prod(1.0 - betas[:step]))


def diffusion(pixel_values, grid_thw, layout, generator, strength):
    """Forward-noise to step ``strength`` (int, ≤ 1000) of the linear-β schedule, in [−1, 1] image units."""
    if float(strength) != int(strength):
        raise ValueError(f"diffusion strength is a step number; got {strength}")
    alpha_bar = diffusion_alpha_bar(int(strength))

    def noisy(pixels, gen):
        x0 = pixels * 2.0 - 1.0
        xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * _randn(pixels.shape, gen, pixels.device)
        return (xt + 1.0) / 2.0

    return _pixel_space(pixel_values, grid_thw, layout, generator, noisy)


def patch_blackout(pixel_values, grid_thw, layout, generator, strength):
    """Black out a random ``strength`` fraction of each image's merged patches (the vision tokens)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"patch_blackout strength is a fraction in [0, 1]; got {strength}")
    sizes = _check(pixel_values, grid_thw, layout)
    out = pixel_values.clone()
    # Black (0 in pixel space) normalised: (0 − mean) / std per channel, broadcast over (tp, p, p).
    black = torch.tensor(
        [-m / s for m, s in zip(layout.image_mean, layout.image_std)], dtype=pixel_values.dtype
    ).to(pixel_values.device)
    black_row = black.repeat_interleave(layout.temporal_patch_size * layout.patch_size**2)
    group = layout.merge_size**2  # rows of one merged patch are contiguous (see module docstring)
    start = 0
    for n in sizes:
        n_merged = n // group
        k = round(strength * n_merged)
        order = torch.randperm(n_merged, generator=generator, device=generator.device)[:k].to(pixel_values.device)
        rows = (order[:, None] * group + torch.arange(group, device=pixel_values.device)).reshape(-1)
        out[start + rows] = black_row
        start += n
    return out


def no_image(pixel_values, grid_thw, layout, generator, strength):
    """Replace the image by zeros in normalised space (the dataset-mean colour): no visual content."""
    _check(pixel_values, grid_thw, layout)
    return torch.zeros_like(pixel_values)


PERTURBATIONS: dict[str, Callable] = {
    "pixel_values_gaussian": pixel_values_gaussian,
    "pixel_gaussian": pixel_gaussian,
    "diffusion": diffusion,
    "patch_blackout": patch_blackout,
    "no_image": no_image,
    "identity": identity,
}

#: Strength used when the config leaves ``perturbation_strength`` unset.
DEFAULT_STRENGTH: dict[str, float] = {
    "pixel_values_gaussian": 2.0,
    "pixel_gaussian": 0.5,
    "diffusion": 500,
    "patch_blackout": 0.5,
    "no_image": 0.0,
    "identity": 0.0,
}


def perturb_pixel_values(
    kind: str,
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor,
    generator: torch.Generator,
    strength: float | None = None,
    layout: PatchLayout | None = None,
) -> torch.Tensor:
    """Perturb the images of ONE prompt.

    Args:
        kind: a key of ``PERTURBATIONS``.
        pixel_values: ``(N_rows, C·tp·p·p)`` patch rows of the prompt's images (several images allowed).
        image_grid_thw: ``(n_images, 3)`` patch grids.
        generator: seeded per prompt, so all K responses see the same perturbed image.
        strength: see the table in the module docstring; ``None`` uses ``DEFAULT_STRENGTH[kind]``.
        layout: the processor's patch layout (Qwen2-VL defaults if omitted).

    Returns:
        Perturbed ``pixel_values``, same shape and dtype.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")
    layout = layout or PatchLayout()
    strength = DEFAULT_STRENGTH[kind] if strength is None else float(strength)
    return PERTURBATIONS[kind](pixel_values, image_grid_thw, layout, generator, strength)


# --- whole images / tiles (N, C, H, W) -------------------------------------------------------------------

#: ``no_image`` value of real pixels where an all-zero image means padding (``TileLayout.zero_is_padding``).
NO_IMAGE_OFFSET = 1e-3


@dataclass(frozen=True)
class TileLayout:
    """How a whole-image or tiling processor normalised its ``(N, C, H, W)`` images or tiles.

    Attributes:
        image_mean / image_std: per-channel normalisation of [0, 1] pixels (the image processor's).
        cell: side in pixels of one ``patch_blackout`` cell: the square of pixels behind one
            language-model image token.
        zero_is_padding: the model treats an all-zero image as padding (Idefics3 / SmolVLM).
    """

    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    cell: int
    zero_is_padding: bool = False

    @property
    def channels(self) -> int:
        return len(self.image_mean)


def _tile_stats(layout: TileLayout, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, layout.channels, 1, 1)
    mean = torch.tensor(layout.image_mean, dtype=torch.float32, device=like.device).view(shape)
    std = torch.tensor(layout.image_std, dtype=torch.float32, device=like.device).view(shape)
    return mean, std


def _tile_cells(valid: torch.Tensor, cell: int) -> torch.Tensor:
    """``(N, H/cell, W/cell)`` bool: cells holding at least one real pixel (H, W multiples of ``cell``)."""
    n, h, w = valid.shape
    return valid.reshape(n, h // cell, cell, w // cell, cell).any(4).any(2)


def perturb_image_tiles(
    kind: str,
    pixel_values: torch.Tensor,
    generator: torch.Generator,
    strength: float | None = None,
    layout: TileLayout | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Perturb the ``(N, C, H, W)`` normalised images / tiles of ONE prompt (module docstring).

    Args:
        kind: a key of ``PERTURBATIONS``.
        pixel_values: ``(N, C, H, W)`` float, normalised with ``layout``'s mean/std.
        generator: seeded per prompt, so all K responses see the same perturbed images.
        strength: as for ``perturb_pixel_values``; ``None`` uses ``DEFAULT_STRENGTH[kind]``.
        layout: the family's normalisation and blackout cell.
        valid: ``(N, H, W)`` bool, real pixels (``None``: all real). The others keep their values.

    Returns:
        Perturbed ``pixel_values``, same shape and dtype. Noise is drawn for the whole ``(N, C, H, W)``
        tensor in one call whatever ``valid`` says, so a draw depends only on the generator and the shape.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")
    if layout is None:
        raise ValueError("perturb_image_tiles needs the family's TileLayout (mean/std and blackout cell)")
    if pixel_values.dim() != 4 or pixel_values.shape[1] != layout.channels:
        raise ValueError(
            f"pixel_values must be (N, C={layout.channels}, H, W) images or tiles; got {tuple(pixel_values.shape)}"
        )
    n, _, h, w = pixel_values.shape
    if valid is None:
        valid = torch.ones(n, h, w, dtype=torch.bool, device=pixel_values.device)
    elif tuple(valid.shape) != (n, h, w):
        raise ValueError(f"valid must be (N, H, W) = {(n, h, w)}; got {tuple(valid.shape)}")
    valid = valid.to(pixel_values.device, torch.bool)
    strength = DEFAULT_STRENGTH[kind] if strength is None else float(strength)
    x = pixel_values.float()
    mean, std = _tile_stats(layout, x)
    if kind == "identity":
        return pixel_values.clone()
    if kind == "pixel_values_gaussian":
        out = x + strength * _randn(x.shape, generator, x.device)
    elif kind in ("pixel_gaussian", "diffusion"):
        pixels = x * std + mean
        noise = _randn(x.shape, generator, x.device)
        if kind == "pixel_gaussian":
            noisy = (pixels + strength * noise).clamp(0.0, 1.0)
        else:
            if float(strength) != int(strength):
                raise ValueError(f"diffusion strength is a step number; got {strength}")
            alpha_bar = diffusion_alpha_bar(int(strength))
            xt = math.sqrt(alpha_bar) * (pixels * 2.0 - 1.0) + math.sqrt(1.0 - alpha_bar) * noise
            noisy = (xt + 1.0) / 2.0
        out = (noisy - mean) / std
    elif kind == "no_image":
        value = NO_IMAGE_OFFSET if layout.zero_is_padding else 0.0
        out = torch.full_like(x, value)
    else:  # patch_blackout
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"patch_blackout strength is a fraction in [0, 1]; got {strength}")
        c = layout.cell
        if h % c or w % c:
            raise ValueError(f"patch_blackout: image side ({h}, {w}) is not a multiple of the cell side {c}")
        cells = _tile_cells(valid, c)  # (N, H/c, W/c)
        black_cells = torch.zeros_like(cells)
        for i in range(n):
            candidates = cells[i].reshape(-1).nonzero().squeeze(1)
            k = round(strength * candidates.numel())
            order = torch.randperm(candidates.numel(), generator=generator, device=generator.device)[:k]
            black_cells[i].view(-1)[candidates[order.to(candidates.device)]] = True
        black_pixels = black_cells.repeat_interleave(c, 1).repeat_interleave(c, 2)  # (N, H, W)
        out = torch.where(black_pixels[:, None], (0.0 - mean) / std, x)
    return torch.where(valid[:, None], out, x).to(pixel_values.dtype)
