"""Seeded, auditable label noise (METHOD §4): corrupt exactly ``round(rate * N)`` labels.

    noisy, report = inject_label_noise(examples, rate=0.5, seed=0)
    print(report.summary())

Each corrupted example keeps its original label in ``clean_answer``, gets the corrupted one in ``answer``
(what training rewards see) and ``is_noisy=True``; evaluation can score against both. How a label is
corrupted depends on the task (table ``NOISERS``):

- ``grounding``: a box of the same size, inside the image, that does not overlap the true box (zero
  intersection area; touching edges allowed), uniform over the integer offsets where one fits. When the box
  is too big for any non-overlapping copy, the placement with the least overlap is used and counted as
  ``min_overlap_fallback``.
- ``classification``: a uniformly drawn other class from the dataset's class set (``classes=`` argument,
  else every ``meta["classes"]`` list and every clean label seen). Names equal up to case, spaces,
  underscores and hyphens count as the same class.
- ``multiple_choice``: another valid option letter (uniform).
- ``math``, ``counting``, ``other``: another row's answer that differs (drawn in proportion to how often
  each answer occurs among rows of the same task, so noisy labels follow the label distribution); counting
  falls back to the count +-1 when every row has the same count.
- ``detection`` (answer: JSON list of ``{"label": str, "bbox": [x1, y1, x2, y2]}``): every box relabelled
  to another class, or every box moved to a same-size non-overlapping place (``detection_mode``).

Rows that cannot be corrupted (a one-option question, a box filling the whole image, a math set where
every answer is the same) are passed over, counted in ``NoiseReport.uncorruptable``, and other rows are
drawn instead, so the count stays exact; if too few rows can be corrupted a ``ValueError`` says so
(``allow_shortfall=True`` corrupts what it can and reports the shortfall).

Rounding is half-up (``floor(rate * N + 0.5)``), so 0.5 * 5 gives 3, not Python's banker's 2.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from visent.data.schema import Example

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Uncorruptable(Exception):
    """This row's label has no valid corrupted alternative (the reason is the message)."""


@dataclass
class NoiseChange:
    """One corrupted row: its position in the list, id, task, clean and noisy labels and how."""

    index: int
    id: str
    task: str
    clean: str
    noisy: str
    kind: str


@dataclass
class NoiseReport:
    """What :func:`inject_label_noise` did.

    Attributes:
        rate, seed: the arguments.
        n_total: rows given. n_target: ``floor(rate * n_total + 0.5)``. n_corrupted: rows corrupted.
        per_task: task -> rows corrupted. kinds: ``"<task>:<how>"`` -> rows (e.g. ``grounding:disjoint_box``,
            ``grounding:min_overlap_fallback``).
        uncorruptable: reason -> rows passed over because they could not be corrupted.
        changes: every corrupted row, in list order.
    """

    rate: float
    seed: int
    n_total: int
    n_target: int
    n_corrupted: int = 0
    per_task: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    uncorruptable: Counter = field(default_factory=Counter)
    changes: list[NoiseChange] = field(default_factory=list)

    @property
    def shortfall(self) -> int:
        return self.n_target - self.n_corrupted

    def summary(self, max_rows: int = 5) -> str:
        head = (f"label noise: rate {self.rate} seed {self.seed}: corrupted {self.n_corrupted} of {self.n_total} "
                f"rows (target {self.n_target})")
        lines = [head]
        for kind, count in sorted(self.kinds.items()):
            lines.append(f"  {count} x {kind}")
        for reason, count in sorted(self.uncorruptable.items()):
            lines.append(f"  passed over {count} row(s): {reason}")
        for ch in self.changes[:max_rows]:
            lines.append(f"  [{ch.index}] {ch.id} ({ch.task}, {ch.kind}): {_short(ch.clean)} -> {_short(ch.noisy)}")
        if len(self.changes) > max_rows:
            lines.append(f"  ... and {len(self.changes) - max_rows} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "seed": self.seed, "n_total": self.n_total, "n_target": self.n_target,
                "n_corrupted": self.n_corrupted, "per_task": dict(self.per_task), "kinds": dict(self.kinds),
                "uncorruptable": dict(self.uncorruptable),
                "changes": [ch.__dict__ for ch in self.changes]}


def _short(text: str, n: int = 60) -> str:
    text = text.replace("\n", " ")
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def target_count(rate: float, n: int) -> int:
    """``round(rate * n)`` with halves rounded up."""
    return math.floor(rate * n + 0.5)


def normalize_label(text: str) -> str:
    """Case-, space-, underscore- and hyphen-insensitive form, used to decide two labels are the same."""
    return re.sub(r"[\s_\-]+", " ", str(text)).strip().lower().strip("$ ")


# --------------------------------------------------------------------------------------------- boxes


def _parse_box(text: str) -> list[float]:
    try:
        box = json.loads(text)
        if not (isinstance(box, list) and len(box) == 4):
            raise ValueError
        box = [float(v) for v in box]
    except (ValueError, TypeError):
        raise Uncorruptable("answer is not a JSON [x1, y1, x2, y2] box") from None
    if not (box[2] > box[0] and box[3] > box[1]):
        raise Uncorruptable("box has no area")
    return box


def _fmt_box(box: list[float]) -> list[int | float]:
    return [int(v) if float(v).is_integer() else round(v, 6) for v in box]


def image_size_of(ex: Example) -> tuple[float, float]:
    size = ex.meta.get("image_size")
    if size is not None:
        return float(size[0]), float(size[1])
    if ex.images and hasattr(ex.images[0], "size") and hasattr(ex.images[0], "mode"):
        return float(ex.images[0].size[0]), float(ex.images[0].size[1])
    if ex.images:
        # A path, an embedded {bytes, path} struct or a memory-mapped table's image handle: header only.
        from visent.data.images import image_size

        try:
            w, h = image_size(ex.images[0])
            return float(w), float(h)
        except (OSError, ValueError, TypeError):
            pass
    raise Uncorruptable("image size unknown (no meta['image_size'] and no readable image)")


def overlap_area(a: list[float], b: list[float]) -> float:
    """Intersection area of two [x1, y1, x2, y2] boxes (0 when they only touch)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _offset_range(lo: float, hi: float, size: float, extent: float) -> tuple[int, int, int]:
    """Along one axis: how many integer offsets fit (``n``), and the blocked ones ``[b_lo, b_hi]`` whose
    copy would overlap the true interval ``(lo, hi)``: offsets strictly between ``lo - size`` and ``hi``."""
    n = math.floor(extent - size + 1e-9) + 1
    b_lo = max(0, math.floor(lo - size + 1e-9) + 1)
    b_hi = min(n - 1, math.ceil(hi - 1e-9) - 1)
    return n, b_lo, b_hi


def disjoint_box(box: list[float], size: tuple[float, float], rng: random.Random) -> tuple[list[float], str]:
    """A same-size box inside ``[0, W] x [0, H]`` with zero overlap with ``box``, uniform over integer
    offsets; if none exists, the least-overlapping corner placement (kind ``min_overlap_fallback``)."""
    W, H = size
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w > W + 1e-9 or h > H + 1e-9:
        raise Uncorruptable("box is larger than the image")
    nx, bx_lo, bx_hi = _offset_range(x1, x2, w, W)
    ny, by_lo, by_hi = _offset_range(y1, y2, h, H)
    # The free offsets are the nx x ny grid minus the blocked rectangle; split them into <= 4 rectangles
    # (above, below, left, right of the block) and pick uniformly among all free cells.
    if bx_lo > bx_hi or by_lo > by_hi:
        rects = [(0, nx - 1, 0, ny - 1)]
    else:
        rects = [(0, nx - 1, 0, by_lo - 1), (0, nx - 1, by_hi + 1, ny - 1),
                 (0, bx_lo - 1, by_lo, by_hi), (bx_hi + 1, nx - 1, by_lo, by_hi)]
    rects = [r for r in rects if r[1] >= r[0] and r[3] >= r[2]]
    areas = [(r[1] - r[0] + 1) * (r[3] - r[2] + 1) for r in rects]
    total = sum(areas)
    if total > 0:
        pick = rng.randrange(total)
        for (ax, bx, ay, by), area in zip(rects, areas):
            if pick < area:
                cols = bx - ax + 1
                x0, y0 = ax + pick % cols, ay + pick // cols
                return [x0, y0, x0 + w, y0 + h], "disjoint_box"
            pick -= area
    # No non-overlapping copy fits: overlap along each axis is smallest at an extreme offset.
    options = []
    for x0 in sorted({0, nx - 1}):
        for y0 in sorted({0, ny - 1}):
            cand = [x0, y0, x0 + w, y0 + h]
            options.append((overlap_area(cand, box), cand))
    best = min(a for a, _ in options)
    choices = [c for a, c in options if a == best and _fmt_box(c) != _fmt_box(box)]
    if not choices:
        raise Uncorruptable("box fills the image: every same-size placement is the box itself")
    return rng.choice(choices), "min_overlap_fallback"


# --------------------------------------------------------------------------------------------- pools


@dataclass
class _Pools:
    """Dataset-wide label sets the noisers draw from (built once, in list order, so draws are seeded)."""

    answers: dict[str, list[str]]  # task -> representative answer per normalised label, first-seen order
    weights: dict[str, list[int]]  # task -> how many rows hold each of those answers
    index: dict[str, dict[str, int]]  # task -> normalised label -> position in answers[task]
    classes: list[str]
    detection_classes: list[str]
    detection_mode: str


def _build_pools(examples: list[Example], classes: list[str] | None, detection_mode: str) -> _Pools:
    answers: dict[str, list[str]] = {}
    weights: dict[str, list[int]] = {}
    index: dict[str, dict[str, int]] = {}
    class_set: dict[str, str] = {}
    det_set: dict[str, str] = {}
    for ex in examples:
        label = ex.clean_answer if ex.clean_answer is not None else ex.answer
        key = normalize_label(label)
        pos = index.setdefault(ex.task, {})
        if key not in pos:
            pos[key] = len(answers.setdefault(ex.task, []))
            answers[ex.task].append(label)
            weights.setdefault(ex.task, []).append(0)
        weights[ex.task][pos[key]] += 1
        if ex.task == "classification" and classes is None:
            for c in list(ex.meta.get("classes") or []) + [label]:
                class_set.setdefault(normalize_label(c), str(c))
        if ex.task == "detection":
            for obj in _parse_objects(label, strict=False):
                det_set.setdefault(normalize_label(obj["label"]), str(obj["label"]))
            for c in ex.meta.get("classes") or []:
                det_set.setdefault(normalize_label(c), str(c))
    if classes is not None:
        class_set = {}
        for c in classes:
            class_set.setdefault(normalize_label(c), str(c))
        for c in classes:
            det_set.setdefault(normalize_label(c), str(c))
    # Sorted so the draw does not depend on row order or string hashing.
    return _Pools(answers, weights, index, sorted(class_set.values()), sorted(det_set.values()), detection_mode)


def _other_row_answer(ex: Example, rng: random.Random, pools: _Pools) -> str:
    answers, weights = pools.answers.get(ex.task, []), pools.weights.get(ex.task, [])
    own = pools.index.get(ex.task, {}).get(normalize_label(ex.clean_answer))
    others = [(a, w) for i, (a, w) in enumerate(zip(answers, weights)) if i != own]
    if not others:
        raise Uncorruptable(f"every {ex.task} row has the same answer")
    # Weighted draw among the other answers (cumulative weights; O(distinct answers)).
    cum, total = [], 0
    for _, w in others:
        total += w
        cum.append(total)
    return others[bisect.bisect_right(cum, rng.randrange(total))][0]


# --------------------------------------------------------------------------------------------- noisers


def noise_grounding(ex: Example, rng: random.Random, pools: _Pools) -> tuple[str, str]:
    box = _parse_box(ex.clean_answer)
    new, kind = disjoint_box(box, image_size_of(ex), rng)
    return json.dumps(_fmt_box(new)), kind


def noise_classification(ex: Example, rng: random.Random, pools: _Pools) -> tuple[str, str]:
    own = normalize_label(ex.clean_answer)
    others = [c for c in pools.classes if normalize_label(c) != own]
    if not others:
        raise Uncorruptable("the class set has no other class")
    return rng.choice(others), "other_class"


def noise_multiple_choice(ex: Example, rng: random.Random, pools: _Pools) -> tuple[str, str]:
    choices = ex.meta.get("choices")
    if not choices:
        return _other_row_answer(ex, rng, pools), "other_row_answer"
    letters = LETTERS[: len(choices)]
    own = ex.clean_answer.strip().upper()
    others = [c for c in letters if c != own]
    if len(choices) < 2 or not others:
        raise Uncorruptable("question has a single option")
    return rng.choice(others), "other_option"


def noise_math(ex: Example, rng: random.Random, pools: _Pools) -> tuple[str, str]:
    return _other_row_answer(ex, rng, pools), "other_row_answer"


def noise_counting(ex: Example, rng: random.Random, pools: _Pools) -> tuple[str, str]:
    try:
        return _other_row_answer(ex, rng, pools), "other_row_answer"
    except Uncorruptable:
        try:
            n = int(float(ex.clean_answer))
        except ValueError:
            raise Uncorruptable("count is not a number and every row has the same count") from None
        steps = [d for d in (-1, 1) if n + d >= 0]
        return str(n + rng.choice(steps)), "count_offset"


def _parse_objects(text: str, *, strict: bool = True) -> list[dict[str, Any]]:
    try:
        objs = json.loads(text)
        if not isinstance(objs, list):
            raise TypeError
        out = []
        for o in objs:
            if not (isinstance(o, dict) and "label" in o and len(o.get("bbox", [])) == 4):
                raise ValueError
            out.append({**o, "bbox": [float(v) for v in o["bbox"]]})
        return out
    except (ValueError, TypeError):
        if strict:
            raise Uncorruptable('detection answer is not a JSON list of {"label", "bbox"}') from None
        return []


def noise_detection(ex: Example, rng: random.Random, pools: _Pools) -> tuple[str, str]:
    objs = _parse_objects(ex.clean_answer)
    if not objs:
        raise Uncorruptable("detection answer has no boxes")
    mode = pools.detection_mode if pools.detection_mode != "mixed" else rng.choice(["relabel", "shift"])

    def relabel() -> list[dict[str, Any]]:
        out = []
        for o in objs:
            others = [c for c in pools.detection_classes if normalize_label(c) != normalize_label(o["label"])]
            if not others:
                raise Uncorruptable("the detection class set has no other class")
            out.append({**o, "label": rng.choice(others)})
        return out

    def shift() -> list[dict[str, Any]]:
        size = image_size_of(ex)
        return [{**o, "bbox": _fmt_box(disjoint_box(o["bbox"], size, rng)[0])} for o in objs]

    order = [relabel, shift] if mode == "relabel" else [shift, relabel]
    try:
        out, kind = order[0](), mode
    except Uncorruptable:
        out, kind = order[1](), "shift" if mode == "relabel" else "relabel"
    for o in out:
        o["bbox"] = _fmt_box(o["bbox"])
    return json.dumps(out), kind


DETECTION_MODES = ("mixed", "relabel", "shift")


def inject_label_noise(
    examples: list[Example],
    rate: float,
    seed: int,
    *,
    classes: list[str] | None = None,
    detection_mode: str = "mixed",
    allow_shortfall: bool = False,
) -> tuple[list[Example], NoiseReport]:
    """Corrupt exactly ``floor(rate * N + 0.5)`` labels, chosen and corrupted reproducibly from ``seed``.

    Noise is always applied to the clean labels: rows that were already noisy start from their
    ``clean_answer``. The input list and its examples are not modified; returned examples are copies
    (``meta`` dicts copied one level deep, images shared).

    Args:
        examples: the rows (any mix of tasks).
        rate: fraction of rows to corrupt, in [0, 1].
        seed: RNG seed; the same seed and rows give the same corruption.
        classes: the classification (and detection) class set; default: gathered from the data.
        detection_mode: ``"relabel"``, ``"shift"`` or ``"mixed"`` (a coin flip per row).
        allow_shortfall: when fewer rows than targeted can be corrupted, corrupt what can be and report
            it instead of raising.

    Returns:
        ``(noisy_examples, report)``.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 <= rate <= 1.0):
        raise ValueError(f"noise rate must be a number in [0, 1], got {rate!r}")
    if detection_mode not in DETECTION_MODES:
        raise ValueError(f"unknown detection_mode {detection_mode!r}; valid: {', '.join(DETECTION_MODES)}")
    unknown = sorted({ex.task for ex in examples} - set(NOISERS))
    if unknown:
        raise ValueError(f"no label-noise rule for task(s) {', '.join(unknown)}; valid: {', '.join(NOISERS)}")

    clean = [replace(ex, answer=ex.clean_answer if ex.clean_answer is not None else ex.answer,
                     clean_answer=ex.clean_answer if ex.clean_answer is not None else ex.answer,
                     is_noisy=False, meta=dict(ex.meta)) for ex in examples]
    for ex in clean:
        ex.meta.pop("noise", None)
    n = len(clean)
    report = NoiseReport(rate=float(rate), seed=seed, n_total=n, n_target=target_count(rate, n))
    if report.n_target == 0:
        return clean, report
    rng = random.Random(seed)
    pools = _build_pools(clean, classes, detection_mode)
    order = list(range(n))
    rng.shuffle(order)
    chosen: list[tuple[int, str, str]] = []
    for i in order:
        if len(chosen) == report.n_target:
            break
        ex = clean[i]
        try:
            noisy, kind = NOISERS[ex.task](ex, rng, pools)
        except Uncorruptable as why:
            report.uncorruptable[f"{ex.task}: {why}"] += 1
            continue
        chosen.append((i, noisy, kind))
    if len(chosen) < report.n_target and not allow_shortfall:
        reasons = "; ".join(f"{c} x {r}" for r, c in report.uncorruptable.items())
        raise ValueError(f"only {len(chosen)} of the {report.n_target} rows to corrupt (rate {rate} of {n}) "
                         f"have a valid corrupted label ({reasons}); pass allow_shortfall=True to accept fewer")
    for i, noisy, kind in sorted(chosen):
        ex = clean[i]
        ex.answer, ex.is_noisy = noisy, True
        ex.meta["noise"] = kind
        report.n_corrupted += 1
        report.per_task[ex.task] += 1
        report.kinds[f"{ex.task}:{kind}"] += 1
        report.changes.append(NoiseChange(i, ex.id, ex.task, ex.clean_answer, noisy, kind))
    return clean, report


# task -> how its label is corrupted: (example, rng, pools) -> (noisy answer, kind).
Noiser = Callable[[Example, random.Random, _Pools], tuple[str, str]]

NOISERS: dict[str, Noiser] = {
    "grounding": noise_grounding,
    "classification": noise_classification,
    "multiple_choice": noise_multiple_choice,
    "math": noise_math,
    "counting": noise_counting,
    "detection": noise_detection,
    "other": noise_math,
}
