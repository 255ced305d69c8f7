"""One lab RL run: a method's config file, lab-sized settings, the real trainer, held-out accuracy.

The demo and the study both train through exactly what ``visent train`` runs: the method's YAML file in
``visent.configs`` is parsed by ``visent.trainer.cli.parse_config`` with command-line style overrides, and
``visent.trainer.build.build_trainer`` builds the ``VisentGRPOTrainer``. The lab only overrides the
settings that a 2-core CPU cannot afford at paper scale (model, data, group size, completion length,
learning rate, steps); the method's own knobs (token score, selection, perturbation, entropy schedule,
aggregation) come from the YAML file unchanged, except the entropy coefficients of the two-stage
family (see ``LAB_ENTROPY_COEF``).

Each run writes into its own folder:

- ``metrics.jsonl``: the trainer's per-step metrics (``visent.trainer.callbacks``);
- ``heldout.jsonl``: ``{"step", "heldout/accuracy"}`` rows — greedy accuracy on the held-out clean set
  at step 0 (the warm-start, measured once and shared by every run) and at a few points during training;
- ``result.json``: settings, accuracy before/after (with Wilson 95% intervals), timings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visent.data.synthetic import TASK_REWARD

__all__ = [
    "LAB_DYNAMIC_SAMPLING_TRIES",
    "LAB_ENTROPY_COEF",
    "METHODS",
    "TASK_METHOD_OVERRIDES",
    "TASK_RL_DEFAULTS",
    "RLSettings",
    "configs_dir",
    "lab_config",
    "method_config_path",
    "run_method",
    "train_command",
]

# The two-stage paper publishes no λ; the configs use 1e-3 (the VEPO authors' entropy bonus). On a
# ~1M-parameter model trained for a few dozen steps, 1e-3 moves the entropy by less than the sampling
# noise, so the lab's two-stage family (min / max / min→max / two-stage) uses a larger magnitude, applied
# identically to every method of that family. VEPO's own 1e-3 bonus is left as its config says.
LAB_ENTROPY_COEF = 0.05

# A filtering method (DAPO's dynamic sampling) on a lab model that has solved its data finds few groups whose
# responses disagree: EasyR1's 20 rounds per step then cost up to 20 generations a step and, unfilled, stop
# the run (EasyR1's error). The lab gives each step at most this many rounds and tops a batch it could not fill
# up with uninformative groups (zero advantage), so every filtering run finishes on the same step budget.
LAB_DYNAMIC_SAMPLING_TRIES = 5

# Lab method name -> (shipped config name (visent.configs), lab-specific overrides of method knobs).
_TWO_STAGE_COEFS = {"entropy_coef_max": LAB_ENTROPY_COEF, "entropy_coef_min": LAB_ENTROPY_COEF}
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "grpo": ("grpo", {}),
    "entropy_top20": ("entropy_top20", {}),
    "random20": ("random20", {}),
    "vepo": ("vepo", {}),
    # VEPO with GRPO's per-token step (token_mean): docs/lab-step-size.md.
    "vepo_matched_step": ("vepo_matched_step", {}),
    "vepo_jsd_only": ("vepo_jsd_only", {}),
    "vepo_no_entropy": ("vepo_no_entropy", {}),
    "vepo_product": ("vepo_product", {}),
    "vepo_linear": ("vepo_linear", {}),
    "vepo_kl": ("vepo_kl", {}),
    "vepo_positive_gap": ("vepo_positive_gap", {}),
    "vepo_noisy_or_all": ("vepo_noisy_or_all", {}),
    "entropy_min": ("entropy_min", _TWO_STAGE_COEFS),
    "entropy_max": ("entropy_max", _TWO_STAGE_COEFS),
    "min_then_max": ("min_then_max", _TWO_STAGE_COEFS),
    "two_stage": ("two_stage", _TWO_STAGE_COEFS),
    # Perception-aware baselines (PAPERS.md); `visent study --methods vppo papo_g ...`. Their configs' real-scale
    # image budget (200,704-1,003,520 px) is replaced by the lab images' own size (at most 112 × 112).
    "vppo": ("vppo", {"min_pixels": 784, "max_pixels": 12544}),
    "papo_g": ("papo_g", {"min_pixels": 784, "max_pixels": 12544}),
    "papo_d": ("papo_d", {"min_pixels": 784, "max_pixels": 12544}),
    "vepo_weight": ("vepo_weight", {}),
    "dapo": ("dapo", {}),
    "cppo": ("cppo", {}),
    # DAPO's filter at equal rollouts (docs/lab-results.md, session 10): GRPO given as many prompts a step as
    # DAPO's refills generate (ROLLOUT_SCALE). DAPO's loss without its filter needs no lab method: with one
    # update per generation batch the ratio is 1, so clip-higher never binds, and with one micro-batch GRPO's
    # selected_mean over all tokens is DAPO's token mean: its four lab runs scored every held-out example
    # as GRPO's did.
    "grpo_rollout_matched": ("grpo", {}),
}

# Lab methods that generate more prompts a step than the study's ``prompts_per_step``, by this factor
# (rounded): DAPO's filter generated 2.26 rounds a step on clean labels and 2.51 at 50% noise in the
# session-9/10 study (``dynamic_sampling/rounds``), so 2.5 × 8 prompts matches its rollouts.
ROLLOUT_SCALE: dict[str, float] = {"grpo_rollout_matched": 2.5}


# Per-task departures from the RLSettings defaults (which are the counting study's settings, kept as
# they were so that study stays reproducible). tally: see docs/lab-results.md for the measurements.
TASK_RL_DEFAULTS: dict[str, dict[str, Any]] = {
    # Issue #21 (docs/lab-diagnosis.md): with the vision tower frozen, as the configs do, GRPO does not
    # move held-out accuracy (warm-start 0: 48.8% -> 54.9% after 300 steps, 512 examples); with the lab's
    # tiny, only warm-started tower trained during RL, 120 steps took warm-start 0 to 77.3% and
    # warm-start 2 from 57.8% to 71.5%, but warm-start 1 fell from 42.8% to 35.7% (it lost counts it
    # had). lr 4e-4 broke the grammar (27% at step 40); τ = 0.7 left 5% of groups mixed by step 25;
    # 16 prompts per step and β = 0.04 did not rescue warm-start 1. Earlier (frozen tower, 30 steps):
    # 8 prompts × K=4 gained as much as K=8 at 3/4 of the cost, lr 3e-4 collapsed one seed in five.
    "tally": {
        "steps": 120,
        "prompts_per_step": 8,
        "num_generations": 4,
        # Target responses are 33–37 tokens with the end of turn: room for a longer wording, not rambling.
        "max_completion_length": 40,
        "learning_rate": 1.5e-4,
        "eval_points": 4,
        "freeze_vision_tower": False,
        # Session 6 (docs/lab-diagnosis.md §8–9): from the two-phase warm-starts GRPO gains without a KL
        # term too, but in 3 of 10 runs every greedy response had left the grammar inside <think> (the
        # reward reads only the answer and the tags); β = 0.04 kept it in the runs measured.
        "beta": 0.04,
    },
}
# Per-task overrides of method knobs. tally: the two-stage family switches at half-way, so that the
# exploitation stage (λ_min) lasts as long as the exploration stage instead of the configs' last 20%.
TASK_METHOD_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "tally": {m: {"entropy_switch": 0.5} for m in ("min_then_max", "two_stage")},
}


def _check_method(name: str) -> None:
    if name not in METHODS:
        raise ValueError(f"unknown lab method {name!r}; valid: {', '.join(METHODS)}")


def configs_dir() -> Path:
    """The method configs shipped with visent (``visent.configs``; ``VISENT_CONFIGS=DIR`` overrides it)."""
    from visent.configs import CONFIG_DIR

    env = os.environ.get("VISENT_CONFIGS")
    path = Path(env) if env else CONFIG_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"method configs folder {path} not found (VISENT_CONFIGS={env!r})")
    return path


def method_config_path(method: str) -> Path:
    _check_method(method)
    path = configs_dir() / f"{METHODS[method][0]}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"lab method {method!r}: config file {path} does not exist")
    return path


def quick_warmstart(seed: int, task: str, max_steps: int):
    """A seconds-long warm-start for ``--quick`` runs (tests): a 1-layer model, a few SFT steps, no early stop.

    Its numbers mean nothing; it exercises the same code path as the real recipe.
    """
    from visent.lab.warmstart import WarmStartConfig

    return WarmStartConfig(
        seed=seed, tasks=(task,), hidden_size=64, num_layers=1, batch_size=8, max_steps=max_steps,
        warmup_steps=2, target_accuracy=2.0, eval_every=100, probe_size=2,
    )


@dataclass
class RLSettings:
    """The lab-sized shared settings every method runs with (everything the method YAML does not decide).

    Attributes:
        task: lab task RL trains on (``lab:<task>``).
        steps: optimizer steps (one generation batch each).
        prompts_per_step: prompts per generation batch; each gets ``num_generations`` responses.
        num_generations: K, responses per prompt.
        max_completion_length: cap on sampled response tokens (the lab's targets are ~12–20 tokens).
        learning_rate: AdamW learning rate (constant; the tiny model was warm-started at 3e-3).
        temperature: sampling temperature τ.
        eval_points: held-out evaluations during training (evenly spaced, the last at ``steps``).
        freeze_vision_tower: ``None`` keeps the method config's choice (the configs freeze it, as the
            papers do with a pretrained tower); ``False`` trains the lab's tiny, only warm-started tower
            during RL (docs/lab-diagnosis.md).
        beta: KL coefficient to the warm-start (TRL's ``beta``), the same for every method; ``None`` keeps
            the method config's. Tally uses 0.04: without it the unrewarded wording inside ``<think>``
            drifts out of the task's grammar (docs/lab-diagnosis.md §9).
    """

    task: str = "counting"
    steps: int = 40
    # Measured on the counting warm-start (38% held-out): 2 prompts/step at lr 1e-4..5e-4 lowered held-out
    # accuracy (too noisy a gradient), 2e-3 collapsed it; 8 prompts/step at 1e-4 raised it to ~47% in
    # 40 steps.
    prompts_per_step: int = 8
    num_generations: int = 8
    max_completion_length: int = 28
    learning_rate: float = 1e-4
    temperature: float = 1.0
    eval_points: int = 3
    freeze_vision_tower: bool | None = None
    beta: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "num_generations", "max_completion_length", "eval_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"RLSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.beta is not None and self.beta < 0:
            raise ValueError(f"RLSettings.beta must be >= 0, got {self.beta}")
        if self.num_generations < 2:
            raise ValueError("RLSettings.num_generations must be >= 2 (group advantages need a group)")

    @classmethod
    def for_task(cls, task: str, **overrides: Any) -> RLSettings:
        """The lab's settings for ``task`` (``TASK_RL_DEFAULTS``), with ``overrides`` (``None`` = default)."""
        values = {**TASK_RL_DEFAULTS.get(task, {}), **{k: v for k, v in overrides.items() if v is not None}}
        return cls(task=task, **values)

    def eval_steps(self) -> list[int]:
        n = min(self.eval_points, self.steps)
        return sorted({round(self.steps * (i + 1) / n) for i in range(n)})


def lab_overrides(
    settings: RLSettings,
    *,
    model_path: str,
    noise: float,
    seed: int,
    output_dir: str,
    method: str,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """``--key value`` tokens overriding the method YAML with the lab's settings (see ``RLSettings``).

    ``extra``: further ``VisentConfig`` fields (``{"learning_rate": 3e-4}``), applied last.
    """
    s = settings
    prompts = max(1, int(s.prompts_per_step * ROLLOUT_SCALE.get(method, 1.0) + 0.5))  # half up, not to even
    pairs: dict[str, Any] = {
        "model_name_or_path": model_path,
        "dataset": f"lab:{s.task}",
        # Each prompt is seen once: the stream is unlimited, so RL never revisits an example.
        "dataset_size": s.steps * prompts,
        # Offset from the warm-start's stream (seed 0..) and the held-out stream (seed + 1_000_003).
        "dataset_seed": 10_000 + seed,
        "label_noise": noise,
        **_reward_overrides(s.task, method),
        "learning_rate": s.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "num_generations": s.num_generations,
        "per_device_train_batch_size": prompts * s.num_generations,
        "gradient_accumulation_steps": 1,
        "max_completion_length": s.max_completion_length,
        "temperature": s.temperature,
        "max_steps": s.steps,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "perturbation_seed": seed,
        # The lab is CPU-sized: a GPU would only add launch overhead and change numerics between machines.
        "use_cpu": True,
        "bf16": False,
        "output_dir": output_dir,
        "gradient_checkpointing": False,
        **({} if s.freeze_vision_tower is None else {"freeze_vision_tower": s.freeze_vision_tower}),
        **({} if s.beta is None else {"beta": s.beta}),
        **METHODS[method][1],
        **TASK_METHOD_OVERRIDES.get(s.task, {}).get(method, {}),
        **(extra or {}),
    }
    tokens: list[str] = []
    for key, value in pairs.items():
        if isinstance(value, (list, tuple)):  # list fields take one token per item (``--reward_funcs a b``)
            tokens += [f"--{key}", *(str(v) for v in value)]
        else:
            tokens += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return tokens


def _reward_overrides(task: str, method: str) -> dict[str, Any]:
    """The task's reward for ``method``. A config that filters groups (dynamic sampling) gets it as its
    weighted terms (same total) with the filter on the accuracy term, as EasyR1 filters on accuracy: the
    total of the lab's ``r1_counting`` ranges over [0, 2], which the easyr1 bounds (0.01, 0.99) would
    read as "every group too easy". It also gets the lab's filtering budget (``LAB_DYNAMIC_SAMPLING_TRIES``)."""
    import yaml

    from visent.rewards import get_reward

    name = TASK_REWARD[task]
    config = yaml.safe_load(method_config_path(method).read_text(encoding="utf-8")) or {}
    # The lab's own overrides decide too: a lab method may switch its config's filter off.
    config.update(METHODS[method][1], **TASK_METHOD_OVERRIDES.get(task, {}).get(method, {}))
    reward = get_reward(name)
    terms = getattr(reward, "terms", None)
    filters = config.get("dynamic_sampling", "none") != "none"
    budget = {"dynamic_sampling_max_tries": LAB_DYNAMIC_SAMPLING_TRIES, "dynamic_sampling_on_exhaust": "top_up"}
    if filters and terms:
        return {
            "reward_funcs": [t for t, _ in terms],
            "reward_weights": [w for _, w in terms],
            "dynamic_sampling_metric": reward.accuracy_term,
            **budget,
        }
    # One function: a config's own weights and filter function (for its own reward terms) would not match it.
    out: dict[str, Any] = {"reward_funcs": name}
    if config.get("reward_weights"):
        out["reward_weights"] = [1.0]
    if config.get("dynamic_sampling_metric"):
        out["dynamic_sampling_metric"] = name
    return {**out, **(budget if filters else {})}


def lab_config(
    method: str,
    settings: RLSettings,
    *,
    model_path: str,
    noise: float,
    seed: int,
    output_dir: str,
    extra: Mapping[str, Any] | None = None,
):
    """The ``VisentConfig`` of one lab run, through ``visent train``'s own parser."""
    from visent.trainer.cli import parse_config

    argv = ["--config", str(method_config_path(method))]
    argv += lab_overrides(
        settings, model_path=model_path, noise=noise, seed=seed, output_dir=output_dir, method=method,
        extra=extra,
    )
    return parse_config(argv)


def train_command(
    method: str,
    settings: RLSettings,
    *,
    model_path: str,
    noise: float,
    seed: int,
    output_dir: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The equivalent ``visent train`` command line (for reports); a shipped config by its name."""
    from visent.configs import CONFIG_DIR

    config = method_config_path(method)
    shown = METHODS[method][0] if config.parent == CONFIG_DIR else str(config)
    argv = ["visent", "train", "--config", shown]
    argv += lab_overrides(
        settings, model_path=model_path, noise=noise, seed=seed, output_dir=output_dir, method=method,
        extra=extra,
    )
    return shlex.join(argv)


# --------------------------------------------------------------------------------------------------
# Callbacks: held-out accuracy during training, and a compact progress bar.


def _append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _callbacks(
    processor: Any,
    heldout: Sequence[Any],
    eval_steps: Sequence[int],
    heldout_path: str,
    max_new_tokens: int,
    progress: bool,
    desc: str,
) -> list[Any]:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    from visent.lab.warmstart import greedy_accuracy

    class HeldoutAccuracy(TrainerCallback):
        """Greedy accuracy on the held-out clean set at ``eval_steps`` → ``heldout.jsonl``."""

        def __init__(self) -> None:
            self.processor = processor  # set to the trainer's processor once it is built
            self.last: dict[str, Any] | None = None
            self.seconds = 0.0

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = int(state.global_step)
            if step not in eval_steps or model is None:
                return
            t0 = time.perf_counter()
            acc = greedy_accuracy(model, self.processor, heldout, max_new_tokens=max_new_tokens)
            self.seconds += time.perf_counter() - t0
            self.last = {"step": step, **acc}
            _append_jsonl(heldout_path, {"step": step, "heldout/accuracy": acc["accuracy"]})

    class Bar(TrainerCallback):
        """One tqdm bar per run with the latest reward (instead of the Trainer's per-step log dump)."""

        def __init__(self) -> None:
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(
                total=state.max_steps, desc=desc, leave=True, disable=not progress, dynamic_ncols=True
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            # Logged after on_step_end of the same step.
            if self.bar is not None and logs and "reward" in logs:
                self.bar.set_postfix(reward=f"{float(logs['reward']):.2f}")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(1)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return [HeldoutAccuracy(), Bar()]


# --------------------------------------------------------------------------------------------------
# One run


def accuracy_block(accuracy: float, n: int) -> dict[str, Any]:
    """``{"accuracy", "n", "ci95"}`` with a Wilson interval (``visent.eval.report``)."""
    from visent.intervals import wilson_interval

    return {"accuracy": accuracy, "n": n, "ci95": list(wilson_interval(accuracy * n, n))}


def _mean_tail(rows: Sequence[dict[str, Any]], key: str, frac: float = 0.25) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not values:
        return None
    tail = values[-max(1, int(len(values) * frac)) :]
    return sum(tail) / len(tail)


def _result(
    method: str, settings: RLSettings, final: dict[str, Any], metrics: list[dict[str, Any]], *,
    model_path: str, noise: float, seed: int, out_dir: str, extra: Mapping[str, Any] | None,
    before: dict[str, Any],
) -> dict[str, Any]:
    """``result.json``'s measurements of one run (``final``: the last held-out evaluation)."""
    return {
        "method": method,
        "config": METHODS[method][0] + ".yaml",
        "task": settings.task,
        "noise": noise,
        "seed": seed,
        "steps": settings.steps,
        "settings": dataclasses.asdict(settings),
        "command": train_command(
            method, settings, model_path=model_path, noise=noise, seed=seed, output_dir=out_dir, extra=extra
        ),
        "extra": dict(extra or {}),
        "before": accuracy_block(before["accuracy"], before["n"]),
        "after": accuracy_block(final["accuracy"], final["n"]),
        "after_per_task": final["per_task"],
        # Per held-out example (in order): paired comparisons between runs on the same set need them.
        "after_scores": final["scores"],
        # What the final model writes (greedy), to see when a run changes the response's form.
        "after_responses_sample": final["responses"][:8],
        "reward_last_quarter": _mean_tail(metrics, "reward"),
        "entropy_first": next(
            (r["entropy/mean"] for r in metrics if isinstance(r.get("entropy/mean"), float)), None
        ),
        "entropy_last_quarter": _mean_tail(metrics, "entropy/mean"),
        # Jaccard overlap of the trained tokens with the entropy top-ρ, mean over steps (1.0 for GRPO).
        "overlap_entropy_top": _mean_tail(metrics, "select/overlap_entropy_top", 1.0),
    }


def run_method(
    method: str,
    settings: RLSettings,
    *,
    model_path: str,
    heldout: Sequence[Any],
    before: dict[str, Any],
    noise: float,
    seed: int,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
    keep_model: bool = False,
    desc: str | None = None,
    premise_examples: Sequence[Any] = (),
    extra: Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train ``method`` from the warm-start at ``model_path`` and evaluate it on ``heldout``.

    Args:
        before: the warm-start's held-out result, ``{"accuracy": float, "n": int}`` (step-0 point).
        noise: label-noise rate of the RL training data (evaluation is always against clean labels).
        keep_model: return the trained model and processor in ``result["_model"]`` / ``["_processor"]``
            (not serialised).
        premise_examples: examples on which the trained model's greedy responses are scored for VEPO's
            premise (``visent.lab.premise``) into ``result["premise"]``; empty: not measured.
        extra: further ``VisentConfig`` fields over the lab's settings (``lab_overrides``); recorded in
            ``result["extra"]`` and the run's command.
        callbacks: further ``transformers.TrainerCallback`` objects handed to the trainer (benchmarks
            use them to observe a run instead of patching the trainer factory).

    Returns the ``result.json`` dict (also written to ``out_dir/result.json``).
    """
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from visent.io import write_json_atomic
    from visent.trainer.build import build_trainer
    from visent.trainer.callbacks import read_metrics

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    heldout_path = os.path.join(out_dir, "heldout.jsonl")
    with open(heldout_path, "w", encoding="utf-8") as f:  # a rerun starts the file afresh
        f.write(json.dumps({"step": 0, "heldout/accuracy": before["accuracy"]}) + "\n")

    t0 = time.perf_counter()
    config = lab_config(
        method, settings, model_path=model_path, noise=noise, seed=seed, output_dir=out_dir, extra=extra
    )
    held_cb, bar_cb = _callbacks(
        None,
        heldout,
        settings.eval_steps(),
        heldout_path,
        settings.max_completion_length,
        progress,
        desc or f"{method} (noise {noise:g}, seed {seed})",
    )
    trainer = build_trainer(config, callbacks=[held_cb, bar_cb, *callbacks])
    # The callback needs the processor the trainer built; the default bars would print every log dict.
    held_cb.processor = trainer.processing_class
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    with torch.random.fork_rng(devices=[]):
        trainer.train()
    wall = time.perf_counter() - t0
    model = trainer.model
    if (
        held_cb.last is None or held_cb.last["step"] != settings.steps
    ):  # pragma: no cover - eval_steps ends at steps
        raise RuntimeError(f"{method}: the final held-out evaluation did not run")
    result = _result(
        method, settings, held_cb.last, read_metrics(out_dir), model_path=model_path, noise=noise, seed=seed,
        out_dir=out_dir, extra=extra, before=before,
    )
    result.update({"wall_s": wall, "eval_s": held_cb.seconds, "threads": torch.get_num_threads()})
    if premise_examples:
        from visent.lab.premise import measure_premise

        t1 = time.perf_counter()
        premise, _ = measure_premise(
            model, trainer.processing_class, premise_examples, seed=seed,
            max_new_tokens=settings.max_completion_length,
        )
        result["premise"] = premise
        result["premise_s"] = time.perf_counter() - t1
    write_json_atomic(os.path.join(out_dir, "result.json"), result)
    if keep_model:
        result["_model"] = model
        result["_processor"] = trainer.processing_class
    return result


def measure_before(model: Any, processor: Any, heldout: Sequence[Any], max_new_tokens: int) -> dict[str, Any]:
    """The warm-start's greedy held-out accuracy: ``{"accuracy", "n", "per_task", "responses"}``."""
    from visent.lab.warmstart import greedy_accuracy

    return greedy_accuracy(model, processor, heldout, max_new_tokens=max_new_tokens)


def heldout_set(task: str, n: int, warm_seed: int) -> list[Any]:
    """The held-out clean examples of ``task`` (the warm-start's held-out stream, never trained on)."""
    from visent.data.synthetic import heldout_examples

    return heldout_examples((task,), n, warm_seed)
