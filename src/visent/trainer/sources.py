"""Resolve the names in a ``VisentConfig`` to objects: model + processor, dataset, reward functions.

- model: ``tiny:<family>`` (built locally, offline; families in ``visent.models``) or a Hub id / local
  checkpoint (``visent.models.load_model_and_processor``; ``model_init_kwargs`` are passed to
  ``from_pretrained``). A model visent cannot run raises ``visent.models.UnsupportedModel``.
- dataset: ``lab:<task>`` (``visent.data.synthetic``: counting, tally, grounding, classification; ``dataset_size``
  examples from ``dataset_seed``) or a path / Hub id streamed by ``visent.data.table.load_table`` into a
  cached, memory-mapped Arrow table (the cache folder is printed on stderr).
  ``label_noise`` corrupts that fraction of labels (``visent.data.noise``), keeping the clean label.
- rewards: names in ``visent.rewards.REWARDS``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LAB_PREFIX", "dataset_has_images", "load_model", "load_train_dataset", "resolve_rewards"]

LAB_PREFIX = "lab:"


def load_model(name: str, model_init_kwargs: dict | None = None, need_adapter: bool = True) -> tuple[Any, Any]:
    """``(model, processor)`` for a model name (see module docstring). ``need_adapter``: whether the run
    computes token statistics, which only a family with an adapter supports (``visent.models.loading``)."""
    from visent.models import load_model_and_processor
    from visent.trainer.precision import training_load_kwargs

    # float32 unless model_init_kwargs sets a dtype: fp32 master weights (visent.trainer.precision)
    kwargs = {} if name.startswith("tiny:") else training_load_kwargs(model_init_kwargs)
    return load_model_and_processor(name, need_adapter=need_adapter, **kwargs)


def load_examples_for(spec: str, size: int, seed: int) -> list:
    if spec.startswith(LAB_PREFIX):
        from visent.data.synthetic import TASK_MAKERS, make_examples

        task = spec[len(LAB_PREFIX):]
        if task not in TASK_MAKERS:
            raise ValueError(f"unknown lab dataset {spec!r}; valid: {', '.join(LAB_PREFIX + t for t in TASK_MAKERS)}")
        return make_examples(task, size, seed)
    return list(load_table_for(spec))


def load_table_for(spec: str):
    """A dataset file/folder/Hub id as a cached, memory-mapped ``visent.data.table.ExampleTable``."""
    from visent.data.table import load_table

    table = load_table(spec, progress=True)
    if not len(table):
        raise ValueError(f"dataset {spec!r}: no usable rows ({table.report})")
    return table


def load_train_dataset(spec: str, size: int = 64, seed: int = 0, label_noise: float = 0.0):
    """A ``datasets.Dataset`` in TRL's conversational image format.

    ``lab:`` tasks are generated in memory (``visent.data.synthetic.to_trl_dataset``); anything else is
    streamed into a cached Arrow table (``visent.data.table``) whose images are decoded per batch, so
    memory does not grow with the number of rows.
    """
    if spec.startswith(LAB_PREFIX):
        from visent.data.synthetic import to_trl_dataset

        examples = load_examples_for(spec, size, seed)
        if label_noise > 0:
            from visent.data.noise import inject_label_noise

            examples, _ = inject_label_noise(examples, label_noise, seed)
        return to_trl_dataset(examples)
    table = load_table_for(spec)
    if label_noise > 0:
        table, _ = table.with_label_noise(label_noise, seed)
    return table.trl_dataset()


def dataset_has_images(dataset) -> bool:
    """Whether any row of a TRL-format dataset has an image, from the Arrow list lengths (no decoding)."""
    import pyarrow.compute as pc

    if "images" not in dataset.column_names:
        return False
    longest = pc.max(pc.list_value_length(dataset.data.column("images"))).as_py()
    return bool(longest)


def resolve_rewards(names: list[str], dataset: str | None = None) -> list:
    """Reward callables for names in ``visent.rewards.REWARDS`` (unknown names fail listing the valid ones).

    No names and a ``lab:<task>`` dataset: the task's reward (``visent.data.synthetic.TASK_REWARD``: accuracy +
    format, e.g. ``r1_counting`` for counting and tally).
    """
    from visent.rewards import REWARDS

    if not names and dataset and dataset.startswith(LAB_PREFIX):
        from visent.data.synthetic import TASK_REWARD

        default = TASK_REWARD.get(dataset[len(LAB_PREFIX):])
        if default in REWARDS:
            names = [default]

    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {', '.join(map(repr, unknown))}; valid: {', '.join(REWARDS)}")
    if not names:
        raise ValueError(f"reward_funcs is empty; name at least one of: {', '.join(REWARDS)}")
    return [REWARDS[n] for n in names]
