"""The one canonical example every loader produces and every consumer (trainer, eval, lab) reads.

Label noise lives here, in the data layer: ``answer`` is what training rewards see (possibly
corrupted), ``clean_answer`` is the original label, and ``is_noisy`` says which is which, so
evaluation can report accuracy against both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["math", "multiple_choice", "grounding", "classification", "detection", "counting", "other"]
TASKS: tuple[str, ...] = ("math", "multiple_choice", "grounding", "classification", "detection", "counting", "other")


@dataclass
class Example:
    """One training/evaluation row.

    Attributes:
        id: stable identifier, unique within a dataset (used for resumable evaluation).
        task: which verifier family scores it (see ``TASKS``).
        prompt: the user's text question, without image placeholders.
        images: in the order they appear in the prompt (may be empty): file paths, PIL images, embedded
            ``{"bytes", "path"}`` structs or memory-mapped :class:`~visent.data.images.EmbeddedImage`
            handles; :func:`visent.data.images.open_image` opens any of them.
        answer: the label rewards are computed against (the noisy one after noise injection).
            Serialised as text: a number, an option letter, a class name, or JSON for boxes/points.
        clean_answer: the original label; equal to ``answer`` unless ``is_noisy``.
        is_noisy: whether ``answer`` was corrupted by label-noise injection.
        meta: task-specific extras (choices, image size, coordinate space, source file and row, ...).
    """

    id: str
    task: str
    prompt: str
    images: list[Any] = field(default_factory=list)
    answer: str = ""
    clean_answer: str | None = None
    is_noisy: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.clean_answer is None:
            self.clean_answer = self.answer
