"""Every method config keeps a bounded number of checkpoints: a 7B full fine-tuning checkpoint with its
optimizer state is ~100 GB (docs/training.md), so ``save_steps: 100`` alone fills a disk within a run."""

from __future__ import annotations

import glob
import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "src", "visent", "configs", "*.yaml")))


def test_there_are_method_configs():
    assert len(CONFIGS) > 10


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_method_config_bounds_its_checkpoints(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    limit = config.get("save_total_limit")
    assert isinstance(limit, int) and limit >= 1, f"{os.path.basename(path)}: no save_total_limit"
    # resuming is kept possible: checkpoints hold the optimizer state unless a run asks otherwise
    assert not config.get("save_only_model", False)
