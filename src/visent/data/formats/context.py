"""Per-row helpers every format parser uses: required fields, answers, images, boxes, choices.

A parser receives a raw row (a ``dict``) and a :class:`RowContext`; anything wrong raises a
:class:`~visent.data.errors.DataError` naming the row and field, and the loader decides (strict or not)
whether that aborts the load or skips the row.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from visent.data.errors import (
    BAD_VALUE,
    BOX_OUTSIDE_IMAGE,
    CORRUPT_IMAGE,
    INVALID_BOX,
    MISSING_ANSWER,
    MISSING_FIELD,
    MISSING_IMAGE,
    DataError,
    LoadReport,
    RowRef,
)

ImageCheck = Literal["decode", "header", "exists"]
IMAGE_CHECKS: tuple[str, ...] = ("decode", "header", "exists")


@dataclass
class LoadOptions:
    """Knobs shared by all formats.

    Attributes:
        image_root: folder to look for images in first (relative references are joined to it; absolute
            references that do not exist are retried as ``image_root / basename``, which is how
            Visual-RFT's and lmm-r1's machine-specific absolute paths become usable).
        allow_missing_images: keep rows whose image files are absent, text-only (the missing paths go to
            ``meta["missing_images"]`` and are counted in ``LoadReport.notes``). Off by default: a missing
            image is a bad row.
        image_check: how hard to look at each image file: ``"decode"`` fully decodes it (catches
            truncated files, the common corruption), ``"header"`` only opens it (reads its size),
            ``"exists"`` only checks the file is there.
        mapping: canonical field -> column, for the ``generic`` format.
        task: task name for the ``generic`` format (default ``"other"``).
        classes_file: a text file with one class name per line (classification formats).
        keep_encoded: keep embedded image bytes as ``{"bytes", "path"}`` structs after checking them (the
            streaming loader, ``visent.data.table``) instead of returning decoded PIL images (the eager
            ``load_examples``). The check is the same ``image_check`` either way.
    """

    image_root: str | None = None
    allow_missing_images: bool = False
    image_check: ImageCheck = "decode"
    mapping: dict[str, str] = field(default_factory=dict)
    task: str | None = None
    classes_file: str | None = None
    keep_encoded: bool = False

    def __post_init__(self) -> None:
        if self.image_check not in IMAGE_CHECKS:
            raise DataError(f"unknown image_check {self.image_check!r}; valid: {', '.join(IMAGE_CHECKS)}",
                            reason="config")


@dataclass
class RowContext:
    """Where the current row lives and the options in force; passed to every parser call."""

    where: RowRef
    base_dir: Path | None
    options: LoadOptions
    report: LoadReport
    # path -> (width, height) or DataError, shared across rows: screenshots are reused by many rows.
    image_cache: dict[str, Any] = field(default_factory=dict)
    # Filled by parsers when a row's images were allowed to be missing.
    missing_images: list[str] = field(default_factory=list)

    def error(self, message: str, *, reason: str = BAD_VALUE, field: str | None = None) -> DataError:
        return DataError(message, reason=reason, where=self.where, field=field)

    def source_meta(self) -> dict[str, Any]:
        return {"source_file": self.where.file, "source_row": self.where.row}


# ---------------------------------------------------------------------------------------------- fields


def default_id(ctx: RowContext) -> str:
    """The id of a row without one: ``<file stem>:<row>``."""
    return f"{Path(ctx.where.file).stem}:{ctx.where.row}"


def require(row: dict, key: str, ctx: RowContext, *, answer: bool = False) -> Any:
    """``row[key]``, or a DataError naming the field when it is absent, None or an empty string."""
    value = row.get(key) if isinstance(row, dict) else None
    if value is None or (isinstance(value, str) and not value.strip()):
        reason = MISSING_ANSWER if answer else MISSING_FIELD
        present = "absent" if not isinstance(row, dict) or key not in row else f"empty ({value!r})"
        raise ctx.error(f"required field is {present}", reason=reason, field=key)
    return value


def answer_text(value: Any) -> str:
    """Canonical text form of a label: numbers without a trailing ``.0``, containers as JSON."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


_PLACEHOLDER = re.compile(r"<image\d*>")


def strip_image_placeholders(text: str) -> str:
    """Remove ``<image>`` / ``<image1>`` markers: ``Example.prompt`` carries no placeholders; the
    trainer's chat template inserts the image tokens itself."""
    return _PLACEHOLDER.sub("", text).strip()


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def with_choices(question: str, choices: list[str]) -> str:
    """The question followed by its lettered options, so a model can answer by letter."""
    if all(c.strip() == LETTERS[i] for i, c in enumerate(choices)):
        # MATH-Vision: the options are drawn in the image; only the letters are text.
        return f"{question}\nChoices: {', '.join(LETTERS[: len(choices)])}"
    lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return question + "\nChoices:\n" + "\n".join(lines)


# An option marker "A." / "A:" / "(A)" / "A)" at the start of the text or after a separator. In a whole
# question (``line_start``) only markers that open a line count, so prose like "point A. Then" is not one.
_MARKER = re.compile(r"(?:^|(?<=[\s;,]))\(?([A-Z])(?:\)|[.:：])\s*")
_LINE_MARKER = re.compile(r"(?m)^[ \t]*\(?([A-Z])(?:\)|[.:：])[ \t]*")


def split_lettered_options(text: str, *, line_start: bool = False) -> tuple[str, list[str]] | None:
    """``"A. 300;B. 400; C. 5"`` -> ``("", ["300", "400", "5"])``: the text before the first option and the
    options, read from consecutive markers A, B, C, ... (at least two). None when there are none.

    ``line_start`` reads options listed one per line inside a question (MathVerse's ``"Choices:\\nA:2\\nB:3"``).
    """
    markers = []
    expected = "A"
    for m in (_LINE_MARKER if line_start else _MARKER).finditer(text):
        if m.group(1) == expected:
            markers.append(m)
            expected = chr(ord(expected) + 1)
    if len(markers) < 2:
        return None
    options = []
    for i, m in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        options.append(text[m.end():end].strip().rstrip(";,").strip())
    if not all(options):
        return None
    return text[: markers[0].start()].strip(), options


def parse_options(value: Any) -> list[str] | None:
    """An options column as benchmarks publish it, as the list of option texts in letter order; None when
    it holds no options.

    Accepts a list (MATH-Vision, MathVista), a dict keyed by letter (``{"A": .., "B": ..}``, in key order),
    a JSON or Python-literal list in a string (MMMU-Pro stores ``"['$6', '$7']"``) and lettered text
    (We-Math: ``"A. 300, 400;B. 400, 300; ..."``, or one ``A: ..`` per line).
    """
    if isinstance(value, dict):
        keys = sorted(value, key=str)
        value = [value[k] for k in keys]
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return None
        return [answer_text(v) for v in value]
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[0] == "[":
        import ast

        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError, RecursionError, MemoryError):
                continue
            return parse_options(parsed) if isinstance(parsed, list) else None
        return None
    split = split_lettered_options(text)
    if split is None or split[0]:
        return None
    return split[1]


def letter_index(letter: Any, choices: list[str], ctx: RowContext, field: str = "answer") -> int:
    if not isinstance(letter, str) or len(letter.strip()) != 1 or letter.strip().upper() not in LETTERS:
        raise ctx.error(f"expected an option letter, got {letter!r}", reason=BAD_VALUE, field=field)
    idx = LETTERS.index(letter.strip().upper())
    if idx >= len(choices):
        raise ctx.error(f"option {letter!r} but only {len(choices)} choices", reason=BAD_VALUE, field=field)
    return idx


# ---------------------------------------------------------------------------------------------- images


def _candidate_paths(ref: str, ctx: RowContext) -> list[Path]:
    p = Path(os.path.expanduser(ref))
    root = Path(ctx.options.image_root) if ctx.options.image_root else None
    out: list[Path] = []
    if p.is_absolute():
        out.append(p)
        if root is not None:
            out.append(root / p.name)
    else:
        if root is not None:
            out.append(root / p)
        if ctx.base_dir is not None:
            out.append(ctx.base_dir / p)
            # Annotation files often sit in a data/ subfolder while image paths are relative to the
            # dataset root (MATH-Vision's data/testmini.jsonl -> images/4.jpg; MathVista likewise).
            out.append(ctx.base_dir.parent / p)
        out.append(p)
        if root is not None:
            out.append(root / p.name)
    return out


def _check_file(path: Path, ctx: RowContext) -> tuple[int, int] | None:
    """Validate one image file per ``options.image_check``; returns (width, height) when read."""
    key = str(path)
    if key in ctx.image_cache:
        cached = ctx.image_cache[key]
        if isinstance(cached, Exception):
            raise DataError(cached.detail, reason=cached.reason, where=ctx.where, field=cached.field)
        return cached
    size: tuple[int, int] | None = None
    try:
        if ctx.options.image_check != "exists":
            from PIL import Image

            with Image.open(path) as im:
                size = (int(im.width), int(im.height))
                if ctx.options.image_check == "decode":
                    im.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError) for bad files
        err = ctx.error(f"cannot read image {str(path)!r}: {type(exc).__name__}: {exc}", reason=CORRUPT_IMAGE,
                        field="images")
        ctx.image_cache[key] = err
        raise err from None
    ctx.image_cache[key] = size
    return size


def _decode_bytes(data: bytes, ctx: RowContext, field: str) -> Any:
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:  # noqa: BLE001 - as above, any decoder failure means a corrupt image
        raise ctx.error(f"cannot decode embedded image bytes: {type(exc).__name__}: {exc}",
                        reason=CORRUPT_IMAGE, field=field) from None
    return im


def _check_bytes(data: bytes, ctx: RowContext, field: str) -> tuple[int, int]:
    """Size of embedded image bytes, read from the header (and fully decoded when ``image_check`` is
    ``"decode"``); the decoded pixels are dropped: the streaming loader keeps only the bytes."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            size = (int(im.width), int(im.height))
            if ctx.options.image_check == "decode":
                im.load()
    except Exception as exc:  # noqa: BLE001 - as above, any decoder failure means a corrupt image
        raise ctx.error(f"cannot decode embedded image bytes: {type(exc).__name__}: {exc}",
                        reason=CORRUPT_IMAGE, field=field) from None
    return size


def resolve_image(ref: Any, ctx: RowContext, field: str = "images") -> tuple[Any, tuple[int, int] | None]:
    """Turn one image reference into what ``Example.images`` holds, plus its size when known.

    Accepts a path (relative to ``image_root`` / the data file's folder), a ``{"bytes", "path"}`` struct
    (HF parquet Image feature; bytes win when present) or a PIL image (``datasets`` decodes Image
    columns). Paths stay paths (images are opened lazily by the consumer); bytes become PIL images, or
    stay a ``{"bytes", "path"}`` struct with ``options.keep_encoded``.
    Returns ``(None, None)`` when the file is missing and ``allow_missing_images`` is set.
    """
    if ref is None:
        raise ctx.error("image reference is null", reason=MISSING_IMAGE, field=field)
    if hasattr(ref, "size") and hasattr(ref, "mode"):  # a PIL image already
        return ref, (int(ref.size[0]), int(ref.size[1]))
    if isinstance(ref, dict):
        data, path = ref.get("bytes"), ref.get("path")
        if data and ctx.options.keep_encoded:
            return {"bytes": data, "path": path}, _check_bytes(data, ctx, field)
        if data:
            im = _decode_bytes(data, ctx, field)
            return im, (int(im.width), int(im.height))
        if not path:
            raise ctx.error("image struct has neither bytes nor path", reason=MISSING_IMAGE, field=field)
        ref = path
    if not isinstance(ref, (str, os.PathLike)):
        raise ctx.error(f"unsupported image reference {type(ref).__name__}", reason=BAD_VALUE, field=field)
    for cand in _candidate_paths(str(ref), ctx):
        if cand.is_file():
            return os.path.normpath(cand), _check_file(cand, ctx)
    if ctx.options.allow_missing_images:
        ctx.missing_images.append(str(ref))
        return None, None
    tried = ", ".join(str(c) for c in _candidate_paths(str(ref), ctx))
    raise ctx.error(f"image file not found (tried {tried}); pass image_root=/--image-root or "
                    f"allow_missing_images=/--allow-missing-images", reason=MISSING_IMAGE, field=field)


def resolve_images(refs: Any, ctx: RowContext, field: str = "images") -> tuple[list[Any], list[tuple[int, int] | None]]:
    """Like :func:`resolve_image` for a list (or a single reference); drops allowed-missing ones."""
    if not isinstance(refs, (list, tuple)):
        refs = [refs]
    images, sizes = [], []
    for ref in refs:
        im, size = resolve_image(ref, ctx, field)
        if im is not None:
            images.append(im)
            sizes.append(size)
    return images, sizes


# ---------------------------------------------------------------------------------------------- boxes


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(v)
    if not math.isfinite(v):
        raise ValueError(v)
    return float(v)


def parse_box(value: Any, ctx: RowContext, field: str = "bbox") -> list[float]:
    """Four finite numbers (a list, or a JSON string of one), else an ``invalid_box`` DataError."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ctx.error(f"box is not JSON: {value!r}", reason=INVALID_BOX, field=field) from None
    try:
        if len(value) != 4:
            raise ValueError
        return [_number(v) for v in value]
    except (TypeError, ValueError):
        raise ctx.error(f"expected 4 finite numbers, got {value!r}", reason=INVALID_BOX, field=field) from None


def check_box(box: list[float], size: tuple[int, int] | None, ctx: RowContext, field: str = "bbox") -> None:
    """``box`` = [x1, y1, x2, y2] must have positive area and, when ``size`` = (W, H) is known, lie in
    [0, W] x [0, H] (pixels of the original image)."""
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise ctx.error(f"box {box} has no area (need x1 < x2 and y1 < y2)", reason=INVALID_BOX, field=field)
    if size is not None:
        w, h = size
        if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
            raise ctx.error(f"box {box} lies outside the {w}x{h} image", reason=BOX_OUTSIDE_IMAGE, field=field)


def box_text(box: list[float]) -> str:
    """JSON ``[x1, y1, x2, y2]`` with integral coordinates written as ints (``[910, 78, 954, 112]``)."""
    return json.dumps([int(v) if float(v).is_integer() else v for v in box])


def parse_size(value: Any, ctx: RowContext, field: str) -> tuple[int, int]:
    try:
        w, h = value
        w, h = _number(w), _number(h)
        if w <= 0 or h <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ctx.error(f"expected [width, height] > 0, got {value!r}", reason=BAD_VALUE, field=field) from None
    return int(w), int(h)
