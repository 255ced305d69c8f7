"""Reading the jsonl files the viz tools take (the trainer's metrics, eval's predictions)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def json_lines(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line; a bad line fails naming file and line.

    The whole file is read first, so ``OSError`` / ``UnicodeDecodeError`` surface from this call, before
    any row is used. Shape checks of the values are the caller's.
    """
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{os.fspath(path)}, line {n}: not valid JSON ({exc.msg})") from None
    return rows
