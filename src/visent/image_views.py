"""Perturbations of whole raw images, before the processor: PAPO's blackout and CPPO's two views.

Each view takes one image as a ``(C, H, W)`` float tensor in [0, 1] and a ``torch.Generator`` and returns an
image of the same size, so the processor turns it into exactly the clean image's grid of vision tokens (the
prompt's tokens are unchanged). :func:`perturb_raw_images` applies a view to PIL images and returns PIL images.

* ``raw_blackout`` — PAPO (``MikeWangWZHL/PAPO`` @ fb63bf4, ``verl/trainer/papo_utils.py:17-30``): a grid of
  14 × 14 px cells anchored at (0, 0); each cell set to black with probability ``strength`` (PAPO: 0.6).
* ``cppo_preserving`` — CPPO's information-preserving view (``vbdi/cppo`` @ cb1da3e, ``cppo_dataset.py``
  ``sem_preserving_transforms``): one of colour jitter (brightness ×U(0.2, 1.3), contrast ×U(0.2, 1.8),
  saturation ×U(0.2, 1.8)), a random perspective (distortion 0.2, applied with p = 0.5), a rotation by U(−10°, 10°).
* ``cppo_removing`` — CPPO's information-removing view (``sem_changing_transforms``): one of 50 rectangles of
  uniform noise with sides U(5%, 15%) of the image's, or a zoom-crop keeping a U(0.6, 0.7) fraction of each side,
  resized back (bilinear).

Departures: the authors draw with Python's/NumPy's global RNGs (here a seeded ``torch.Generator``, so a run is
reproducible); torchvision's ``ColorJitter`` applies its three factors in a random order (here always
brightness, contrast, saturation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from visent.perturb import BLACKOUT_CELL_PX, grid_cells

__all__ = ["RAW_VIEWS", "cppo_preserving", "cppo_removing", "grid_blackout", "perturb_raw_images"]



def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive, like ``random.randint``)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def grid_blackout(image: torch.Tensor, generator: torch.Generator, p: float = 0.5, cell: int = BLACKOUT_CELL_PX) -> torch.Tensor:
    """Each ``cell × cell`` square of a grid anchored at (0, 0) set to 0 with probability ``p`` (edge cells cropped);
    the grid is :func:`visent.perturb.grid_cells`, the one VPPO's ``blackout_14px`` kind uses."""
    _, h, w = image.shape
    return image.masked_fill(grid_cells(1, h, w, p, generator, cell).to(image.device), 0.0)


def _color_jitter(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    image = TF.adjust_brightness(image, _uniform(g, 0.2, 1.3))
    image = TF.adjust_contrast(image, _uniform(g, 0.2, 1.8))
    return TF.adjust_saturation(image, _uniform(g, 0.2, 1.8))


def _perspective(image: torch.Tensor, g: torch.Generator, distortion: float = 0.2) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    if float(torch.rand((), generator=g)) >= 0.5:  # RandomPerspective(p=0.5)
        return image
    _, h, w = image.shape
    dx, dy = int(distortion * w / 2), int(distortion * h / 2)
    start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
    end = [
        [_randint(g, 0, dx), _randint(g, 0, dy)],
        [w - 1 - _randint(g, 0, dx), _randint(g, 0, dy)],
        [w - 1 - _randint(g, 0, dx), h - 1 - _randint(g, 0, dy)],
        [_randint(g, 0, dx), h - 1 - _randint(g, 0, dy)],
    ]
    return TF.perspective(image, start, end)


def _rotation(image: torch.Tensor, g: torch.Generator, degrees: float = 10.0) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.rotate(image, _uniform(g, -degrees, degrees))


def _occlusion(image: torch.Tensor, g: torch.Generator, count: int = 50, scale=(0.05, 0.15)) -> torch.Tensor:
    c, h, w = image.shape
    out = image.clone()
    for _ in range(count):
        ow, oh = int(_uniform(g, *scale) * w), int(_uniform(g, *scale) * h)
        x, y = _randint(g, 0, w - ow), _randint(g, 0, h - oh)
        # uint8 noise as the authors paste it: values k/255
        noise = torch.floor(torch.rand((c, oh, ow), generator=g) * 255) / 255
        out[:, y : y + oh, x : x + ow] = noise.to(out.dtype)
    return out


def _zoom_crop(image: torch.Tensor, g: torch.Generator, scale=(0.6, 0.7)) -> torch.Tensor:
    _, h, w = image.shape
    s = _uniform(g, *scale)
    nw, nh = max(1, int(w * s)), max(1, int(h * s))
    left, top = _randint(g, 0, w - nw), _randint(g, 0, h - nh)
    crop = image[None, :, top : top + nh, left : left + nw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]


def cppo_preserving(image: torch.Tensor, generator: torch.Generator, strength: float | None = None) -> torch.Tensor:
    """CPPO's information-preserving view (one transform drawn uniformly; module docstring)."""
    pick = _randint(generator, 0, 2)
    return (_color_jitter, _perspective, _rotation)[pick](image, generator).clamp(0.0, 1.0)


def cppo_removing(image: torch.Tensor, generator: torch.Generator, strength: float | None = None) -> torch.Tensor:
    """CPPO's information-removing view (one transform drawn uniformly; module docstring)."""
    pick = _randint(generator, 0, 1)
    return (_occlusion, _zoom_crop)[pick](image, generator).clamp(0.0, 1.0)


def _raw_blackout(image: torch.Tensor, generator: torch.Generator, strength: float | None = None) -> torch.Tensor:
    return grid_blackout(image, generator, 0.6 if strength is None else float(strength))


#: view name -> ``(image (C, H, W) in [0, 1], generator, strength) -> image``.
RAW_VIEWS: dict[str, Callable[..., torch.Tensor]] = {
    "raw_blackout": _raw_blackout,
    "cppo_preserving": cppo_preserving,
    "cppo_removing": cppo_removing,
}


def perturb_raw_images(images: Sequence[Any], kind: str, seed: int, strength: float | None = None) -> list[Any]:
    """``images`` (PIL) through the view ``kind``, one seeded draw for the list; PIL RGB images out."""
    from torchvision.transforms.v2 import functional as TF

    if kind not in RAW_VIEWS:
        raise ValueError(f"unknown raw-image view {kind!r}; valid: {', '.join(RAW_VIEWS)}")
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for img in images:
        t = TF.to_dtype(TF.pil_to_tensor(img.convert("RGB")), torch.float32, scale=True)
        t = RAW_VIEWS[kind](t, g, strength)
        out.append(TF.to_pil_image((t * 255).round().clamp(0, 255).to(torch.uint8)))
    return out
