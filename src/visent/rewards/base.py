"""What every reward shares: the result record, the parse-failure counters, and the TRL adapter.

A reward is a :class:`Reward`: a named, range-checked wrapper around one plain per-row function
``score_one(text, answer, **row) -> RewardResult``. Calling the object with TRL's reward signature
``reward(completions, **columns) -> list[float]`` scores a batch; ``reward.results(...)`` returns the full
:class:`RewardResult` records (components, parsed answer, parse flag) for evaluation and debugging.

Model outputs are untrusted text: a ``Reward`` never raises on them. Unparsable output scores the
bottom of the range and is counted in :data:`REWARD_STATS` (per reward name):

- ``calls``            completions scored
- ``parse_failures``   the model's text held no parsable answer
- ``label_errors``     the *label* (``answer`` / ``image_size`` / ``coord_space`` columns) was unusable;
                       a data problem, so it is also logged (warning, first few per reward)
- ``errors``           an unexpected exception inside the verifier, caught and scored as the minimum

The trainer reads them with ``REWARD_STATS.as_metrics()`` (rates, keyed ``rewards/<name>/parse_fail_rate``
etc.) and clears them with ``REWARD_STATS.reset()``. In addition, when TRL passes its ``log_metric``
callback (TRL >= 1.x does), each batch logs ``rewards/<name>/parse_fail_rate`` through it.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# Columns TRL adds to the reward kwargs that are not per-row data.
_NON_ROW_KWARGS = frozenset(
    {"prompts", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
# Only this many label-error warnings per reward name, so a broken dataset doesn't flood the log.
_MAX_LABEL_WARNINGS = 5


@dataclass
class RewardResult:
    """One completion's score.

    Attributes:
        score: the reward, inside the reward's documented ``[low, high]``.
        parsed: what was extracted from the model's text (string, point, boxes, ...), or None.
        components: named sub-scores (e.g. ``{"accuracy": 1.0, "format": 0.0}``), floats.
        parse_failed: the model's text held no parsable answer (scores the minimum).
        label_error: the label columns were unusable (a data problem; scores the minimum).
    """

    score: float
    parsed: Any = None
    components: dict[str, float] = field(default_factory=dict)
    parse_failed: bool = False
    label_error: bool = False


class LabelError(ValueError):
    """The label (not the model's text) is unusable: raised inside verifiers, caught by :class:`Reward`."""


class RewardStats:
    """Thread-safe counters of scored completions and failures, per reward name."""

    FIELDS = ("calls", "parse_failures", "label_errors", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, name: str, **increments: int) -> None:
        with self._lock:
            counts = self._counts.setdefault(name, dict.fromkeys(self.FIELDS, 0))
            for key, value in increments.items():
                counts[key] += value

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Copy of the raw counts: ``{reward_name: {"calls": n, "parse_failures": n, ...}}``."""
        with self._lock:
            return {name: dict(counts) for name, counts in self._counts.items()}

    def as_metrics(self, prefix: str = "rewards/") -> dict[str, float]:
        """Failure rates per reward: ``{f"{prefix}{name}/parse_fail_rate": x, .../label_error_rate, .../error_rate}``."""
        metrics: dict[str, float] = {}
        for name, counts in self.snapshot().items():
            calls = max(counts["calls"], 1)
            metrics[f"{prefix}{name}/parse_fail_rate"] = counts["parse_failures"] / calls
            metrics[f"{prefix}{name}/label_error_rate"] = counts["label_errors"] / calls
            metrics[f"{prefix}{name}/error_rate"] = counts["errors"] / calls
        return metrics

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


REWARD_STATS = RewardStats()


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL hands it over.

    Accepts a plain string, or a conversational completion: a list of messages
    ``[{"role": "assistant", "content": ...}]`` whose content is a string or a list of parts
    (``{"type": "text", "text": ...}``). Assistant messages (or messages without a role) are joined.
    Anything else yields ``""``, which every reward scores as a parse failure.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return ""
    pieces: list[str] = []
    for message in completion:
        if isinstance(message, str):
            pieces.append(message)
            continue
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, (list, tuple)):
            for part in content:
                if isinstance(part, str):
                    pieces.append(part)
                elif isinstance(part, dict) and isinstance(part.get("text"), str):
                    pieces.append(part["text"])
    return "".join(pieces)


def row_value(row: dict[str, Any], key: str, default: Any = None) -> Any:
    """A per-row field, looked up as a top-level column first, then inside a ``meta`` column.

    ``meta`` may be a dict or a JSON string (datasets often stringify nested dicts).
    """
    if key in row and row[key] is not None:
        return row[key]
    meta = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except (ValueError, RecursionError):
            meta = None
    if isinstance(meta, dict) and meta.get(key) is not None:
        return meta[key]
    return default


ScoreFn = Callable[..., RewardResult]


class Reward:
    """A named reward with TRL's signature, a documented range, and per-row components.

    Args:
        name: table name; also ``__name__``, which TRL uses for its ``rewards/<name>`` logs.
        score_one: ``(text, answer, **row) -> RewardResult``; may raise — errors are caught here.
        low, high: the documented range; scores are clamped into it and NaN becomes ``low``.
        doc: one-line description shown by ``describe()``.
    """

    def __init__(
        self, name: str, score_one: ScoreFn, low: float = 0.0, high: float = 1.0, doc: str = ""
    ) -> None:
        if not low <= high:
            raise ValueError(f"reward {name!r}: low={low} must be <= high={high}")
        self.name = self.__name__ = name
        self._score_one = score_one
        self._positional = _positional_names(score_one)
        self.low, self.high = float(low), float(high)
        self.__doc__ = doc or (score_one.__doc__ or "")
        self.doc = doc

    def __repr__(self) -> str:
        return f"Reward({self.name!r}, range=[{self.low}, {self.high}])"

    def score_one(self, text: Any, answer: Any = None, /, **row: Any) -> RewardResult:
        """Score one completion (string or chat messages) against its label; never raises."""
        result = self._safe(completion_text(text), answer, row)
        REWARD_STATS.add(
            self.name,
            calls=1,
            parse_failures=int(result.parse_failed),
            label_errors=int(result.label_error),
        )
        return result

    def _safe(self, text: str, answer: Any, row: dict[str, Any]) -> RewardResult:
        if self._positional.intersection(row):
            # A dataset column named like a parameter the verifier receives positionally (``text``,
            # or ``seed`` of the random reward) would fail every call with "got multiple values".
            row = {k: v for k, v in row.items() if k not in self._positional}
        try:
            result = self._score_one(text, answer, **row)
        except LabelError as exc:
            self._warn_label(row, exc)
            return RewardResult(self.low, None, {}, parse_failed=False, label_error=True)
        except Exception:  # model text must never crash training; a verifier bug is logged and counted
            if REWARD_STATS.snapshot().get(self.name, {}).get("errors", 0) < _MAX_LABEL_WARNINGS:
                logger.warning(
                    "reward %s: verifier error on row id=%r", self.name, row.get("id"), exc_info=True
                )
            REWARD_STATS.add(self.name, errors=1)
            return RewardResult(self.low, None, {}, parse_failed=True)
        score = result.score
        if not isinstance(score, (int, float)) or math.isnan(score):
            score = self.low
        result.score = float(min(max(score, self.low), self.high))
        return result

    def _warn_label(self, row: dict[str, Any], exc: Exception) -> None:
        counts = REWARD_STATS.snapshot().get(self.name, {})
        if counts.get("label_errors", 0) < _MAX_LABEL_WARNINGS:
            logger.warning("reward %s: unusable label in row id=%r: %s", self.name, row.get("id"), exc)

    def results(self, completions: Sequence[Any], **columns: Any) -> list[RewardResult]:
        """Full records for a batch; ``columns`` are per-row lists as TRL passes them (``answer``, ...)."""
        n = len(completions)
        rows = _rows(n, columns)
        return [self.score_one(c, row.pop("answer", None), **row) for c, row in zip(completions, rows)]

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        results = self.results(completions, **columns)
        log_metric = columns.get("log_metric")
        if callable(log_metric) and results:
            try:
                log_metric(
                    f"rewards/{self.name}/parse_fail_rate",
                    sum(r.parse_failed for r in results) / len(results),
                )
            except Exception:  # logging must not break scoring
                logger.debug("log_metric failed", exc_info=True)
        return [r.score for r in results]


def _positional_names(fn: Callable[..., Any]) -> frozenset[str]:
    """Names of the parameters ``fn(text, answer, **row)`` fills positionally (through partials too)."""
    bound = 0
    while isinstance(fn, functools.partial):
        bound += len(fn.args)
        fn = fn.func
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: nothing to protect
        return frozenset()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in kinds]
    return frozenset(names[: bound + 2])


def _rows(n: int, columns: dict[str, Any]) -> list[dict[str, Any]]:
    """Split TRL's column lists into one dict per row; scalars (e.g. ``seed``) broadcast to every row."""
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in columns.items():
        if key in _NON_ROW_KWARGS:
            if key == "trainer_state":
                for row in rows:
                    row[key] = value
            continue
        if isinstance(value, (list, tuple)) and len(value) == n:
            for row, item in zip(rows, value):
                row[key] = item
        else:
            for row in rows:
                row[key] = value
    return rows
