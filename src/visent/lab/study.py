"""``visent study``: the controlled lab study — methods × label-noise rates × seeds, one shared warm-start.

Two method families, as in the two papers (every run goes through ``visent.lab.rl.run_method``, i.e.
``visent train``'s config path and the real ``VisentGRPOTrainer``):

- token selection (VEPO paper): GRPO, entropy top-20%, random-20%, VEPO and VEPO ablations;
- entropy schedule (two-stage paper): GRPO, entropy min, entropy max, min→max, two-stage.

The run folder is resumable: each run writes ``runs/<method>/noise-<rate>/seed-<s>/result.json``
atomically when it finishes, and a later ``visent study --out`` on the same folder skips every run whose
result exists (a killed run leaves no result and is redone). The shared settings are fixed in
``study.json`` at the first call; resuming with different settings is refused (methods, noise rates
and seeds may be added). ``results.md`` (mean ± std tables shaped like the papers') is rewritten after
every finished run, so a partial study is readable at any time.

Runs execute in parallel worker processes (``--workers``; ``auto`` = one per CPU core), each with one
torch thread: on a 2-core machine two single-threaded runs finish sooner than one two-threaded run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

__all__ = [
    "DEFAULT_METHODS",
    "PAIRS",
    "SCHEDULE_FAMILY",
    "SELECTION_FAMILY",
    "main",
    "paired_differences",
    "results_tables",
    "run_dir_for",
    "study_summary",
]

SELECTION_FAMILY: tuple[str, ...] = (
    "grpo",
    "entropy_top20",
    "random20",
    "vepo",
    "vepo_jsd_only",
    "vepo_no_entropy",
    "vepo_product",
)
SCHEDULE_FAMILY: tuple[str, ...] = ("grpo", "entropy_min", "entropy_max", "min_then_max", "two_stage")
DEFAULT_METHODS: tuple[str, ...] = tuple(dict.fromkeys(SELECTION_FAMILY + SCHEDULE_FAMILY))
# The tally study on 2 CPU cores: the VEPO paper's two main ablations (is the gain the visual signal's?
# does entropy coupling matter?) instead of three; vepo_product and the others run with --methods.
TALLY_METHODS: tuple[str, ...] = tuple(m for m in DEFAULT_METHODS if m != "vepo_product")

_LABELS = {
    "grpo": "GRPO",
    "entropy_top20": "entropy top-20%",
    "random20": "random 20%",
    "vepo": "**VEPO**",
    "vepo_matched_step": "VEPO, GRPO's per-token step (token_mean)",
    "vepo_jsd_only": "VEPO ablation: JSD only",
    "vepo_no_entropy": "VEPO ablation: no entropy factor",
    "vepo_product": "VEPO ablation: plain product",
    "vepo_linear": "VEPO ablation: linear mix",
    "vepo_kl": "VEPO ablation: KL for JSD",
    "vepo_positive_gap": "VEPO ablation: positive gap",
    "vepo_noisy_or_all": "VEPO ablation: noisy-OR of all three",
    "entropy_min": "+ entropy min",
    "entropy_max": "+ entropy max",
    "min_then_max": "min → max",
    "two_stage": "**two-stage** (max → min)",
}

STUDY_FILE = "study.json"
BASELINE_FILE = "baseline.json"
RESULT_FILE = "result.json"
TABLES_FILE = "results.md"
SUMMARY_FILE = "summary.json"


def run_dir_for(root: str, method: str, noise: float, seed: int) -> str:
    return os.path.join(root, "runs", method, f"noise-{noise:g}", f"seed-{seed}")


def _parser() -> argparse.ArgumentParser:
    from visent.lab.rl import METHODS, RLSettings

    d = RLSettings()
    p = argparse.ArgumentParser(
        prog="visent study",
        description="The controlled lab study: methods × label noise × seeds from one warm-start, "
        "mean ± std tables in OUT/results.md. Resumable: rerun with the same --out to continue.",
    )
    p.add_argument("--out", required=True, help="study folder (resumable)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per (method, noise)")
    p.add_argument(
        "--noise", type=float, nargs="+", default=None,
        help="label-noise rates (default: 0 0.5 1 for counting, 0 0.5 for tally)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help=f"lab methods (default: both families; tally: without vepo_product); valid: {', '.join(METHODS)}",
    )
    p.add_argument("--task", default=d.task, help="lab task (counting, tally, ...)")
    p.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the task's, rl.TASK_RL_DEFAULTS)")
    p.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the task's)")
    p.add_argument("--generations", type=int, default=None, help="K, responses per prompt (default: the task's)")
    p.add_argument("--prompts", type=int, default=None, help="prompts per RL step (default: the task's)")
    p.add_argument("--heldout", type=int, default=128, help="held-out clean examples each run is scored on")
    p.add_argument(
        "--premise", type=int, default=32,
        help="held-out examples on which VEPO's premise is measured after each run (tasks with token labels)",
    )
    p.add_argument("--workers", default="auto", help="parallel runs: a number, or auto (one per CPU core)")
    p.add_argument("--warm-seed", type=int, default=0, help="seed of the shared warm-start")
    p.add_argument(
        "--quick", action="store_true", help="tiny model and settings (tests; numbers mean nothing)"
    )
    p.add_argument(
        "--tables-only",
        action="store_true",
        help="run nothing: rewrite results.md and summary.json from the runs already finished in --out",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _settings(args: argparse.Namespace):
    from visent.lab.rl import RLSettings, quick_warmstart
    from visent.lab.warmstart import warmstart_config

    if args.quick:
        ws = quick_warmstart(args.warm_seed, args.task, max_steps=4)
        rl = RLSettings(
            task=args.task,
            steps=args.steps or 1,
            prompts_per_step=1,
            num_generations=2,
            max_completion_length=8,
            eval_points=1,
        )
        return ws, rl
    # Warm-started on the RL task alone, with the task's recipe (visent.lab.warmstart.TASK_WARMSTART).
    return warmstart_config(args.task, args.warm_seed), RLSettings.for_task(
        args.task,
        steps=args.steps,
        learning_rate=args.lr,
        num_generations=args.generations,
        prompts_per_step=args.prompts,
    )


def _workers(value: str, n_jobs: int) -> int:
    if value == "auto":
        n = os.cpu_count() or 1
    else:
        try:
            n = int(value)
        except ValueError:
            raise SystemExit(f"visent study: --workers must be a number or 'auto', got {value!r}") from None
        if n < 1:
            raise SystemExit("visent study: --workers must be >= 1")
    return max(1, min(n, n_jobs))


# --------------------------------------------------------------------------------------------------
# Worker side


def _init_worker() -> None:
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker process; returns its result (also written to its folder)."""
    from visent.lab.rl import RLSettings, heldout_set, run_method

    settings = RLSettings(**job["settings"])
    heldout = heldout_set(settings.task, job["heldout_n"], job["warm_seed"])
    return run_method(
        job["method"],
        settings,
        model_path=job["model_path"],
        heldout=heldout,
        before=job["before"],
        noise=job["noise"],
        seed=job["seed"],
        out_dir=job["out_dir"],
        progress=False,
        premise_examples=heldout[: job.get("premise_n", 0)],
    )


# --------------------------------------------------------------------------------------------------
# Tables


def _load_results(root: str) -> list[dict[str, Any]]:
    out = []
    base = os.path.join(root, "runs")
    if not os.path.isdir(base):
        return out
    for dirpath, _, files in os.walk(base):
        if RESULT_FILE in files:
            path = os.path.join(dirpath, RESULT_FILE)
            try:
                with open(path, encoding="utf-8") as f:
                    out.append(json.load(f))
            except (OSError, json.JSONDecodeError) as e:
                print(f"visent study: skipping unreadable {path}: {e}", file=sys.stderr)
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _cell(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "—"
    m, s = _mean_std(values)
    std = "" if math.isnan(s) else f" ± {scale * s:.{digits}f}"
    return f"{scale * m:.{digits}f}{std} ({len(values)})"


def _grid(results: Iterable[dict[str, Any]], key) -> dict[tuple[str, float], list[float]]:
    grid: dict[tuple[str, float], list[float]] = {}
    for r in results:
        v = key(r)
        if isinstance(v, (int, float)) and math.isfinite(v):
            grid.setdefault((r["method"], float(r["noise"])), []).append(float(v))
    return grid


def results_tables(
    results: Sequence[dict[str, Any]],
    baseline: dict[str, Any] | None,
    noises: Sequence[float],
    methods: Sequence[str],
    expected_seeds: int | None = None,
) -> str:
    """The markdown tables: selection family (methods × noise) and schedule family (noise × methods)."""
    acc = _grid(results, lambda r: r["after"]["accuracy"])
    ent = _grid(results, lambda r: r.get("entropy_last_quarter"))
    ent0 = _grid(results, lambda r: r.get("entropy_first"))
    noises = sorted({float(n) for n in noises})
    lines: list[str] = []
    base = f"{100 * baseline['accuracy']:.1f}" if baseline else "—"
    sel = [m for m in methods if m in SELECTION_FAMILY or m.startswith("vepo")]
    sch = [m for m in methods if m in SCHEDULE_FAMILY]

    def best_marks(cols: Sequence[str], noise: float) -> set[str]:
        means = {m: _mean_std(acc[(m, noise)])[0] for m in cols if acc.get((m, noise))}
        if not means:
            return set()
        top = max(means.values())
        return {m for m, v in means.items() if v == top}

    if sel:
        lines += [
            "### Token selection (VEPO paper's comparison): held-out greedy accuracy %, mean ± std (runs)",
            "",
            "| method | " + " | ".join(f"noise {100 * n:g}%" for n in noises) + " |",
            "|---" * (len(noises) + 1) + "|",
            "| warm-start (before RL) | " + " | ".join(base for _ in noises) + " |",
        ]
        for m in sel:
            cells = []
            for n in noises:
                c = _cell(acc.get((m, n), []))
                cells.append(f"**{c}**" if m in best_marks(sel, n) and c != "—" else c)
            lines.append(f"| {_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
        lines.append("")
    if sch:
        lines += [
            "### Entropy schedule (two-stage paper's table): held-out greedy accuracy %, mean ± std (runs)",
            "",
            "| noise | warm-start | " + " | ".join(_LABELS.get(m, m) for m in sch) + " |",
            "|---|---" + "|---" * len(sch) + "|",
        ]
        for n in sorted(noises, reverse=True):
            marks = best_marks(sch, n)
            cells = []
            for m in sch:
                c = _cell(acc.get((m, n), []))
                cells.append(f"**{c}**" if m in marks and c != "—" else c)
            lines.append(f"| {100 * n:g}% | {base} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Mean token entropy of sampled responses (nats): first step → last quarter of training",
            "",
            "| noise | " + " | ".join(_LABELS.get(m, m) for m in sch) + " |",
            "|---" + "|---" * len(sch) + "|",
        ]
        for n in sorted(noises, reverse=True):
            cells = []
            for m in sch:
                a, b = ent0.get((m, n), []), ent.get((m, n), [])
                cells.append(f"{_mean_std(a)[0]:.3f} → {_mean_std(b)[0]:.3f}" if a and b else "—")
            lines.append(f"| {100 * n:g}% | " + " | ".join(cells) + " |")
        lines.append("")
    lines += paired_table(results, noises, methods, baseline)
    lines += premise_tables(results, noises, methods, baseline)
    if expected_seeds is not None:
        total = len(methods) * len(noises) * expected_seeds
        done = sum(
            1
            for r in results
            if r["method"] in methods and float(r["noise"]) in noises and int(r["seed"]) < expected_seeds
        )
        lines.append(
            f"Runs finished: {done} of {total}" + (" (**partial study**)" if done < total else "") + "."
        )
        lines.append("")
    return "\n".join(lines)


# (a, b): "a − b" paired over seeds (same seed ⇒ same prompts, sampling seed and perturbations);
# b None: a minus the warm-start.
PAIRS: tuple[tuple[str, str | None], ...] = (
    ("grpo", None),
    ("vepo", "grpo"),
    ("vepo", "entropy_top20"),
    ("vepo", "random20"),
    ("entropy_top20", "random20"),
    ("entropy_top20", "grpo"),
    ("vepo_jsd_only", "vepo"),
    ("vepo_no_entropy", "vepo"),
    ("vepo_product", "vepo"),
    ("two_stage", "grpo"),
    ("two_stage", "min_then_max"),
    ("two_stage", "entropy_max"),
    ("entropy_max", "grpo"),
    ("entropy_min", "grpo"),
)


def _plain(method: str | None) -> str:
    return "warm-start" if method is None else _LABELS.get(method, method).replace("**", "")


def paired_differences(
    results: Sequence[dict[str, Any]], a: str, b: str | None, noise: float, baseline: dict[str, Any] | None
) -> dict[str, float] | None:
    """Paired difference ``a − b`` of held-out accuracy (points) over the seeds both have at ``noise``.

    Returns ``{"mean", "se", "n", "wins", "ties", "losses"}`` (``se`` = sample std / √n, NaN for n < 2),
    or ``None`` when no seed has both. ``b=None`` compares with the warm-start's accuracy (``baseline``).
    """
    by: dict[str, dict[int, float]] = {}
    for r in results:
        if float(r["noise"]) == float(noise):
            by.setdefault(r["method"], {})[int(r["seed"])] = 100.0 * r["after"]["accuracy"]
    if a not in by:
        return None
    if b is None:
        if not baseline:
            return None
        other = {s: 100.0 * baseline["accuracy"] for s in by[a]}
    elif b in by:
        other = by[b]
    else:
        return None
    seeds = sorted(set(by[a]) & set(other))
    if not seeds:
        return None
    d = [by[a][s] - other[s] for s in seeds]
    m, sd = _mean_std(d)
    return {
        "mean": m,
        "se": sd / math.sqrt(len(d)) if len(d) > 1 else float("nan"),
        "n": float(len(d)),
        "wins": float(sum(x > 1e-9 for x in d)),
        "ties": float(sum(abs(x) <= 1e-9 for x in d)),
        "losses": float(sum(x < -1e-9 for x in d)),
    }


def paired_table(
    results: Sequence[dict[str, Any]],
    noises: Sequence[float],
    methods: Sequence[str],
    baseline: dict[str, Any] | None,
) -> list[str]:
    """Markdown: ``PAIRS`` among ``methods`` as mean ± standard error (wins/ties/losses, seeds)."""
    rows = []
    for a, b in PAIRS:
        if a not in methods or (b is not None and b not in methods):
            continue
        cells = []
        for n in noises:
            d = paired_differences(results, a, b, n, baseline)
            if d is None:
                cells.append("—")
                continue
            se = "" if math.isnan(d["se"]) else f" ± {d['se']:.1f}"
            cells.append(
                f"{d['mean']:+.1f}{se} ({int(d['wins'])}/{int(d['ties'])}/{int(d['losses'])} of {int(d['n'])})"
            )
        rows.append(f"| {_plain(a)} − {_plain(b)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        (
            "### Paired differences (same seed ⇒ same prompts): points, mean ± standard error "
            "(wins/ties/losses of seeds)"
        ),
        "",
        "| comparison | " + " | ".join(f"noise {100 * n:g}%" for n in noises) + " |",
        "|---" * (len(noises) + 1) + "|",
        *rows,
        "",
    ]


_PREMISE_COLS: tuple[tuple[str, str, bool], ...] = (
    ("entropy_anchor", "H anchored", False),
    ("entropy_fork", "H forks", False),
    ("jsd_anchor", "JSD anchored", False),
    ("jsd_rest", "JSD rest", False),
    ("anchor_share_entropy_top", "anchored share of entropy top-20%", True),
    ("anchor_share_vepo_top", "anchored share of VEPO top-20%", True),
    ("overlap_entropy_vepo", "overlap entropy/VEPO top-20%", False),
)


def premise_tables(
    results: Sequence[dict[str, Any]],
    noises: Sequence[float],
    methods: Sequence[str],
    baseline: dict[str, Any] | None,
) -> list[str]:
    """Markdown: VEPO's premise (``visent.lab.premise``) on each method's final model, mean over seeds."""
    have = [r for r in results if isinstance(r.get("premise"), dict)]
    if not have and not (baseline and baseline.get("premise")):
        return []

    def fmt(v: float | None, pct: bool) -> str:
        if v is None or not math.isfinite(v):
            return "—"
        return f"{100 * v:.0f}%" if pct else f"{v:.3g}"

    n_prem = int(baseline["premise"]["n_responses"]) if baseline and baseline.get("premise") else 32
    lines = [
        "### VEPO's premise, measured on greedy held-out responses (entropy/JSD in nats; mean over seeds)",
        "",
        (
            "Anchored = the counts read from the image; forks = the free wording choices; rest = every token "
            "that is not anchored. `select/overlap_entropy_top` is the trainer's logged Jaccard overlap of the "
            "trained tokens with the entropy top-20% (mean over the last quarter of training); a model that "
            "stops writing the counts in the task's grammar has fewer anchored tokens to measure."
        ),
        "",
        "| model | noise | " + " | ".join(c[1] for c in _PREMISE_COLS)
        + f" | select/overlap_entropy_top | anchored tokens found (of {2 * n_prem}) |",
        "|---|---" + "|---" * (len(_PREMISE_COLS) + 2) + "|",
    ]
    if baseline and baseline.get("premise"):
        pm = baseline["premise"]
        lines.append(
            "| warm-start (before RL) | — | " + " | ".join(fmt(pm.get(k), pct) for k, _, pct in _PREMISE_COLS)
            + f" | — | {fmt(pm.get('n_anchor'), False)} |"
        )
    for n in noises:
        for m in methods:
            rows = [r for r in have if r["method"] == m and float(r["noise"]) == float(n)]
            if not rows:
                continue
            cells = []
            for k, _, pct in _PREMISE_COLS:
                vals = [r["premise"].get(k) for r in rows]
                vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
                cells.append(fmt(_mean_std(vals)[0], pct) if vals else "—")
            ov = [r.get("overlap_entropy_top") for r in rows]
            ov = [v for v in ov if isinstance(v, (int, float)) and math.isfinite(v)]
            found = [float(r["premise"].get("n_anchor", 0)) for r in rows]
            lines.append(
                f"| {_plain(m)} | {100 * n:g}% | " + " | ".join(cells)
                + f" | {fmt(_mean_std(ov)[0], False) if ov else '—'} | {fmt(_mean_std(found)[0], False)} |"
            )
    lines.append("")
    return lines


def study_summary(
    results: Sequence[dict[str, Any]],
    baseline: dict[str, Any] | None,
    noises: Sequence[float],
    methods: Sequence[str],
    *,
    task: str,
    command: str,
) -> dict[str, Any]:
    """The numbers ``visent demo`` quotes beside its single run (``summary.json``; docs/lab-study-<task>.json).

    ``pairs["<a>|<b>|<noise>"]`` holds ``paired_differences`` (points) for every ``PAIRS`` entry and for
    every method against the warm-start (``b`` = ``warm-start``); ``seeds`` is the largest number of
    seeds any of them has.
    """
    pairs: dict[str, Any] = {}
    wanted = [(m, None) for m in methods] + [(a, b) for a, b in PAIRS if a in methods and b in methods]
    for n in noises:
        for a, b in wanted:
            d = paired_differences(results, a, b, n, baseline)
            if d is not None:
                pairs[f"{a}|{b or 'warm-start'}|{float(n):g}"] = d
    return {
        "task": task,
        "command": command,
        "seeds": int(max((d["n"] for d in pairs.values()), default=0)),
        "runs": len(results),
        "warmstart_accuracy": baseline.get("accuracy") if baseline else None,
        "warmstart_premise": baseline.get("premise") if baseline else None,
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------------
# Driver


def _check_study_file(root: str, fixed: dict[str, Any]) -> None:
    from visent.eval.report import write_json_atomic

    path = os.path.join(root, STUDY_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("fixed") != json.loads(json.dumps(fixed)):
            diff = sorted(
                k
                for k in set(old.get("fixed", {})) | set(fixed)
                if old.get("fixed", {}).get(k) != fixed.get(k)
            )
            raise SystemExit(
                f"visent study: {path} was started with different settings ({', '.join(diff)}); "
                "use a new --out folder or the original settings"
            )
        return
    write_json_atomic(path, {"fixed": fixed, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from visent.lab.rl import METHODS
    from visent.lab.tasks import LABELLED_TASKS, TASK_MAKERS

    if args.methods is None:
        args.methods = list(TALLY_METHODS if args.task == "tally" else DEFAULT_METHODS)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        print(
            f"visent study: unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}",
            file=sys.stderr,
        )
        return 2
    if args.task not in TASK_MAKERS:
        print(f"visent study: unknown task {args.task!r}; valid: {', '.join(TASK_MAKERS)}", file=sys.stderr)
        return 2
    if args.noise is None:
        args.noise = [0.0, 0.5] if args.task in LABELLED_TASKS else [0.0, 0.5, 1.0]
    if (
        args.seeds < 1
        or (args.steps is not None and args.steps < 1)
        or args.heldout < 1
        or any(not 0 <= n <= 1 for n in args.noise)
    ):
        print(
            "visent study: --seeds, --steps, --heldout must be >= 1 and --noise rates in [0, 1]",
            file=sys.stderr,
        )
        return 2

    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    from visent.eval.report import write_atomic, write_json_atomic
    from visent.lab.rl import heldout_set, measure_before
    from visent.lab.warmstart import warm_start

    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    ws_cfg, rl = _settings(args)
    fixed = {"warmstart": ws_cfg.key(), "rl": asdict(rl), "heldout": args.heldout, "quick": args.quick}
    premise_n = min(args.premise, args.heldout) if rl.task in LABELLED_TASKS else 0
    if premise_n:
        # Only for tasks with token labels, so the counting study's study.json stays as it was.
        fixed["premise"] = premise_n
    _check_study_file(root, fixed)
    progress = not args.no_progress
    noises = [float(n) for n in args.noise]
    methods = list(dict.fromkeys(args.methods))

    print("== warm-start (shared by every run; cached)", flush=True)
    ws = warm_start(root, ws_cfg, eval_per_task=16, progress=progress)
    base_path = os.path.join(root, BASELINE_FILE)
    if os.path.exists(base_path):
        with open(base_path, encoding="utf-8") as f:
            baseline = json.load(f)
    else:
        print(f"== held-out baseline ({args.heldout} clean {rl.task} examples)", flush=True)
        acc = measure_before(
            ws.model, ws.processor, heldout_set(rl.task, args.heldout, ws_cfg.seed), rl.max_completion_length
        )
        baseline = {"accuracy": acc["accuracy"], "n": acc["n"], "per_task": acc["per_task"]}
        if premise_n:
            from visent.lab.premise import measure_premise

            baseline["premise"], _ = measure_premise(
                ws.model, ws.processor, heldout_set(rl.task, premise_n, ws_cfg.seed), seed=0,
                max_new_tokens=rl.max_completion_length,
            )
        write_json_atomic(base_path, baseline)
    print(
        f"   warm-start held-out accuracy {100 * baseline['accuracy']:.1f}% (n={baseline['n']})", flush=True
    )
    del ws.model

    jobs, skipped = [], 0
    # Seed-major order: an interrupted study has every method at the first seeds, not some at all seeds.
    for seed in range(args.seeds):
        for noise in noises:
            for method in methods:
                out_dir = run_dir_for(root, method, noise, seed)
                if os.path.exists(os.path.join(out_dir, RESULT_FILE)):
                    skipped += 1
                    continue
                jobs.append(
                    {
                        "method": method,
                        "noise": noise,
                        "seed": seed,
                        "out_dir": out_dir,
                        "settings": asdict(rl),
                        "model_path": ws.path,
                        "before": {"accuracy": baseline["accuracy"], "n": baseline["n"]},
                        "heldout_n": args.heldout,
                        "premise_n": premise_n,
                        "warm_seed": ws_cfg.seed,
                    }
                )

    def write_tables() -> None:
        body = results_tables(_load_results(root), baseline, noises, methods, args.seeds)
        head = (
            f"# visent lab study\n\nCommand: `visent study {' '.join(argv)}`\n\n"
            f"Task `{rl.task}`; {rl.steps} RL steps × {rl.prompts_per_step} prompts × K={rl.num_generations}, "
            f"lr {rl.learning_rate:g}; held-out set of {baseline['n']} clean examples; "
            f"warm-start `{os.path.basename(ws.path)}` at {100 * baseline['accuracy']:.1f}%.\n\n"
        )
        write_atomic(os.path.join(root, TABLES_FILE), head + body)
        summary = study_summary(
            _load_results(root), baseline, noises, methods, task=rl.task, command=f"visent study {' '.join(argv)}"
        )
        write_json_atomic(os.path.join(root, SUMMARY_FILE), summary)

    if args.tables_only:
        write_tables()
        print(f"== tables only ({len(jobs)} runs not run): {os.path.join(root, TABLES_FILE)}", flush=True)
        return 0
    n_workers = _workers(args.workers, len(jobs)) if jobs else 0
    print(f"== {len(jobs)} runs to do ({skipped} already finished) on {n_workers} worker(s)", flush=True)
    failures = 0
    if jobs:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        bar = tqdm(total=len(jobs), desc="study runs", disable=not progress, dynamic_ncols=True)

        def finished(job: dict[str, Any], get_result) -> None:
            nonlocal failures
            name = f"{job['method']} noise={job['noise']:g} seed={job['seed']}"
            try:
                res = get_result()
                bar.write(f"   {name}: {100 * res['after']['accuracy']:.1f}% ({res['wall_s']:.0f} s)")
            except Exception as e:  # noqa: BLE001 (one broken run must not lose the others' results)
                failures += 1
                bar.write(f"   {name}: FAILED: {type(e).__name__}: {e}")
            bar.update(1)
            write_tables()

        if n_workers == 1:
            # In this process: a spawned worker would pay the torch/transformers/trl imports again.
            _init_worker()
            for job in jobs:
                finished(job, lambda job=job: _run_job(job))
        else:
            with ProcessPoolExecutor(
                n_workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
            ) as pool:
                futures = {pool.submit(_run_job, job): job for job in jobs}
                for fut in as_completed(futures):
                    finished(futures[fut], fut.result)
        bar.close()
        print(f"   {len(jobs) - failures} runs in {time.perf_counter() - t0:.0f} s", flush=True)
    write_tables()
    print(f"== tables: {os.path.join(root, TABLES_FILE)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
