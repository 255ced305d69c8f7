"""``visent demo``: the lab end to end in a few minutes on a laptop CPU.

Stages:

1. **warm-start** — SFT of the tiny Qwen2.5-VL to partial competence (``visent.lab.warmstart``), cached
   in the run folder so a second ``visent demo`` starts RL at once;
2. **held-out baseline** — the warm-start's greedy accuracy on a held-out clean set;
3. **RL** — four runs of the real trainer (``VisentGRPOTrainer`` built by ``visent train``'s own config
   path, ``visent.lab.rl``) from the same warm-start: GRPO vs VEPO on clean labels, and GRPO vs the
   two-stage entropy schedule at 50% label noise; each is evaluated on the same held-out clean set;
4. **artefacts** — ``report.md`` (accuracy before/after per method, commands, seeds, steps, wall time),
   ``curves.png`` (reward, held-out accuracy and entropy per step, the two-stage switch marked) and
   ``tokens.html`` (the VEPO-trained model's responses on held-out examples, clean vs perturbed image,
   tokens coloured by entropy / JSD / VEPO score, the selected ones marked).

Every number in the artefacts is measured by this run. ``--quick`` shrinks everything (tiny model, a
few SFT and RL steps) so tests can exercise the whole pipeline in well under a minute; its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import asdict
from typing import Any

__all__ = ["DEMO_RUNS", "main"]

# (run label, lab method, label-noise rate): the four RL runs and the order they are reported in.
DEMO_RUNS: tuple[tuple[str, str, float], ...] = (
    ("grpo_clean", "grpo", 0.0),
    ("vepo_clean", "vepo", 0.0),
    ("grpo_noise50", "grpo", 0.5),
    ("two_stage_noise50", "two_stage", 0.5),
)
_PRETTY = {"grpo": "GRPO", "vepo": "VEPO", "two_stage": "two-stage entropy"}

DEFAULT_STEPS = 40
DEFAULT_HELDOUT = 96


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="visent demo",
        description="Warm-start a tiny Qwen2.5-VL on synthetic visual tasks, then compare GRPO, VEPO and "
        "the two-stage entropy schedule with the real trainer; writes report.md, curves.png, tokens.html.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (the warm-start is cached here)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the warm-start, the RL runs and the perturbation"
    )
    p.add_argument(
        "--steps", type=int, default=None, help=f"RL steps per run (default {DEFAULT_STEPS}; --quick: 2)"
    )
    p.add_argument("--task", default="counting", help="lab task RL trains and is evaluated on")
    p.add_argument("--heldout", type=int, default=None, help=f"held-out examples (default {DEFAULT_HELDOUT})")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a shared machine: more threads oversubscribe)",
    )
    p.add_argument("--quick", action="store_true", help="minimal version for tests (numbers are meaningless)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _header(i: int, n: int, text: str) -> None:
    print(f"\n== [{i}/{n}] {text}", flush=True)


def _settings(args: argparse.Namespace):
    from visent.lab.rl import RLSettings, quick_warmstart
    from visent.lab.warmstart import WarmStartConfig

    if args.quick:
        ws = quick_warmstart(args.seed, args.task, max_steps=6)
        rl = RLSettings(
            task=args.task,
            steps=args.steps or 2,
            prompts_per_step=1,
            num_generations=4,
            max_completion_length=12,
            eval_points=1,
        )
        return ws, rl, args.heldout or 4
    # Warm-started on the RL task alone (the recipe's defaults otherwise: it stops at partial competence).
    ws = WarmStartConfig(seed=args.seed, tasks=(args.task,))
    rl = RLSettings(task=args.task, steps=args.steps or DEFAULT_STEPS)
    return ws, rl, args.heldout or DEFAULT_HELDOUT


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(block: dict[str, Any]) -> str:
    lo, hi = block["ci95"]
    return f"{_pct(block['accuracy'])} [{_pct(lo)}, {_pct(hi)}]"


def _merged_rows(run_dir: str) -> list[dict[str, Any]]:
    """The trainer's metrics rows plus the held-out accuracy rows (separate rows, same ``step`` key)."""
    from visent.trainer.callbacks import read_metrics

    rows = read_metrics(run_dir)
    with open(os.path.join(run_dir, "heldout.jsonl"), encoding="utf-8") as f:
        rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _report(
    args: argparse.Namespace,
    argv: list[str],
    ws_info: dict[str, Any],
    ws_path: str,
    before: dict[str, Any],
    results: dict[str, dict[str, Any]],
    rl: Any,
    timings: dict[str, float],
    token_summary: dict[str, Any],
) -> str:
    import torch

    from visent.lab.rl import accuracy_block

    cmd = shlex.join(["visent", "demo", *argv])
    b = accuracy_block(before["accuracy"], before["n"])
    lines = [
        "# visent lab demo",
        "",
        f"Command: `{cmd}`"
        + ("  \n**--quick: a smoke run; the numbers below mean nothing.**" if args.quick else ""),
        "",
        (
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, torch threads {torch.get_num_threads()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}."
        ),
        "",
        (
            f"Total wall time: **{timings['total']:.0f} s** (warm-start {timings['warmstart']:.0f} s"
            f"{' — cached' if ws_info.get('cached') else ''}, held-out baseline {timings['baseline']:.0f} s, "
            f"RL {timings['rl']:.0f} s, artefacts {timings['artefacts']:.0f} s)."
        ),
        "",
        "## Warm-start",
        "",
        (
            f"Tiny Qwen2.5-VL ({ws_info.get('parameters', 0) / 1e6:.2f}M parameters), SFT on "
            f"{', '.join(ws_info['config']['tasks'])} for {ws_info.get('steps')} steps (seed {ws_info['config']['seed']}, "
            f"stopped at teacher-forced probe exact match {ws_info.get('probe_exact', float('nan')):.2f}); "
            f"cached in `{ws_path}`."
        ),
        "",
        (
            f"Held-out clean set: {b['n']} `{rl.task}` examples from the held-out stream (never trained on). "
            f"Warm-start greedy accuracy: **{_ci(b)}** (Wilson 95% interval)."
        ),
        "",
        "## RL from the warm-start (the real trainer, one run per row)",
        "",
        (
            f"Every run: {rl.steps} steps × {rl.prompts_per_step} prompt(s) × K={rl.num_generations} responses, "
            f"≤{rl.max_completion_length} new tokens, lr {rl.learning_rate:g} (constant), τ={rl.temperature:g}, "
            f"reward `r1_{rl.task}` (accuracy + format) against the (possibly noisy) training label; "
            "accuracy is greedy, on the held-out set, against clean labels."
        ),
        "",
        "| run | method | label noise | seed | steps | held-out accuracy before | after | change | reward (last quarter) | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, res in results.items():
        delta = res["after"]["accuracy"] - res["before"]["accuracy"]
        reward = res.get("reward_last_quarter")
        lines.append(
            f"| {label} | {_PRETTY.get(res['method'], res['method'])} | {_pct(res['noise'])} | {res['seed']} | "
            f"{res['steps']} | {_ci(res['before'])} | {_ci(res['after'])} | {100 * delta:+.1f} pts | "
            f"{'n/a' if reward is None else f'{reward:.3f}'} | {res['wall_s']:.0f} s |"
        )
    lines += [
        "",
        "Comparisons (same warm-start, same seed, same held-out set):",
        "",
    ]
    pairs = (
        ("vepo_clean", "grpo_clean", "VEPO vs GRPO, clean labels"),
        ("two_stage_noise50", "grpo_noise50", "two-stage vs GRPO, 50% label noise"),
    )
    for a, c, text in pairs:
        if a in results and c in results:
            d = results[a]["after"]["accuracy"] - results[c]["after"]["accuracy"]
            lines.append(
                f"- {text}: {_pct(results[a]['after']['accuracy'])} vs {_pct(results[c]['after']['accuracy'])} "
                f"({100 * d:+.1f} pts)."
            )
    n = before["n"]
    lines += [
        "",
        (
            f"With {n} held-out examples, one example is {100 / n:.1f} points and the 95% intervals above are "
            "wide: a single seed at this scale shows that the pipeline works, not which method is better. "
            "`visent study` runs the controlled comparison over seeds (see docs/lab-results.md)."
        ),
        "",
        "## Commands",
        "",
        "Each run is `visent train` with the method's config file and lab-sized overrides:",
        "",
    ]
    for label, res in results.items():
        lines += [f"- {label}:", "", f"  ```\n  {res['command']}\n  ```", ""]
    lines += [
        "## Artefacts",
        "",
        (
            "- `curves.png`: reward, held-out accuracy and mean token entropy per step for the four runs; the dashed "
            "line is the two-stage switch (read from the logged `entropy/stage`)."
        ),
        (
            f"- `tokens.html`: the VEPO-trained model's greedy responses on {int(token_summary.get('n_responses', 0))} "
            "held-out examples, clean vs perturbed image, tokens coloured by entropy, JSD and VEPO score, the selected 20% "
            f"boxed. Mean JSD (nats) of the selected tokens {token_summary.get('jsd_selected_mean', float('nan')):.2e} vs "
            f"the unselected {token_summary.get('jsd_unselected_mean', float('nan')):.2e}."
        ),
        "- `rl/<run>/`: each run's `metrics.jsonl`, `heldout.jsonl` and `result.json`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.steps is not None and args.steps < 1:
        print("visent demo: --steps must be >= 1", file=sys.stderr)
        return 2
    from visent.lab.tasks import TASK_MAKERS

    if args.task not in TASK_MAKERS:
        print(f"visent demo: unknown task {args.task!r}; valid: {', '.join(TASK_MAKERS)}", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    import torch
    import transformers

    torch.set_num_threads(max(1, args.threads))
    # The demo prints its own stage headers and one bar per run: silence the libraries' per-load bars
    # and deprecation chatter (they say nothing about the run).
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    from visent.eval.report import write_atomic
    from visent.lab.rl import heldout_set, measure_before, run_method
    from visent.lab.warmstart import warm_start
    from visent.viz.curves import plot_curves
    from visent.viz.heatmap import write_tokens_html
    from visent.viz.records import page_summary
    from visent.viz.scoring import score_responses

    progress = not args.no_progress
    ws_cfg, rl, n_heldout = _settings(args)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    n_stages = 4
    timings: dict[str, float] = {}

    _header(
        1, n_stages, "warm-start: SFT of the tiny Qwen2.5-VL to partial competence (cached in the run folder)"
    )
    t = time.perf_counter()
    ws = warm_start(out, ws_cfg, eval_per_task=max(4, n_heldout // 4), progress=progress)
    timings["warmstart"] = time.perf_counter() - t
    print(
        f"   {'reloaded' if ws.info.get('cached') else 'trained'} {ws.path} "
        f"({ws.info.get('steps')} SFT steps, {timings['warmstart']:.0f} s)",
        flush=True,
    )

    _header(
        2,
        n_stages,
        f"held-out baseline: greedy accuracy of the warm-start on {n_heldout} clean {rl.task} examples",
    )
    t = time.perf_counter()
    heldout = heldout_set(rl.task, n_heldout, ws_cfg.seed)
    before = measure_before(ws.model, ws.processor, heldout, rl.max_completion_length)
    timings["baseline"] = time.perf_counter() - t
    print(f"   warm-start accuracy {_pct(before['accuracy'])} ({timings['baseline']:.0f} s)", flush=True)
    del ws.model

    _header(3, n_stages, f"RL: {len(DEMO_RUNS)} runs × {rl.steps} steps through VisentGRPOTrainer")
    t = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    vepo_model = vepo_processor = None
    for label, method, noise in DEMO_RUNS:
        res = run_method(
            method,
            rl,
            model_path=ws.path,
            heldout=heldout,
            before=before,
            noise=noise,
            seed=args.seed,
            out_dir=os.path.join(out, "rl", label),
            progress=progress,
            keep_model=(method == "vepo"),
            desc=f"{label:>17}",
        )
        if method == "vepo":
            vepo_model, vepo_processor = res.pop("_model"), res.pop("_processor")
        results[label] = res
        print(
            f"   {label}: held-out accuracy {_pct(res['before']['accuracy'])} -> {_pct(res['after']['accuracy'])} "
            f"({res['wall_s']:.0f} s)",
            flush=True,
        )
    timings["rl"] = time.perf_counter() - t

    _header(4, n_stages, "artefacts: curves.png, tokens.html, report.md")
    t = time.perf_counter()
    plot_curves(
        {label: _merged_rows(os.path.join(out, "rl", label)) for label in results},
        os.path.join(out, "curves.png"),
        title=f"visent lab demo ({rl.task}, seed {args.seed})",
    )
    records = score_responses(
        vepo_model,
        vepo_processor,
        heldout[: min(6, len(heldout))],
        method="vepo",
        ratio=0.2,
        seed=args.seed,
        max_new_tokens=rl.max_completion_length,
        batch_size=6,
    )
    write_tokens_html(
        records,
        os.path.join(out, "tokens.html"),
        title="visent lab demo: VEPO-trained model, held-out examples",
        settings={
            "model": "tiny Qwen2.5-VL after VEPO",
            "perturbation": "pixel_values_gaussian (std 2.0)",
            "selection": "VEPO score, top 20% per response",
            "seed": args.seed,
        },
    )
    summary = page_summary(records)
    timings["artefacts"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    report = _report(
        args,
        argv,
        ws.info,
        os.path.join(args.out, os.path.basename(ws.path)),
        before,
        results,
        rl,
        timings,
        summary,
    )
    write_atomic(os.path.join(out, "report.md"), report)
    summary_json = {
        "argv": argv,
        "timings_s": timings,
        "warmstart": {k: v for k, v in ws.info.items() if k != "history"},
        "before": {k: v for k, v in before.items() if k != "responses"},
        "rl_settings": asdict(rl),
        "results": results,
        "tokens_summary": summary,
    }
    from visent.eval.report import write_json_atomic

    write_json_atomic(os.path.join(out, "demo.json"), summary_json)
    print(f"   wrote {out}/report.md, curves.png, tokens.html — total {timings['total']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
