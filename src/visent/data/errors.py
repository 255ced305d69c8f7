"""What can be wrong with a dataset row, and how loaders report it.

Every loader runs in one of two modes. ``strict=True``: the first bad row raises a :class:`DataError`
whose message names the file, the row and the field. ``strict=False`` (the default): the bad row is
skipped, and the :class:`LoadReport` returned beside the examples counts it under its reason and keeps a
few messages of each kind, so data loss is always visible (the CLI prints it; loaders also log it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Reasons a row can be rejected. Kept as plain strings so reports serialise to JSON directly.
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
MISSING_ANSWER = "missing_answer"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
INVALID_BOX = "invalid_box"
BOX_OUTSIDE_IMAGE = "box_outside_image"
BAD_VALUE = "bad_value"

REASONS: tuple[str, ...] = (
    MALFORMED_JSON,
    MISSING_FIELD,
    MISSING_ANSWER,
    MISSING_IMAGE,
    CORRUPT_IMAGE,
    INVALID_BOX,
    BOX_OUTSIDE_IMAGE,
    BAD_VALUE,
)


@dataclass(frozen=True)
class RowRef:
    """Where a row came from.

    ``kind`` says how to read ``row``: ``"line"`` is a 1-based line number of a jsonl file (what an editor
    shows), ``"index"`` a 0-based position in a JSON array / parquet table / Hub split, ``"key"`` the key of
    a JSON object mapping ids to rows (MathVista), ``"dir"`` a per-example directory (Geometry3K raw).
    """

    file: str
    row: Any
    kind: str = "index"

    def __str__(self) -> str:
        if self.kind == "line":
            return f"{self.file} line {self.row}"
        if self.kind == "key":
            return f"{self.file} key {self.row!r}"
        if self.kind == "dir":
            return f"{self.file}"
        return f"{self.file} row {self.row}"


class DataError(ValueError):
    """A dataset problem the user must fix (or skip with ``strict=False``).

    Attributes:
        reason: one of :data:`REASONS` (or ``"config"`` for a bad loader argument).
        where: the row reference, when the problem is one row.
        field: the offending field/column, when known.
    """

    def __init__(self, message: str, *, reason: str = BAD_VALUE, where: RowRef | None = None,
                 field: str | None = None) -> None:
        self.reason = reason
        self.where = where
        self.field = field
        self.detail = message
        prefix = ""
        if where is not None:
            prefix = f"{where}"
            if field is not None:
                prefix += f", field {field!r}"
            prefix += ": "
        elif field is not None:
            prefix = f"field {field!r}: "
        # The reason tag helps grep a lenient load's report; a bad argument ("config") needs none.
        suffix = "" if reason == "config" else f" [{reason}]"
        super().__init__(f"{prefix}{message}{suffix}")


@dataclass
class LoadReport:
    """What a load produced and what it dropped.

    Attributes:
        source: the path or Hub id loaded.
        format: the format name used.
        rows_seen: rows read (including skipped ones).
        loaded: examples produced.
        skipped: reason -> number of rows dropped for it.
        samples: reason -> up to ``max_samples`` error messages, to show what went wrong.
        notes: counts of tolerated oddities that did not drop the row (e.g. images allowed missing).
    """

    source: str = ""
    format: str = ""
    rows_seen: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)
    max_samples: int = 3

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def record_skip(self, error: DataError) -> None:
        self.skipped[error.reason] += 1
        bucket = self.samples.setdefault(error.reason, [])
        if len(bucket) < self.max_samples:
            bucket.append(str(error))

    def summary(self) -> str:
        """Human-readable multi-line summary (what ``visent data inspect`` prints)."""
        lines = [f"source: {self.source}", f"format: {self.format}",
                 f"rows: {self.rows_seen}  loaded: {self.loaded}  skipped: {self.skipped_total}"]
        for reason, count in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  skipped {count} x {reason}")
            for msg in self.samples.get(reason, []):
                lines.append(f"    e.g. {msg}")
        for note, count in sorted(self.notes.items()):
            lines.append(f"  note: {count} x {note}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "rows_seen": self.rows_seen,
                "loaded": self.loaded, "skipped": dict(self.skipped), "samples": dict(self.samples),
                "notes": dict(self.notes)}
