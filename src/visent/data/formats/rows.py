"""Raw rows out of files: jsonl, json (an array, or an object of id -> row), parquet.

Each reader yields ``(RowRef, row)`` where ``row`` is a ``dict`` or, for a line that is not valid JSON,
a :class:`DataError` (so a lenient load can skip that one line instead of losing the file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visent.data.errors import MALFORMED_JSON, MISSING_FIELD, DataError, RowRef

Row = "dict[str, Any] | DataError"

TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")


def parse_json_text(text: str) -> Any:
    """``json.loads``, with every way a document can fail raised as ``json.JSONDecodeError``-like
    ``ValueError``: besides syntax errors, nesting deeper than Python's recursion limit (RecursionError)
    and integers longer than ``sys.get_int_max_str_digits()`` (ValueError) must not escape a loader."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)


def iter_jsonl(path: Path) -> Iterator[tuple[RowRef, Any]]:
    # Read bytes and decode each line: one line of invalid UTF-8 is one bad row, not a failed file.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            ref = RowRef(str(path), lineno, "line")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ref, DataError(f"not valid UTF-8 (byte {exc.start})", reason=MALFORMED_JSON, where=ref)
                continue
            if not line.strip():
                continue
            try:
                row = parse_json_text(line)
            except ValueError as exc:
                yield ref, DataError(f"not valid JSON ({_json_problem(exc)})", reason=MALFORMED_JSON, where=ref)
                continue
            if not isinstance(row, dict):
                yield ref, DataError(f"expected a JSON object, got {type(row).__name__}", reason=MALFORMED_JSON,
                                     where=ref)
                continue
            yield ref, row


def iter_json(path: Path) -> Iterator[tuple[RowRef, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = parse_json_text(fh.read())
    except ValueError as exc:  # also invalid UTF-8, absurd nesting, 5000-digit numbers
        # A broken JSON document cannot be split into rows: fail in both modes, naming the position.
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else 0
        raise DataError(f"not valid JSON ({_json_problem(exc)})", reason=MALFORMED_JSON,
                        where=RowRef(str(path), line, "line")) from None
    if isinstance(data, dict):
        # MathVista's testmini.json maps pid -> row; a dict holding a single list ({"data": [...]}) is
        # also common.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(data) == 1 and lists:
            data = lists[0]
        else:
            for key, row in data.items():
                ref = RowRef(str(path), key, "key")
                if isinstance(row, dict):
                    yield ref, row
                else:
                    yield ref, DataError(f"expected an object, got {type(row).__name__}", reason=MALFORMED_JSON,
                                         where=ref)
            return
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array or object of rows, got {type(data).__name__}",
                        reason=MALFORMED_JSON, where=RowRef(str(path), 0))
    for idx, row in enumerate(data):
        ref = RowRef(str(path), idx, "index")
        if isinstance(row, dict):
            yield ref, row
        else:
            yield ref, DataError(f"expected an object, got {type(row).__name__}", reason=MALFORMED_JSON, where=ref)


def iter_parquet(path: Path) -> Iterator[tuple[RowRef, Any]]:
    import pyarrow.parquet as pq  # a dependency of `datasets`; imported lazily to keep startup light

    try:
        # pre_buffer off and one row group at a time without threads: pyarrow's default iter_batches reads
        # row groups ahead of a slow consumer, which for a parquet of embedded images held most of the file
        # in memory (10,000 geometry3k rows: 571 MB of Arrow buffers at peak; this way: ~90 MB).
        pf = pq.ParquetFile(path, pre_buffer=False)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise DataError(f"cannot read parquet file: {exc}", reason=MALFORMED_JSON,
                        where=RowRef(str(path), 0)) from None
    idx = 0
    for group in range(pf.num_row_groups):
        for batch in pf.iter_batches(batch_size=256, row_groups=[group], use_threads=False):
            for row in batch.to_pylist():  # Image features arrive as {"bytes": ..., "path": ...} dicts
                yield RowRef(str(path), idx, "index"), row
                idx += 1


def iter_table(path: Path) -> Iterator[tuple[RowRef, Any]]:
    """Rows of one jsonl/json/parquet file, chosen by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return iter_jsonl(path)
    if suffix == ".json":
        return iter_json(path)
    if suffix == ".parquet":
        return iter_parquet(path)
    raise DataError(f"unsupported file type {suffix!r}; expected one of {', '.join(TABLE_SUFFIXES)}",
                    reason="config", where=RowRef(str(path), 0))


def iter_files(path: Path) -> list[Path]:
    """A file, or the table files directly inside a folder (sorted, so row order is stable)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
        if not files:
            raise DataError(f"no {'/'.join(TABLE_SUFFIXES)} files in folder {str(path)!r}", reason=MISSING_FIELD)
        return files
    raise DataError(f"no such file or folder: {str(path)!r}", reason="config")


def first_row(path: Path) -> dict[str, Any] | None:
    """The first well-formed row of the first table file (for format detection)."""
    for file in iter_files(path):
        for _, row in iter_table(file):
            if isinstance(row, dict):
                return row
    return None
