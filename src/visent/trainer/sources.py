"""Resolve the names in a ``VisentConfig`` to objects: model + processor, dataset, reward functions.

- model: ``tiny:qwen2_5_vl`` / ``tiny:qwen2_vl`` (built locally, offline) or a Hub id / local checkpoint
  (``visent.lab.tiny.load_model_and_processor``; ``model_init_kwargs`` are passed to ``from_pretrained``).
- dataset: ``lab:<task>`` (``visent.lab.tasks``: counting, tally, grounding, classification; ``dataset_size``
  examples from ``dataset_seed``) or a path / Hub id read by ``visent.data.loaders.load_examples``.
  ``label_noise`` corrupts that fraction of labels (``visent.data.noise``), keeping the clean label.
- rewards: names in ``visent.rewards.REWARDS``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LAB_PREFIX", "load_model", "load_train_dataset", "resolve_rewards"]

LAB_PREFIX = "lab:"


def load_model(name: str, model_init_kwargs: dict | None = None) -> tuple[Any, Any]:
    """``(model, processor)`` for a model name (see module docstring)."""
    from visent.lab.tiny import load_model_and_processor

    kwargs = {} if name.startswith("tiny:") else dict(model_init_kwargs or {})
    return load_model_and_processor(name, **kwargs)


def load_examples_for(spec: str, size: int, seed: int) -> list:
    if spec.startswith(LAB_PREFIX):
        from visent.lab.tasks import TASK_MAKERS, make_examples

        task = spec[len(LAB_PREFIX):]
        if task not in TASK_MAKERS:
            raise ValueError(f"unknown lab dataset {spec!r}; valid: {', '.join(LAB_PREFIX + t for t in TASK_MAKERS)}")
        return make_examples(task, size, seed)
    from visent.data.loaders import load_examples

    examples, report = load_examples(spec)
    if not examples:
        raise ValueError(f"dataset {spec!r}: no usable rows ({report})")
    return examples


def load_train_dataset(spec: str, size: int = 64, seed: int = 0, label_noise: float = 0.0):
    """A ``datasets.Dataset`` in TRL's conversational image format (``visent.lab.tasks.to_trl_dataset``)."""
    from visent.lab.tasks import to_trl_dataset

    examples = load_examples_for(spec, size, seed)
    if label_noise > 0:
        from visent.data.noise import inject_label_noise

        examples, _ = inject_label_noise(examples, label_noise, seed)
    return to_trl_dataset(examples)


def resolve_rewards(names: list[str], dataset: str | None = None) -> list:
    """Reward callables for names in ``visent.rewards.REWARDS`` (unknown names fail listing the valid ones).

    No names and a ``lab:<task>`` dataset: the task's reward (``visent.lab.tasks.TASK_REWARD``: accuracy +
    format, e.g. ``r1_counting`` for counting and tally).
    """
    from visent.rewards import REWARDS

    if not names and dataset and dataset.startswith(LAB_PREFIX):
        from visent.lab.tasks import TASK_REWARD

        default = TASK_REWARD.get(dataset[len(LAB_PREFIX):])
        if default in REWARDS:
            names = [default]

    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {', '.join(map(repr, unknown))}; valid: {', '.join(REWARDS)}")
    if not names:
        raise ValueError(f"reward_funcs is empty; name at least one of: {', '.join(REWARDS)}")
    return [REWARDS[n] for n in names]
