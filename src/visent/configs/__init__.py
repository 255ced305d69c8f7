"""The method configs shipped with visent: one YAML of ``VisentConfig`` fields per method and baseline.

``PAPERS.md`` maps each paper's method to its file. ``visent train --config NAME`` takes a name here
(``vepo``, ``grpo``, ...) as well as a path; ``accelerate/`` holds launcher configs for
``accelerate launch --config_file``. The files are package data, so an installed visent finds them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CONFIG_DIR", "config_names", "resolve_config"]

CONFIG_DIR = Path(__file__).resolve().parent


def config_names() -> list[str]:
    """The shipped method configs' names (file names without ``.yaml``), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str | os.PathLike) -> Path:
    """The YAML file a ``--config`` value means: an existing file, else a shipped config's name.

    A name may carry ``.yaml`` (``vepo`` and ``vepo.yaml`` are the same). Raises ``FileNotFoundError``
    naming the valid names when it is neither.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if str(path) in (name, f"{name}.yaml") and shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"config {os.fspath(name_or_path)!r} does not exist: neither a file nor the name of a shipped config "
        f"({', '.join(config_names())})"
    )
