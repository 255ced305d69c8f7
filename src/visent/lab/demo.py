"""``visent demo``: the lab end to end in a few minutes on a laptop CPU.

Stages:

1. **warm-start** — SFT of the tiny Qwen2.5-VL to partial competence (``visent.lab.warmstart``): for
   ``tally``, until its measured held-out greedy accuracy lies in the band 40–60% (on any CPU; a start
   outside the band is flagged and not compared with the study). Cached in the run folder so a second
   ``visent demo`` starts RL at once;
2. **held-out baseline** — the warm-start's greedy accuracy on a held-out clean set;
3. **RL** — five runs of the real trainer (``VisentGRPOTrainer`` built by ``visent train``'s own config
   path, ``visent.lab.rl``) from the same warm-start: GRPO, VEPO and entropy top-20% on clean labels, and
   GRPO vs the two-stage entropy schedule at 50% label noise; each is evaluated on the same held-out
   clean set, and (on a task with token labels, ``tally`` by default) VEPO's premise is measured on the
   warm-start and on every trained model (``visent.lab.premise``);
4. **artefacts** — ``report.md`` (a plain-language verdict per comparison with this run's paired 95%
   intervals beside the study's numbers from ``visent/lab/summaries/study-<task>.json`` — warm-starts × RL seeds,
   nested intervals — saying whether this run agrees with the study and, where not, whether its
   difference is inside the spread the study expects for one run (``comparability``, ``verdict_sentence``); the premise
   numbers; accuracy before/after per method, commands, seeds, steps, wall time), ``curves.png`` (reward,
   held-out accuracy and entropy per step, the two-stage switch marked) and ``tokens.html`` (the
   warm-start's responses on held-out examples, clean vs perturbed image, tokens coloured by entropy /
   JSD / VEPO score, the VEPO-selected ones boxed, image-anchored tokens and forks marked).

Every number in the artefacts is measured by this run. ``--quick`` shrinks everything (tiny model, a
few SFT and RL steps) so tests can exercise the whole pipeline in well under a minute; its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import asdict
from typing import Any

from visent.eval.report import pct

__all__ = ["DEMO_RUNS", "main"]

# (run label, lab method, label-noise rate): the RL runs and the order they are reported in.
DEMO_RUNS: tuple[tuple[str, str, float], ...] = (
    ("grpo_clean", "grpo", 0.0),
    ("vepo_clean", "vepo", 0.0),
    ("entropy_top20_clean", "entropy_top20", 0.0),
    ("grpo_noise50", "grpo", 0.5),
    ("two_stage_noise50", "two_stage", 0.5),
)


DEFAULT_TASK = "tally"
DEFAULT_HELDOUT = 128
PREMISE_EXAMPLES = 32


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
        "--steps", type=int, default=None, help="RL steps per run (default: the task's, rl.TASK_RL_DEFAULTS; --quick: 2)"
    )
    p.add_argument("--task", default=DEFAULT_TASK, help="lab task RL trains and is evaluated on")
    p.add_argument(
        "--study", default=None,
        help="study summary JSON to quote beside this run (default: the one shipped in visent/lab/summaries/)",
    )
    p.add_argument("--heldout", type=int, default=None, help=f"held-out examples (default {DEFAULT_HELDOUT})")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a shared machine: more threads oversubscribe)",
    )
    p.add_argument(
        "--workers",
        default="auto",
        help="RL runs in parallel processes: a number, or auto (one per CPU core, at most the 5 runs)",
    )
    p.add_argument("--quick", action="store_true", help="minimal version for tests (numbers are meaningless)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _header(i: int, n: int, text: str) -> None:
    print(f"\n== [{i}/{n}] {text}", flush=True)


def _settings(args: argparse.Namespace):
    from visent.lab.rl import RLSettings, quick_warmstart
    from visent.lab.warmstart import warmstart_config

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
    # Warm-started on the RL task alone with the task's recipe; the study's settings for RL.
    ws = warmstart_config(args.task, args.seed)
    rl = RLSettings.for_task(args.task, steps=args.steps)
    return ws, rl, args.heldout or DEFAULT_HELDOUT


def _merged_rows(run_dir: str) -> list[dict[str, Any]]:
    """The trainer's metrics rows plus the held-out accuracy rows (separate rows, same ``step`` key)."""
    from visent.io import read_jsonl
    from visent.trainer.callbacks import read_metrics

    rows = read_metrics(run_dir)
    rows += read_jsonl(os.path.join(run_dir, "heldout.jsonl"))
    return rows


def _rl_job(job: dict[str, Any]) -> dict[str, Any]:
    """One demo RL run (in this process or a worker): ``run_method`` on the job's settings."""
    import torch

    from visent.lab.rl import RLSettings, heldout_set, run_method

    torch.set_num_threads(job["threads"])
    settings = RLSettings(**job["settings"])
    heldout = heldout_set(job["task"], job["heldout_n"], job["warm_seed"])
    return run_method(
        job["method"], settings, model_path=job["model_path"], heldout=heldout, before=job["before"],
        noise=job["noise"], seed=job["seed"], out_dir=job["out_dir"], progress=job["progress"],
        desc=f"{job['name']:>19}", premise_examples=heldout[: job["premise_n"]],
    )


def _warmstart_stage(ws_cfg, n_heldout: int, out: str, progress: bool, timings: dict[str, float]):
    """Stage 1: the warm-start, trained or reloaded from the run folder; prints where it landed."""
    from visent.lab.warmstart import warm_start

    t = time.perf_counter()
    ws = warm_start(out, ws_cfg, eval_per_task=max(4, n_heldout // 4), progress=progress)
    timings["warmstart"] = time.perf_counter() - t
    print(
        f"   {'reloaded' if ws.info.get('cached') else 'trained'} {ws.path} "
        f"({ws.info.get('steps')} SFT steps, {timings['warmstart']:.0f} s)",
        flush=True,
    )
    band = ws.info.get("band") or {}
    if band.get("band"):
        lo, hi = band["band"]
        state = "reached" if band.get("reached") else "NOT REACHED — not compared with the study"
        print(
            f"   band {100 * lo:.0f}–{100 * hi:.0f}% held-out greedy accuracy: {state} "
            f"({100 * band.get('accuracy', float('nan')):.1f}%, {band.get('rollbacks', 0)} roll-backs)",
            flush=True,
        )

    return ws


def _baseline_stage(args, rl, ws, ws_cfg, n_heldout: int, timings: dict[str, float]):
    """Stage 2: the warm-start's held-out accuracy and (labelled tasks) VEPO's premise on it."""
    from visent.data.synthetic import LABELLED_TASKS
    from visent.lab.rl import heldout_set, measure_before

    t = time.perf_counter()
    heldout = heldout_set(rl.task, n_heldout, ws_cfg.seed)
    before = measure_before(ws.model, ws.processor, heldout, rl.max_completion_length)
    labelled = rl.task in LABELLED_TASKS
    premise_examples = heldout[: min(PREMISE_EXAMPLES, len(heldout))] if labelled else []
    # The warm-start's token-level view, kept for tokens.html: the premise is about the model RL starts from.
    premise_before, ws_records = None, None
    if labelled:
        from visent.lab.premise import measure_premise

        premise_before, ws_records = measure_premise(
            ws.model, ws.processor, premise_examples, seed=args.seed, max_new_tokens=rl.max_completion_length
        )
    timings["baseline"] = time.perf_counter() - t
    print(f"   warm-start accuracy {pct(before['accuracy'], suffix='%')} ({timings['baseline']:.0f} s)", flush=True)
    if premise_before:
        print(
            f"   premise: entropy anchored {premise_before['entropy_anchor']:.2f} vs forks "
            f"{premise_before['entropy_fork']:.2f} nats; anchored share of entropy top-20% "
            f"{pct(premise_before['anchor_share_entropy_top'], suffix='%')} vs VEPO top-20% "
            f"{pct(premise_before['anchor_share_vepo_top'], suffix='%')}",
            flush=True,
        )

    return heldout, before, premise_examples, premise_before, ws_records


def _tokens_page(args, rl, ws, ws_records, heldout, out: str) -> list[Any]:
    """tokens.html from the warm-start's scored responses; returns the records (frees the warm-start model)."""
    from visent.viz.heatmap import write_tokens_html
    from visent.viz.scoring import score_responses

    if ws_records is not None:
        from visent.lab.premise import record_kinds

        records = ws_records[:8]
        for r in records:
            r.kinds = record_kinds(r)
    else:
        records = score_responses(
            ws.model,
            ws.processor,
            heldout[: min(6, len(heldout))],
            method="vepo",
            ratio=0.2,
            seed=args.seed,
            max_new_tokens=rl.max_completion_length,
            batch_size=6,
        )
    del ws.model
    write_tokens_html(
        records,
        os.path.join(out, "tokens.html"),
        title=f"visent lab demo: the warm-start's responses on held-out {rl.task} examples",
        settings={
            "model": "tiny Qwen2.5-VL, warm-started (the model every RL run starts from)",
            "perturbation": "pixel_values_gaussian (std 2.0)",
            "selection": "VEPO score, top 20% per response",
            "seed": args.seed,
        },
    )
    return records


def _rl_stage(args, rl, ws, ws_cfg, n_heldout: int, before: dict[str, Any], premise_n: int, out: str,
              progress: bool) -> dict[str, dict[str, Any]] | None:
    """The five RL runs (``DEMO_RUNS``) on ``--workers`` processes; ``{label: result}``, ``None`` if one failed."""
    from visent.lab.pool import pool_map, workers

    jobs = [
        {
            "name": label, "method": method, "noise": noise, "settings": asdict(rl), "model_path": ws.path,
            "task": rl.task, "heldout_n": n_heldout, "warm_seed": ws_cfg.seed, "before": before,
            "seed": args.seed, "out_dir": os.path.join(out, "rl", label), "premise_n": premise_n,
            "threads": max(1, args.threads),
        }
        for label, method, noise in DEMO_RUNS
    ]
    n_workers = workers(args.workers, len(jobs), prog="visent demo")
    # One worker: in this process with bars; several: one spawned process per run, no bars (they would
    # interleave), a line per finished run.
    for job in jobs:
        job["progress"] = progress and n_workers == 1
    results: dict[str, dict[str, Any]] = {}

    def finished(job: dict[str, Any], get) -> None:
        res = get()
        results[job["name"]] = res
        print(
            f"   {job['name']}: held-out accuracy {pct(res['before']['accuracy'], suffix='%')} -> "
            f"{pct(res['after']['accuracy'], suffix='%')} ({res['wall_s']:.0f} s)",
            flush=True,
        )

    print(f"   {len(jobs)} runs on {n_workers} worker(s)", flush=True)
    if pool_map(_rl_job, jobs, n_workers, finished, init=False):
        print("visent demo: an RL run failed (see above)", file=sys.stderr)
        return None
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.steps is not None and args.steps < 1:
        print("visent demo: --steps must be >= 1", file=sys.stderr)
        return 2
    from visent.data.synthetic import TASK_MAKERS

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
    from visent.io import write_atomic
    from visent.lab.demo_report import load_study, render_report
    from visent.viz.curves import plot_curves
    from visent.viz.records import page_summary

    progress = not args.no_progress
    ws_cfg, rl, n_heldout = _settings(args)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    n_stages = 4
    timings: dict[str, float] = {}

    _header(
        1, n_stages, "warm-start: SFT of the tiny Qwen2.5-VL to partial competence (cached in the run folder)"
    )
    ws = _warmstart_stage(ws_cfg, n_heldout, out, progress, timings)

    _header(
        2,
        n_stages,
        f"held-out baseline: greedy accuracy of the warm-start on {n_heldout} clean {rl.task} examples",
    )
    heldout, before, premise_examples, premise_before, ws_records = _baseline_stage(
        args, rl, ws, ws_cfg, n_heldout, timings
    )

    _header(3, n_stages, f"RL: {len(DEMO_RUNS)} runs × {rl.steps} steps through VisentGRPOTrainer")
    t = time.perf_counter()
    results = _rl_stage(args, rl, ws, ws_cfg, n_heldout, before, len(premise_examples), out, progress)
    if results is None:
        return 1
    results = {label: results[label] for label, _, _ in DEMO_RUNS}  # report order
    timings["rl"] = time.perf_counter() - t

    _header(4, n_stages, "artefacts: curves.png, tokens.html, report.md")
    t = time.perf_counter()
    plot_curves(
        {label: _merged_rows(os.path.join(out, "rl", label)) for label in results},
        os.path.join(out, "curves.png"),
        title=f"visent lab demo ({rl.task}, seed {args.seed})",
    )
    records = _tokens_page(args, rl, ws, ws_records, heldout, out)
    summary = page_summary(records)
    timings["artefacts"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    report = render_report(
        args,
        argv,
        ws.info,
        os.path.join(args.out, os.path.basename(ws.path)),
        before,
        results,
        rl,
        timings,
        summary,
        premise_before,
        load_study(args.study, rl.task),
    )
    write_atomic(os.path.join(out, "report.md"), report)
    summary_json = {
        "argv": argv,
        "timings_s": timings,
        "warmstart": {k: v for k, v in ws.info.items() if k != "history"},
        "before": {k: v for k, v in before.items() if k != "responses"},
        "premise_before": premise_before,
        "rl_settings": asdict(rl),
        "results": results,
        "tokens_summary": summary,
    }
    from visent.io import write_json_atomic

    write_json_atomic(os.path.join(out, "demo.json"), summary_json)
    print(f"   wrote {out}/report.md, curves.png, tokens.html — total {timings['total']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
