"""Synthetic visual tasks (counting, grounding, classification, tally): seeded, unlimited, rendered with PIL.

The lab trains on them and ``visent train --dataset lab:<task>`` / ``visent eval --suite lab:<task>`` read
them, so they live in the data layer, below every user. ``tasks`` holds the table and the public API,
``shapes`` and ``tally`` the renderers, ``streams`` the disjoint training / held-out / check streams.
"""

from visent.data.synthetic.streams import (
    CHECK_SEED_OFFSET,
    HELDOUT_SEED_OFFSET,
    check_examples,
    heldout_examples,
    mixed_examples,
)
from visent.data.synthetic.tally import SPAN_KINDS, label_response, token_kinds
from visent.data.synthetic.tasks import (
    LABELLED_TASKS,
    RESPONSES,
    TASK_MAKERS,
    TASK_REWARD,
    TASKS_VERSION,
    TOKENIZER_TASKS,
    make_examples,
    response_spans,
    target_response,
    task_texts,
    to_trl_dataset,
)

__all__ = [
    "CHECK_SEED_OFFSET",
    "HELDOUT_SEED_OFFSET",
    "LABELLED_TASKS",
    "RESPONSES",
    "SPAN_KINDS",
    "TASKS_VERSION",
    "TASK_MAKERS",
    "TASK_REWARD",
    "TOKENIZER_TASKS",
    "check_examples",
    "heldout_examples",
    "label_response",
    "make_examples",
    "mixed_examples",
    "response_spans",
    "target_response",
    "task_texts",
    "to_trl_dataset",
    "token_kinds",
]
