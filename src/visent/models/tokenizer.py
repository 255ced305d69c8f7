"""The locally trained tokenizer every ``tiny:<family>`` model uses, and the text it is trained on.

Nothing is downloaded: a byte-level BPE vocabulary of a few hundred tokens is learnt from a corpus, with
the family's special tokens added. The default corpus is the lab tasks' prompts and target responses
(``visent.data.synthetic.task_texts()``), so the lab's tasks tokenize compactly on every tiny model and a
task added to the lab joins it without touching this module.

The corpus comes from ``visent.data.synthetic`` (a layer below ``visent.models``); it is read when a
tokenizer is built, never at import time, and a caller who passes its own ``texts`` (and
``with_lab_texts=False``) does not need it at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ROLE_TEXT", "TAG_TOKENS", "build_tokenizer", "default_corpus"]

# Learnt as whole tokens but not "special": `skip_special_tokens=True` keeps them in decoded text.
TAG_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")

# Scaffolding the tokenizer must see besides the task text: the role names of a ChatML template.
ROLE_TEXT: tuple[str, ...] = ("user\n", "assistant\n", "system\n")


def default_corpus() -> list[str]:
    """The synthetic tasks' prompts and target responses (imported at call time: it renders images)."""
    from visent.data.synthetic import task_texts

    return list(task_texts())


def build_tokenizer(
    texts: Sequence[str] | None,
    special_tokens: Sequence[str],
    *,
    eos_token: str,
    pad_token: str,
    vocab_size: int = 512,
    with_lab_texts: bool = True,
    extra_tokens: Sequence[str] = (),
    bos_token: str | None = None,
    role_text: Sequence[str] = ROLE_TEXT,
) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on the lab corpus plus ``texts``.

    ``special_tokens`` get the first ids in order. Digits are always single tokens (as in Qwen and
    Gemma), so counts and coordinates are spelt digit by digit. ``extra_tokens`` are added as whole,
    non-special tokens after the tag tokens; ``role_text`` are the chat template's role headers (Gemma's
    is ``"model\n"``), repeated so BPE learns them whole. Deterministic for given arguments.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (default_corpus() if with_lab_texts else []) + list(texts or [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Role names appear once per turn in real use: repeat them so BPE learns them as whole words.
    tok.train_from_iterator(corpus + list(role_text) * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        pad_token=pad_token,
        bos_token=bos_token,
        unk_token=None,
        # Generation (ours and TRL's) pads prompts on the left.
        padding_side="left",
        model_max_length=4096,
    )
    fast.add_tokens(list(TAG_TOKENS) + list(extra_tokens))
    return fast
