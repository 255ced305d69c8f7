"""Visual-RFT fine-grained classification (Oxford Pets, Flowers, ...) and R1-V counting.

Visual-RFT publishes its validation lists as torch pickles (``val_data/pets.pth``: a list of
``{abs_image_path: {label, pred_logits, pred_class}}``) beside a class-name file (``pets.txt``, one name per
line, index = label). Both the ``.pth`` and the decoded jsonl (``{image, label, class_name}``) load here.
Examples get ``answer`` = the class name and ``meta["classes"]`` = the dataset's full class list (what
classification label noise draws from).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visent.data.errors import BAD_VALUE, MALFORMED_JSON, DataError, RowRef
from visent.data.formats.base import Format, has_columns, read_tables
from visent.data.formats.context import (
    LoadOptions,
    RowContext,
    answer_text,
    default_id,
    require,
    resolve_images,
)
from visent.data.schema import Example


@functools.lru_cache(maxsize=32)
def read_classes(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as fh:
        return tuple(line.strip() for line in fh if line.strip())


def find_classes_file(data_file: Path, options: LoadOptions) -> Path | None:
    """``options.classes_file``, else ``<name>.txt`` beside the file or in Visual-RFT's
    ``classification/val_data/`` (the decoded ``<name>_val_decoded.jsonl`` lives elsewhere)."""
    if options.classes_file:
        return Path(options.classes_file)
    name = data_file.stem.removesuffix("_val_decoded")
    for cand in (data_file.with_name(name + ".txt"),
                 data_file.parent.parent / "classification" / "val_data" / (name + ".txt")):
        if cand.is_file():
            return cand
    return None


def read_visual_rft(path: Path, options: LoadOptions) -> Iterator[tuple[RowRef, Any]]:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".pth", ".jsonl", ".json"))
    for file in files:
        classes_file = find_classes_file(file, options)
        classes = read_classes(str(classes_file)) if classes_file else None
        if file.suffix == ".pth":
            rows = _read_pth(file, classes)
        else:
            rows = read_tables(file, options)
        for ref, row in rows:
            if isinstance(row, dict) and classes is not None:
                row["_classes"] = classes
            yield ref, row


def _read_pth(file: Path, classes: tuple[str, ...] | None) -> Iterator[tuple[RowRef, Any]]:
    import torch  # only this layout needs it

    try:
        # weights_only: the pickle holds only tensors, dicts and lists, so no arbitrary code runs.
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same data error to the user
        raise DataError(f"cannot read torch file: {type(exc).__name__}: {exc}", reason=MALFORMED_JSON,
                        where=RowRef(str(file), 0)) from None
    if not isinstance(data, list):
        raise DataError(f"expected a list of {{image_path: {{label, ...}}}}, got {type(data).__name__}",
                        reason=MALFORMED_JSON, where=RowRef(str(file), 0))
    for idx, item in enumerate(data):
        ref = RowRef(str(file), idx, "index")
        if not isinstance(item, dict) or len(item) != 1:
            yield ref, DataError("expected a one-entry {image_path: {...}} object", reason=MALFORMED_JSON, where=ref)
            continue
        (image, info), = item.items()
        label = info.get("label") if isinstance(info, dict) else None
        label = int(label.item()) if hasattr(label, "item") else label
        row: dict[str, Any] = {"image": image, "label": label}
        if classes is not None and isinstance(label, int) and 0 <= label < len(classes):
            row["class_name"] = classes[label]
        yield ref, row


def _domain(file: str) -> str:
    name = Path(file).stem.lower()
    for key, word in (("pet", "pet"), ("flower", "flower"), ("car", "car"), ("aircraft", "aircraft"),
                      ("bird", "bird"), ("food", "dish")):
        if key in name:
            return word
    return "object"


def parse_visual_rft_cls(row: dict, ctx: RowContext) -> Example:
    classes = row.get("_classes")
    if classes is None and ctx.options.classes_file:
        classes = read_classes(ctx.options.classes_file)
    label = row.get("label")
    name = row.get("class_name")
    if isinstance(name, str) and not name.strip():
        name = None  # an empty class name is a missing label, not the class ""
    if name is None and classes is not None and isinstance(label, int) and 0 <= label < len(classes):
        name = classes[label]
    if name is None:
        require(row, "class_name", ctx, answer=True)
    name = answer_text(name)
    if classes is not None and isinstance(label, int) and (not (0 <= label < len(classes)) or classes[label] != name):
        raise ctx.error(f"label {label} does not name class {name!r} in the class list", reason=BAD_VALUE,
                        field="label")
    images, sizes = resolve_images(require(row, "image", ctx), ctx, "image")
    domain = _domain(ctx.where.file)
    meta: dict[str, Any] = {"label": label, **ctx.source_meta()}
    if classes is not None:
        meta["classes"] = list(classes)
    if sizes and sizes[0] is not None:
        meta["image_size"] = list(sizes[0])
    prompt = f"What kind of {domain} is shown in this image? Answer with its category name."
    return Example(id=default_id(ctx), task="classification", prompt=prompt, images=images, answer=name, meta=meta)


def finalize_classes(examples: list[Example], options: LoadOptions, path: Path | None) -> None:
    """Without a class file, the class set is the names seen in the data (shared by every example)."""
    missing = [ex for ex in examples if "classes" not in ex.meta]
    if missing:
        seen = sorted({ex.answer for ex in examples})
        for ex in missing:
            ex.meta["classes"] = seen


def parse_r1v_counting(row: dict, ctx: RowContext) -> Example:
    """R1-V ``superclevr_test200_counting_problems.jsonl``: ``{image_path, question, ground_truth: 4}``."""
    question = require(row, "question", ctx).strip()
    count = require(row, "ground_truth", ctx, answer=True)
    try:
        value = float(count)
        if not value.is_integer() or value < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ctx.error(f"count must be a non-negative integer, got {count!r}", field="ground_truth") from None
    images, sizes = resolve_images(require(row, "image_path", ctx), ctx, "image_path")
    meta: dict[str, Any] = dict(ctx.source_meta())
    if sizes and sizes[0] is not None:
        meta["image_size"] = list(sizes[0])
    return Example(id=default_id(ctx), task="counting", prompt=question, images=images, answer=str(int(value)),
                   meta=meta)


FORMATS: dict[str, Format] = {
    "visual_rft_cls": Format(
        "visual_rft_cls", "classification",
        "Visual-RFT classification: val_data/<name>.pth (+ <name>.txt) or the decoded {image, label, class_name}",
        parse_visual_rft_cls, detect=lambda r: has_columns(r, "image", "label", "class_name"),
        read=read_visual_rft, finalize=finalize_classes),
    "r1v_counting": Format(
        "r1v_counting", "counting", "R1-V SuperCLEVR counting jsonl: image_path / question / ground_truth (int)",
        parse_r1v_counting,
        detect=lambda r: has_columns(r, "image_path", "question", "ground_truth")
        and isinstance(r["ground_truth"], int) and not isinstance(r["ground_truth"], bool)),
}
