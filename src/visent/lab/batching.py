"""Teacher-forcing batches of the lab's SFT: chat prompts, response labels, fork masks and the response loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visent.data.schema import Example
from visent.data.synthetic import response_spans, target_response, token_kinds
from visent.eval.generation import chat_prompt

__all__ = ["fork_mask", "prompt_texts", "response_loss", "sft_batch"]


def prompt_texts(processor: Any, examples: Sequence[Example]) -> list[str]:
    """Chat-template prompts (with image placeholders and the assistant header) for ``examples``: the
    plain template without system prompt, as ``visent eval`` renders them (``chat_prompt``)."""
    return [chat_prompt(processor, ex, "plain") for ex in examples]


def sft_batch(processor: Any, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Model inputs for teacher forcing ``target_response`` plus ``labels`` (-100 outside the response).

    Returns the processor's tensors (``input_ids``/``attention_mask`` ``(B, T)``, ``pixel_values``,
    ``image_grid_thw``, ...) and ``labels`` ``(B, T)`` holding the response tokens and the closing
    ``<|im_end|>``, ``-100`` on the prompt and on padding.
    """
    tok = processor.tokenizer
    prompts = prompt_texts(processor, examples)
    texts = [p + target_response(ex) + tok.eos_token for p, ex in zip(prompts, examples)]
    enc = processor(
        text=texts, images=[list(ex.images) for ex in examples], return_tensors="pt", padding=True
    )
    # The response starts after the last `<|im_start|>assistant\n`: the header is a fixed token sequence.
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    ids = enc["input_ids"]
    labels = torch.full_like(ids, -100)
    for b in range(ids.shape[0]):
        row = ids[b].tolist()
        starts = [i for i in range(len(row) - len(header) + 1) if row[i : i + len(header)] == header]
        if not starts:  # pragma: no cover - the template always renders the header
            raise RuntimeError(f"example {examples[b].id}: assistant header not found in the rendered prompt")
        begin = starts[-1] + len(header)
        labels[b, begin:] = ids[b, begin:]
    labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    return dict(enc)


def fork_mask(processor: Any, examples: Sequence[Example], labels: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool: label tokens of ``sft_batch`` that are wording forks of their target response.

    A fork (``visent.data.synthetic.response_spans``) is a free choice the target happened to make, so no
    argmax can be expected to match it; tasks without forks give an all-False row.
    """
    from visent.viz.scoring import decode_tokens

    tok = processor.tokenizer
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for b, ex in enumerate(examples):
        spans = response_spans(ex)
        if not spans:
            continue
        pos = (labels[b] != -100).nonzero().flatten()
        kinds = token_kinds(decode_tokens(tok, labels[b, pos].tolist()), spans)
        mask[b, pos] = torch.tensor([k == "fork" for k in kinds], dtype=torch.bool)
    return mask


def response_loss(
    model: Any, batch: dict[str, torch.Tensor], ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, exact)``: mean next-token cross-entropy over label tokens, and per-row exact match ``(B,)``.

    ``exact[b]`` is True when the argmax prediction is right at every label token of row ``b`` except
    those marked in ``ignore`` ``(B, T)`` (e.g. ``fork_mask``; the loss still covers them).
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1]  # (B, T-1, V)
    targets = batch["labels"][:, 1:]  # (B, T-1)
    valid = targets != -100
    loss = torch.nn.functional.cross_entropy(logits[valid].float(), targets[valid])
    with torch.no_grad():
        hit = (logits.argmax(-1) == targets) | ~valid
        if ignore is not None:
            hit = hit | ignore[:, 1:]
        exact = hit.all(dim=-1)
    return loss, exact
