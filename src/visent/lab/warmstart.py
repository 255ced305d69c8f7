"""A short SFT warm-start of the tiny Qwen2.5-VL on the lab tasks, to partial competence, cached on disk.

RL from a random model gets no reward signal, and RL from a perfect one has nothing to learn. The lab
therefore starts RL from a model that answers roughly half of the held-out questions correctly: it
has learnt the response template and started to read the image, but not reliably.

What makes a from-scratch tiny VLM read the image quickly (measured on 2 CPU cores; each "step" is one
batch of 32):

- The image is what changes, not the recipe. With objects that fill most of a merged vision token
  (28×28 px), a mostly-object token has a feature vector far from a background token's, and the
  language model picks that up in tens of steps (a 4-quadrant count is learnt in ~60 steps). With small
  jittered objects inside 14-px cells, the same count sat at chance for 400+ steps whatever the learning
  rate (1e-3 … 1e-2), vision learning-rate multiplier, vision depth or merge size. So the lab tasks
  (``visent.data.synthetic``) put one large object per merged token.
- Reading *where* something is is much slower than reading *what* or *how many*: rotary position
  embeddings are relative, so the model must learn position-selective attention from scratch.
  Grounding stays near chance within the warm-start budget (600 steps tried) even with a single
  large button on a region-tinted screen, where a linear probe on the mean of the *untrained* vision
  tokens already predicts the row and column (R² 0.97): the language model does not learn to read it
  out in time. It is left out of the default task mix and documented as the hard task.
- Loss on the response tokens only (and the closing ``<|im_end|>``), never on the prompt.
- Fresh examples every step (the task streams are unlimited): no overfitting, and accuracy on the
  held-out stream is an honest measure.
- Linear warm-up then cosine decay from a high peak (2e-3), and one of two stopping rules:

  * **band** (``WarmStartConfig.band``; the ``tally`` recipe): stop on *measured* held-out greedy
    accuracy — real greedy generation scored by the task's verifier on a fixed check set, never trained
    on and disjoint from the evaluation set (``CHECK_SEED_OFFSET``) — once it lies inside the band
    (40–60% for tally): at the first full check in the band's upper half (``aim``), because the first
    check to cross a threshold tends to read high. Accuracy climbs steeply once the model starts
    reading the image (~30 points per 25 steps), and where on the step axis that climb happens depends on
    float rounding: the same code and seed reached 50% on one x86 CPU and 95% on another after the same
    190 steps. So the loop (``sft``) checks in three gears: a cheap *screen* (greedy on the first
    ``screen_size`` check examples) every ``screen_every`` steps until it reaches ``band[0] -
    screen_margin`` (and back to the screen if a full check reads below that); then a full check every
    ``check_every`` steps; and if a check *overshoots* the band it rolls back to the last state measured
    below the aim and replays the same steps (the data
    stream is a function of the step) with a full check after every step — and, if a single step still
    jumps over the band, halves the learning rate and replays again. Where ``max_steps`` or
    ``max_rollbacks`` run out first, the result says so loudly (``info["band"]["reached"] = False``).
  * **probe** (``band=None``; the counting recipe, kept for its study's reproducibility): stop as soon as
    a cheap proxy — teacher-forced exact match of the whole response on a fixed held-out probe set —
    reaches ``target_accuracy``. With greedy decoding a response that is exactly right under teacher
    forcing is generated exactly, so the proxy is a lower bound on greedy accuracy — but a loose one:
    the answer can be right while another token of the response is not.

The result is saved with ``save_pretrained`` (model and processor) under
``<run_dir>/warmstart-<config hash>/`` together with ``warmstart.json`` (config, steps, timings,
accuracies, and for a band the measured accuracy, whether it landed and every check); a later call with
the same config reloads it instead of training.

The code is split by job: ``visent.lab.warmstart_config`` (what determines the model; the cache key),
``visent.lab.batching`` (teacher-forcing batches), ``visent.lab.greedy`` (measuring a model),
``visent.lab.band`` (the band controller), ``visent.lab.sft`` (the SFT loop), ``visent.lab.two_phase``
(the two-phase warm-start, ``WarmStartConfig.tower_first``: tally's recipe re-initialises only the
projector in phase 2, docs/lab-diagnosis.md §8; re-initialising the whole language model lost from every
warm-start, §7); this module holds the cache
(``warm_start``) and re-exports the names the rest of visent uses.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from visent.data.synthetic import (
    CHECK_SEED_OFFSET,
    TOKENIZER_TASKS,
    check_examples,
    heldout_examples,
    mixed_examples,
    task_texts,
)
from visent.io import write_json_atomic
from visent.lab.band import band_search
from visent.lab.batching import fork_mask, prompt_texts, response_loss, sft_batch
from visent.lab.greedy import greedy_accuracy, greedy_responses, probe_exact_match
from visent.lab.sft import sft
from visent.lab.two_phase import tower_first_sft
from visent.lab.warmstart_config import (
    TASK_WARMSTART,
    WarmStartConfig,
    WarmStartResult,
    config_hash,
    warmstart_config,
)
from visent.models import build_tiny

__all__ = [
    "CHECK_SEED_OFFSET",
    "TASK_WARMSTART",
    "WarmStartConfig",
    "WarmStartResult",
    "band_search",
    "check_examples",
    "config_hash",
    "fork_mask",
    "greedy_accuracy",
    "greedy_responses",
    "heldout_examples",
    "mixed_examples",
    "probe_exact_match",
    "prompt_texts",
    "response_loss",
    "sft",
    "sft_batch",
    "warm_start",
    "warmstart_config",
]


def warm_start(
    run_dir: str | os.PathLike[str],
    cfg: WarmStartConfig | None = None,
    *,
    eval_per_task: int = 50,
    progress: bool = True,
    force: bool = False,
) -> WarmStartResult:
    """The warm-started tiny model and processor, trained now or reloaded from ``run_dir``.

    The cache lives in ``<run_dir>/warmstart-<cfg.key()>/``; it is reused when its ``warmstart.json``
    records the same config hash (``force=True`` retrains). After training, greedy accuracy on
    ``eval_per_task`` held-out examples per task is measured and stored in ``info["heldout"]`` — with a
    band, ``info["heldout"]`` is the band's last full check instead (``cfg.check_size`` check-stream
    examples per task, decoded with ``cfg.check_max_new_tokens``; ``"set": "check"``) and
    ``info["band"]`` holds the band, whether it was reached, the measured accuracy and every check
    (``band_search``).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = cfg or WarmStartConfig()
    path = os.path.join(os.fspath(run_dir), f"warmstart-{cfg.key()}")
    info_path = os.path.join(path, "warmstart.json")
    if not force and os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
        if info.get("config_hash") == cfg.key():
            model = AutoModelForImageTextToText.from_pretrained(path).eval()
            processor = AutoProcessor.from_pretrained(path)
            info["cached"] = True
            return WarmStartResult(model, processor, path, info)

    # Tasks newer than the default tokenizer corpus bring their own text (see TOKENIZER_TASKS).
    extra = task_texts(tasks=[t for t in cfg.tasks if t not in TOKENIZER_TASKS])
    def build() -> tuple[object, object]:
        return build_tiny(
            cfg.kind,
            texts=extra or None,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            seed=cfg.seed,
            vocab_size=cfg.vocab_size,
        )

    model, processor = build()
    if cfg.tower_first is not None:
        model, measured = tower_first_sft(model, processor, cfg, lambda: build()[0], progress=progress)
    else:
        measured = sft(model, processor, cfg, progress=progress)
    if cfg.band is not None and measured.get("heldout"):
        # The band's last full check (on the check stream; the demo and the study measure their own
        # held-out set themselves).
        heldout_acc = {**measured.pop("heldout"), "set": "check"}
    else:
        measured.pop("heldout", None)
        acc = greedy_accuracy(model, processor, heldout_examples(cfg.tasks, eval_per_task, cfg.seed))
        heldout_acc = {"accuracy": acc["accuracy"], "per_task": acc["per_task"], "n": acc["n"]}
    info = {
        "config": dataclasses.asdict(cfg),
        "config_hash": cfg.key(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        **{k: v for k, v in measured.items()},
        "heldout": heldout_acc,
        "cached": False,
    }
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    # Written last and atomically: its presence means the directory is complete.
    write_json_atomic(info_path, info, indent=1)
    return WarmStartResult(model, processor, path, info)
