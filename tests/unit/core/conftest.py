"""Shared helpers for the visent.core unit tests: padded masks and synthetic token statistics."""

from __future__ import annotations

import pytest
import torch

from visent.core.stats import TokenStats

# (7, 13) with a full row, a single-token row, an all-padding row and assorted lengths.
ODD_LENGTHS = [13, 1, 0, 7, 12, 2, 5]
ODD_T = 13


def right_padded_mask(lengths: list[int], T: int) -> torch.Tensor:
    """``(B, T)`` float32 mask with ``lengths[i]`` leading ones per row."""
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()


def random_stats(mask: torch.Tensor, seed: int, dtype=torch.float32) -> TokenStats:
    """Plausible statistics (entropy >= 0, JSD in [0, log 2], KL >= 0), zero at padding."""
    g = torch.Generator().manual_seed(seed)
    shape = mask.shape
    h = torch.rand(shape, generator=g, dtype=torch.float64) * 4.0
    hp = (h + torch.randn(shape, generator=g, dtype=torch.float64)).clamp_min(0.0)
    jsd = torch.rand(shape, generator=g, dtype=torch.float64) * 0.69
    kl = jsd * (1.0 + 3.0 * torch.rand(shape, generator=g, dtype=torch.float64))
    m = mask.double()
    return TokenStats(*(x.mul(m).to(dtype) for x in (h, hp, jsd, kl)))


@pytest.fixture
def odd_mask() -> torch.Tensor:
    return right_padded_mask(ODD_LENGTHS, ODD_T)


# Test modules take these through fixtures (no imports from conftest, which is not a package module).


@pytest.fixture
def stats_cls() -> type:
    return TokenStats


@pytest.fixture
def make_stats():
    return random_stats


@pytest.fixture
def padded_mask():
    return right_padded_mask
