"""Greedy generation backends for evaluation: transformers (CPU/GPU) and vLLM (when installed).

A backend is a callable ``generate(examples) -> list[str]`` returning one decoded completion per example,
in order. Both render prompts with the model's own processor chat template: one ``{"type": "image"}``
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


class TransformersBackend:
    """Batched greedy decoding with ``model.generate`` (left padding, no sampling)."""

    name = "transformers"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        template: str = "plain",
        system_prompt: str | None = None,
        max_new_tokens: int = 512,
    ) -> None:
        self.model, self.processor = model, processor
        self.template, self.system_prompt, self.max_new_tokens = template, system_prompt, max_new_tokens

    def __call__(self, examples: Sequence[Example]) -> list[str]:
        import torch

        tok = self.processor.tokenizer
        texts = [chat_prompt(self.processor, ex, self.template, self.system_prompt) for ex in examples]
        images = [load_images(ex) for ex in examples]
        kwargs: dict[str, Any] = {
            "text": texts,
            "return_tensors": "pt",
            "padding": True,
            "padding_side": "left",
        }
        if any(images):
            # One list per prompt: Gemma 3 and SmolVLM processors match images to prompts by nesting.
            kwargs["images"] = images
        enc = self.processor(**kwargs).to(self.model.device)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        image_token_id = getattr(self.model.config, "image_token_id", None)
        if image_token_id is not None:
            # A generated image placeholder would have no image features behind it.
            gen_kwargs["suppress_tokens"] = [image_token_id]
        if tok.pad_token_id is not None:
            gen_kwargs["pad_token_id"] = tok.pad_token_id
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.generate(**enc, **gen_kwargs)
        finally:
            self.model.train(was_training)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


class VLLMBackend:
    """Greedy decoding with vLLM (``temperature=0``); the processor only renders the chat template."""

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
        **llm_kwargs: Any,
    ) -> None:
        from vllm import LLM, SamplingParams

        self.processor = processor
        self.template, self.system_prompt = template, system_prompt
        self.llm = LLM(model=model_path, limit_mm_per_prompt={"image": max(1, max_images)}, **llm_kwargs)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def __call__(self, examples: Sequence[Example]) -> list[str]:
        requests = []
        for ex in examples:
            request: dict[str, Any] = {
                "prompt": chat_prompt(self.processor, ex, self.template, self.system_prompt)
            }
            images = load_images(ex)
            if images:
                request["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
            requests.append(request)
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
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

    def __call__(self, examples: Sequence[Example]) -> list[str]:
        if self._backend is None:
            self._backend = self._factory()
        return self._backend(examples)
