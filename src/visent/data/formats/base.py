"""The :class:`Format` record: how to read, recognise and parse one published dataset layout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visent.data.errors import RowRef
from visent.data.formats.context import LoadOptions, RowContext
from visent.data.formats.rows import iter_files, iter_table
from visent.data.schema import Example

Parser = Callable[[dict, RowContext], Example]


def read_tables(path: Path, options: LoadOptions) -> Iterator[tuple[RowRef, Any]]:
    """Default reader: every jsonl/json/parquet row of a file or of the files in a folder."""
    for file in iter_files(path):
        yield from iter_table(file)


@dataclass(frozen=True)
class Format:
    """One dataset layout.

    Attributes:
        name: the key in ``visent.data.loaders.FORMATS`` (what ``--format`` takes).
        task: the task its examples get (informational; a parser may choose per row).
        description: one line: where the layout comes from and what it holds.
        parse: ``(row, ctx) -> Example``; raises ``DataError`` for a bad row.
        detect: ``(first_row) -> bool`` when the layout is recognisable from its columns; ``None`` when it
            is too generic to guess (then ``--format`` is required).
        read: ``(path, options) -> iterator of (RowRef, row | DataError)``.
        finalize: optional pass over all parsed examples (e.g. attach a dataset-wide class list).
    """

    name: str
    task: str
    description: str
    parse: Parser
    detect: Callable[[dict], bool] | None = None
    read: Callable[[Path, LoadOptions], Iterator[tuple[RowRef, Any]]] = read_tables
    finalize: Callable[[list[Example], LoadOptions, Path | None], None] | None = None


def has_columns(row: dict, *names: str) -> bool:
    return all(n in row for n in names)
