"""Suite-wide fixtures."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _dataset_cache_in_tmp(tmp_path_factory):
    """Loaded datasets are cached (visent.data.cache); tests keep theirs out of the user's ~/.cache."""
    old = os.environ.get("VISENT_CACHE_DIR")
    os.environ["VISENT_CACHE_DIR"] = str(tmp_path_factory.mktemp("visent-dataset-cache"))
    yield
    if old is None:
        os.environ.pop("VISENT_CACHE_DIR", None)
    else:
        os.environ["VISENT_CACHE_DIR"] = old
