"""The reward table: every reward by the name configs use, plus the default reward per task.

Ranges: every entry is in [0, 1] except the ``r1_*`` sums (accuracy + format, [0, 2], the R1-V /
Visual-RFT convention).
"""

from __future__ import annotations

from visent.rewards.authors_math import score_authors_accuracy, score_authors_format
from visent.rewards.base import Reward
from visent.rewards.classification import score_classification
from visent.rewards.combine import weighted
from visent.rewards.detection import make_score_detection
from visent.rewards.format import score_boxed_format, score_format
from visent.rewards.grounding import make_score_grounding
from visent.rewards.math import score_counting, score_math
from visent.rewards.spurious import make_score_random, score_format_only

math_reward = Reward(
    "math", score_math, doc="final \\boxed{}/<answer> equals the label (choices, string, symbolic)"
)
counting = Reward("counting", score_counting, doc="final answer is the label's integer exactly")
format_reward = Reward("format", score_format, doc="<think>…</think><answer>…</answer>, whole response")
boxed_format = Reward("boxed_format", score_boxed_format, doc="<think>…</think> then \\boxed{…}")
grounding = Reward(
    "grounding",
    make_score_grounding("pixels"),
    doc="point / box centre inside the true box; model speaks original pixels",
)
grounding_resized = Reward(
    "grounding_resized",
    make_score_grounding("resized_pixels"),
    doc="grounding for Qwen2.5-VL: the model speaks pixels of the processor's resized image",
)
grounding_grid1000 = Reward(
    "grounding_grid1000",
    make_score_grounding("grid1000"),
    doc="grounding for Qwen2-VL: the model speaks a [0,1000) grid",
)
grounding_unit = Reward(
    "grounding_unit", make_score_grounding("unit"), doc="grounding: the model speaks [0, 1]"
)
classification = Reward("classification", score_classification, doc="class name matched or contained")
detection = Reward(
    "detection", make_score_detection(0.0), doc="Σ IoU of greedy matches at 0.5 / max(#gt, #pred)"
)
detection_confidence = Reward(
    "detection_confidence",
    make_score_detection(0.5),
    doc="0.5·detection IoU term + 0.5·confidence calibration term",
)
random_reward = Reward("random", make_score_random(seed=0, p=0.5), doc="spurious: seeded Bernoulli(0.5)")
format_only = Reward("format_only", score_format_only, doc="spurious: 1 for any well-formed response")

vepo_math = weighted(
    {math_reward: 0.9, boxed_format: 0.1}, "vepo_math", doc="VEPO: 0.9·math + 0.1·boxed_format"
)
authors_accuracy = Reward(
    "authors_accuracy",
    score_authors_accuracy,
    doc="last \\boxed{} graded by the VEPO/EasyR1 authors' grader (mathruler's grade_answer, re-implemented)",
)
authors_format = Reward(
    "authors_format", score_authors_format, doc="the authors' regex <think>.*</think>.*\\boxed{.*}.*"
)
vepo_authors_math = weighted(
    {authors_accuracy: 0.9, authors_format: 0.1},
    "vepo_authors_math",
    doc="the reward of the VEPO/EasyR1/VPPO/PAPO code, exactly: 0.9·authors_accuracy + 0.1·authors_format",
)
r1_math = weighted({math_reward: 1.0, format_reward: 1.0}, "r1_math", doc="math + format, range [0, 2]")
r1_counting = weighted(
    {counting: 1.0, format_reward: 1.0}, "r1_counting", doc="counting + format, range [0, 2]"
)
r1_grounding = weighted(
    {grounding: 1.0, format_reward: 1.0}, "r1_grounding", doc="grounding + format, [0, 2]"
)
r1_classification = weighted(
    {classification: 1.0, format_reward: 1.0}, "r1_classification", doc="classification + format, [0, 2]"
)
r1_detection = weighted(
    {detection: 1.0, format_reward: 1.0}, "r1_detection", doc="detection + format, [0, 2]"
)

# The verifier evaluation uses for each task of ``visent.data.schema.TASKS`` (accuracy only, no format).
TASK_REWARDS: dict[str, str] = {
    "math": "math",
    "multiple_choice": "math",
    "counting": "counting",
    "grounding": "grounding",
    "classification": "classification",
    "detection": "detection",
}

REWARDS: dict[str, Reward] = {
    r.name: r
    for r in (
        math_reward,
        counting,
        format_reward,
        boxed_format,
        grounding,
        grounding_resized,
        grounding_grid1000,
        grounding_unit,
        classification,
        detection,
        detection_confidence,
        random_reward,
        format_only,
        vepo_math,
        authors_accuracy,
        authors_format,
        vepo_authors_math,
        r1_math,
        r1_counting,
        r1_grounding,
        r1_classification,
        r1_detection,
    )
}


#: Rewards that need an optional package: name -> a function giving a one-line message when it is missing.
def _authors_grader_missing() -> str | None:
    from visent.rewards.prm800k_grader import missing_dependency

    return missing_dependency()


REWARD_REQUIREMENTS = {name: _authors_grader_missing for name in ("authors_accuracy", "vepo_authors_math")}


def reward_unavailable(name: str) -> str | None:
    """Why reward ``name`` cannot run in this environment (a missing optional package), or None."""
    check = REWARD_REQUIREMENTS.get(name)
    return check() if check is not None else None


def get_reward(name: str) -> Reward:
    """The reward called ``name``; unknown names fail listing the valid ones."""
    try:
        return REWARDS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; valid rewards: {', '.join(REWARDS)}") from None


def reward_for_task(task: str) -> Reward:
    """The accuracy verifier for a task name (``math``, ``grounding``, ...)."""
    try:
        return REWARDS[TASK_REWARDS[task]]
    except KeyError:
        raise KeyError(f"no verifier for task {task!r}; tasks with one: {', '.join(TASK_REWARDS)}") from None
