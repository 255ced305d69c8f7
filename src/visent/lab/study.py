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
result exists (a killed run leaves no result and is redone). A run holds a lock on its folder while it
trains, so a second study on the same folder skips nothing it should not and never trains into a folder in
use (that run fails with a message and is redone later); pool workers end with the study that started them.
Each warm-start and its held-out baseline
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
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from visent.lab.pool import exclusive_dir, pool_map, workers
from visent.lab.study_methods import PAIRS, SCHEDULE_FAMILY, SELECTION_FAMILY
from visent.lab.study_tables import (
    RESULT_FILE,
    load_results,
    paired_differences,
    paired_table,  # noqa: F401 (re-exported: the tables live in study_tables)
    power_lines,
    results_tables,
    study_summary,
)
from visent.lab.verdict import verdict_word  # noqa: F401 (the study's word, re-exported)

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

DEFAULT_METHODS: tuple[str, ...] = tuple(dict.fromkeys(SELECTION_FAMILY + SCHEDULE_FAMILY))
# The tally study on 2 CPU cores: the VEPO paper's two main ablations (is the gain the visual signal's?
# does entropy coupling matter?) instead of three; vepo_product and the others run with --methods.
TALLY_METHODS: tuple[str, ...] = tuple(m for m in DEFAULT_METHODS if m != "vepo_product")


STUDY_FILE = "study.json"
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
        help="lab methods, or 'all' for every one (default: both papers' families; tally: without "
        f"vepo_product); valid: {', '.join(METHODS)}",
    )
    p.add_argument(
        "--cells",
        nargs="+",
        default=None,
        metavar="NOISE:METHOD,METHOD",
        help="instead of --noise × --methods: the methods to run at each noise rate, e.g. "
        "0:grpo,vepo 0.5:grpo,two_stage, or 0:all (the tables cover the union)",
    )
    p.add_argument("--task", default=d.task, help="lab task (counting, tally, ...)")
    p.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the task's, rl.TASK_RL_DEFAULTS)")
    p.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the task's)")
    p.add_argument("--generations", type=int, default=None, help="K, responses per prompt (default: the task's)")
    p.add_argument("--prompts", type=int, default=None, help="prompts per RL step (default: the task's)")
    # 512: one example is 0.2 points, and the evaluation part of the within-warm-start spread halves
    # against 128 (docs/lab-results.md, power).
    p.add_argument("--heldout", type=int, default=512, help="held-out clean examples each run is scored on")
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
    p.add_argument(
        "--compare-to",
        metavar="SUMMARY_JSON",
        default=None,
        help="an earlier study's summary.json (or a shipped visent/lab/summaries/study-*.json): results.md "
        "then restates every comparison of either study, old -> new, with what changed",
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


def _expand_all(names: Sequence[str]) -> list[str]:
    """``all`` stands for every lab method (``rl.METHODS``, in its order); other names are kept as given."""
    from visent.lab.rl import METHODS

    out: list[str] = []
    for name in names:
        out += list(METHODS) if name == "all" else [name]
    return list(dict.fromkeys(out))


def _parse_cells(specs: Sequence[str]) -> dict[float, list[str]]:
    """``["0:grpo,vepo", "0.5:grpo"]`` → ``{0.0: ["grpo", "vepo"], 0.5: ["grpo"]}`` (ValueError if malformed)."""
    cells: dict[float, list[str]] = {}
    for spec in specs:
        noise, sep, methods = spec.partition(":")
        try:
            rate = float(noise)
        except ValueError:
            rate = float("nan")
        names = _expand_all([m for m in methods.split(",") if m])
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
        "recipe": cfg.recipe(),
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
    with exclusive_dir(job["out_dir"]):
        done = os.path.join(job["out_dir"], RESULT_FILE)
        if os.path.exists(done):  # finished by another study on this folder while this job was queued
            with open(done, encoding="utf-8") as f:
                return {**json.load(f), "warm_seed": job["warm_seed"]}
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


def _cells(args: argparse.Namespace) -> tuple[dict[float, list[str]], list[str], list[float]] | str:
    """``(cells, methods, noises)`` from the command line, or the one-line reason it is refused."""
    from visent.data.synthetic import LABELLED_TASKS, TASK_MAKERS
    from visent.lab.rl import METHODS

    if args.cells is not None:
        try:
            cells = _parse_cells(args.cells)
        except ValueError as e:
            return str(e)
    else:
        if args.methods is None:
            args.methods = list(TALLY_METHODS if args.task == "tally" else DEFAULT_METHODS)
        if args.noise is None:
            args.noise = [0.0, 0.5] if args.task in LABELLED_TASKS else [0.0, 0.5, 1.0]
        cells = {float(n): _expand_all(args.methods) for n in args.noise}
    methods = list(dict.fromkeys(m for ms in cells.values() for m in ms))
    noises = sorted(cells)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        return f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}"
    if args.task not in TASK_MAKERS:
        return f"unknown task {args.task!r}; valid: {', '.join(TASK_MAKERS)}"
    if (
        args.seeds < 1
        or args.warm_seeds < 1
        or (args.steps is not None and args.steps < 1)
        or args.heldout < 1
        or any(not 0 <= n <= 1 for n in noises)
    ):
        return "--seeds, --warm-seeds, --steps, --heldout must be >= 1 and --noise rates in [0, 1]"
    return cells, methods, noises


def _warm_starts(args: argparse.Namespace, root: str, ws_cfgs: dict[int, Any], rl: Any, premise_n: int) -> dict[int, dict[str, Any]]:
    """Train (or reload) the warm-starts and measure their held-out baselines: ``{warm_seed: warm-<w>.json}``."""
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
        n = workers(args.workers, len(todo))
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

    return baselines


def _run_jobs(
    args: argparse.Namespace, root: str, warm_seeds: list[int], baselines: dict[int, dict[str, Any]],
    cells: dict[float, list[str]], rl: Any, premise_n: int,
) -> tuple[list[dict[str, Any]], int]:
    """The runs still to do (``_run_job``'s inputs) and how many are already finished."""
    noises = sorted(cells)
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
    return jobs, skipped


def _design_results(root: str, baselines: dict[int, dict[str, Any]], seeds: int) -> list[dict[str, Any]]:
    """The finished runs of the design asked for: its warm-starts and RL seeds 0..seeds-1. A folder grown
    with more seeds for some cells (the power study's) still renders the smaller design's tables."""
    return [r for r in load_results(root) if int(r["warm_seed"]) in baselines and int(r["seed"]) < seeds]


def _tables_head(command: str, rl: Any, args: argparse.Namespace, baselines: dict[int, dict[str, Any]]) -> str:
    """``results.md``'s title and the settings every run of the study shares."""
    accs = ", ".join(f"{100 * b['accuracy']:.1f}%" for _, b in sorted(baselines.items()))
    return (
        f"# visent lab study\n\nCommand: `{command}`\n\n"
        f"Task `{rl.task}`; {rl.steps} RL steps × {rl.prompts_per_step} prompts × K={rl.num_generations}, "
        f"lr {rl.learning_rate:g}"
        + ("" if rl.freeze_vision_tower is None else f", vision tower {'frozen' if rl.freeze_vision_tower else 'trained'}")
        + ("" if rl.beta is None else f", KL β {rl.beta:g} to the warm-start")
        + f"; held-out set of {args.heldout} clean examples; "
        f"{len(baselines)} warm-start(s) (seeds {', '.join(str(w) for w in sorted(baselines))}) at {accs}; "
        f"RL seeds 0..{args.seeds - 1}.\n\n"
    )


def _restated(earlier: dict[str, Any], summary: dict[str, Any], methods: list[str]) -> list[str]:
    """``study_compare.restated_table`` in the study's own row order (per noise rate: each method against
    its warm-start, then ``PAIRS``) and method names."""
    from visent.lab.study_compare import restated_table
    from visent.lab.study_methods import plain

    keys = set(earlier["pairs"]) | set(summary["pairs"])
    wanted = [(m, "warm-start") for m in methods] + [(a, b or "warm-start") for a, b in PAIRS]
    rank = {pair: i for i, pair in reversed(list(enumerate(wanted)))}

    def place(key: str) -> tuple[float, int, str]:
        a, b, noise = key.split("|")
        return float(noise), rank.get((a, b), len(rank)), key

    names = {m: plain(m) for key in keys for m in key.split("|")[:2] if m != "warm-start"}
    return restated_table(earlier, summary, names, sorted(keys, key=place))


def _eta(run_seconds: float, done: int, total: int, n_workers: int = 1) -> str:
    """``", ~1 h 05 min left"``: the runs left at the mean wall time of the finished ones (``run_seconds``
    summed over ``done`` runs; runs of one study cost about the same), shared among ``n_workers``, or ``""``.
    From runs' own durations rather than the study's elapsed time: with two workers the first two runs
    finish together, and elapsed / done would read one run's time as the pace of both."""
    if done < 1 or done >= total:
        return ""
    remaining = total - done
    left = run_seconds / done * remaining / max(1, min(n_workers, remaining))
    hours, minutes = divmod(round(left / 60), 60)
    return f", ~{hours} h {minutes:02d} min left" if hours else f", ~{minutes} min left"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from visent.data.synthetic import LABELLED_TASKS

    parsed = _cells(args)
    if isinstance(parsed, str):
        print(f"visent study: {parsed}", file=sys.stderr)
        return 2
    cells, methods, noises = parsed

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
    earlier = None
    if args.compare_to:
        from visent.lab.study_compare import load_summary

        try:  # before any run: a wrong path found after hours of training is found too late
            earlier = load_summary(args.compare_to)
        except ValueError as exc:
            print(f"visent study: --compare-to: {exc}", file=sys.stderr)
            return 2

    baselines = _warm_starts(args, root, ws_cfgs, rl, premise_n)

    jobs, skipped = _run_jobs(args, root, warm_seeds, baselines, cells, rl, premise_n)
    expected = sum(len(ms) for ms in cells.values()) * args.seeds * len(warm_seeds)
    command = f"visent study {' '.join(argv)}"

    def write_tables() -> dict[str, Any]:
        results = _design_results(root, baselines, args.seeds)
        body = results_tables(results, baselines, noises, methods, expected_runs=expected)
        head = _tables_head(command, rl, args, baselines)
        summary = study_summary(
            results, baselines, noises, methods, task=rl.task, command=command, rl_settings=asdict(rl)
        )
        if earlier is not None:
            body += "\n".join(_restated(earlier, summary, methods)) + "\n"
        write_atomic(os.path.join(root, TABLES_FILE), head + body)
        write_json_atomic(os.path.join(root, SUMMARY_FILE), summary)
        return summary

    if args.tables_only:
        write_tables()
        print(f"== tables only ({len(jobs)} runs not run): {os.path.join(root, TABLES_FILE)}", flush=True)
        return 0
    n_workers = workers(args.workers, len(jobs)) if jobs else 0
    print(f"== {len(jobs)} runs to do ({skipped} already finished) on {n_workers} worker(s)", flush=True)
    failures = 0
    if jobs:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        bar = tqdm(total=len(jobs), desc="study runs", disable=not progress, dynamic_ncols=True)

        done = [0]
        run_seconds = [0.0]  # summed over finished runs, for the estimate of what is left

        def finished(job: dict[str, Any], get_result) -> None:
            done[0] += 1
            try:
                res = get_result()
                run_seconds[0] += float(res["wall_s"])
                eta = _eta(run_seconds[0], done[0], len(jobs), n_workers)
                bar.write(
                    f"   {job['name']}: {100 * res['after']['accuracy']:.1f}% ({res['wall_s']:.0f} s)"
                    f"  [{done[0]}/{len(jobs)}{eta}]"
                )
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


if __name__ == "__main__":
    sys.exit(main())
