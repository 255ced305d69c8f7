"""Measuring a lab model: greedy accuracy through ``visent eval``'s generation path and the teacher-forced probe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from visent.data.schema import Example
from visent.eval.generation import TransformersBackend
from visent.lab.batching import fork_mask, response_loss, sft_batch

__all__ = ["greedy_accuracy", "greedy_responses", "probe_exact_match"]


@torch.no_grad()
def probe_exact_match(model: Any, processor: Any, examples: Sequence[Example], batch_size: int = 64) -> float:
    """Share of ``examples`` whose whole target response is the argmax under teacher forcing.

    Wording forks (``fork_mask``) are left out: the target's choice there is one of several right ones.
    """
    was_training = model.training
    model.eval()
    hits = 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        batch = sft_batch(processor, chunk)
        _, exact = response_loss(model, batch, fork_mask(processor, chunk, batch["labels"]))
        hits += int(exact.sum())
    model.train(was_training)
    return hits / max(1, len(examples))


def _default_scorer(examples: Sequence[Example], responses: Sequence[str]) -> list[float]:
    """Score with the same verifiers RL rewards use (``visent.rewards``), accuracy only."""
    from visent.rewards.registry import reward_for_task

    scores = [0.0] * len(examples)
    for task in sorted({ex.task for ex in examples}):
        idx = [i for i, ex in enumerate(examples) if ex.task == task]
        reward = reward_for_task(task)
        values = reward(
            [responses[i] for i in idx],
            answer=[examples[i].clean_answer for i in idx],
            meta=[json.dumps(examples[i].meta) for i in idx],
        )
        for i, v in zip(idx, values):
            scores[i] = float(v)
    return scores


def greedy_responses(
    model: Any, processor: Any, examples: Sequence[Example], batch_size: int = 32, max_new_tokens: int = 32
) -> list[str]:
    """Greedy completions (decoded, special tokens skipped) for ``examples``, in order: ``visent eval``'s
    generation path (``visent.eval.generation``), plain template, no system prompt."""
    generate = TransformersBackend(model, processor, max_new_tokens=max_new_tokens)
    out: list[str] = []
    for i in range(0, len(examples), batch_size):
        out.extend(generate(examples[i : i + batch_size]))
    return out


def greedy_accuracy(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    batch_size: int = 32,
    *,
    max_new_tokens: int = 32,
    scorer: Callable[[Sequence[Example], Sequence[str]], list[float]] | None = None,
) -> dict[str, Any]:
    """Greedy-decoding accuracy against the clean labels.

    Returns ``{"accuracy": float, "per_task": {task: float}, "n": int, "responses": [str, ...],
    "scores": [float, ...]}`` (``scores``: each example's verifier score, in order);
    ``scorer(examples, responses) -> [0..1 per example]`` defaults to ``visent.rewards``' verifier for
    each example's task.
    """
    if not examples:
        raise ValueError("greedy_accuracy: no examples given")
    responses = greedy_responses(model, processor, examples, batch_size, max_new_tokens)
    scores = (scorer or _default_scorer)(examples, responses)
    per_task: dict[str, list[float]] = {}
    for ex, s in zip(examples, scores):
        per_task.setdefault(ex.task, []).append(s)
    return {
        "accuracy": sum(scores) / len(scores),
        "per_task": {t: sum(v) / len(v) for t, v in per_task.items()},
        "n": len(scores),
        "responses": responses,
        "scores": list(scores),
    }
