"""The warm-start's SFT loop: fresh examples every step, warm-up + cosine learning rate, and one of two
stopping rules — the band (``visent.lab.band``, measured greedy accuracy) or the probe (teacher-forced
exact match). See ``visent.lab.warmstart`` for why.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from visent.data.schema import Example
from visent.data.synthetic import check_examples, heldout_examples, mixed_examples
from visent.lab.band import band_search
from visent.lab.batching import response_loss, sft_batch
from visent.lab.greedy import greedy_accuracy, probe_exact_match
from visent.lab.warmstart_config import WarmStartConfig

__all__ = ["sft"]

Scorer = Callable[[Sequence[Example], Sequence[str]], list[float]]


def worst_class_accuracy(examples: Sequence[Example], scores: Sequence[float]) -> float:
    """The lowest mean score over answer classes, a class being one (task, label) pair: e.g. for tally
    the accuracy on the images whose true count the model reads worst."""
    by_class: dict[tuple[str, str], list[float]] = {}
    for ex, score in zip(examples, scores):
        by_class.setdefault((ex.task, str(ex.answer)), []).append(score)
    return min(sum(v) / len(v) for v in by_class.values())


def _lr_at(step: int, cfg: WarmStartConfig) -> float:
    """Linear warm-up to ``cfg.lr`` then cosine decay to ``0.1 * cfg.lr`` at ``cfg.max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _train_step_fn(model: Any, processor: Any, cfg: WarmStartConfig, opt: Any) -> Callable[..., dict[str, Any]]:
    """``train_step(step, lr_scale=1.0)``: one optimizer step on the batch that is a function of ``step``."""

    def train_step(step: int, lr_scale: float = 1.0) -> dict[str, Any]:
        batch = sft_batch(processor, mixed_examples(cfg.tasks, cfg.batch_size, cfg.seed, step * cfg.batch_size))
        lr = _lr_at(step, cfg) * lr_scale
        for group in opt.param_groups:
            group["lr"] = lr
        loss, _ = response_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return {"loss": loss.item(), "lr": lr}

    return train_step


def _summary(steps: int, trained: int, t0: float, history: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    elapsed = time.perf_counter() - t0
    return {
        "steps": steps,
        "seconds": elapsed,
        "steps_per_second": trained / elapsed if elapsed > 0 else float("nan"),
        "final_loss": history[-1]["loss"] if history else float("nan"),
        **extra,
        "history": history,
    }


def _band_sft(model, processor, cfg, opt, train_step, bar, log, scorer: Scorer | None, t0: float) -> dict[str, Any]:
    """The band rule: ``band_search`` with greedy accuracy on the check set, state snapshots for roll-backs."""
    check_set = check_examples(cfg.tasks, cfg.check_size, cfg.seed)
    screen_set = check_examples(cfg.tasks, cfg.screen_size, cfg.seed)
    last: dict[str, Any] = {}
    check_seconds = 0.0

    def measure(kind: str) -> tuple[float, int]:
        nonlocal check_seconds
        t = time.perf_counter()
        acc = greedy_accuracy(
            model, processor, check_set if kind == "check" else screen_set,
            max_new_tokens=cfg.check_max_new_tokens, scorer=scorer,
        )
        model.train()
        check_seconds += time.perf_counter() - t
        if kind == "check":
            last.update(acc)
        bar.set_postfix({kind: f"{acc['accuracy']:.2f}"})
        if cfg.min_class_accuracy is None:
            return acc["accuracy"], acc["n"]
        examples = check_set if kind == "check" else screen_set
        return acc["accuracy"], acc["n"], worst_class_accuracy(examples, acc["scores"])

    def snapshot() -> Any:
        return (
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            copy.deepcopy(opt.state_dict()),
            torch.get_rng_state(),
        )

    def restore(state: Any) -> None:
        model.load_state_dict(state[0])
        opt.load_state_dict(copy.deepcopy(state[1]))
        torch.set_rng_state(state[2])
        bar.n = 0
        bar.refresh()

    def on_step(row: dict[str, Any]) -> None:
        if log is not None:
            log(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        out = band_search(cfg, train_step, measure, snapshot, restore, on_step=on_step)
    bar.close()
    model.eval()
    history = out.pop("history")
    out["band"] = list(cfg.band)
    out["check_seconds"] = check_seconds
    if not out["reached"]:
        print(
            f"visent warm-start: WARNING: held-out greedy accuracy did not land in the band "
            f"{100 * cfg.band[0]:.0f}–{100 * cfg.band[1]:.0f}% ({out['reason']} after {out['steps_trained']} "
            f"steps; last check {100 * out['accuracy']:.1f}%). RL comparisons from this model are not "
            "comparable with the lab study.",
            file=sys.stderr,
            flush=True,
        )
    heldout = {k: last[k] for k in ("accuracy", "per_task", "n")} if last else None
    return _summary(out["step"], out["steps_trained"], t0, history, band=out, heldout=heldout)


def _probe_sft(model, processor, cfg, train_step, bar, log, t0: float) -> dict[str, Any]:
    """The probe rule: stop once the teacher-forced exact match reaches ``cfg.target_accuracy``."""
    probe = heldout_examples(cfg.tasks, cfg.probe_size, cfg.seed)
    history: list[dict[str, Any]] = []
    probe_acc = 0.0
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        while step < cfg.max_steps:
            record = {"step": step + 1, **train_step(step)}
            step += 1
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                probe_acc = probe_exact_match(model, processor, probe)
                record["probe_exact"] = probe_acc
            history.append(record)
            if log is not None:
                log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", probe=f"{probe_acc:.2f}")
            if "probe_exact" in record and probe_acc >= cfg.target_accuracy:
                break
    bar.close()
    model.eval()
    return _summary(step, step, t0, history, probe_exact=probe_acc)


def sft(
    model: Any,
    processor: Any,
    cfg: WarmStartConfig,
    *,
    progress: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """Run the warm-start SFT loop in place on ``model``; returns measurements.

    Probe rule (``cfg.band is None``): stops at ``cfg.max_steps`` or as soon as the probe's teacher-forced
    exact match reaches ``cfg.target_accuracy`` (checked every ``cfg.eval_every`` steps).

    Band rule: ``band_search`` with greedy accuracy on the held-out check set (``scorer`` as in
    ``greedy_accuracy``); the result also holds ``"band"`` (``band_search``'s outcome without the
    per-step history) and ``"heldout"`` (the final full check: ``accuracy``, ``per_task``, ``n``).
    """
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.max_steps, desc="warm-start SFT", disable=not progress, leave=False)
    train_step = _train_step_fn(model, processor, cfg, opt)
    if cfg.band is not None:
        return _band_sft(model, processor, cfg, opt, train_step, bar, log, scorer, t0)
    return _probe_sft(model, processor, cfg, train_step, bar, log, t0)
