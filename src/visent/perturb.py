"""Image perturbations I → I' for the counterfactual pass (METHOD.md §2, "Perturbation").

VEPO scores each response token by how much its next-token distribution moves when the image is
perturbed. All K responses of a prompt are scored against the *same* perturbed image, and the
perturbation is seeded: the caller passes one ``torch.Generator`` per prompt.

One representation, each kind written once. ``perturb_image_set`` perturbs an ``ImageSet``: one prompt's
images as normalised float32 frames ``(F, C, H, W)`` per image, with a mask of real pixels, the
normalisation and blackout cell (``TileLayout``) and how many consecutive frames are copies of one still
image. Each family's layout is converted to and from it (the adapters in ``visent.models`` call these):

1. Patch rows (Qwen-VL), ``perturb_pixel_values`` and ``PatchLayout``, described next.
2. Whole images or tiles ``(N, C, H, W)`` (Gemma 3, SmolVLM2 / Idefics3, LLaVA-OneVision, ...),
   ``perturb_image_tiles``, described after the table of kinds.

Patch rows: what the Qwen2-VL / Qwen2.5-VL processor hands the model:

- ``pixel_values`` ``(N_rows, C · tp · p · p)`` float: the normalised image, cut into patches and
  flattened. ``N_rows = Σ_images t · h · w`` over the prompt's images.
- ``image_grid_thw`` ``(n_images, 3)`` long: ``(t, h, w)`` patch-grid size of each image.

Patch layout (``transformers`` ``Qwen2VLImageProcessor.patchify``). For one image with grid
``(t, h, w)``, merge size ``m``, patch size ``p`` and temporal patch size ``tp``, the rows are ordered
``(t, h/m, w/m, m, m)`` — the 2×2 blocks that the vision merger later fuses into one token are
contiguous — and each row is ``(C, tp, p, p)`` flattened. A still image is repeated ``tp`` times along
the temporal axis, so the ``tp`` copies inside a row are identical. ``unflatten_patches`` inverts
this into frames ``(t · tp, C, h · p, w · p)`` (``tp`` copies per still); ``flatten_patches`` goes back.
A blackout cell is a merged patch, ``m · p`` pixels on a side.

Pixel-space kinds (``pixel_gaussian``, ``diffusion``) un-normalise with the image processor's
``image_mean``/``image_std`` (pixels in [0, 1] after the processor's 1/255 rescale), perturb, and
normalise again; the same noise is added to the copies of a still so the image stays a still image.

Kinds (``PERTURBATIONS``), ``strength`` meaning and default:

==========================  ==========================================================  =======
kind                        strength                                                    default
==========================  ==========================================================  =======
``pixel_values_gaussian``   std of Gaussian noise added to normalised ``pixel_values``,   2.0
                            no clipping (the VEPO authors' code default); every stored
                            value gets its own draw, in the family's storage order
``pixel_gaussian``          std of Gaussian noise in [0, 1] pixel units, clipped to       0.5
                            [0, 1] (a real image)
``diffusion``               step t of a 1000-step linear-β DDPM schedule (β 1e-4 → 0.02); 500
                            ``x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε`` with x_0 in [−1, 1] (≈ 0.48
                            noise std in [0, 1] units at t = 500); not clipped
``patch_blackout``          fraction of each still's cells (merged patches / the pixels   0.5
                            behind one image token) with a real pixel, set to black
``blackout_14px``           probability of each 14-px cell (a grid anchored at (0, 0) on    0.5
                            the processed image) being set to black: VPPO's blackout
``no_image``                ignored: real pixels set to zero (the mean colour)             —
``identity``                ignored: no change (a control; JSD is then exactly 0)           —
==========================  ==========================================================  =======

Random draws: the normalised-space noise is one draw in the family's storage order (``ImageSet.
storage_noise``; by default one draw per image entry); pixel-space noise one draw per image entry over
its stills; blackout one permutation per still. So a draw depends only on the generator and the stored
shape, as before the kinds were written once (``tests/unit/test_perturb_unified.py``).

Whole images or tiles ``(N, C, H, W)``: ``N`` normalised images of one prompt — for a tiling
processor, its tiles / crops (SmolVLM's splits and global view, LLaVA-OneVision's base image and anyres
tiles), each perturbed as a still image of its own. An optional ``valid`` mask ``(N, H, W)`` marks the
real pixels: padding pixels (SmolVLM's ``pixel_attention_mask`` == 0, LLaVA-OneVision's letterbox around
the resized image) and whole padding tiles (all False: the zero-filled slots that pad a row to the batch's
tile count) keep their input values bit for bit, so padding never becomes signal and a model that
detects padding by its value (Idefics3 drops all-zero images) still finds it. Per-layout details:

- ``patch_blackout``'s cells are squares of ``TileLayout.cell`` pixels, one per language-model image
  token (Gemma 3's pooled token grid, SmolVLM's pixel-shuffled patch grid, LLaVA-OneVision's vision
  patches); only cells holding a real pixel are candidates, and only their real pixels are blackened;
- ``no_image`` sets the real pixels to zero, the mean colour, except where ``TileLayout.zero_is_padding``
  (Idefics3 / SmolVLM: an all-zero image is taken for padding and dropped, which would change the
  number of image tokens): there they are set to ``NO_IMAGE_OFFSET`` (1e-3 in normalised units, under
  one grey level away from the mean colour).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "BLACKOUT_CELL_PX",
    "DEFAULT_STRENGTH",
    "NO_IMAGE_OFFSET",
    "PERTURBATIONS",
    "ImageSet",
    "PatchLayout",
    "TileLayout",
    "diffusion_alpha_bar",
    "flatten_patches",
    "grid_cells",
    "perturb_image_set",
    "perturb_image_tiles",
    "perturb_pixel_values",
    "unflatten_patches",
]

# OpenAI CLIP statistics: the Qwen2-VL / Qwen2.5-VL image processor's defaults.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: ``no_image`` value of real pixels where an all-zero image means padding (``TileLayout.zero_is_padding``).
NO_IMAGE_OFFSET = 1e-3


@dataclass(frozen=True)
class TileLayout:
    """How a family normalised its images, and the blackout cell: what every kind needs to know.

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


@dataclass(frozen=True)
class PatchLayout:
    """How the Qwen-VL image processor flattened images into ``pixel_values`` rows.

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

    @property
    def images(self) -> TileLayout:
        """The normalisation and blackout cell (a merged patch, ``m · p`` pixels) of the frames."""
        return TileLayout(self.image_mean, self.image_std, cell=self.merge_size * self.patch_size)

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


@dataclass
class ImageSet:
    """One prompt's images in the representation every kind works on.

    Attributes:
        frames: per image entry, ``(F, C, H, W)`` float32 normalised with ``layout``'s mean / std.
        valid: per entry, ``(F, H, W)`` bool real pixels, or ``None`` (all real). Others keep their values.
        layout: normalisation, blackout cell and padding convention.
        copies: consecutive frames that are copies of one still image (Qwen's temporal patch size; 1 for
            images and tiles). F is a multiple of it.
        storage_noise: ``generator -> frames-shaped noise`` drawn in the family's storage order (one draw
            over the stored tensor, rearranged as ``frames``), for ``pixel_values_gaussian``; ``None``: one
            draw per entry in ``frames`` order.
    """

    frames: list[torch.Tensor]
    valid: list[torch.Tensor | None]
    layout: TileLayout
    copies: int = 1
    storage_noise: Callable[[torch.Generator], list[torch.Tensor]] | None = None

    def stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` as ``(1, C, 1, 1)`` float32 tensors on ``like``'s device."""
        shape = (1, self.layout.channels, 1, 1)
        mean = torch.tensor(self.layout.image_mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(self.layout.image_std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std


def _randn(shape, generator: torch.Generator, device) -> torch.Tensor:
    # Draw on the generator's device, then move: the same seed gives the same noise on CPU and GPU.
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)


def diffusion_alpha_bar(step: int, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> float:
    """``ᾱ_t = Π_{s≤t} (1 − β_s)`` of the linear-β DDPM schedule, steps counted from 1."""
    if not 0 <= step <= num_steps:
        raise ValueError(f"diffusion step must be in [0, {num_steps}], got {step}")
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return float(torch.prod(1.0 - betas[:step]))


def _pixel_space(images: ImageSet, generator: torch.Generator, perturb: Callable) -> list[torch.Tensor]:
    """Un-normalise each entry to [0, 1] pixels, apply ``perturb(stills (S, C, H, W), noise)`` to one copy
    of each still (noise: one draw per entry), repeat it over the copies, and normalise again."""
    out = []
    for x in images.frames:
        mean, std = images.stats(x)
        pixels = x * std + mean
        f, c, h, w = pixels.shape
        pixels = pixels.reshape(f // images.copies, images.copies, c, h, w)
        stills = pixels[:, :1]
        noisy = perturb(stills, _randn(stills.shape, generator, x.device)).expand_as(pixels).reshape(f, c, h, w)
        out.append((noisy - mean) / std)
    return out


# --- the kinds, each once: (images, generator, strength) -> frames per entry -------------------------------


def identity(images: ImageSet, generator, strength):
    """No change: a control under which the clean and perturbed passes are bit-identical."""
    return [x.clone() for x in images.frames]


def pixel_values_gaussian(images: ImageSet, generator, strength):
    """Add ``N(0, strength²)`` to the normalised values; no clipping (VEPO code default 2.0)."""
    if images.storage_noise is not None:
        noise = images.storage_noise(generator)
    else:
        noise = [_randn(x.shape, generator, x.device) for x in images.frames]
    return [x + strength * n for x, n in zip(images.frames, noise)]


def pixel_gaussian(images: ImageSet, generator, strength):
    """Add ``N(0, strength²)`` in [0, 1] pixel units and clip to [0, 1]."""
    return _pixel_space(images, generator, lambda pixels, noise: (pixels + strength * noise).clamp(0.0, 1.0))


def diffusion(images: ImageSet, generator, strength):
    """Forward-noise to step ``strength`` (int, ≤ 1000) of the linear-β schedule, in [−1, 1] image units."""
    if float(strength) != int(strength):
        raise ValueError(f"diffusion strength is a step number; got {strength}")
    alpha_bar = diffusion_alpha_bar(int(strength))

    def noisy(pixels, noise):
        xt = math.sqrt(alpha_bar) * (pixels * 2.0 - 1.0) + math.sqrt(1.0 - alpha_bar) * noise
        return (xt + 1.0) / 2.0

    return _pixel_space(images, generator, noisy)


def patch_blackout(images: ImageSet, generator, strength):
    """Black out a random ``strength`` fraction of each still's cells that hold a real pixel."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"patch_blackout strength is a fraction in [0, 1]; got {strength}")
    c = images.layout.cell
    out = []
    for x, valid in zip(images.frames, images.valid):
        f, _, h, w = x.shape
        if h % c or w % c:
            raise ValueError(f"patch_blackout: image side ({h}, {w}) is not a multiple of the cell side {c}")
        real = valid if valid is not None else torch.ones(f, h, w, dtype=torch.bool, device=x.device)
        # (stills, H/c, W/c): cells holding a real pixel in any copy of the still
        cells = real.reshape(f // images.copies, images.copies, h // c, c, w // c, c).any(5).any(3).any(1)
        black = torch.zeros_like(cells)
        for i in range(cells.size(0)):
            candidates = cells[i].reshape(-1).nonzero().squeeze(1)
            k = round(strength * candidates.numel())
            order = torch.randperm(candidates.numel(), generator=generator, device=generator.device)[:k]
            black[i].view(-1)[candidates[order.to(candidates.device)]] = True
        pixels = black.repeat_interleave(c, 1).repeat_interleave(c, 2).repeat_interleave(images.copies, 0)
        # Black (0 in pixel space) normalised, −mean/std per channel, rounded once from float64.
        colour = torch.tensor([-m / s for m, s in zip(images.layout.image_mean, images.layout.image_std)],
                              dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        out.append(torch.where(pixels[:, None], colour, x))
    return out


#: Side of VPPO's / PAPO's blackout cells in pixels, whatever the family's patch size (14 even for Qwen3-VL).
BLACKOUT_CELL_PX = 14


def grid_cells(stills: int, h: int, w: int, p: float, generator: torch.Generator, cell: int = BLACKOUT_CELL_PX):
    """``(stills, h, w)`` bool: a grid of ``cell``-px squares anchored at (0, 0) (edge cells cropped), each True
    with probability ``p``, drawn row-major per still (VPPO ``perc_utils.py:5-18``, PAPO ``papo_utils.py:17-30``)."""
    rows, cols = -(-h // cell), -(-w // cell)
    black = torch.rand((stills, rows, cols), generator=generator, device=generator.device) < p
    return black.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :h, :w]


def blackout_14px(images: ImageSet, generator, strength):
    """VPPO's blackout: each 14-px cell of the (resized) image set to black with probability ``strength``."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"blackout_14px strength is a probability in [0, 1]; got {strength}")
    out = []
    for x, valid in zip(images.frames, images.valid):
        f, _, h, w = x.shape
        black = grid_cells(f // images.copies, h, w, strength, generator).to(x.device)
        black = black.repeat_interleave(images.copies, 0)
        if valid is not None:
            black = black & valid
        colour = torch.tensor([-m / s for m, s in zip(images.layout.image_mean, images.layout.image_std)],
                              dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        out.append(torch.where(black[:, None], colour, x))
    return out


def no_image(images: ImageSet, generator, strength):
    """Replace the image by zeros in normalised space (the dataset-mean colour): no visual content."""
    value = NO_IMAGE_OFFSET if images.layout.zero_is_padding else 0.0
    return [torch.full_like(x, value) for x in images.frames]


PERTURBATIONS: dict[str, Callable[[ImageSet, torch.Generator, float], list[torch.Tensor]]] = {
    "pixel_values_gaussian": pixel_values_gaussian,
    "pixel_gaussian": pixel_gaussian,
    "diffusion": diffusion,
    "patch_blackout": patch_blackout,
    "blackout_14px": blackout_14px,
    "no_image": no_image,
    "identity": identity,
}

#: Strength used when the config leaves ``perturbation_strength`` unset.
DEFAULT_STRENGTH: dict[str, float] = {
    "pixel_values_gaussian": 2.0,
    "pixel_gaussian": 0.5,
    "diffusion": 500,
    "patch_blackout": 0.5,
    "blackout_14px": 0.5,
    "no_image": 0.0,
    "identity": 0.0,
}


def _check_kind(kind: str) -> None:
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")


def perturb_image_set(
    kind: str, images: ImageSet, generator: torch.Generator, strength: float | None = None
) -> list[torch.Tensor]:
    """Perturb the images of ONE prompt (module docstring).

    Args:
        kind: a key of ``PERTURBATIONS``.
        images: the prompt's images in the one representation (``ImageSet``).
        generator: seeded per prompt, so all K responses see the same perturbed images.
        strength: see the table in the module docstring; ``None`` uses ``DEFAULT_STRENGTH[kind]``.

    Returns:
        Perturbed frames per entry, float32, same shapes; pixels outside ``valid`` keep their values.
    """
    _check_kind(kind)
    strength = DEFAULT_STRENGTH[kind] if strength is None else float(strength)
    out = PERTURBATIONS[kind](images, generator, strength)
    return [y if v is None else torch.where(v[:, None], y, x) for x, y, v in zip(images.frames, out, images.valid)]


# --- layouts converted to and from the representation --------------------------------------------------


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


def perturb_pixel_values(
    kind: str,
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor,
    generator: torch.Generator,
    strength: float | None = None,
    layout: PatchLayout | None = None,
) -> torch.Tensor:
    """Perturb the patch rows of ONE prompt's images (Qwen-VL): rows → ``ImageSet`` → rows.

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
    _check_kind(kind)
    layout = layout or PatchLayout()
    sizes = _check(pixel_values, image_grid_thw, layout)
    grids = image_grid_thw.tolist()
    rows = torch.split(pixel_values.float(), sizes)

    def storage_noise(gen: torch.Generator) -> list[torch.Tensor]:
        noise = torch.split(_randn(pixel_values.shape, gen, pixel_values.device), sizes)
        return [unflatten_patches(n, g, layout) for n, g in zip(noise, grids)]

    images = ImageSet(
        frames=[unflatten_patches(r, g, layout) for r, g in zip(rows, grids)],
        valid=[None] * len(sizes),
        layout=layout.images,
        copies=layout.temporal_patch_size,
        storage_noise=storage_noise,
    )
    out = perturb_image_set(kind, images, generator, strength)
    if not out:
        return pixel_values.clone()
    return torch.cat([flatten_patches(f, g, layout) for f, g in zip(out, grids)]).to(pixel_values.dtype)


def perturb_image_tiles(
    kind: str,
    pixel_values: torch.Tensor,
    generator: torch.Generator,
    strength: float | None = None,
    layout: TileLayout | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Perturb the ``(N, C, H, W)`` normalised images / tiles of ONE prompt (module docstring), each a
    still of its own, as one ``ImageSet`` entry.

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
    _check_kind(kind)
    if layout is None:
        raise ValueError("perturb_image_tiles needs the family's TileLayout (mean/std and blackout cell)")
    if pixel_values.dim() != 4 or pixel_values.shape[1] != layout.channels:
        raise ValueError(
            f"pixel_values must be (N, C={layout.channels}, H, W) images or tiles; got {tuple(pixel_values.shape)}"
        )
    n, _, h, w = pixel_values.shape
    if valid is not None:
        if tuple(valid.shape) != (n, h, w):
            raise ValueError(f"valid must be (N, H, W) = {(n, h, w)}; got {tuple(valid.shape)}")
        valid = valid.to(pixel_values.device, torch.bool)
    images = ImageSet(frames=[pixel_values.float()], valid=[valid], layout=layout)
    return perturb_image_set(kind, images, generator, strength)[0].to(pixel_values.dtype)
