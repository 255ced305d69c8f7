"""What determines a warm-started lab model: ``WarmStartConfig`` (its hash keys the cache), the per-task
recipes (``TASK_WARMSTART``, ``warmstart_config``) and ``WarmStartResult``.

The recipe itself — why each setting — is described in ``visent.lab.warmstart``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from visent.data.synthetic import CHECK_SEED_OFFSET, TASK_MAKERS, TASKS_VERSION

__all__ = ["TASK_WARMSTART", "WarmStartConfig", "WarmStartResult", "config_hash", "warmstart_config"]


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable description (keys the cached warm-started models)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class WarmStartConfig:
    """Everything that determines the warm-started model (the cache key is a hash of it).

    Attributes:
        kind: tiny model architecture, ``qwen2_5_vl`` or ``qwen2_vl``.
        tasks: lab tasks mixed round-robin in every batch.
        hidden_size, num_layers: text-model size (vision tower and vocabulary as in ``build_tiny``).
        seed: model init and training-data stream.
        batch_size: examples per SFT step.
        lr: peak AdamW learning rate, reached after ``warmup_steps`` linear steps, then cosine decay to
            ``0.1 * lr`` at ``max_steps``.
        max_steps: hard cap on SFT steps.
        target_accuracy: stop once the probe set's teacher-forced exact match reaches this (in [0, 1]);
            ``1.0`` or more disables early stopping.
        eval_every: steps between probe evaluations.
        probe_size: probe examples per task (held-out stream, fixed).
        band: ``(low, high)`` held-out greedy accuracy (fractions) to stop inside; ``None`` = the probe
            rule (``target_accuracy``). With a band, the probe is not used.
        aim: stop at the first full check in ``[aim, high]`` (default: the band's centre); at
            ``max_steps`` a last check anywhere in the band also counts as reached.
        check_size: examples per task of a full band check (the first ``check_size`` of the check stream:
            never trained on, and disjoint from the held-out set ``visent demo``/``visent study`` evaluate
            RL on, so that the luck of the check that stopped the warm-start does not bias "before RL").
        check_every: steps between full checks once the screen has passed.
        screen_size, screen_every, screen_margin: the cheap screen (the first ``screen_size`` check
            examples per task, every ``screen_every`` steps) that decides when full checks start: once it
            reaches ``band[0] - screen_margin``.
        max_rollbacks: overshoot roll-backs allowed before giving up (and flagging the result).
        check_max_new_tokens: greedy tokens per check response (the RL runs' ``max_completion_length``).
        tower_first: two-phase warm-start (``visent.lab.two_phase``; needs a band): first train the whole
            model until a full check reads at least this accuracy (a competent vision tower), then
            re-initialise what ``phase_two`` names and train back down into ``band`` with the vision
            encoder frozen. ``None`` (default): one phase.
        phase_two: with ``tower_first``, what the second phase re-initialises: ``"language_model"`` (and
            trains it alone under the frozen tower) or ``"projector"`` (only the vision→text projector,
            trained with the language model; the wording learnt in phase 1 is kept — tally's recipe).
        min_class_accuracy: with a band, stop only on a full check where every answer class is read at
            least this often (fraction); ``None`` (default): the mean alone.
    """

    kind: str = "qwen2_5_vl"
    # Grounding is left out by default: the tiny model does not learn to read positions within the
    # warm-start budget (see the module docstring), so it would only add a task at chance.
    tasks: tuple[str, ...] = ("counting", "classification")
    hidden_size: int = 128
    num_layers: int = 4
    seed: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 10
    max_steps: int = 600
    # Once a task starts being read, accuracy climbs by ~30 points per 25 steps: check often and stop
    # a little below the middle of the 30-70% band.
    target_accuracy: float = 0.45
    eval_every: int = 10
    probe_size: int = 32
    # Requested BPE vocabulary; a task with more words than the default 512 holds asks for more, so that
    # each word (each fork) is one token.
    vocab_size: int = 512
    # The band rule (module docstring). None keeps the probe rule, and the config keys that predate it.
    band: tuple[float, float] | None = None
    # Where inside the band to stop: the first full check at or above ``aim`` (None = the band's centre)
    # and not above the band. Stopping at the first check above the *lower* edge stops on a check that
    # read high: measured here, two warm-starts stopped at 42% and 47% on the check set measured 36% and 34%
    # on the evaluation set. Aiming at the centre leaves that luck inside the band.
    aim: float | None = None
    # 128 examples: the 95% interval of one check is about ±8.5 points at 50% (Wilson), against a 20-point
    # band; one full check costs ~2 s of greedy decoding (~3 SFT steps) on one CPU thread.
    check_size: int = 128
    # ~1.2 points per step during the climb: 5 steps (~6 points) is well inside a 20-point band.
    check_every: int = 5
    screen_size: int = 32
    screen_every: int = 10
    screen_margin: float = 0.10
    max_rollbacks: int = 6
    check_max_new_tokens: int = 40
    # Issue #21 item 2: band warm-starts never answer some counts (docs/lab-diagnosis.md §3) — their tower
    # lacks the feature. None keeps the one-phase recipe (and the keys of the configs that predate it).
    tower_first: float | None = None
    # Issue #21 item 2: stop only where every answer class (tally: every true count) is read at least this
    # often on the full check. Band warm-starts stopped on the mean alone read some counts at ~95% and
    # never answer others, which differ by seed (docs/lab-diagnosis.md §3, §8): RL from such a start must
    # build a missing feature and can erase one it had. None = the mean alone (and the keys that predate it).
    min_class_accuracy: float | None = None
    # What the two-phase warm-start's second phase starts from (with ``tower_first``): "language_model" =
    # the phase-1 tower frozen under a re-initialised language model; "projector" = the whole phase-1
    # model with only the vision→text projector re-initialised (encoder frozen), so the wording is kept.
    phase_two: str = "language_model"

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        if self.band is not None:
            self.band = (float(self.band[0]), float(self.band[1]))
            if not 0.0 < self.band[0] < self.band[1] <= 1.0:
                raise ValueError(f"WarmStartConfig.band must be (low, high) with 0 < low < high <= 1, got {self.band}")
            if min(self.check_size, self.check_every, self.screen_size, self.screen_every, self.check_max_new_tokens) < 1:
                raise ValueError(
                    "WarmStartConfig: check_size, check_every, screen_size, screen_every and "
                    "check_max_new_tokens must be >= 1"
                )
            if self.aim is not None and not self.band[0] <= self.aim <= self.band[1]:
                raise ValueError(f"WarmStartConfig.aim {self.aim} must lie inside the band {self.band}")
            if self.screen_size > self.check_size or self.max_rollbacks < 0:
                raise ValueError("WarmStartConfig: screen_size must be <= check_size and max_rollbacks >= 0")
        if self.tower_first is not None:
            if self.band is None:
                raise ValueError("WarmStartConfig.tower_first needs a band (the second phase stops in it)")
            if not self.band[1] <= self.tower_first < 1.0:
                raise ValueError(
                    f"WarmStartConfig.tower_first {self.tower_first} must lie in [band high {self.band[1]}, 1)"
                )
        if self.phase_two not in ("language_model", "projector"):
            raise ValueError(f"WarmStartConfig.phase_two must be 'language_model' or 'projector', got {self.phase_two!r}")
        if self.min_class_accuracy is not None and (self.band is None or not 0.0 <= self.min_class_accuracy <= 1.0):
            raise ValueError(
                f"WarmStartConfig.min_class_accuracy {self.min_class_accuracy} needs a band and must lie in [0, 1]"
            )
        if not self.tasks:
            raise ValueError("WarmStartConfig.tasks: give at least one lab task")
        if self.batch_size < 1 or self.max_steps < 0 or self.eval_every < 1 or self.probe_size < 1:
            raise ValueError(
                "WarmStartConfig: batch_size, eval_every and probe_size must be >= 1 and max_steps >= 0 "
                f"(got {self.batch_size}, {self.eval_every}, {self.probe_size}, {self.max_steps})"
            )
        unknown = [t for t in self.tasks if t not in TASK_MAKERS]
        if unknown:
            raise ValueError(
                f"WarmStartConfig.tasks: unknown task(s) {unknown}; valid: {', '.join(TASK_MAKERS)}"
            )
        if not self.lr > 0:
            raise ValueError(f"WarmStartConfig.lr must be > 0, got {self.lr}")

    def recipe(self) -> dict[str, Any]:
        """The warm-start's recipe beyond the band (the demo compares a run with a study only under the
        same one): the two-phase settings and the per-class floor."""
        return {"tower_first": self.tower_first, "phase_two": self.phase_two, "min_class_accuracy": self.min_class_accuracy}

    def band_aim(self) -> float:
        """The accuracy the band rule stops at or above (``aim``, default the band's centre)."""
        if self.band is None:
            raise ValueError("WarmStartConfig.band_aim: no band")
        return self.aim if self.aim is not None else (self.band[0] + self.band[1]) / 2

    def key(self) -> str:
        # The renderers' version is part of the key: a cached model trained on old images is stale.
        fields = dataclasses.asdict(self)
        if fields["vocab_size"] == 512:
            # Added later: left out at its default so the keys (and cached models, resumable studies)
            # of the configs that predate it are unchanged.
            del fields["vocab_size"]
        for name in ("tower_first", "min_class_accuracy"):
            if fields[name] is None:
                # Likewise for the two-phase warm-start and the per-class floor.
                del fields[name]
        if fields["phase_two"] == "language_model":
            del fields["phase_two"]
        if fields["band"] is None:
            # Likewise: the probe-rule configs keep the keys they had before the band rule existed.
            for name in _BAND_FIELDS:
                del fields[name]
        else:
            fields["check_stream"] = CHECK_SEED_OFFSET
        return config_hash({"version": 1, "tasks_version": TASKS_VERSION, **fields})


_BAND_FIELDS = (
    "band",
    "aim",
    "check_size",
    "check_every",
    "screen_size",
    "screen_every",
    "screen_margin",
    "max_rollbacks",
    "check_max_new_tokens",
)


# Per-task departures from the WarmStartConfig defaults (which are the counting study's recipe).
# tally: stop on measured held-out greedy accuracy in 40–60%. The probe rule (exact match ≥ 0.25 with the
# forks left out) stopped at 190 steps on two CPUs, at 50% greedy accuracy on one and 95% on the other
# (issue #17): the answer can be right long before every other token is. 40–60%: RL needs groups with
# both right and wrong answers (at p = 0.5 a group of K = 4 is mixed 7/8 of the time, at p = 0.9 only a
# third) and room both to improve and to get worse; the band's half-width (10 points) is about one
# 128-example check's 95% interval (±8.5 points), so a narrower band would be tuned to sampling noise.
#
# tally, issue #21 (docs/lab-diagnosis.md §8): two phases. Phase 1 trains the whole model to a 90% check
# (the tower tells every count apart, the wording is settled); phase 2 re-initialises only the
# vision→text projector and trains it with the language model (encoder frozen) back into the band. From
# one-phase band warm-starts, 120 GRPO steps gained +28.5/+18.6, −7.0 and +13.7 points (one warm-start
# collapsed to answering "1" and "5"); from these, +33.0/+34.8, +36.5/+11.3 and +16.4/+1.4.
TASK_WARMSTART: dict[str, dict[str, Any]] = {
    "tally": {
        "vocab_size": 768, "target_accuracy": 0.25, "band": (0.40, 0.60),
        "tower_first": 0.9, "phase_two": "projector",
    },
}


def warmstart_config(task: str, seed: int = 0) -> WarmStartConfig:
    """The lab's warm-start recipe for RL on ``task`` alone (``TASK_WARMSTART`` over the defaults)."""
    return WarmStartConfig(seed=seed, tasks=(task,), **TASK_WARMSTART.get(task, {}))


@dataclass
class WarmStartResult:
    """What ``warm_start`` returns: the model, its processor and the measurements of the run."""

    model: Any
    processor: Any
    path: str
    info: dict[str, Any] = field(default_factory=dict)
