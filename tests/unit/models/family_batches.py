"""Generation batches built from a family's own processor, as TRL builds them (helpers for the tests over
the adapter table)."""

from __future__ import annotations

import numpy as np
import torch

TOKEN_KEYS = ("mm_token_type_ids", "token_type_ids")


def lab_images(n: int = 3, side: int = 56, seed: int = 0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(side, side, 3) * 255).astype("uint8")) for _ in range(n)]


def make_batch(processor, with_image, texts=None, completion_len=6, seed=0, side=56):
    """One row per entry of ``with_image`` (an image index or None); ``texts`` the rows' questions. Image
    inputs are whatever the processor returns; per-token inputs are extended over the completion with
    zeros, as TRL does."""
    images = lab_images(side=side, seed=seed)
    prompts, imgs = [], []
    for r, idx in enumerate(with_image):
        content = [{"type": "text", "text": texts[r] if texts else "How many shapes?"}]
        if idx is not None:
            content = [{"type": "image"}] + content
        prompts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                     add_generation_prompt=True, tokenize=False))
        imgs.append([images[idx]] if idx is not None else [])
    enc = processor(images=imgs if any(imgs) else None, text=prompts, return_tensors="pt", padding=True)
    n = len(with_image)
    completion = torch.randint(10, 60, (n, completion_len), generator=torch.Generator().manual_seed(seed))
    cmask = torch.ones_like(completion)
    if completion_len > 2:
        cmask[0, completion_len - 2 :] = 0
    batch = {
        "prompt_ids": enc["input_ids"],
        "prompt_mask": enc["attention_mask"],
        "completion_ids": completion,
        "completion_mask": cmask,
        "num_images": [0 if i is None else 1 for i in with_image],
        "advantages": torch.linspace(-1, 1, n),
    }
    for key, value in enc.items():
        if key in ("input_ids", "attention_mask") or not isinstance(value, torch.Tensor):
            continue
        if key in TOKEN_KEYS:
            value = torch.cat([value, torch.zeros_like(completion, dtype=value.dtype)], 1)
        batch[key] = value
    return batch, prompts, imgs
