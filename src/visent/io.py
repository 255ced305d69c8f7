"""Reading JSON-lines files and writing files atomically: the one copy every layer uses.

- ``json_lines(path)``: ``(line number, value)`` per non-blank line; a bad line either fails naming the file
  and the line (``on_bad="raise"``, ``JsonlError``) or comes back as ``None`` (``on_bad="none"``: a torn
  final line of a file another process was appending to, which a resumed run redoes);
- ``read_jsonl(path)``: the values only (a bad line fails);
- ``write_atomic`` / ``write_json_atomic``: readers see the old file or the new one, never a half-written
  file. (Dataset rows are read by ``visent.data.formats.rows``, which reports each bad row as a
  ``DataError`` instead of failing.)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

__all__ = ["JsonlError", "json_lines", "read_jsonl", "write_atomic", "write_json_atomic"]


class JsonlError(ValueError):
    """A line of a JSON-lines file that is not valid JSON; the message names the file and the line."""


def json_lines(
    path: str | os.PathLike, *, on_bad: Literal["raise", "none"] = "raise", errors: str = "strict"
) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of ``path`` (line numbers from 1).

    ``on_bad="raise"``: a line that is not JSON raises ``JsonlError`` ("<path>, line <n>: not valid JSON
    (...)"); ``"none"``: its value is ``None``. ``errors`` is the text decoding's error policy.
    """
    with open(path, encoding="utf-8", errors=errors) as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                if on_bad == "none":
                    yield n, None
                    continue
                raise JsonlError(f"{os.fspath(path)}, line {n}: not valid JSON ({exc.msg})") from None


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = False) -> list[Any]:
    """The values of every non-blank line of ``path``; ``[]`` for a missing file when ``missing_ok``."""
    if missing_ok and not os.path.exists(path):
        return []
    return [value for _, value in json_lines(path)]


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    Readers see the old file or the new one, never a half-written file; on error the temporary file is
    removed and the old file is left untouched. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """``obj`` as indented JSON (non-ASCII kept, unknown types as ``str``), written with ``write_atomic``."""
    write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")
