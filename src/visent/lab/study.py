"""``visent study``: the controlled lab study — methods × label-noise rates × warm-starts × RL seeds.

Two method families, as in the two papers (every run goes through ``visent.lab.rl.run_method``, i.e.
``visent train``'s config path and the real ``VisentGRPOTrainer``):

- token selection (VEPO paper): GRPO, entropy top-20%, random-20%, VEPO and VEPO ablations;
- entropy schedule (two-stage paper): GRPO, entropy min, entropy max, min→max, two-stage.

Every (method, noise) cell runs from ``--warm-seeds`` warm-starts (SFT seeds; with the task's recipe,
each stopped on measured held-out greedy accuracy inside its band, ``visent.lab.warmstart``) × ``--seeds``
RL seeds, and each comparison's verdict uses both sources of spread (``visent.intervals``): a single
warm-start can sit anywhere in the band — or, before the band existed, 45 points higher on another CPU
(issue #17) — so seed-to-seed spread from one warm-start is not the whole uncertainty.

The run folder is resumable: each run writes ``runs/<method>/noise-<rate>/warm-<w>/seed-<s>/result.json``
atomically when it finishes, and a later ``visent study --out`` on the same folder skips every run whose
result exists (a killed run leaves no result and is redone). Each warm-start and its held-out baseline
are cached too (``warmstart-<hash>/``, ``warm-<w>.json``). The shared settings are fixed in
``study.json`` at the first call; resuming with different settings is refused (methods, noise rates,
warm-starts and seeds may be added). ``results.md`` (tables shaped like the papers') and ``summary.json``
are rewritten after every finished run, so a partial study is readable at any time.

Runs execute in parallel worker processes (``--workers``; ``auto`` = one per CPU core), each with one
torch thread: on a 2-core machine two single-threaded runs finish sooner than one two-threaded run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from visent.lab.pool import pool_map, workers
from visent.lab.verdict import verdict_word

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
RESULT_FILE = "result.json"
TABLES_FILE = "results.md"
SUMMARY_FILE = "summary.json"

WARM_FILE = "warm-{}.json"


def run_dir_for(root: str, method: str, noise: float, seed: int, warm: int = 0) -> str:
    return os.path.join(root, "runs", method, f"noise-{noise:g}", f"warm-{warm}", f"seed-{seed}")


def _parser() -> argparse.ArgumentParser:
    from visent.lab.rl import METHODS, RLSettings

    d = RLSettings()
    p = argparse.ArgumentParser(
        prog="visent study",
        description="The controlled lab study: methods × label noise × warm-starts × RL seeds, tables in "
        "OUT/results.md and OUT/summary.json. Resumable: rerun with the same --out to continue.",
    )
    p.add_argument("--out", required=True, help="study folder (resumable)")
    p.add_argument("--seeds", type=int, default=4, help="RL seeds 0..N-1 per (method, noise, warm-start)")
    p.add_argument(
        "--warm-seeds", type=int, default=3,
        help="warm-starts (SFT seeds WARM_SEED..WARM_SEED+N-1) every (method, noise) runs from",
    )
    p.add_argument("--warm-seed", type=int, default=0, help="first warm-start seed")
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
    p.add_argument(
        "--cells",
        nargs="+",
        default=None,
        metavar="NOISE:METHOD,METHOD",
        help="instead of --noise × --methods: the methods to run at each noise rate, e.g. "
        "0:grpo,vepo 0.5:grpo,two_stage (the tables cover the union)",
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


def _settings(args: argparse.Namespace, warm_seed: int):
    from visent.lab.rl import RLSettings, quick_warmstart
    from visent.lab.warmstart import warmstart_config

    if args.quick:
        ws = quick_warmstart(warm_seed, args.task, max_steps=4)
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
    return warmstart_config(args.task, warm_seed), RLSettings.for_task(
        args.task,
        steps=args.steps,
        learning_rate=args.lr,
        num_generations=args.generations,
        prompts_per_step=args.prompts,
    )


def _parse_cells(specs: Sequence[str]) -> dict[float, list[str]]:
    """``["0:grpo,vepo", "0.5:grpo"]`` → ``{0.0: ["grpo", "vepo"], 0.5: ["grpo"]}`` (ValueError if malformed)."""
    cells: dict[float, list[str]] = {}
    for spec in specs:
        noise, sep, methods = spec.partition(":")
        try:
            rate = float(noise)
        except ValueError:
            rate = float("nan")
        names = [m for m in methods.split(",") if m]
        if not sep or not names or not 0 <= rate <= 1:
            raise ValueError(f"--cells {spec!r}: expected NOISE:METHOD[,METHOD...] with NOISE in [0, 1]")
        cells.setdefault(rate, [])
        cells[rate] += [m for m in names if m not in cells[rate]]
    return cells


# --------------------------------------------------------------------------------------------------
# Worker side


def _warm_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or reload) one warm-start and measure its held-out baseline; returns ``warm-<w>.json``'s dict."""
    from visent.io import write_json_atomic
    from visent.lab.rl import heldout_set, measure_before
    from visent.lab.warmstart import WarmStartConfig, warm_start

    path = job["baseline_path"]
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    cfg = WarmStartConfig(**job["config"])
    ws = warm_start(job["root"], cfg, eval_per_task=16, progress=False)
    heldout = heldout_set(job["task"], job["heldout_n"], cfg.seed)
    acc = measure_before(ws.model, ws.processor, heldout, job["max_new_tokens"])
    band = ws.info.get("band") or {}
    baseline = {
        "warm_seed": cfg.seed,
        "path": ws.path,
        "accuracy": acc["accuracy"],
        "n": acc["n"],
        "per_task": acc["per_task"],
        "scores": acc["scores"],
        "sft_steps": ws.info.get("steps"),
        "sft_seconds": ws.info.get("seconds"),
        # The band the warm-start was stopped in, the accuracy its last check measured, and whether it landed.
        "band": band.get("band"),
        "band_reached": band.get("reached"),
        "band_accuracy": band.get("accuracy"),
        "band_rollbacks": band.get("rollbacks"),
    }
    if job["premise_n"]:
        from visent.lab.premise import measure_premise

        baseline["premise"], _ = measure_premise(
            ws.model, ws.processor, heldout[: job["premise_n"]], seed=0, max_new_tokens=job["max_new_tokens"]
        )
    write_json_atomic(path, baseline)
    return baseline


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker process; returns its result (also written to its folder)."""
    from visent.lab.rl import RLSettings, heldout_set, run_method

    settings = RLSettings(**job["settings"])
    heldout = heldout_set(settings.task, job["heldout_n"], job["warm_seed"])
    result = run_method(
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
    result["warm_seed"] = job["warm_seed"]
    return result


# --------------------------------------------------------------------------------------------------
# Tables

_WARM_DIR = re.compile(r"warm-(-?\d+)$")


def _load_results(root: str) -> list[dict[str, Any]]:
    """Every finished run's ``result.json``, with ``warm_seed`` read from its folder (``warm-<w>``)."""
    out = []
    base = os.path.join(root, "runs")
    if not os.path.isdir(base):
        return out
    for dirpath, _, files in os.walk(base):
        if RESULT_FILE in files:
            path = os.path.join(dirpath, RESULT_FILE)
            try:
                with open(path, encoding="utf-8") as f:
                    r = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                print(f"visent study: skipping unreadable {path}: {e}", file=sys.stderr)
                continue
            m = _WARM_DIR.search(os.path.dirname(dirpath))
            r["warm_seed"] = int(m.group(1)) if m else int(r.get("warm_seed", 0))
            out.append(r)
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


Baselines = Mapping[int, Mapping[str, Any]]


def _as_baselines(baseline: Mapping[str, Any] | Baselines | None) -> dict[int, Mapping[str, Any]]:
    """``{warm_seed: baseline}``; a single baseline dict (one warm-start, seed 0) is accepted too."""
    if not baseline:
        return {}
    if "accuracy" in baseline:
        return {int(baseline.get("warm_seed", 0)): baseline}  # type: ignore[dict-item]
    return {int(k): v for k, v in baseline.items()}  # type: ignore[union-attr]


def _warm_row(baselines: dict[int, Mapping[str, Any]]) -> str:
    if not baselines:
        return "—"
    accs = [100 * b["accuracy"] for b in baselines.values()]
    if len(accs) == 1:
        return f"{accs[0]:.1f}"
    return f"{sum(accs) / len(accs):.1f} ({', '.join(f'{a:.1f}' for a in accs)})"


def results_tables(
    results: Sequence[dict[str, Any]],
    baseline: Mapping[str, Any] | Baselines | None,
    noises: Sequence[float],
    methods: Sequence[str],
    expected_seeds: int | None = None,
    expected_runs: int | None = None,
) -> str:
    """The markdown tables: warm-starts, selection family (methods × noise), schedule family (noise × methods),
    paired differences (nested estimate), premise.

    ``baseline``: ``{warm_seed: {"accuracy", "n", ...}}`` (or one such dict). ``expected_runs`` (or
    ``len(methods) · len(noises) · expected_seeds`` for a one-warm-start grid) is the size of the full
    study, for the "partial study" line.
    """
    baselines = _as_baselines(baseline)
    acc = _grid(results, lambda r: r["after"]["accuracy"])
    ent = _grid(results, lambda r: r.get("entropy_last_quarter"))
    ent0 = _grid(results, lambda r: r.get("entropy_first"))
    noises = sorted({float(n) for n in noises})
    lines: list[str] = []
    base = _warm_row(baselines)
    sel = [m for m in methods if m in SELECTION_FAMILY or m.startswith("vepo")]
    sch = [m for m in methods if m in SCHEDULE_FAMILY]

    if len(baselines) > 1 or any(b.get("band") for b in baselines.values()):
        lines += [
            "### Warm-starts (RL starts from each; held-out greedy accuracy on the evaluation set)",
            "",
            (
                "| warm-start seed | SFT steps | band | landed in band | band check at the stop (check set) "
                "| held-out accuracy before RL (evaluation set) | roll-backs |"
            ),
            "|---|---|---|---|---|---|---|",
        ]
        for w, b in sorted(baselines.items()):
            band = b.get("band")
            band_s = f"{100 * band[0]:.0f}–{100 * band[1]:.0f}%" if band else "— (probe rule)"
            reached = {True: "yes", False: "**NO**", None: "—"}[b.get("band_reached")]
            check = b.get("band_accuracy")
            check_s = f"{100 * check:.1f}%" if isinstance(check, (int, float)) else "—"
            lines.append(
                f"| {w} | {b.get('sft_steps', '—')} | {band_s} | {reached} | {check_s} | {100 * b['accuracy']:.1f}% "
                f"(n = {b['n']}) | {b.get('band_rollbacks', '—')} |"
            )
        lines.append("")

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
    lines += paired_table(results, noises, methods, baselines)
    lines += premise_tables(results, noises, methods, baselines)
    if expected_runs is None and expected_seeds is not None:
        expected_runs = len(methods) * len(noises) * expected_seeds
    if expected_runs is not None:
        done = sum(1 for r in results if r["method"] in methods and float(r["noise"]) in noises)
        done = min(done, expected_runs)
        lines.append(
            f"Runs finished: {done} of {expected_runs}" + (" (**partial study**)" if done < expected_runs else "") + "."
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
    results: Sequence[dict[str, Any]],
    a: str,
    b: str | None,
    noise: float,
    baseline: Mapping[str, Any] | Baselines | None,
) -> dict[str, Any] | None:
    """Paired difference ``a − b`` of held-out accuracy (points) over the (warm-start, RL seed) runs both have.

    Returns ``visent.intervals.nested_difference`` of ``d[warm][seed]`` — ``{"mean", "se", "df", "ci95",
    "predict95", "sd_between", "sd_within", "n", "n_warm", "warm_seeds", "warm_means", "wins", "ties",
    "losses"}`` — or ``None`` when no run has both. ``b=None`` compares with the accuracy of the run's own
    warm-start (``baseline``: ``{warm_seed: {"accuracy", ...}}``).
    """
    from visent.intervals import nested_difference

    baselines = _as_baselines(baseline)
    by: dict[str, dict[tuple[int, int], float]] = {}
    for r in results:
        if float(r["noise"]) == float(noise):
            key = (int(r.get("warm_seed", 0)), int(r["seed"]))
            by.setdefault(r["method"], {})[key] = 100.0 * r["after"]["accuracy"]
    if a not in by:
        return None
    if b is None:
        other = {k: 100.0 * baselines[k[0]]["accuracy"] for k in by[a] if k[0] in baselines}
    elif b in by:
        other = by[b]
    else:
        return None
    keys = sorted(set(by[a]) & set(other))
    if not keys:
        return None
    d: dict[int, dict[int, float]] = {}
    for w, s in keys:
        d.setdefault(w, {})[s] = by[a][(w, s)] - other[(w, s)]
    out = nested_difference(d)
    if out is not None:
        out["mdd"] = detectable(out)
    return out


def detectable(d: Mapping[str, Any]) -> float:
    """Smallest true difference (points) this design detects at 95% / 80% power, from ``d``'s measured spreads."""
    from visent.intervals import min_detectable

    n_warm = int(d.get("n_warm") or 0)
    if n_warm < 1 or math.isnan(d.get("sd_within", float("nan"))):
        return float("nan")
    seeds = max(1, round(d["n"] / n_warm))
    return min_detectable(d.get("sd_between", float("nan")), d["sd_within"], n_warm, seeds)


def _fmt_pair(d: Mapping[str, Any]) -> str:
    se = "" if math.isnan(d["se"]) else f" ± {d['se']:.1f}"
    lo, hi = d["ci95"]
    ci = "" if math.isnan(lo) else f" [{lo:+.1f}, {hi:+.1f}]"
    mark = {"yes": " ↑", "worse": " ↓", "not distinguishable": ""}[verdict_word(d)]
    mdd = d.get("mdd", float("nan"))
    detect = "" if math.isnan(mdd) else f"; detects ≥ {mdd:.1f}"
    return (
        f"{d['mean']:+.1f}{se}{ci}{mark} ({int(d['wins'])}/{int(d['ties'])}/{int(d['losses'])} of {int(d['n'])}"
        f"{detect})"
    )


def paired_table(
    results: Sequence[dict[str, Any]],
    noises: Sequence[float],
    methods: Sequence[str],
    baseline: Mapping[str, Any] | Baselines | None,
) -> list[str]:
    """Markdown: ``PAIRS`` among ``methods`` as mean ± SE [95% interval] (wins/ties/losses of runs)."""
    rows = []
    sds = []
    for a, b in PAIRS:
        if a not in methods or (b is not None and b not in methods):
            continue
        cells = []
        for n in noises:
            d = paired_differences(results, a, b, n, baseline)
            if d is None:
                cells.append("—")
                continue
            cells.append(_fmt_pair(d))
            sds.append((d["sd_between"], d["sd_within"]))
        rows.append(f"| {_plain(a)} − {_plain(b)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        (
            "### Paired differences (same warm-start and RL seed ⇒ same prompts): points, mean ± standard "
            "error [95% interval] (wins/ties/losses of runs)"
        ),
        "",
        (
            "Nested estimate over warm-starts and RL seeds (`visent.intervals`): the mean of the per-warm-start "
            "means; the standard error and the t interval count both the spread between warm-starts and the "
            "spread between RL seeds. ↑ / ↓: the 95% interval excludes zero. *detects ≥ x*: the smallest true "
            "difference this design detects (two-sided 95%, 80% power) at the measured spreads "
            "(`visent.intervals.min_detectable`)."
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


def _mean_premise(premises: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in {k for p in premises for k in p}:
        vals = [p.get(key) for p in premises]
        vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def premise_tables(
    results: Sequence[dict[str, Any]],
    noises: Sequence[float],
    methods: Sequence[str],
    baseline: Mapping[str, Any] | Baselines | None,
) -> list[str]:
    """Markdown: VEPO's premise (``visent.lab.premise``) on each method's final model, mean over runs."""
    baselines = _as_baselines(baseline)
    have = [r for r in results if isinstance(r.get("premise"), dict)]
    warm_premises = [b["premise"] for b in baselines.values() if b.get("premise")]
    if not have and not warm_premises:
        return []

    def fmt(v: float | None, pct: bool) -> str:
        if v is None or not math.isfinite(v):
            return "—"
        return f"{100 * v:.0f}%" if pct else f"{v:.3g}"

    pm = _mean_premise(warm_premises) if warm_premises else {}
    n_prem = int(pm["n_responses"]) if pm.get("n_responses") else 32
    lines = [
        "### VEPO's premise, measured on greedy held-out responses (entropy/JSD in nats; mean over runs)",
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
    if pm:
        label = "warm-start (before RL)" if len(warm_premises) == 1 else f"warm-starts (mean of {len(warm_premises)})"
        lines.append(
            f"| {label} | — | " + " | ".join(fmt(pm.get(k), pct) for k, _, pct in _PREMISE_COLS)
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
    baseline: Mapping[str, Any] | Baselines | None,
    noises: Sequence[float],
    methods: Sequence[str],
    *,
    task: str,
    command: str,
    rl_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The numbers ``visent demo`` quotes beside its single run (``summary.json``; shipped as visent/lab/summaries/study-<task>.json).

    ``pairs["<a>|<b>|<noise>"]`` holds ``paired_differences`` (points) for every ``PAIRS`` entry and for
    every method against the warm-start (``b`` = ``warm-start``); ``seeds`` is the largest number of RL
    seeds any warm-start has in any pair, ``warm_seeds`` the largest number of warm-starts;
    ``warmstarts`` lists each warm-start's measured start (seed, band, whether it landed, accuracy, SFT
    steps).
    """
    baselines = _as_baselines(baseline)
    pairs: dict[str, Any] = {}
    wanted = [(m, None) for m in methods] + [(a, b) for a, b in PAIRS if a in methods and b in methods]
    for n in noises:
        for a, b in wanted:
            d = paired_differences(results, a, b, n, baselines)
            if d is not None:
                pairs[f"{a}|{b or 'warm-start'}|{float(n):g}"] = d
    per_warm = [
        d["n"] / d["n_warm"] for d in pairs.values() if d.get("n_warm")
    ]
    warm_list = [
        {
            "warm_seed": w,
            "accuracy": b.get("accuracy"),
            "n": b.get("n"),
            "band": b.get("band"),
            "band_reached": b.get("band_reached"),
            "sft_steps": b.get("sft_steps"),
            "band_accuracy": b.get("band_accuracy"),
        }
        for w, b in sorted(baselines.items())
    ]
    accs = [b["accuracy"] for b in baselines.values() if isinstance(b.get("accuracy"), (int, float))]
    bands = {tuple(b["band"]) for b in baselines.values() if b.get("band")}
    return {
        "task": task,
        "command": command,
        "seeds": math.ceil(max(per_warm, default=0)),
        "warm_seeds": int(max((d.get("n_warm", 1) for d in pairs.values()), default=0)),
        "runs": len(results),
        "estimator": "nested (warm-start × RL seed), visent.intervals.nested_difference",
        # The shared RL settings (``RLSettings``): the demo compares its run only under the same ones.
        "rl_settings": dict(rl_settings) if rl_settings is not None else None,
        "band": list(next(iter(bands))) if len(bands) == 1 else None,
        "warmstarts": warm_list,
        "warmstart_accuracy": sum(accs) / len(accs) if accs else None,
        "warmstart_premise": _mean_premise([b["premise"] for b in baselines.values() if b.get("premise")]) or None,
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------------
# Driver


def _check_study_file(root: str, fixed: dict[str, Any]) -> None:
    from visent.io import write_json_atomic

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
    from visent.data.synthetic import LABELLED_TASKS, TASK_MAKERS
    from visent.lab.rl import METHODS

    if args.cells is not None:
        try:
            cells = _parse_cells(args.cells)
        except ValueError as e:
            print(f"visent study: {e}", file=sys.stderr)
            return 2
    else:
        if args.methods is None:
            args.methods = list(TALLY_METHODS if args.task == "tally" else DEFAULT_METHODS)
        if args.noise is None:
            args.noise = [0.0, 0.5] if args.task in LABELLED_TASKS else [0.0, 0.5, 1.0]
        cells = {float(n): list(dict.fromkeys(args.methods)) for n in args.noise}
    methods = list(dict.fromkeys(m for ms in cells.values() for m in ms))
    noises = sorted(cells)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(
            f"visent study: unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}",
            file=sys.stderr,
        )
        return 2
    if args.task not in TASK_MAKERS:
        print(f"visent study: unknown task {args.task!r}; valid: {', '.join(TASK_MAKERS)}", file=sys.stderr)
        return 2
    if (
        args.seeds < 1
        or args.warm_seeds < 1
        or (args.steps is not None and args.steps < 1)
        or args.heldout < 1
        or any(not 0 <= n <= 1 for n in noises)
    ):
        print(
            "visent study: --seeds, --warm-seeds, --steps, --heldout must be >= 1 and --noise rates in [0, 1]",
            file=sys.stderr,
        )
        return 2

    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    from visent.io import write_atomic, write_json_atomic

    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    warm_seeds = list(range(args.warm_seed, args.warm_seed + args.warm_seeds))
    ws_cfgs = {w: _settings(args, w)[0] for w in warm_seeds}
    rl = _settings(args, warm_seeds[0])[1]
    # The recipe (not the seed) is fixed: warm-starts may be added like RL seeds.
    recipe = replace(ws_cfgs[warm_seeds[0]], seed=0).key()
    fixed = {"warmstart_recipe": recipe, "rl": asdict(rl), "heldout": args.heldout, "quick": args.quick}
    premise_n = min(args.premise, args.heldout) if rl.task in LABELLED_TASKS else 0
    if premise_n:
        fixed["premise"] = premise_n
    _check_study_file(root, fixed)
    progress = not args.no_progress
    n_workers_max = args.workers

    # ---- warm-starts (one per SFT seed; cached) and their held-out baselines
    warm_jobs = [
        {
            "name": f"warm-start {w}",
            "root": root,
            "config": asdict(cfg),
            "task": rl.task,
            "heldout_n": args.heldout,
            "premise_n": premise_n,
            "max_new_tokens": rl.max_completion_length,
            "baseline_path": os.path.join(root, WARM_FILE.format(w)),
        }
        for w, cfg in ws_cfgs.items()
    ]
    baselines: dict[int, dict[str, Any]] = {}
    for job in warm_jobs:
        if os.path.exists(job["baseline_path"]):
            with open(job["baseline_path"], encoding="utf-8") as f:
                baselines[job["config"]["seed"]] = json.load(f)
    todo = [j for j in warm_jobs if j["config"]["seed"] not in baselines]
    if todo and not args.tables_only:
        n = workers(n_workers_max, len(todo))
        print(f"== {len(todo)} warm-start(s) to train and measure on {n} worker(s)", flush=True)

        def warm_done(job, get):
            b = get()
            baselines[job["config"]["seed"]] = b
            flag = "" if b.get("band_reached") is not False else "  ** OUTSIDE THE BAND **"
            print(
                f"   warm-start {b['warm_seed']}: {b.get('sft_steps')} SFT steps, held-out accuracy "
                f"{100 * b['accuracy']:.1f}% (n={b['n']}){flag}",
                flush=True,
            )

        if pool_map(_warm_job, todo, n, warm_done):
            print("visent study: a warm-start failed; its runs are skipped", file=sys.stderr)
    for w, b in sorted(baselines.items()):
        print(f"   warm-start {w}: held-out accuracy {100 * b['accuracy']:.1f}% (n={b['n']})", flush=True)
        if b.get("band_reached") is False:
            print(
                f"visent study: WARNING: warm-start {w} did not land in its band {b.get('band')}; its runs are "
                "kept, but they start from a different competence than the others",
                file=sys.stderr,
            )

    jobs, skipped = [], 0
    # RL-seed-major, then warm-start: an interrupted study has every method and warm-start at the first
    # RL seeds (both sources of spread), not some cells at all seeds.
    for seed in range(args.seeds):
        for w in warm_seeds:
            if w not in baselines:
                continue
            for noise in noises:
                for method in cells[noise]:
                    out_dir = run_dir_for(root, method, noise, seed, w)
                    if os.path.exists(os.path.join(out_dir, RESULT_FILE)):
                        skipped += 1
                        continue
                    jobs.append(
                        {
                            "name": f"{method} noise={noise:g} warm={w} seed={seed}",
                            "method": method,
                            "noise": noise,
                            "seed": seed,
                            "out_dir": out_dir,
                            "settings": asdict(rl),
                            "model_path": baselines[w]["path"],
                            "before": {"accuracy": baselines[w]["accuracy"], "n": baselines[w]["n"]},
                            "heldout_n": args.heldout,
                            "premise_n": premise_n,
                            "warm_seed": w,
                        }
                    )
    expected = sum(len(ms) for ms in cells.values()) * args.seeds * len(warm_seeds)
    command = f"visent study {' '.join(argv)}"

    def write_tables() -> dict[str, Any]:
        results = [r for r in _load_results(root) if int(r["warm_seed"]) in baselines]
        body = results_tables(results, baselines, noises, methods, expected_runs=expected)
        accs = ", ".join(f"{100 * b['accuracy']:.1f}%" for _, b in sorted(baselines.items()))
        head = (
            f"# visent lab study\n\nCommand: `{command}`\n\n"
            f"Task `{rl.task}`; {rl.steps} RL steps × {rl.prompts_per_step} prompts × K={rl.num_generations}, "
            f"lr {rl.learning_rate:g}; held-out set of {args.heldout} clean examples; "
            f"{len(baselines)} warm-start(s) (seeds {', '.join(str(w) for w in sorted(baselines))}) at {accs}; "
            f"RL seeds 0..{args.seeds - 1}.\n\n"
        )
        write_atomic(os.path.join(root, TABLES_FILE), head + body)
        summary = study_summary(
            results, baselines, noises, methods, task=rl.task, command=command, rl_settings=asdict(rl)
        )
        write_json_atomic(os.path.join(root, SUMMARY_FILE), summary)
        return summary

    if args.tables_only:
        write_tables()
        print(f"== tables only ({len(jobs)} runs not run): {os.path.join(root, TABLES_FILE)}", flush=True)
        return 0
    n_workers = workers(n_workers_max, len(jobs)) if jobs else 0
    print(f"== {len(jobs)} runs to do ({skipped} already finished) on {n_workers} worker(s)", flush=True)
    failures = 0
    if jobs:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        bar = tqdm(total=len(jobs), desc="study runs", disable=not progress, dynamic_ncols=True)

        def finished(job: dict[str, Any], get_result) -> None:
            try:
                res = get_result()
                bar.write(f"   {job['name']}: {100 * res['after']['accuracy']:.1f}% ({res['wall_s']:.0f} s)")
            finally:
                bar.update(1)
                write_tables()

        failures = pool_map(_run_job, jobs, n_workers, finished)
        bar.close()
        print(f"   {len(jobs) - failures} runs in {time.perf_counter() - t0:.0f} s", flush=True)
    summary = write_tables()
    print(f"== tables: {os.path.join(root, TABLES_FILE)}", flush=True)
    for line in power_lines(summary):
        print(line, flush=True)
    return 1 if failures else 0


def power_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per noise rate: the smallest method-vs-method difference the study detects (95%, 80% power)."""
    by_noise: dict[str, list[tuple[float, str]]] = {}
    for key, d in summary.get("pairs", {}).items():
        a, b, noise = key.split("|")
        mdd = d.get("mdd", float("nan"))
        if b != "warm-start" and isinstance(mdd, (int, float)) and not math.isnan(mdd):
            by_noise.setdefault(noise, []).append((mdd, f"{_plain(a)} − {_plain(b)}"))
    lines = []
    for noise, items in sorted(by_noise.items(), key=lambda kv: float(kv[0])):
        items.sort()
        lines.append(
            f"   power, noise {100 * float(noise):g}%: method-vs-method differences of "
            f"{items[0][0]:.1f}–{items[-1][0]:.1f} points are detected (two-sided 95%, 80% power; "
            f"worst: {items[-1][1]})"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
