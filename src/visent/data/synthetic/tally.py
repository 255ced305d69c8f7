"""The ``tally`` task: a counting image answered with ~35 tokens whose roles (fork, anchor, derived) are known.

Besides the renderer (``make_tally``) and its target response, this module labels the roles in any text
written in the task's grammar (``label_response``) and maps character spans onto tokens
(``token_kinds``), so entropy / JSD can be split by role on sampled responses.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from visent.data.schema import Example
from visent.data.synthetic.shapes import make_counting

# --------------------------------------------------------------------------------------------------
# tally: "How many red shapes are there? Explain briefly." on the counting task's images (84×84, 1–5
# shapes of the asked colour and 0–3 gray distractors, at most one per 28-px cell), answered with ~35
# tokens of reasoning built so that VEPO's premise can hold and be *measured*:
#
# - image-independent forks: the opening sentence, the verb, the two nouns, a side remark, the closing
#   word and the answer noun are drawn at random for every example (7 choice points). None changes
#   correctness, so the SFT'd model learns them as near-uniform choices: high entropy that has nothing
#   to do with the image;
# - image-anchored tokens: the two counts (``I see 3 red shapes and 1 gray ones``) are read from the
#   image. Once the model reads the image at all, its uncertainty about a count sits below the forks'
#   (measured, not assumed: ``visent.lab.premise``, docs/lab-results.md);
# - derived tokens: the closing count and the answer copy the count already written; the answer is
#   decisive but depends on the image only through the anchored count.
#
# The image is the counting task's renderer unchanged (its reading is learnt in ~200 SFT steps); only the
# response differs. Every example records which character spans of its target response are forks,
# anchored or derived (``response_spans``), and ``label_response`` finds the same spans in any response
# the model writes in this grammar, so entropy / JSD can be split by role on sampled responses.

# Distinct first words: each fork is decided at one token.
TALLY_OPENERS: tuple[str, ...] = (
    "Let me look at the picture.",
    "Counting the shapes one by one.",
    "First, scan every cell.",
    "Looking at each cell.",
    "Here is what is drawn.",
    "Now check the image.",
    "Checking the cells in turn.",
    "Going cell by cell.",
)
TALLY_VERBS: tuple[str, ...] = ("see", "count", "find", "spot")
TALLY_NOUNS: tuple[str, ...] = ("shapes", "objects", "pieces", "items")
TALLY_NOTES: tuple[str, ...] = (
    "Gray ones do not count.",
    "Only {color} ones matter.",
    "Ignoring the gray ones.",
    "Skipping every gray one.",
    "Distractors are gray.",
    "Nothing else counts.",
)
TALLY_CLOSERS: tuple[str, ...] = ("So", "Thus", "Hence", "Therefore", "Overall")
TALLY_ANSWER_NOUNS: tuple[str, ...] = ("answer", "count", "total", "number")
SPAN_KINDS: tuple[str, ...] = ("fork", "anchor", "derived")


def make_tally(rng: random.Random, example_id: str) -> Example:
    ex = make_counting(rng, example_id, distractors="gray")
    m = dict(ex.meta)
    m["lab_task"] = "tally"
    m["gray"] = len(m["objects"]) - m["count"]
    # The wording of the target response, drawn here so that the response is a function of meta.
    m["wording"] = {
        "opener": rng.randrange(len(TALLY_OPENERS)),
        "verb": rng.randrange(len(TALLY_VERBS)),
        "noun": rng.randrange(len(TALLY_NOUNS)),
        "noun2": rng.randrange(len(TALLY_NOUNS)),
        "note": rng.randrange(len(TALLY_NOTES)),
        "closer": rng.randrange(len(TALLY_CLOSERS)),
        "answer_noun": rng.randrange(len(TALLY_ANSWER_NOUNS)),
    }
    # Scored like counting (an integer answer), and label noise treats it as counting.
    return Example(
        id=example_id,
        task="counting",
        prompt=f"{ex.prompt} Explain briefly.",
        images=ex.images,
        answer=ex.answer,
        meta=m,
    )


def _first_word(text: str) -> tuple[str, str]:
    cut = re.match(r"\w+", text).end()  # "First" of "First, scan every cell."
    return text[:cut], text[cut:]


def tally_segments(ex: Example) -> list[tuple[str, str | None]]:
    """The target response as ``(text, kind)`` pieces; kind is one of ``SPAN_KINDS`` or ``None``."""
    m = ex.meta
    w = m["wording"]
    n, color = str(m["count"]), m["color"]
    open1, open2 = _first_word(TALLY_OPENERS[w["opener"]])
    note1, note2 = _first_word(TALLY_NOTES[w["note"]].format(color=color))
    return [
        ("<think>", None), (open1, "fork"), (open2 + " I ", None), (TALLY_VERBS[w["verb"]], "fork"),
        (" ", None), (n, "anchor"), (f" {color} ", None), (TALLY_NOUNS[w["noun"]], "fork"),
        (" and ", None), (str(m["gray"]), "anchor"), (" gray ", None), (TALLY_NOUNS[w["noun2"]], "fork"),
        (". ", None), (note1, "fork"), (note2 + " ", None), (TALLY_CLOSERS[w["closer"]], "fork"),
        (" the ", None), (TALLY_ANSWER_NOUNS[w["answer_noun"]], "fork"), (" is ", None), (n, "derived"),
        (".</think><answer>", None), (n, "derived"), ("</answer>", None),
    ]


def tally_response(ex: Example) -> str:
    return "".join(text for text, _ in tally_segments(ex))


_TALLY_MAIN = re.compile(r"\bI (\w+) (\d+) (?:red|green|blue|yellow) (\w+) and (\d+) gray (\w+)\.")
_TALLY_NOTE = re.compile(r"\s*(\w+)[^.<]*\.")
_TALLY_CLOSE = re.compile(r"\s*(\w+) the (\w+) is (\d+)\.")
_TALLY_ANSWER = re.compile(r"<answer>\s*(\d+)\s*</answer>")


def label_response(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` character spans of a tally-grammar response (kinds: ``SPAN_KINDS``).

    Works on any text the model writes, not only on target responses: the first word after ``<think>``
    is a fork; in ``I <verb> <n> <colour> <noun> and <g> gray <noun>.`` the two numbers are
    image-anchored and the verb and nouns are forks; the first word of the next sentence (the side
    remark) is a fork; in ``<closer> the <noun> is <n>.`` the closer and the noun are forks and the number
    is derived, as is the number in ``<answer>``. Text outside this grammar gets no spans (it counts as
    "the rest"); a partly followed grammar gets the spans of the parts it follows.
    """
    spans: list[tuple[int, int, str]] = []
    think = text.find("<think>")
    if think < 0:
        return spans
    end = text.find("</think>", think)
    body_end = end if end >= 0 else len(text)
    opener = re.compile(r"\s*(\w+)").match(text, think + len("<think>"), body_end)
    if opener:
        spans.append((opener.start(1), opener.end(1), "fork"))
    main = _TALLY_MAIN.search(text, think, body_end)
    if main:
        for g, kind in ((1, "fork"), (2, "anchor"), (3, "fork"), (4, "anchor"), (5, "fork")):
            spans.append((main.start(g), main.end(g), kind))
        note = _TALLY_NOTE.match(text, main.end(), body_end)
        if note and not _TALLY_CLOSE.match(text, main.end(), body_end):
            spans.append((note.start(1), note.end(1), "fork"))
            close = _TALLY_CLOSE.match(text, note.end(), body_end)
        else:
            close = _TALLY_CLOSE.match(text, main.end(), body_end)
        if close:
            spans += [(close.start(1), close.end(1), "fork"), (close.start(2), close.end(2), "fork")]
            spans.append((close.start(3), close.end(3), "derived"))
    if end >= 0:
        answer = _TALLY_ANSWER.search(text, end)
        if answer:
            spans.append((answer.start(1), answer.end(1), "derived"))
    return sorted(set(spans))


def tally_spans(example: Example) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` spans of a tally example's target response as the generator drew them."""
    out, pos = [], 0
    for text, kind in tally_segments(example):
        if kind is not None:
            out.append((pos, pos + len(text), kind))
        pos += len(text)
    return out


def token_kinds(pieces: Sequence[str], spans: Sequence[tuple[int, int, str]]) -> list[str | None]:
    """Kind of each token given its decoded text ``pieces`` (``"".join(pieces)`` is the response).

    A token gets the first kind of ``SPAN_KINDS`` order reversed — ``"derived"``, ``"anchor"``, ``"fork"``
    — whose span its characters overlap, else ``None``. Byte-level BPE glues a leading space to a word
    (``" blue"``), which is why overlap, not containment, decides.
    """
    out: list[str | None] = []
    pos = 0
    for piece in pieces:
        a, b = pos, pos + len(piece)
        kinds = {k for s, e, k in spans if s < b and a < e}
        out.append(next((k for k in ("derived", "anchor", "fork") if k in kinds), None))
        pos = b
    return out
