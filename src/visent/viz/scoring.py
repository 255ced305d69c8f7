"""Score given (or greedy) responses token by token with a clean and a perturbed image.

This is the trainer's counterfactual pass run outside training, so the heatmap shows exactly what the
trainer would compute for the same response: prompts are rendered with the model's own chat template
(``visent.eval.generation.chat_prompt``), the batch is laid out the way TRL 1.16 hands it to the trainer
(``prompt_ids``/``prompt_mask`` left-padded, ``completion_ids``/``completion_mask`` right-padded, the
processor's image inputs — ``pixel_values`` and whatever the family adds, e.g. ``image_grid_thw``,
``pixel_attention_mask``, ``image_sizes`` — and ``num_images``), and then

- ``visent.trainer.counterfactual.prompt_seeds`` / ``perturb_batch_images`` draw one seeded perturbation
  per prompt,
- ``visent.trainer.counterfactual.counterfactual_stats`` teacher-forces clean and perturbed rows and
  reduces final hidden states to token statistics in chunks (``visent.core.stats``),
- ``visent.core.scores.token_scores`` / ``select_tokens`` score and select (top-ρ per response).

Nothing here is specific to the tiny lab models or to one family: the model's adapter
(``visent.models``) says how its images are cut, perturbed and shown (the pictures in the records are
the un-normalised model inputs: Qwen's patch rows reassembled; for a tiled family the overview tile its
adapter names in ``extra["display"]``).

As in the trainer, a response whose prompt has no image cannot be perturbed: its statistics are the
clean ones (JSD 0) and its selection falls back to entropy-only scores (noted in the record's meta).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visent.core.scores import SCORES, token_scores
from visent.core.selection import select_tokens
from visent.core.stats import DEFAULT_CHUNK_SIZE
from visent.data.schema import Example
from visent.eval.generation import encode_prompts, generate_ids, generation_kwargs
from visent.perturb import DEFAULT_STRENGTH, PERTURBATIONS, PatchLayout, unflatten_patches
from visent.viz.records import TokenRecord, score_signal

__all__ = ["decode_tokens", "greedy_completion_ids", "pixel_values_to_images", "score_responses"]


def _check_args(examples, responses, perturbation, method, ratio, max_new_tokens, batch_size) -> None:
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; valid: {', '.join(PERTURBATIONS)}")
    if method not in SCORES:
        raise ValueError(f"unknown token score method {method!r}; valid: {', '.join(SCORES)}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1] (fraction of each response's tokens selected), got {ratio!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if responses is not None and len(responses) != len(examples):
        raise ValueError(f"got {len(responses)} responses for {len(examples)} examples; give one per example")


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def decode_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's text, such that ``"".join(decode_tokens(tok, ids)) == tok.decode(ids)``.

    Decodes growing prefixes rather than tokens alone: a byte-level BPE token may hold part of a
    multi-byte character, which decodes to U+FFFD on its own. Such a token gets the empty string and
    the token that completes the character gets the whole character. Special tokens are kept.
    """
    out: list[str] = []
    prev = ""
    ids = [int(i) for i in ids]
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        stable = text if i == len(ids) - 1 else text.rstrip("\ufffd")
        if stable.startswith(prev):
            out.append(stable[len(prev) :])
            prev = stable
        else:  # a decoder that rewrites earlier text: fall back to the token alone
            piece = tokenizer.decode([ids[i]], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            out.append(piece)
            prev = text
    return out


def pixel_values_to_images(pixel_values: torch.Tensor, grid_thw: torch.Tensor, layout: PatchLayout) -> list[Any]:
    """Patch-flattened ``pixel_values`` ``(N_rows, C·tp·p·p)`` → one RGB PIL image per ``grid_thw`` row.

    Un-normalises with the processor's mean/std and clips to [0, 1] for display (a ``pixel_values``
    Gaussian perturbation is not clipped for the model; the picture shows what fits in 8 bits).
    """
    from PIL import Image

    images = []
    start = 0
    mean = torch.tensor(layout.image_mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(layout.image_std, dtype=torch.float32).view(-1, 1, 1)
    for t, h, w in grid_thw.tolist():
        n = t * h * w
        frames = unflatten_patches(pixel_values[start : start + n].detach().float().cpu(), (t, h, w), layout)
        pixels = (frames[0] * std + mean).clamp(0.0, 1.0)  # (C, H, W), first frame
        array = (pixels * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        images.append(Image.fromarray(array[..., :3] if array.shape[-1] >= 3 else array[..., 0]).convert("RGB"))
        start += n
    return images


@torch.no_grad()
def greedy_completion_ids(model: Any, processor: Any, enc: dict[str, torch.Tensor], max_new_tokens: int) -> list[list[int]]:
    """Greedy completion ids per row of the encoded prompts ``enc``, cut after the first end-of-turn token."""
    tok = processor.tokenizer
    out = generate_ids(model, enc, generation_kwargs(model, tok, max_new_tokens))
    eos = _eos_ids(model, tok)
    completions = []
    for row in out.tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        completions.append(row[:cut])
    return completions


def _response_ids(tokenizer: Any, response: str | Sequence[int], append_eos: bool, where: str) -> list[int]:
    if isinstance(response, str):
        ids = tokenizer.encode(response, add_special_tokens=False)
        if append_eos and tokenizer.eos_token_id is not None:
            # TRL's completions end with the end-of-turn token; score that decision too.
            ids = ids + [tokenizer.eos_token_id]
    else:
        try:
            ids = [int(t) for t in response]
        except (TypeError, ValueError):
            raise TypeError(f"{where}: a response must be a string or a sequence of token ids") from None
    if not ids:
        raise ValueError(f"{where}: empty response (nothing to score)")
    return ids


def _batch(
    enc: dict[str, torch.Tensor], completions: list[list[int]], num_images: list[int], pad_id: int, device,
    image_keys: Sequence[str] = ("pixel_values", "image_grid_thw"),
):
    """TRL's generation-batch layout (see module docstring) for one chunk of examples."""
    width = max(len(c) for c in completions)
    ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(completions), width), dtype=torch.long)
    for b, c in enumerate(completions):
        ids[b, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[b, : len(c)] = 1
    ids, mask = ids.to(device), mask.to(device)
    batch: dict[str, Any] = {
        "prompt_ids": enc["input_ids"].to(device),
        "prompt_mask": enc["attention_mask"].to(device),
        "completion_ids": ids,
        "completion_mask": mask,
        "num_images": num_images,
    }
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in enc:
            # As TRL does: the prompt's multimodal token types, zeros over the completion.
            batch[key] = torch.cat([enc[key].to(device), torch.zeros_like(ids)], dim=1)
    if "pixel_values" in enc:
        for key in image_keys:  # the family's image inputs (its adapter's image_keys)
            if key in enc:
                batch[key] = enc[key].to(device)
    return batch


def _reward(example: Example, response: str) -> float | None:
    from visent.rewards import reward_for_task

    try:
        reward = reward_for_task(example.task)
    except KeyError:  # a task without a verifier: nothing to score against
        return None
    return float(reward.score_one(response, example.answer, id=example.id, meta=example.meta).score)


def _score_and_select(stats, batch, num_images, method, alpha, ratio, seed):
    """``(scores, selected, has_image)``: every score of ``SCORES`` ``{m: (B, T)}``, the top-``ratio`` tokens
    of ``method`` per response ``(B, T)``, and which rows have an image ``(B,)``. As in the trainer, rows
    without an image are selected by entropy alone."""
    valid = batch["completion_mask"].float()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    scores = {m: token_scores(stats, valid, m, alpha, generator=gen) for m in SCORES}
    has_image = torch.tensor([k > 0 for k in num_images], device=valid.device)
    chosen = scores[method]
    if method != "entropy" and not bool(has_image.all()):
        chosen = torch.where(has_image[:, None], chosen, scores["entropy"])
    return scores, select_tokens(chosen, valid, ratio, "response", "top", gen), has_image


def score_responses(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    responses: Sequence[str | Sequence[int]] | None = None,
    *,
    perturbation: str = "pixel_values_gaussian",
    strength: float | None = None,
    seed: int = 0,
    method: str = "vepo",
    ratio: float = 0.2,
    alpha: float = 0.7,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 4,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    template: str = "plain",
    system_prompt: str | None = None,
    append_eos: bool = True,
    compute_reward: bool = True,
    progress: bool = False,
) -> list[TokenRecord]:
    """Teacher-force responses with the clean and perturbed image and return one record per example.

    Args:
        model / processor: a Qwen2-VL / Qwen2.5-VL model and its processor (tiny or real).
        examples: the prompts (``Example.prompt`` + ``images``).
        responses: one per example, text (tokenised without special tokens, plus the end-of-turn token
            when ``append_eos``) or token ids (used as given); ``None``: greedy generation of up to
            ``max_new_tokens`` tokens, cut after the first end-of-turn token (kept, as TRL does).
        perturbation / strength: a key of ``visent.perturb.PERTURBATIONS`` and its strength
            (``None``: ``DEFAULT_STRENGTH``). One draw per prompt, seeded from ``seed`` and the prompt.
        seed: perturbation seed (and the generator of the ``random`` score).
        method / ratio / alpha: the score that selects tokens (a key of ``SCORES``), the fraction kept
            per response (``ceil(ratio · n)``, at least 1), and the VEPO mix weight.
        temperature: τ; logits are divided by it before the statistics (as in sampling).
        batch_size: examples per forward (the counterfactual pass runs 2 × this many rows).
        chunk_size: tokens per chunk when projecting hidden states onto the vocabulary.
        template / system_prompt: prompt rendering, as in ``visent eval`` (``PROMPT_TEMPLATES``).
        compute_reward: score each response with the task's verifier (``visent.rewards``).
        progress: show a progress bar.

    Returns:
        ``TokenRecord`` per example with signals ``entropy``, ``entropy_perturbed``, ``jsd``, ``kl``,
        ``gap`` and ``score:<m>`` for every ``m`` in ``SCORES`` (each over the response's tokens), and
        ``selected`` = top-``ratio`` of ``score:<method>`` per response.
    """
    from tqdm.auto import tqdm

    from visent.models import require_adapter
    from visent.models.unwrap import backbone_and_head
    from visent.trainer.counterfactual import counterfactual_stats, perturb_batch_images, prompt_seeds

    examples = list(examples)
    _check_args(examples, responses, perturbation, method, ratio, max_new_tokens, batch_size)
    tok = processor.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    adapter = require_adapter(model)
    layout = adapter.image_geometry(processor)
    strength_used = DEFAULT_STRENGTH[perturbation] if strength is None else float(strength)
    device = next(model.parameters()).device
    backbone, head = backbone_and_head(model)
    was_training = model.training
    model.eval()
    records: list[TokenRecord] = []
    bar = tqdm(total=len(examples), desc="scoring responses", unit="ex", disable=not progress)
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            enc, num_images = encode_prompts(processor, chunk, template, system_prompt)
            enc = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}
            if responses is None:
                completions = [c or [pad_id] for c in greedy_completion_ids(model, processor, enc, max_new_tokens)]
            else:
                completions = [
                    _response_ids(tok, responses[start + b], append_eos, f"response {start + b} (example {ex.id!r})")
                    for b, ex in enumerate(chunk)
                ]
            batch = _batch(enc, completions, num_images, pad_id, device, adapter.image_keys)
            perturbed = None
            if batch.get("pixel_values") is not None:
                seeds = prompt_seeds(batch, seed, 0, adapter=adapter)
                perturbed = perturb_batch_images(batch, seeds, perturbation, strength_used, layout, adapter=adapter)
            stats = counterfactual_stats(
                backbone, head, batch, list(range(len(chunk))), perturbed, with_perturbed=perturbed is not None,
                temperature=temperature, chunk_size=chunk_size, batch_size=len(chunk), adapter=adapter,
            )
            scores, selected, has_image = _score_and_select(stats, batch, num_images, method, alpha, ratio, seed)
            records.extend(
                _records(chunk, completions, batch, perturbed, stats, scores, selected, has_image, layout, tok,
                         method, compute_reward, adapter)
            )
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return records


def _display_images(batch, perturbed, layout, adapter) -> list[tuple[list[Any], list[Any]]]:
    """Per response: ``(clean, perturbed)`` pictures of its images (module docstring)."""
    from visent.models.qwen import patch_row_spans as image_row_spans

    B = batch["completion_ids"].size(0)
    if batch.get("pixel_values") is None:
        return [([], [])] * B
    if adapter.layout == "patch_rows":
        out = []
        for r0, r1, i0, i1 in image_row_spans(batch):
            if r1 == r0:
                out.append(([], []))
                continue
            grid = batch["image_grid_thw"][i0:i1].cpu()
            out.append(
                (
                    pixel_values_to_images(batch["pixel_values"][r0:r1], grid, layout),
                    pixel_values_to_images(perturbed[r0:r1], grid, layout),
                )
            )
        return out
    display = adapter.extra.get("display")
    if display is None:
        return [([], [])] * B
    clean_units = adapter.units(batch)
    pert_units = adapter.units({**batch, "pixel_values": perturbed})
    return [
        ([im for u in c for im in display(u, layout)], [im for u in p for im in display(u, layout)])
        for c, p in zip(clean_units, pert_units)
    ]


def _records(chunk, completions, batch, perturbed, stats, scores, selected, has_image, layout, tok, method,
             compute_reward, adapter) -> list[TokenRecord]:
    pictures = _display_images(batch, perturbed, layout, adapter)
    fields = {
        "entropy": stats.entropy,
        "entropy_perturbed": stats.entropy_perturbed,
        "jsd": stats.jsd,
        "kl": stats.kl,
        "gap": stats.gap,
    }
    out = []
    for b, ex in enumerate(chunk):
        n = len(completions[b])
        signals = {name: values[b, :n].tolist() for name, values in fields.items()}
        signals.update({score_signal(m): s[b, :n].tolist() for m, s in scores.items()})
        clean_imgs, pert_imgs = pictures[b]
        tokens = decode_tokens(tok, completions[b])
        response = tok.decode(completions[b], skip_special_tokens=True)
        meta: dict[str, Any] = {"task": ex.task}
        if not bool(has_image[b]):
            meta["note"] = "no image: JSD is 0 and tokens are selected by entropy alone"
        out.append(
            TokenRecord(
                id=ex.id,
                prompt=ex.prompt,
                tokens=tokens,
                signals=signals,
                selected=selected[b, :n].tolist(),
                images=clean_imgs,
                perturbed_images=pert_imgs,
                token_ids=list(completions[b]),
                response=response,
                answer=ex.answer,
                reward=_reward(ex, response) if compute_reward else None,
                selection_method=method,
                meta=meta,
            )
        )
    return out
