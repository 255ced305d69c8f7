"""Chat-shaped rows: LLaVA/ShareGPT ``conversations`` (VLM-R1 and many SFT/RL sets) and OpenAI/TRL ``messages``.

``conversations`` (detected from a ``conversations`` column of ``{"from", "value"}`` turns)::

    {"id": 1, "image": ["a.png", "b.png"],
     "conversations": [{"from": "human", "value": "<image><image>How many balls in total?"},
                       {"from": "gpt", "value": "3"}]}

``image`` (or ``images``) is a path, a ``{bytes, path}`` struct, or a list of them, in the order of the
``<image>`` placeholders. The first ``human`` turn is the prompt (placeholders removed), the ``gpt`` turn after
it the answer; a ``system`` turn becomes ``meta["system_prompt"]``.

``messages`` (detected from a ``messages`` column of ``{"role", "content"}`` turns)::

    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                               {"type": "text", "text": "Which is larger?"}]},
                  {"role": "assistant", "content": "the left one"}],
     "images": ["a.png", "b.png"]}

``content`` is a string or a list of parts: ``{"type": "text", "text"}``, ``{"type": "image"}`` (filled from
the ``images`` column in order, TRL's convention, unless the part carries ``image``/``path``/``url`` itself)
and OpenAI's ``{"type": "image_url", "image_url": {"url": ...}}`` (a file path, ``file://`` URL or base64
``data:`` URL). A string ``content`` with an ``images`` column takes all of them (TRL puts them before the
text). The answer is the first ``assistant`` turn after the user turn, else an ``answer`` / ``solution``
column.

In both, an answer wrapped as ``<answer>...</answer>`` (R1-style targets) is unwrapped, the raw text kept in
``meta["raw_answer"]``. The task is ``--task`` when given, else ``grounding`` when the answer is a
``[x1, y1, x2, y2]`` pixel box (checked against the first image), else ``math`` (free-form answer, scored
by the math verifier's string/number/symbolic match). Turns after the first question and answer are not
used, and counted in the load report's notes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from visent.data.errors import BAD_VALUE, MISSING_ANSWER, MISSING_FIELD
from visent.data.formats.base import Format
from visent.data.formats.context import (
    RowContext,
    answer_text,
    box_text,
    check_box,
    default_id,
    parse_box,
    resolve_images,
    strip_image_placeholders,
)
from visent.data.schema import TASKS, Example

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PLACEHOLDER = re.compile(r"<image\d*>")
_BOX = re.compile(r"^\[\s*-?\d+(\.\d+)?(\s*,\s*-?\d+(\.\d+)?){3}\s*\]$")

HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "model")


def _turns(row: dict, column: str, role_key: str, ctx: RowContext) -> list[dict]:
    turns = row.get(column)
    if isinstance(turns, str):  # some exports store the turns as a JSON string
        try:
            turns = json.loads(turns)
        except ValueError:
            raise ctx.error(f"{column} is a string but not JSON", reason=BAD_VALUE, field=column) from None
    if not isinstance(turns, list) or not turns:
        raise ctx.error(f"expected a non-empty list of turns, got {type(turns).__name__}",
                        reason=MISSING_FIELD, field=column)
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_key not in turn:
            raise ctx.error(f"turn {i} is not an object with {role_key!r}: {str(turn)[:80]}", reason=BAD_VALUE,
                            field=f"{column}.{i}")
    return turns


def _question_and_answer(turns: list[dict], role_key: str, ctx: RowContext, column: str) -> tuple[int, int | None]:
    """Indices of the first user turn and of the assistant turn right after it (None when absent)."""
    q = next((i for i, t in enumerate(turns) if str(t.get(role_key)).lower() in HUMAN_ROLES), None)
    if q is None:
        raise ctx.error(f"no {'/'.join(HUMAN_ROLES)} turn", reason=MISSING_FIELD, field=column)
    a = next((i for i in range(q + 1, len(turns)) if str(turns[i].get(role_key)).lower() in ASSISTANT_ROLES), None)
    if a is not None and len(turns) > a + 1:
        ctx.report.notes[f"{column}: turns after the first question and answer not used"] += 1
    return q, a


def _system(turns: list[dict], role_key: str, text_of) -> str | None:
    for t in turns:
        if str(t.get(role_key)).lower() == "system":
            return text_of(t)
    return None


def _finish(ctx: RowContext, row: dict, *, prompt: str, raw_answer: Any, images: list, sizes: list,
            meta: dict[str, Any], answer_field: str) -> Example:
    raw = answer_text(raw_answer)
    if not raw:
        raise ctx.error("the answer is empty", reason=MISSING_ANSWER, field=answer_field)
    tagged = _ANSWER_TAG.search(raw)
    answer = tagged.group(1).strip() if tagged else raw
    if answer != raw:
        meta["raw_answer"] = raw
    size = tuple(sizes[0]) if sizes and sizes[0] is not None else None
    if size is not None:
        meta["image_size"] = [int(size[0]), int(size[1])]
    task = ctx.options.task or ("grounding" if _BOX.match(answer) else "math")
    if task not in TASKS:
        raise ctx.error(f"unknown task {task!r}; valid: {', '.join(TASKS)}", field="task")
    if task == "grounding":
        box = parse_box(answer, ctx, answer_field)
        check_box(box, size, ctx, answer_field)
        meta.update(coord_space="pixels", box_format="xyxy")
        answer = box_text(box)
    meta.update(ctx.source_meta())
    return Example(id=answer_text(row["id"]) if row.get("id") not in (None, "") else default_id(ctx), task=task,
                   prompt=prompt, images=images, answer=answer, meta=meta)


# ----------------------------------------------------------------------------- LLaVA / ShareGPT


def parse_conversations(row: dict, ctx: RowContext) -> Example:
    turns = _turns(row, "conversations", "from", ctx)
    for i, t in enumerate(turns):
        if not isinstance(t.get("value"), (str, int, float)):
            raise ctx.error(f"turn {i} has no text 'value'", reason=BAD_VALUE, field=f"conversations.{i}.value")
    q, a = _question_and_answer(turns, "from", ctx, "conversations")
    question = str(turns[q]["value"])
    key = "image" if "image" in row else ("images" if "images" in row else None)
    refs = row.get(key) if key else None
    if refs in (None, "", []):
        refs = []
    elif not isinstance(refs, list):
        refs = [refs]
    n_placeholders = len(_PLACEHOLDER.findall(question))
    if n_placeholders and n_placeholders != len(refs):
        raise ctx.error(f"the question has {n_placeholders} <image> placeholder(s) but the row gives "
                        f"{len(refs)} image(s)", reason=BAD_VALUE, field=f"conversations.{q}.value")
    images, sizes = resolve_images(refs, ctx, key or "image") if refs else ([], [])
    if a is None:
        raise ctx.error("no gpt/assistant turn after the question", reason=MISSING_ANSWER, field="conversations")
    meta: dict[str, Any] = {}
    system = _system(turns, "from", lambda t: str(t.get("value", "")))
    if system:
        meta["system_prompt"] = system
    return _finish(ctx, row, prompt=strip_image_placeholders(question), raw_answer=turns[a]["value"],
                   images=images, sizes=sizes, meta=meta, answer_field=f"conversations.{a}.value")


# ----------------------------------------------------------------------------- OpenAI / TRL messages


def _data_url(url: str, ctx: RowContext, field: str) -> dict[str, Any]:
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        raise ctx.error("only base64 data: URLs are supported", reason=BAD_VALUE, field=field)
    try:
        return {"bytes": base64.b64decode(payload, validate=True), "path": None}
    except (binascii.Error, ValueError):
        raise ctx.error("data: URL is not valid base64", reason=BAD_VALUE, field=field) from None


def _inline_image(part: dict, ctx: RowContext, field: str) -> Any:
    """The image a content part carries itself, or None for a bare ``{"type": "image"}`` placeholder."""
    if part.get("type") == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str) or not url:
            raise ctx.error("image_url part without a url", reason=BAD_VALUE, field=field)
    else:
        url = part.get("image") or part.get("path") or part.get("url")
        if url is None:
            return None
        if not isinstance(url, str):
            return url  # a {bytes, path} struct or a PIL image
    if url.startswith("data:"):
        return _data_url(url, ctx, field)
    if url.startswith("file://"):
        return url[len("file://"):]
    if re.match(r"^[a-z]+://", url):
        raise ctx.error(f"remote image URLs are not fetched: {url[:80]!r}; download the images and use paths",
                        reason=BAD_VALUE, field=field)
    return url


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def parse_messages(row: dict, ctx: RowContext) -> Example:
    turns = _turns(row, "messages", "role", ctx)
    q, a = _question_and_answer(turns, "role", ctx, "messages")
    column = row.get("images", row.get("image"))
    column_refs = [] if column in (None, "", []) else (column if isinstance(column, list) else [column])
    content = turns[q].get("content")
    refs: list[Any] = []
    used = 0
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("text", "image", "image_url"):
                raise ctx.error(f"content part {j} is not a text/image/image_url part: {str(part)[:80]}",
                                reason=BAD_VALUE, field=f"messages.{q}.content.{j}")
            if part["type"] == "text":
                continue
            inline = _inline_image(part, ctx, f"messages.{q}.content.{j}")
            if inline is not None:
                refs.append(inline)
                continue
            if used >= len(column_refs):
                raise ctx.error(f"more image placeholders than the {len(column_refs)} image(s) of the images "
                                f"column", reason=BAD_VALUE, field=f"messages.{q}.content")
            refs.append(column_refs[used])
            used += 1
        if used != len(column_refs):
            raise ctx.error(f"the images column gives {len(column_refs)} image(s) but the user turn has {used} "
                            f"image placeholder(s)", reason=BAD_VALUE, field="images")
    elif isinstance(content, str):
        refs = list(column_refs)
    else:
        raise ctx.error("user content must be a string or a list of parts", reason=BAD_VALUE,
                        field=f"messages.{q}.content")
    images, sizes = resolve_images(refs, ctx, "images") if refs else ([], [])
    if a is not None:
        raw_answer, answer_field = _text(turns[a].get("content")), f"messages.{a}.content"
    elif row.get("answer") not in (None, ""):
        raw_answer, answer_field = row["answer"], "answer"
    elif row.get("solution") not in (None, ""):
        raw_answer, answer_field = row["solution"], "solution"
    else:
        raise ctx.error("no assistant turn after the question and no answer/solution column",
                        reason=MISSING_ANSWER, field="messages")
    meta: dict[str, Any] = {}
    system = _system(turns, "role", lambda t: _text(t.get("content")))
    if system:
        meta["system_prompt"] = system
    return _finish(ctx, row, prompt=strip_image_placeholders(_text(content)), raw_answer=raw_answer,
                   images=images, sizes=sizes, meta=meta, answer_field=answer_field)


def _is_turn_list(value: Any, role_key: str) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and role_key in value[0]


FORMATS: dict[str, Format] = {
    "conversations": Format(
        "conversations", "math",
        "LLaVA/ShareGPT chat (VLM-R1): image (path or list) / conversations [{from, value}] with <image>",
        parse_conversations, detect=lambda r: _is_turn_list(r.get("conversations"), "from")),
    "messages": Format(
        "messages", "math",
        "OpenAI/TRL chat: messages [{role, content: str | parts}] (+ images column)",
        parse_messages, detect=lambda r: _is_turn_list(r.get("messages"), "role")),
}
