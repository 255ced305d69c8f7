"""The synthetic tasks' table and their public API: seeded, unlimited example streams.

Every example is drawn from its own RNG seeded by ``(task, seed, index)``, so example ``i`` of a stream is
the same whatever ``n`` is asked for, and two streams with different seeds are independent. The renderers
live in ``shapes`` (counting, grounding, classification) and ``tally``; the held-out and check streams in
``streams``.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from visent.data.schema import Example
from visent.data.synthetic.shapes import (
    classification_response,
    counting_response,
    grounding_response,
    make_classification,
    make_counting,
    make_grounding,
)
from visent.data.synthetic.tally import make_tally, tally_response, tally_spans

# Bump when a renderer or a target response changes: cached warm-started models are keyed on it.
TASKS_VERSION = 2

TASK_MAKERS: dict[str, Callable[[random.Random, str], Example]] = {
    "counting": make_counting,
    "grounding": make_grounding,
    "classification": make_classification,
    "tally": make_tally,
}
RESPONSES: dict[str, Callable[[Example], str]] = {
    "counting": counting_response,
    "grounding": grounding_response,
    "classification": classification_response,
    "tally": tally_response,
}
# Reward each task trains with (``visent.lab.rl``, ``lab:<task>`` datasets) (accuracy + format, [0, 2]).
TASK_REWARD: dict[str, str] = {
    "counting": "r1_counting",
    "grounding": "r1_grounding",
    "classification": "r1_classification",
    "tally": "r1_counting",
}
# The tasks whose text the tiny tokenizer is trained on by default (``task_texts()``). Newer tasks are
# left out so that the counting / grounding / classification models, and the studies measured on them,
# stay bit-for-bit reproducible; ``visent.lab.warmstart`` adds a newer task's text to the tokenizer
# corpus when it warm-starts on it.
TOKENIZER_TASKS: tuple[str, ...] = ("counting", "grounding", "classification")


# Tasks whose generator marks forks and image-anchored tokens (``response_spans``, ``tally.label_response``).
LABELLED_TASKS: tuple[str, ...] = ("tally",)


def _lab_task(example: Example) -> str:
    """The lab task that generated ``example`` (``meta["lab_task"]`` when it differs from ``task``)."""
    return str(example.meta.get("lab_task", example.task))


def _check_task(task: str) -> None:
    if task not in TASK_MAKERS:
        raise ValueError(f"unknown lab task {task!r}; valid tasks: {', '.join(TASK_MAKERS)}")


def make_examples(task: str, n: int, seed: int = 0, *, start: int = 0, **options: Any) -> list[Example]:
    """``n`` examples of ``task`` (indices ``start .. start+n-1`` of the stream for ``seed``).

    Example ``i`` depends only on ``(task, seed, i, options)``: ``make_examples(t, 10, s)[5]`` equals
    ``make_examples(t, 1, s, start=5)[0]``. Ids are ``"{task}-{seed}-{i}"``.

    ``options`` go to the task's renderer, e.g. ``distractors="gray"`` (default: distractor objects in a
    neutral gray, so the named colour alone finds the target) or ``"colors"`` (distractors in the other
    palette colours: the model must bind the colour named in the question to the image — harder).
    """
    _check_task(task)
    if n < 0:
        raise ValueError(f"make_examples: n must be >= 0, got {n}")
    accepted = [p for p in inspect.signature(TASK_MAKERS[task]).parameters if p not in ("rng", "example_id")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"task {task!r} has no option(s) {unknown}; valid options: {', '.join(accepted)}")
    out = []
    for i in range(start, start + n):
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes
        # (unlike hash(), which PYTHONHASHSEED randomises).
        rng = random.Random(f"visent-lab/{task}/{seed}/{i}")
        out.append(TASK_MAKERS[task](rng, f"{task}-{seed}-{i}", **options))
    return out


def response_spans(example: Example) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` spans of ``target_response(example)`` as the generator drew them.

    Tasks without forks or anchors marked by their generator (counting, grounding, classification)
    return ``[]``.
    """
    return tally_spans(example) if _lab_task(example) == "tally" else []


def target_response(example: Example) -> str:
    """The reference response used for SFT: ``<think>…</think><answer>…</answer>``.

    Built from the example's ``meta`` (the clean label), so label noise never leaks into SFT targets.
    """
    task = _lab_task(example)
    _check_task(task)
    return RESPONSES[task](example)


def task_texts(n_per_task: int = 200, seed: int = 0, tasks: Sequence[str] = TOKENIZER_TASKS) -> list[str]:
    """Prompts and target responses of ``tasks``: the corpus the tiny tokenizer is trained on.

    The default is ``TOKENIZER_TASKS`` (see there); ``visent.lab.warmstart`` passes the text of any other
    task it trains on to ``build_tiny(texts=...)``.
    """
    texts: list[str] = []
    for task in tasks:
        _check_task(task)
        for ex in make_examples(task, n_per_task, seed):
            texts.append(ex.prompt)
            texts.append(target_response(ex))
    return texts


def to_trl_dataset(examples: Sequence[Example]) -> Any:
    """A ``datasets.Dataset`` in the conversational image format TRL 1.16's ``GRPOTrainer`` consumes.

    Columns:
        prompt: ``[{"role": "user", "content": <question text>}]`` — plain string content; TRL inserts one
            ``{"type": "image"}`` block per image before the text (``prepare_multimodal_messages``).
        images: list of PIL images per row (may be empty for text-only rows).
        answer, clean_answer, is_noisy, task, id: the ``Example`` fields rewards and evaluation read.
        meta: the example's ``meta`` as a JSON string (Arrow cannot hold arbitrary nested dicts).
    """
    from datasets import Dataset

    if not examples:
        raise ValueError("to_trl_dataset: no examples given")
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": ex.prompt}] for ex in examples],
            "images": [list(ex.images) for ex in examples],
            "answer": [ex.answer for ex in examples],
            "clean_answer": [ex.clean_answer for ex in examples],
            "is_noisy": [bool(ex.is_noisy) for ex in examples],
            "task": [ex.task for ex in examples],
            "id": [ex.id for ex in examples],
            "meta": [json.dumps(ex.meta) for ex in examples],
        }
    )
