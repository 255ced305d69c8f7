"""Generation backends for evaluation: transformers (CPU/GPU) and vLLM (when installed); greedy by default,
or K samples per example at a temperature.

A backend is a callable ``generate(examples) -> list[str]`` returning one decoded completion per example,
in order; with ``samples=K > 1`` it returns one list of K completions per example. Sampling is seeded per
example (:func:`example_seed`), so an example's samples do not depend on its batch or on a resumed run. Both render prompts with the model's own processor chat template: one ``{"type": "image"}``
placeholder per image before the text, an optional system message, and the assistant header.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from visent.data.schema import Example

logger = logging.getLogger(__name__)

# Instructions appended to every question; "{prompt}" is the dataset's question text.
PROMPT_TEMPLATES: dict[str, str] = {
    "plain": "{prompt}",
    "think_answer": (
        "{prompt}\nFirst reason step by step inside <think> </think>, then give only the final answer "
        "inside <answer> </answer>."
    ),
    "think_boxed": (
        "{prompt}\nFirst reason step by step inside <think> </think>, then give the final answer in \\boxed{{}}."
    ),
}


def render_template(template: str, prompt: str) -> str:
    """``template`` may be a key of ``PROMPT_TEMPLATES`` or a literal string containing ``{prompt}``."""
    text = PROMPT_TEMPLATES.get(template, template)
    if "{prompt}" not in text:
        raise ValueError(
            f"prompt template {template!r} is neither one of {', '.join(PROMPT_TEMPLATES)} nor contains '{{prompt}}'"
        )
    return text.replace("{prompt}", prompt).replace("{{", "{").replace("}}", "}")


def example_seed(seed: int, example: Example) -> int:
    """A 63-bit seed for one example's samples, from the run's ``seed`` and the example id (stable across
    processes, unlike ``hash``)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}\x1f{example.id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def load_images(example: Example) -> list[Any]:
    """The example's images as RGB PIL images, in order (paths are opened, embedded bytes decoded; a file
    or bytes that do not open fail naming the example)."""
    from visent.data.images import open_image
    from visent.eval.sources import EvalDataError

    images = []
    for image in example.images:
        try:
            images.append(open_image(image))
        except (OSError, ValueError, TypeError) as exc:
            where = example.meta.get("source_file"), example.meta.get("source_row")
            origin = f" ({where[0]} row {where[1]})" if where[0] is not None else ""
            raise EvalDataError(f"example {example.id!r}{origin}: cannot open image {image!r}: {exc}; "
                                f"load with --image-check decode to skip rows whose images do not decode") from None
    return images


def chat_prompt(processor: Any, example: Example, template: str, system_prompt: str | None = None) -> str:
    """The chat-templated prompt text for ``example`` (image placeholders + question + assistant header)."""
    messages: list[dict[str, Any]] = []
    system = system_prompt or example.meta.get("system_prompt")
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": str(system)}]})
    content = [{"type": "image"} for _ in example.images]
    content.append({"type": "text", "text": render_template(template, example.prompt)})
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompts(
    processor: Any, examples: Sequence[Example], template: str = "plain", system_prompt: str | None = None
) -> tuple[Any, list[int]]:
    """The processor's left-padded batch for ``examples`` and the number of images of each prompt.

    Prompts are ``chat_prompt`` (the model's chat template); images are opened with ``load_images``.
    Returns ``(enc, num_images)``: ``enc`` holds ``input_ids`` / ``attention_mask`` ``(B, T)`` and the
    family's image inputs (``pixel_values``, ``image_grid_thw``, ...), on the CPU.
    """
    texts = [chat_prompt(processor, ex, template, system_prompt) for ex in examples]
    images = [load_images(ex) for ex in examples]
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, "padding_side": "left"}
    if any(images):
        # One list per prompt: Gemma 3 and SmolVLM processors match images to prompts by nesting.
        kwargs["images"] = images
    return processor(**kwargs), [len(per) for per in images]


def generation_kwargs(
    model: Any,
    tokenizer: Any,
    max_new_tokens: int,
    *,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> dict[str, Any]:
    """``model.generate`` arguments: greedy when ``temperature == 0`` and ``samples == 1``, else ``samples``
    sampled sequences per prompt (pure temperature / top-p sampling: ``top_k=0``).

    The one place that decides image-token suppression: a family whose config names an
    ``image_token_id`` never generates it (a generated image placeholder would have no image features
    behind it; TRL suppresses it too).
    """
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if samples > 1 or temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=samples)
    image_token_id = getattr(model.config, "image_token_id", None)
    if image_token_id is not None:
        kwargs["suppress_tokens"] = [image_token_id]
    if tokenizer.pad_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id
    return kwargs


def generate_ids(model: Any, enc: Any, gen_kwargs: dict[str, Any]) -> Any:
    """``(B·K, T_new)`` generated token ids after the prompts of ``enc`` (moved to the model's device).

    Runs in eval mode without gradients and restores the model's training flag afterwards.
    """
    import torch

    enc = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(**enc, **gen_kwargs)
    finally:
        model.train(was_training)
    return out[:, enc["input_ids"].shape[1] :]


class TransformersBackend:
    """Decoding with ``model.generate`` (left padding): batched greedy by default; with a temperature, K
    samples per example (``num_return_sequences``), each example under its own seed."""

    name = "transformers"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        template: str = "plain",
        system_prompt: str | None = None,
        max_new_tokens: int = 512,
        samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.model, self.processor = model, processor
        self.template, self.system_prompt, self.max_new_tokens = template, system_prompt, max_new_tokens
        self.samples, self.temperature, self.top_p, self.seed = samples, temperature, top_p, seed

    def __call__(self, examples: Sequence[Example]) -> list[Any]:
        if self.samples == 1 and self.temperature == 0:
            return self._generate(examples)
        import torch

        # One example per call, under a generator seeded from (seed, example id): its K samples are then the
        # same whatever batch it lands in, which is what makes a resumed sampled run match an uninterrupted
        # one. fork_rng keeps the caller's global RNG state untouched.
        out: list[Any] = []
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        for ex in examples:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(example_seed(self.seed, ex))
                texts = self._generate([ex], sample=True)
            out.append(texts if self.samples > 1 else texts[0])
        return out

    def _generate(self, examples: Sequence[Example], sample: bool = False) -> list[str]:
        tok = self.processor.tokenizer
        enc, _ = encode_prompts(self.processor, examples, self.template, self.system_prompt)
        if sample:
            gen_kwargs = generation_kwargs(self.model, tok, self.max_new_tokens, samples=self.samples,
                                           temperature=self.temperature, top_p=self.top_p)
        else:
            gen_kwargs = generation_kwargs(self.model, tok, self.max_new_tokens)
        return tok.batch_decode(generate_ids(self.model, enc, gen_kwargs), skip_special_tokens=True)


class VLLMBackend:
    """Decoding with vLLM: greedy (``temperature=0``) by default, else ``n=K`` samples per prompt with a
    per-request seed from :func:`example_seed`; the processor only renders the chat template."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        processor: Any,
        *,
        template: str = "plain",
        system_prompt: str | None = None,
        max_new_tokens: int = 512,
        max_images: int = 1,
        samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        from vllm import LLM, SamplingParams

        self.processor = processor
        self.template, self.system_prompt = template, system_prompt
        self.samples, self.temperature, self.top_p, self.seed = samples, temperature, top_p, seed
        self.max_new_tokens = max_new_tokens
        self._sampling_params = SamplingParams
        self.llm = LLM(model=model_path, limit_mm_per_prompt={"image": max(1, max_images)}, **llm_kwargs)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def _params(self, examples: Sequence[Example]) -> Any:
        """One SamplingParams for greedy decoding, else one per request (``n=K``, its own seed)."""
        if self.samples == 1 and self.temperature == 0:
            return self.params
        return [
            self._sampling_params(n=self.samples, temperature=self.temperature, top_p=self.top_p,
                                  max_tokens=self.max_new_tokens, seed=example_seed(self.seed, ex))
            for ex in examples
        ]

    def __call__(self, examples: Sequence[Example]) -> list[Any]:
        requests = []
        for ex in examples:
            request: dict[str, Any] = {
                "prompt": chat_prompt(self.processor, ex, self.template, self.system_prompt)
            }
            images = load_images(ex)
            if images:
                request["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
            requests.append(request)
        outputs = self.llm.generate(requests, self._params(examples), use_tqdm=False)
        if self.samples > 1:
            return [[c.text for c in o.outputs] for o in outputs]
        return [o.outputs[0].text for o in outputs]


def vllm_available() -> bool:
    """Whether vLLM is installed (not imported: importing it is slow and initialises CUDA)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class LazyBackend:
    """Builds the real backend on first use, so a fully resumed run never loads the model."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._backend: Any = None

    @property
    def built(self) -> bool:
        return self._backend is not None

    def __call__(self, examples: Sequence[Example]) -> list[Any]:
        if self._backend is None:
            self._backend = self._factory()
        return self._backend(examples)
