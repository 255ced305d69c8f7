"""Load any supported dataset layout into canonical :class:`~visent.data.schema.Example` rows.

    examples, report = load_examples("shared/data/mathvision/data/testmini.jsonl")   # format detected
    examples, report = load_examples("hiyouga/geometry3k", format="geometry3k", split="train")  # Hub id
    examples, report = load_examples(path, format="screenspot_pro", image_root="screenshots/", strict=True)

Bad rows (missing/corrupt image, box outside the image, missing answer, malformed JSON line) raise a
:class:`~visent.data.errors.DataError` naming file, row and field when ``strict=True``; otherwise they are
skipped and counted in the returned :class:`~visent.data.errors.LoadReport` (and logged). Every example
records its origin in ``meta["source_file"]`` / ``meta["source_row"]``.

The layouts themselves live in ``visent.data.formats``; ``FORMATS`` below is the table of them.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visent.data.errors import DataError, LoadReport, RowRef
from visent.data.formats import chat, classification, generic, gui, math
from visent.data.formats.base import Format
from visent.data.formats.context import LoadOptions, RowContext
from visent.data.formats.generic import parse_mapping
from visent.data.formats.rows import TABLE_SUFFIXES, first_row
from visent.data.schema import TASKS, Example

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^(hf:)?[A-Za-z0-9][\w.-]*/[\w.-]+$")


def get_format(name: str) -> Format:
    """The format called ``name``; an unknown name fails listing the valid ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise DataError(f"unknown format {name!r}; valid formats: {', '.join(sorted(FORMATS))}",
                        reason="config") from None


def detect_from_row(row: dict, where: str) -> str:
    """The one format whose column signature matches ``row``; fails when none or several do."""
    hits = [name for name, fmt in FORMATS.items() if fmt.detect is not None and fmt.detect(row)]
    if len(hits) == 1:
        return hits[0]
    cols = ", ".join(sorted(row)) if isinstance(row, dict) else "?"
    if not hits:
        raise DataError(f"cannot tell the format of {where} from its columns ({cols}); pass format= / --format "
                        f"(valid: {', '.join(sorted(FORMATS))}), or format='generic' with a mapping",
                        reason="config")
    raise DataError(f"{where} matches several formats ({', '.join(hits)}); pass format= / --format",
                    reason="config")


def detect_format(source: str | Path) -> str:
    """Guess the format of a local file or folder (unambiguous cases only)."""
    path = Path(source)
    if path.suffix == ".pth":
        return "visual_rft_cls"
    if (path.is_dir() and not any(p.suffix.lower() in TABLE_SUFFIXES for p in path.iterdir() if p.is_file())
            and any((d / "data.json").is_file() for d in path.iterdir() if d.is_dir())):
        return "geometry3k_raw"
    if path.is_dir() and (path / "data.json").is_file():
        return "geometry3k_raw"
    row = first_row(path)
    if row is None:
        raise DataError(f"{str(path)!r} holds no rows to detect a format from", reason="config")
    return detect_from_row(row, repr(str(path)))


def _is_hub_id(source: str) -> bool:
    if source.startswith("hf:"):
        return True
    return bool(_HUB_ID.match(source)) and not Path(source).exists() and Path(source).suffix.lower() not in (
        *TABLE_SUFFIXES, ".pth")


def _undecoded(feature: Any) -> Any:
    """``feature`` with every ``Image`` in it set to ``decode=False`` (rows then carry ``{bytes, path}``)."""
    from datasets import Image

    if isinstance(feature, Image):
        return Image(decode=False)
    if isinstance(feature, dict):
        return type(feature)({k: _undecoded(v) for k, v in feature.items()})
    inner = getattr(feature, "feature", None)
    if inner is not None and hasattr(feature, "__dataclass_fields__"):  # List / Sequence / LargeList
        from dataclasses import replace

        return replace(feature, feature=_undecoded(inner))
    return feature


def _hub_rows(repo_id: str, split: str | None,
              keep_encoded: bool = False) -> tuple[str, Iterator[tuple[RowRef, Any]], str | None]:
    """Rows of a Hub dataset through ``datasets.load_dataset`` (network or the local HF cache).

    With ``keep_encoded`` image columns are read undecoded (``{bytes, path}``), as the streaming loader
    wants them, instead of as PIL images it would have to encode again."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a hard dependency
        raise DataError(f"loading a Hub dataset needs `datasets`: {exc}", reason="config") from None
    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing-repo and offline errors all land here
        raise DataError(f"could not load Hub dataset {repo_id!r} (split {split!r}): {type(exc).__name__}: {exc}. "
                        f"No local file or folder has that name either. Offline? Download it once with network "
                        f"access (it is then read from the HF cache), or pass a local path.", reason="config") from None
    if isinstance(ds, dict):  # DatasetDict: no split given
        if len(ds) != 1:
            raise DataError(f"Hub dataset {repo_id!r} has splits {', '.join(ds)}; pass split= / --split",
                            reason="config")
        split, ds = next(iter(ds.items()))
    label = f"hf:{repo_id}[{split}]"
    if keep_encoded:
        features = _undecoded(ds.features)
        if features != ds.features:
            # Only the decode flag changes: same Arrow storage, so this is a metadata change, not a copy.
            ds = ds.cast(features)

    def rows() -> Iterator[tuple[RowRef, Any]]:
        for idx, row in enumerate(ds):
            yield RowRef(label, idx, "index"), dict(row)

    return label, rows(), getattr(ds, "_fingerprint", None)


def _parse_row(fmt: Format, row: dict, ctx: RowContext) -> Example:
    """``fmt.parse`` with any exception other than DataError turned into one naming the row.

    Parsers check the fields they know about, but a public dataset can hold any JSON value anywhere (a
    number where text was expected, a list for a dict); the resulting TypeError/AttributeError deep in
    a parser must become a skippable, reported bad row rather than a traceback that ends the load.
    """
    try:
        return fmt.parse(row, ctx)
    except DataError:
        raise
    except RecursionError:
        raise ctx.error("a value is nested too deeply to read") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure on an odd value is this row's problem
        raise ctx.error(f"unexpected value in this row ({type(exc).__name__}: {exc})") from None


@dataclass
class Source:
    """An opened dataset source: its label, format, options and raw-row iterator (not yet read)."""

    label: str
    fmt: Format
    options: LoadOptions
    rows: Iterator[tuple[RowRef, Any]]
    path: Path | None  # None for a Hub dataset
    hub_id: str | None = None
    split: str | None = None
    fingerprint: str | None = None  # the Hub split's ``datasets`` fingerprint (part of the cache key)


def make_options(mapping: dict[str, str] | str | None = None, image_root: str | Path | None = None,
                 allow_missing_images: bool = False, image_check: str = "decode", task: str | None = None,
                 classes_file: str | Path | None = None, keep_encoded: bool = False) -> LoadOptions:
    """Validated :class:`LoadOptions` from loader keyword arguments."""
    if isinstance(mapping, str):
        mapping = parse_mapping(mapping)
    if task is not None and task not in TASKS:
        raise DataError(f"unknown task {task!r}; valid: {', '.join(TASKS)}", reason="config")
    return LoadOptions(image_root=str(image_root) if image_root else None,
                       allow_missing_images=allow_missing_images, image_check=image_check,  # type: ignore[arg-type]
                       mapping=dict(mapping or {}), task=task,
                       classes_file=str(classes_file) if classes_file else None, keep_encoded=keep_encoded)


def open_source(source: str | Path, format: str | None, options: LoadOptions, split: str | None = None) -> Source:
    """Resolve ``source`` (path or Hub id) and its format; rows are read lazily from ``Source.rows``."""
    if format is None and options.mapping:
        format = "generic"
    elif options.mapping and format != "generic":
        # A known format reads its own published columns; silently ignoring the user's mapping would load
        # other fields than the ones they named.
        raise DataError(f"--map applies to the generic format only; --format {format} reads its own columns "
                        "(drop --format, or use --format generic with the mapping)", reason="config")
    src = str(source)
    path: Path | None = None
    hub_id = fingerprint = None
    if _is_hub_id(src):
        hub_id = src.removeprefix("hf:")
        label, rows, fingerprint = _hub_rows(hub_id, split, options.keep_encoded)
        if format is None:
            head = next(rows, None)
            if head is None:
                raise DataError(f"{label} has no rows", reason="config")
            format = detect_from_row(head[1], label)
            rows = itertools.chain([head], rows)
        fmt = get_format(format)
    else:
        path = Path(src)
        if not path.exists():
            raise DataError(f"no such file or folder: {src!r}", reason="config")
        fmt = get_format(format or detect_format(path))
        label, rows = src, fmt.read(path, options)
    if fmt.name == "generic" and not options.mapping:
        raise DataError("the generic format needs a mapping, e.g. --map prompt=question,answer=label,images=image",
                        reason="config")
    return Source(label, fmt, options, rows, path, hub_id, split, fingerprint)


def iter_examples(src: Source, report: LoadReport, *, strict: bool = False,
                  limit: int | None = None) -> Iterator[Example]:
    """Parse ``src``'s rows one at a time: each good row is yielded, each bad one raised (``strict``) or
    counted in ``report`` and skipped. Holds nothing per row beyond the seen-id set, so a caller that
    writes examples out as they come (``visent.data.table``) keeps memory flat. ``fmt.finalize`` is
    the caller's business (it needs every example)."""
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}", reason="config")
    seen_ids: set[str] = set()
    image_cache: dict[str, Any] = {}
    for ref, row in src.rows:
        if limit is not None and report.rows_seen >= limit:
            break
        report.rows_seen += 1
        try:
            if isinstance(row, DataError):
                raise row
            file_dir = None if ref.file.startswith("hf:") else Path(ref.file).parent
            ctx = RowContext(where=ref, base_dir=file_dir, options=src.options, report=report,
                             image_cache=image_cache)
            example = _parse_row(src.fmt, row, ctx)
        except DataError as err:
            if strict or err.reason == "config":
                raise
            report.record_skip(err)
            continue
        if ctx.missing_images:
            example.meta["missing_images"] = list(ctx.missing_images)
            report.notes["row kept without its missing image(s) (allow_missing_images)"] += 1
        if example.id in seen_ids:
            report.notes["duplicate id"] += 1
        seen_ids.add(example.id)
        yield example


def warn_skipped(report: LoadReport) -> None:
    if report.skipped_total:
        logger.warning("skipped %d of %d rows while loading %s:\n%s", report.skipped_total, report.rows_seen,
                       report.source, report.summary())


def load_examples(
    source: str | Path,
    format: str | None = None,
    *,
    strict: bool = False,
    mapping: dict[str, str] | str | None = None,
    limit: int | None = None,
    image_root: str | Path | None = None,
    allow_missing_images: bool = False,
    image_check: str = "decode",
    task: str | None = None,
    classes_file: str | Path | None = None,
    split: str | None = None,
) -> tuple[list[Example], LoadReport]:
    """Load ``source`` (a local file/folder or a Hub dataset id) into a list of examples, all in memory.

    This is the eager loader: embedded images come back decoded (PIL). For real-size sets use
    :func:`visent.data.table.load_table` (streaming, Arrow-backed, cached), which parses every row with
    the same code and gives the same examples.

    Args:
        source: a jsonl/json/parquet file, a folder of them (or Geometry3K's problem folders), a Visual-RFT
            ``.pth``, or a Hub id (``owner/name``, or ``hf:owner/name`` to force it).
        format: a key of ``FORMATS``; detected from the columns when omitted and unambiguous.
            A ``mapping`` without a format means ``generic``.
        strict: raise on the first bad row instead of skipping it.
        mapping: for ``generic``: ``{"prompt": col, "answer": col, "images": col, ...}`` or
            ``"prompt=col,answer=col"``; a column may be a dotted path (``meta.answer``,
            ``conversations.1.value``).
        limit: read at most this many rows (bad ones included).
        image_root, allow_missing_images, image_check, task, classes_file: see
            :class:`~visent.data.formats.context.LoadOptions`.
        split: Hub split (required when the dataset has several).

    Returns:
        ``(examples, report)``.
    """
    options = make_options(mapping, image_root, allow_missing_images, image_check, task, classes_file)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}", reason="config")
    src = open_source(source, format, options, split)
    report = LoadReport(source=src.label, format=src.fmt.name)
    examples = list(iter_examples(src, report, strict=strict, limit=limit))
    if src.fmt.finalize is not None:
        src.fmt.finalize(examples, options, src.path)
    report.loaded = len(examples)
    warn_skipped(report)
    return examples, report


# name -> format (load one with load_examples(path, format=name)).
FORMATS: dict[str, Format] = {**math.FORMATS, **gui.FORMATS, **classification.FORMATS, **chat.FORMATS,
                               **generic.FORMATS}
