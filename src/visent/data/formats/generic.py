"""Any jsonl/json/parquet (or Hub split) with a field mapping.

``mapping`` maps canonical fields to columns: ``prompt=question,answer=label,images=image_path``.
Canonical fields: ``prompt`` and ``answer`` (required), ``images`` (or ``image``: a path, a
``{bytes, path}`` struct, a PIL image, or a list of them; ``images=image_*`` collects the non-empty values
of every column matching the pattern, in natural order, as MMMU-Pro's ``image_1`` .. ``image_7``), ``id``,
``task`` (a column holding the task name), ``choices`` (the options column: a list, a dict keyed by letter,
a JSON/Python list in a string, or lettered text ``"A. 3; B. 4"``; the row becomes multiple choice, its
prompt lists the options as ``A. ..`` lines, and the answer may be the option letter or its text),
``image_size`` ([W, H]).
Any other key ``k=col`` copies ``row[col]`` into ``meta[k]``. A column may be a dotted path into nested
objects and lists (``image_size=metadata.size``, ``answer=meta.answer``, ``prompt=conversations.0.value``,
``answer=conversations.-1.value``; see :func:`lookup`). The task defaults to ``options.task`` (``--task``), else ``other``.
Grounding rows must hold a box ``[x1, y1, x2, y2]`` in pixels and are checked against the image.
"""

from __future__ import annotations

import json
import re
from typing import Any

from visent.data.errors import INVALID_BOX, DataError
from visent.data.formats.base import Format
from visent.data.formats.context import (
    LETTERS,
    RowContext,
    answer_text,
    box_text,
    check_box,
    default_id,
    letter_index,
    parse_box,
    parse_options,
    parse_size,
    require,
    resolve_images,
    strip_image_placeholders,
    with_choices,
)
from visent.data.schema import TASKS, Example

CANONICAL = ("prompt", "answer", "images", "image", "id", "task", "choices", "image_size")


def lookup(row: dict, column: str) -> Any:
    """``row[column]``, or a walk through nested objects and lists for a dotted column name:
    ``meta.answer`` is ``row["meta"]["answer"]``, ``conversations.1.value`` is
    ``row["conversations"][1]["value"]`` (a number indexes a list; ``-1`` is the last item). A column
    whose own name contains dots is matched first. Returns None when any step is absent."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and re.fullmatch(r"-?\d+", part) and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def lookup_pattern(row: dict, pattern: str) -> list | None:
    """The non-empty values of every top-level column matching ``pattern`` (``*`` = any text), in natural
    column order (``image_2`` before ``image_10``); None when no column matches or all are empty."""
    regex = re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")
    names = sorted((k for k in row if isinstance(k, str) and regex.match(k)), key=_natural_key)
    values = [row[k] for k in names if row[k] is not None and not (isinstance(row[k], str) and not row[k].strip())]
    return values or None


def parse_mapping(text: str) -> dict[str, str]:
    """``"prompt=question,answer=label"`` -> ``{"prompt": "question", "answer": "label"}``."""
    mapping: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, col = item.partition("=")
        if not sep or not key.strip() or not col.strip():
            raise DataError(f"bad mapping entry {item!r}: expected field=column (e.g. prompt=question)",
                            reason="config")
        mapping[key.strip()] = col.strip()
    return mapping


def _detection_answer(value: Any, size: tuple[int, int] | None, ctx: RowContext, field: str) -> str:
    """Detection labels: a list (or JSON string of one) of ``{"label": str, "bbox": [x1, y1, x2, y2]}`` in
    pixels, each box checked against the image; re-serialised canonically."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ctx.error(f"detection answer is not JSON: {value[:80]!r}", reason=INVALID_BOX, field=field) from None
    if not isinstance(value, list):
        raise ctx.error('expected a list of {"label", "bbox"} objects', reason=INVALID_BOX, field=field)
    objects = []
    for i, obj in enumerate(value):
        if not isinstance(obj, dict) or not obj.get("label") or "bbox" not in obj:
            raise ctx.error(f'object {i} needs "label" and "bbox": {obj!r}', reason=INVALID_BOX, field=field)
        box = parse_box(obj["bbox"], ctx, f"{field}[{i}].bbox")
        check_box(box, size, ctx, f"{field}[{i}].bbox")
        objects.append({"label": str(obj["label"]), "bbox": json.loads(box_text(box))})
    return json.dumps(objects, ensure_ascii=False)


def parse_generic(row: dict, ctx: RowContext) -> Example:
    mapping = ctx.options.mapping
    missing = [k for k in ("prompt", "answer") if k not in mapping]
    if missing:
        raise DataError(f"the generic format needs a mapping for {', '.join(missing)} "
                        f"(e.g. --map prompt=question,answer=label,images=image)", reason="config")

    def get(key: str, *, answer: bool = False) -> Any:
        col = mapping[key]
        value = lookup_pattern(row, col) if "*" in col else lookup(row, col)
        if value is None or (isinstance(value, str) and not value.strip()):
            require({}, col, ctx, answer=answer)  # raises, naming the column
        return value

    task = ctx.options.task or (answer_text(get("task")) if "task" in mapping else None)
    prompt = strip_image_placeholders(answer_text(get("prompt")))
    raw_answer = get("answer", answer=True)
    image_key = "images" if "images" in mapping else ("image" if "image" in mapping else None)
    images, sizes = resolve_images(get(image_key), ctx, mapping[image_key]) if image_key else ([], [])
    meta: dict[str, Any] = {k: lookup(row, c) for k, c in mapping.items() if k not in CANONICAL}
    size = parse_size(get("image_size"), ctx, mapping["image_size"]) if "image_size" in mapping else None
    if size is None and sizes and sizes[0] is not None:
        size = tuple(sizes[0])
    if size is not None:
        meta["image_size"] = [int(size[0]), int(size[1])]
    id_ = answer_text(get("id")) if "id" in mapping else default_id(ctx)

    if "choices" in mapping:
        raw_choices = get("choices")
        choices = parse_options(raw_choices)
        if not choices:
            raise ctx.error(f"expected options (a list, a letter-keyed dict or 'A. .. B. ..' text), got "
                            f"{str(raw_choices)[:80]!r}", field=mapping["choices"])
        if len(choices) > len(LETTERS):
            raise ctx.error(f"{len(choices)} options is more than the {len(LETTERS)} letters", field=mapping["choices"])
        text = answer_text(raw_answer)
        # A one-letter label within the options is a letter first: We-Math's options can themselves be
        # letters ("A. F; B. D; ..." answered "D"), and the letter is how such benchmarks label.
        is_letter = len(text) == 1 and text.upper() in LETTERS[: len(choices)]
        if is_letter or text not in choices:
            idx = letter_index(text, choices, ctx, mapping["answer"])
        else:
            idx = choices.index(text)
        meta.update(choices=choices, answer_text=choices[idx])
        prompt, answer, task = with_choices(prompt, choices), LETTERS[idx], task or "multiple_choice"
    elif task == "grounding":
        box = parse_box(raw_answer, ctx, mapping["answer"])
        check_box(box, size, ctx, mapping["answer"])
        meta.update(coord_space="pixels", box_format="xyxy")
        answer = box_text(box)
    elif task == "detection":
        answer = _detection_answer(raw_answer, size, ctx, mapping["answer"])
        meta.update(coord_space="pixels", box_format="xyxy")
    else:
        answer = answer_text(raw_answer)
    task = task or "other"
    if task not in TASKS:
        raise ctx.error(f"unknown task {task!r}; valid: {', '.join(TASKS)}", field="task")
    meta.update(ctx.source_meta())
    return Example(id=id_, task=task, prompt=prompt, images=images, answer=answer, meta=meta)


FORMATS: dict[str, Format] = {
    "generic": Format(
        "generic", "other", "any jsonl/json/parquet with a field mapping (--map prompt=col,answer=col,images=col)",
        parse_generic, detect=None),
}
