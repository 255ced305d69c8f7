"""Visual math layouts: Geometry3K (InterGPS raw and the HF ``images/problem/answer`` form), MATH-Vision,
MathVista, MM-EUREKA K12, R1-V GeoQA prompts, and lmm-r1's message format.

Conventions: free-form problems get task ``math`` with the answer as published. Problems with options get
task ``multiple_choice``; ``answer`` is then the option *letter* (A = first option), ``meta["choices"]``
the option texts in order and ``meta["answer_text"]`` the text of the right one, and the prompt lists the
options after the question so the model can answer by letter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visent.data.errors import BAD_VALUE, MISSING_FIELD, DataError, RowRef
from visent.data.formats.base import Format, has_columns
from visent.data.formats.context import (
    LETTERS,
    LoadOptions,
    RowContext,
    answer_text,
    default_id,
    letter_index,
    require,
    resolve_images,
    strip_image_placeholders,
    with_choices,
)
from visent.data.formats.rows import parse_json_text
from visent.data.schema import Example


def _choices(value: Any, ctx: RowContext, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, (str, int, float)) for c in value):
        raise ctx.error(f"expected a list of option texts, got {value!r}", reason=BAD_VALUE, field=field)
    if len(value) > len(LETTERS):
        raise ctx.error(f"{len(value)} options is more than the {len(LETTERS)} letters", field=field)
    return [answer_text(c) for c in value]


def _example(ctx: RowContext, *, id: str, task: str, prompt: str, images: list, answer: str,
             meta: dict[str, Any], sizes: list | None = None) -> Example:
    meta = {**meta, **ctx.source_meta()}
    if sizes and sizes[0] is not None:
        meta.setdefault("image_size", list(sizes[0]))
    return Example(id=id, task=task, prompt=prompt, images=images, answer=answer, meta=meta)


def multiple_choice(ctx: RowContext, *, id: str, question: str, choices: list[str], letter_idx: int,
                    images: list, sizes: list, meta: dict[str, Any]) -> Example:
    meta = {**meta, "choices": choices, "answer_text": choices[letter_idx]}
    return _example(ctx, id=id, task="multiple_choice", prompt=with_choices(question, choices), images=images,
                    answer=LETTERS[letter_idx], meta=meta, sizes=sizes)


# --------------------------------------------------------------------------------- Geometry3K (InterGPS)


def read_geometry3k_raw(path: Path, options: LoadOptions) -> Iterator[tuple[RowRef, Any]]:
    """InterGPS raw layout: one folder per problem holding ``data.json`` and ``img_diagram.png``.

    ``path`` may be the split folder (``train/``), one problem folder, or one ``data.json``.
    """
    if path.is_file():
        files = [path]
    elif (path / "data.json").is_file():
        files = [path / "data.json"]
    else:
        dirs = [d for d in path.iterdir() if (d / "data.json").is_file()] if path.is_dir() else []
        if not dirs:
            raise DataError(f"no */data.json problem folders under {str(path)!r}", reason=MISSING_FIELD,
                            where=RowRef(str(path), 0))
        # Numeric folder names sort numerically (2 before 10), others alphabetically after them.
        dirs.sort(key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))
        files = [d / "data.json" for d in dirs]
    for file in files:
        ref = RowRef(str(file), file.parent.name, "dir")
        try:
            with open(file, encoding="utf-8") as fh:
                row = parse_json_text(fh.read())
        except ValueError as exc:  # syntax, invalid UTF-8, absurd nesting or number length
            yield ref, DataError(f"not valid JSON ({exc})", reason="malformed_json", where=ref)
            continue
        if not isinstance(row, dict):
            yield ref, DataError(f"expected a JSON object, got {type(row).__name__}", reason="malformed_json",
                                 where=ref)
            continue
        yield ref, row


def parse_geometry3k_raw(row: dict, ctx: RowContext) -> Example:
    # annotat_text is the cleaned LaTeX statement hiyouga/geometry3k was built from; problem_text is the
    # plain transcription, used only when the former is absent.
    question = row.get("annotat_text") or require(row, "problem_text", ctx)
    choices = _choices(require(row, "choices", ctx), ctx, "choices")
    idx = letter_index(require(row, "answer", ctx, answer=True), choices, ctx)
    images, sizes = resolve_images(row.get("image", "img_diagram.png"), ctx, "img_diagram.png")
    meta = {k: row[k] for k in ("problem_type_graph", "problem_type_goal", "precise_value", "unit") if k in row}
    return multiple_choice(ctx, id=str(row.get("id", ctx.where.row)), question=question, choices=choices,
                           letter_idx=idx, images=images, sizes=sizes, meta=meta)


def parse_geometry3k_hf(row: dict, ctx: RowContext) -> Example:
    """hiyouga/geometry3k: ``{"images": [img], "problem": "<image>...", "answer": "80"}``."""
    problem = require(row, "problem", ctx)
    answer = answer_text(require(row, "answer", ctx, answer=True))
    images, sizes = resolve_images(require(row, "images", ctx), ctx, "images")
    return _example(ctx, id=str(row.get("id") or default_id(ctx)), task="math",
                    prompt=strip_image_placeholders(problem), images=images, answer=answer, meta={}, sizes=sizes)


# --------------------------------------------------------------------------------------------- MATH-V


def parse_mathvision(row: dict, ctx: RowContext) -> Example:
    question = strip_image_placeholders(require(row, "question", ctx))
    answer = require(row, "answer", ctx, answer=True)
    # The Hub copy (MathLLMs/MathVision) carries a decoded PIL image beside the relative path.
    ref = row.get("decoded_image") or require(row, "image", ctx)
    images, sizes = resolve_images(ref, ctx, "image")
    meta = {k: row[k] for k in ("level", "subject") if row.get(k) is not None}
    id_ = str(row.get("id") or default_id(ctx))
    options = row.get("options") or []
    if options:
        choices = _choices(options, ctx, "options")
        idx = letter_index(answer, choices, ctx)
        return multiple_choice(ctx, id=id_, question=question, choices=choices, letter_idx=idx, images=images,
                               sizes=sizes, meta=meta)
    return _example(ctx, id=id_, task="math", prompt=question, images=images, answer=answer_text(answer),
                    meta=meta, sizes=sizes)


# ------------------------------------------------------------------------------------------- MathVista


def parse_mathvista(row: dict, ctx: RowContext) -> Example:
    question = strip_image_placeholders(require(row, "question", ctx))
    answer = answer_text(require(row, "answer", ctx, answer=True))
    ref = row.get("decoded_image") or require(row, "image", ctx)
    images, sizes = resolve_images(ref, ctx, "image")
    md = row.get("metadata") or {}
    meta: dict[str, Any] = {k: row[k] for k in ("unit", "precision", "answer_type", "question_type")
                            if row.get(k) is not None}
    if md.get("img_width") and md.get("img_height") and not sizes:
        meta["image_size"] = [int(md["img_width"]), int(md["img_height"])]
    for k in ("source", "category", "task", "skills"):
        if k in md:
            meta[k] = md[k]
    id_ = str(row.get("pid") or default_id(ctx))
    if row.get("question_type") == "multi_choice" or row.get("choices"):
        choices = _choices(require(row, "choices", ctx), ctx, "choices")
        # MathVista labels a multiple-choice row by the option *text*; we store its letter.
        matches = [i for i, c in enumerate(choices) if c.strip() == answer.strip()]
        if not matches:
            raise ctx.error(f"answer {answer!r} is not one of the choices {choices}", field="answer")
        return multiple_choice(ctx, id=id_, question=question, choices=choices, letter_idx=matches[0],
                               images=images, sizes=sizes, meta=meta)
    return _example(ctx, id=id_, task="math", prompt=question, images=images, answer=answer, meta=meta, sizes=sizes)


# --------------------------------------------------------------------------------- K12, GeoQA, lmm-r1


def parse_mmk12(row: dict, ctx: RowContext) -> Example:
    """MM-EUREKA ``eval/k12/k12.json``: ``{id, question, answer, image_path}``."""
    question = strip_image_placeholders(require(row, "question", ctx))
    answer = answer_text(require(row, "answer", ctx, answer=True))
    images, sizes = resolve_images(require(row, "image_path", ctx), ctx, "image_path")
    return _example(ctx, id=str(row.get("id") or default_id(ctx)), task="math", prompt=question, images=images,
                    answer=answer, meta={}, sizes=sizes)


def parse_r1v_geoqa(row: dict, ctx: RowContext) -> Example:
    """R1-V ``geoqa_test_prompts.jsonl``: ``{image_path, question, ground_truth: "140°"}``."""
    question = strip_image_placeholders(require(row, "question", ctx))
    answer = answer_text(require(row, "ground_truth", ctx, answer=True))
    images, sizes = resolve_images(require(row, "image_path", ctx), ctx, "image_path")
    return _example(ctx, id=default_id(ctx), task="math", prompt=question, images=images, answer=answer,
                    meta={}, sizes=sizes)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


_OPTION_LINE = re.compile(r"^([A-Z])\.\s*(.*)$")


def parse_lmm_r1(row: dict, ctx: RowContext) -> Example:
    """lmm-r1 ``{question, answer: "$\\boxed{60}$", message: <JSON chat with system + user turns>}``."""
    raw_answer = answer_text(require(row, "answer", ctx, answer=True))
    message = require(row, "message", ctx)
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except json.JSONDecodeError as exc:
            raise ctx.error(f"message is not JSON ({exc.msg})", reason="malformed_json", field="message") from None
    if not isinstance(message, list):
        raise ctx.error("message must be a list of chat turns", field="message")
    system, texts, refs = None, [], []
    for turn in message:
        if not isinstance(turn, dict):
            raise ctx.error(f"chat turn is not an object: {turn!r}", field="message")
        content = turn.get("content")
        if turn.get("role") == "system":
            system = content if isinstance(content, str) else json.dumps(content)
            continue
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        for part in parts:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image":
                refs.append(part.get("image"))
    question = strip_image_placeholders("\n".join(texts) or require(row, "question", ctx))
    images, sizes = resolve_images(refs, ctx, "message.image") if refs else ([], [])
    answer = last_boxed(raw_answer) or raw_answer.strip("$ ")
    meta: dict[str, Any] = {"raw_answer": raw_answer}
    if system:
        meta["system_prompt"] = system
    # Options embedded in the question as "A. text" lines make the row multiple choice.
    options = [m.group(2) for m in (_OPTION_LINE.match(ln.strip()) for ln in question.splitlines()) if m]
    letters = [m.group(1) for m in (_OPTION_LINE.match(ln.strip()) for ln in question.splitlines()) if m]
    if options and letters == list(LETTERS[: len(letters)]) and len(answer) == 1 and answer in letters:
        meta.update(choices=options, answer_text=options[LETTERS.index(answer)])
        return _example(ctx, id=default_id(ctx), task="multiple_choice", prompt=question, images=images,
                        answer=answer, meta=meta, sizes=sizes)
    return _example(ctx, id=default_id(ctx), task="math", prompt=question, images=images, answer=answer,
                    meta=meta, sizes=sizes)


def _is_r1v(row: dict) -> bool:
    return has_columns(row, "image_path", "question", "ground_truth")


FORMATS: dict[str, Format] = {
    "geometry3k_raw": Format(
        "geometry3k_raw", "multiple_choice",
        "Geometry3K in InterGPS's raw layout: <id>/data.json + img_diagram.png (answer = option letter)",
        parse_geometry3k_raw, detect=lambda r: has_columns(r, "problem_text", "choices", "answer"),
        read=read_geometry3k_raw),
    "geometry3k": Format(
        "geometry3k", "math", "Geometry3K as on the Hub (hiyouga/geometry3k): images / problem / answer",
        parse_geometry3k_hf, detect=lambda r: has_columns(r, "images", "problem", "answer")),
    "mathvision": Format(
        "mathvision", "math", "MATH-Vision jsonl: id / question / options / answer / image",
        parse_mathvision, detect=lambda r: has_columns(r, "question", "options", "answer", "image")),
    "mathvista": Format(
        "mathvista", "math", "MathVista testmini.json (pid -> row; multi_choice answers are option text)",
        parse_mathvista, detect=lambda r: has_columns(r, "pid", "question", "question_type", "answer")),
    "mmk12": Format(
        "mmk12", "math", "MM-EUREKA K12 eval json: id / question / answer / image_path",
        parse_mmk12, detect=lambda r: set(r) == {"id", "question", "answer", "image_path"}),
    "r1v_geoqa": Format(
        "r1v_geoqa", "math", "R1-V GeoQA prompts jsonl: image_path / question / ground_truth (text)",
        parse_r1v_geoqa, detect=lambda r: _is_r1v(r) and isinstance(r["ground_truth"], str)),
    "lmm_r1": Format(
        "lmm_r1", "math", "lmm-r1 message format: question / answer ($\\boxed{..}$) / message (chat JSON)",
        parse_lmm_r1, detect=lambda r: has_columns(r, "question", "answer", "message")),
}
