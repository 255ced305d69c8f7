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
   difference is inside the spread the study expects for one run (``comparability``, ``_verdict``); the premise
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
import json
import math
import os
import platform
import shlex
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
_PRETTY = {"grpo": "GRPO", "vepo": "VEPO", "two_stage": "two-stage entropy", "entropy_top20": "entropy top-20%"}

# (a, b, noise, text): the comparisons the verdict spells out; b None = the warm-start.
COMPARISONS: tuple[tuple[str, str | None, float, str], ...] = (
    ("grpo", None, 0.0, "Does RL (GRPO) improve on the warm-start?"),
    ("vepo", "grpo", 0.0, "Does VEPO beat GRPO on clean labels?"),
    ("vepo", "entropy_top20", 0.0, "Does VEPO beat entropy top-20% selection?"),
    ("two_stage", "grpo", 0.5, "Does the two-stage entropy schedule beat GRPO at 50% label noise?"),
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


def _ci(block: dict[str, Any]) -> str:
    lo, hi = block["ci95"]
    return f"{pct(block['accuracy'], suffix='%')} [{pct(lo, suffix='%')}, {pct(hi, suffix='%')}]"


def _merged_rows(run_dir: str) -> list[dict[str, Any]]:
    """The trainer's metrics rows plus the held-out accuracy rows (separate rows, same ``step`` key)."""
    from visent.io import read_jsonl
    from visent.trainer.callbacks import read_metrics

    rows = read_metrics(run_dir)
    rows += read_jsonl(os.path.join(run_dir, "heldout.jsonl"))
    return rows


def paired_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of ``a − b`` in points: per-example paired differences on one held-out set.

    Student-t 95% interval of the mean difference (``visent.intervals.paired_interval``); both lists score
    the same examples in the same order (0/1 each for the lab's verifiers). One example: a point.
    """
    from visent import intervals

    if len(a) != len(b) or not a:
        raise ValueError(f"paired_interval: need two equal-length, non-empty score lists (got {len(a)}, {len(b)})")
    est = intervals.paired_interval([100.0 * (x - y) for x, y in zip(a, b)])
    m = est["mean"]
    lo, hi = est["ci"] or (m, m)
    return m, lo, hi


def study_summary_path(task: str) -> str:
    """The study summary shipped with visent for ``task`` (package data: ``visent/lab/summaries/``)."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "summaries" / f"study-{task}.json")


def load_study(path: str | None, task: str) -> dict[str, Any] | None:
    """The study summary ``visent study`` writes (``summary.json``), or ``None`` when absent/unreadable."""
    path = path or study_summary_path(task)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return data if data.get("task") == task else None


def _study_pair(study: dict[str, Any] | None, a: str, b: str | None, noise: float) -> dict[str, float] | None:
    if not study:
        return None
    return study.get("pairs", {}).get(f"{a}|{b or 'warm-start'}|{noise:g}")


def _name(method: str | None) -> str:
    return "the warm-start" if method is None else _PRETTY.get(method, method)


def _study_word(pair: dict[str, Any]) -> tuple[str, float, float] | None:
    """``(verdict, lo, hi)`` from a study pair: its 95% interval (nested estimate), or ±2 SE for summaries
    written before the study stored one; ``None`` when the pair cannot carry a verdict."""
    if not pair or pair.get("n", 0) < 2 or not math.isfinite(pair.get("se", float("nan"))):
        return None
    ci = pair.get("ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in ci):
        lo, hi = float(ci[0]), float(ci[1])
    else:
        lo, hi = pair["mean"] - 2 * pair["se"], pair["mean"] + 2 * pair["se"]
    return ("yes" if lo > 0 else "worse" if hi < 0 else "not distinguishable"), lo, hi


def _verdict(
    a: str,
    b: str | None,
    noise: float,
    demo: tuple[float, float, float] | None,
    study_pair: dict[str, float] | None,
    not_comparable: str | None = None,
) -> str:
    """Plain language: what the multi-seed study says, what this single run says, and whether they agree.

    ``not_comparable``: why this run must not be compared with the study (e.g. its warm-start is outside
    the band); the study's numbers are still quoted, the run's are not set against them.
    """
    parts = []
    word = _study_word(study_pair or {})
    if word is not None:
        assert study_pair is not None
        m, se, n = study_pair["mean"], study_pair["se"], int(study_pair["n"])
        n_warm = int(study_pair.get("n_warm", 1))
        over = (
            f"over {n_warm} warm-starts × RL seeds ({n} runs)" if n_warm > 1 else f"over {n} seeds"
        )
        wins = f"{int(study_pair['wins'])} of {n} {'runs' if n_warm > 1 else 'seeds'} better"
        verdict, lo, hi = word
        interval = f"95% interval [{lo:+.1f}, {hi:+.1f}]"
        if verdict == "yes":
            parts.append(f"**Yes** — {over}, {_name(a)} is {m:+.1f} ± {se:.1f} points ({interval}; {wins}).")
        elif verdict == "worse":
            parts.append(f"**No, worse** — {over}, {_name(a)} is {m:+.1f} ± {se:.1f} points ({interval}; {wins}).")
        else:
            parts.append(
                f"**Not distinguishable** — {over} the difference is {m:+.1f} ± {se:.1f} points ({interval}, "
                f"which includes zero; {wins})."
            )
    else:
        parts.append("No multi-seed study summary for this comparison: only this single run speaks.")
    if demo is None:
        return " ".join(parts)
    m_run, lo_run, hi_run = demo
    where = "above zero" if lo_run > 0 else "below zero" if hi_run < 0 else "includes zero"
    parts.append(
        f"This run (one seed): {m_run:+.1f} points, paired 95% interval [{lo_run:+.1f}, {hi_run:+.1f}] ({where})."
    )
    if not_comparable:
        parts.append(f"**Not compared with the study:** {not_comparable}")
        return " ".join(parts)
    if word is None:
        return " ".join(parts)
    run_word = "yes" if lo_run > 0 else "worse" if hi_run < 0 else "not distinguishable"
    pred = (study_pair or {}).get("predict95")
    have_pred = isinstance(pred, list) and len(pred) == 2 and all(
        isinstance(x, (int, float)) and math.isfinite(x) for x in pred
    )
    inside = have_pred and pred[0] <= m_run <= pred[1]
    spread = (
        f"the range the study expects for one run, [{pred[0]:+.1f}, {pred[1]:+.1f}] (its spread between "
        "warm-starts and between RL seeds)"
        if have_pred
        else "the study's spread"
    )
    if run_word == word[0] and (inside or not have_pred):
        parts.append("This run agrees with the study.")
    elif inside:
        parts.append(
            f"This run's own verdict differs from the study's, but its {m_run:+.1f} lies inside {spread}: "
            "one run from one warm-start can land there. Its paired interval measures only the held-out "
            "examples of this seed's two models, not how another warm-start or RL seed would differ — the "
            "study's verdict is the one to trust."
        )
    else:
        parts.append(
            f"**This run disagrees with the study:** {m_run:+.1f} lies outside {spread}. Either this run is a "
            "rare seed, or it differs from the study's runs in something the study held fixed — check the "
            "warm-start's band and accuracy above against the study's, and the software versions."
        )
    return " ".join(parts)


# RL settings a study and a demo run must share to be compared (the rest — eval points — only changes
# when the curve is sampled).
_COMPARED_RL = ("task", "steps", "prompts_per_step", "num_generations", "max_completion_length",
                "learning_rate", "temperature", "freeze_vision_tower")


def comparability(
    ws_info: dict[str, Any], before: dict[str, Any], study: dict[str, Any] | None,
    rl: dict[str, Any] | None = None,
) -> str | None:
    """Why this run's numbers must not be set against the study's (``None``: they may be).

    A run is comparable when its warm-start was stopped by the same band as the study's warm-starts and
    landed in it. The band is measured on the warm-start's check set; the accuracy before RL on the demo's
    own held-out set is another sample of the same model (±8.5 points at n = 128), so it is only refused
    when its Wilson 95% interval misses the band altogether.
    """
    from visent.intervals import wilson_interval

    band_info = ws_info.get("band") or {}
    band = band_info.get("band")
    acc = before["accuracy"]
    if not band:
        return (
            f"this run's warm-start was not stopped on measured accuracy (no band; held-out accuracy "
            f"{100 * acc:.1f}%), so its starting point is not controlled."
        )
    lo, hi = band
    if not band_info.get("reached", False):
        return (
            f"this run's warm-start did not land in the band {100 * lo:.0f}–{100 * hi:.0f}% "
            f"({band_info.get('reason', 'max_steps')}; held-out accuracy {100 * acc:.1f}%): it starts RL from a "
            "different competence than the study's warm-starts."
        )
    n = int(before.get("n", 0) or 0)
    ci_lo, ci_hi = wilson_interval(acc * n, n) if n else (acc, acc)
    if ci_hi < lo or ci_lo > hi:
        return (
            f"this run's warm-start measures {100 * acc:.1f}% [{100 * ci_lo:.1f}, {100 * ci_hi:.1f}] on the "
            f"demo's held-out set, outside the band {100 * lo:.0f}–{100 * hi:.0f}% it was stopped in by more "
            "than sampling noise."
        )
    if study is not None:
        s_band = study.get("band")
        if not s_band:
            return (
                "the study summary predates the band (its warm-start was stopped by the old probe rule at "
                f"{100 * (study.get('warmstart_accuracy') or float('nan')):.1f}%): a different starting point."
            )
        if [round(x, 6) for x in s_band] != [round(x, 6) for x in band]:
            return (
                f"the study's warm-starts were stopped in the band {100 * s_band[0]:.0f}–{100 * s_band[1]:.0f}%, "
                f"this run's in {100 * lo:.0f}–{100 * hi:.0f}%."
            )
        if rl is not None:
            s_rl = study.get("rl_settings")
            if not s_rl:
                return (
                    "the study summary does not record its RL settings (it predates issue #21's recipe): rerun "
                    "`visent study` under this run's settings to compare."
                )
            differ = [k for k in _COMPARED_RL if s_rl.get(k) != rl.get(k)]
            if differ:
                return "the study ran RL with other settings (" + ", ".join(
                    f"{k} {s_rl.get(k)} vs {rl.get(k)}" for k in differ
                ) + ")."
    return None


def _warmstart_rule(ws_info: dict[str, Any], study: dict[str, Any] | None) -> str:
    """The warm-start's stopping rule, the band and what it reached (and the study's warm-starts)."""
    band_info = ws_info.get("band") or {}
    if not band_info.get("band"):
        return (
            "Stopping rule: teacher-forced probe exact match "
            f"{ws_info.get('probe_exact', float('nan')):.2f} (forks left out), or the step budget — "
            "**not** a measured accuracy band, so the starting point is not controlled."
        )
    lo, hi = band_info["band"]
    checks = band_info.get("checks", [])
    n_full = sum(1 for c in checks if c.get("kind") == "check")
    text = (
        f"Stopping rule: held-out greedy accuracy (real generation, the task's verifier) inside the band "
        f"**{100 * lo:.0f}–{100 * hi:.0f}%**, measured on {ws_info.get('heldout', {}).get('n', '?')} check "
        "examples (never trained on, and not the evaluation set below: stopping on the first check in the band "
        "picks a check that read high, and that luck must not become the \"before RL\" number). "
    )
    if band_info.get("reached"):
        text += (
            f"**Reached {100 * band_info['accuracy']:.1f}%** at step {band_info['step']} after "
            f"{len(checks)} checks ({n_full} full, {band_info.get('rollbacks', 0)} roll-backs after an overshoot, "
            f"{band_info.get('steps_trained', band_info['step'])} SFT steps trained, "
            f"{band_info.get('check_seconds', 0.0):.0f} s of checking)."
        )
    else:
        text += (
            f"**NOT reached** ({band_info.get('reason')}; last check "
            f"{100 * band_info.get('accuracy', float('nan')):.1f}% after {band_info.get('steps_trained')} steps): "
            "this run is not compared with the study."
        )
    if study and study.get("warmstarts"):
        accs = ", ".join(
            f"{100 * w['accuracy']:.1f}%" for w in study["warmstarts"] if isinstance(w.get("accuracy"), (int, float))
        )
        text += f" The study's warm-starts started RL at {accs}."
    return text


def _premise_holds(p: dict[str, Any]) -> str:

    keys = ("entropy_anchor", "entropy_fork", "anchor_share_vepo_top", "anchor_share_entropy_top", "jsd_anchor")
    if not all(isinstance(p.get(k), float) and math.isfinite(p[k]) for k in keys):
        return "**cannot be measured** (the responses do not follow the task's grammar)"
    ok_h = p["entropy_anchor"] < p["entropy_fork"]
    ok_s = p["anchor_share_vepo_top"] > p["anchor_share_entropy_top"]
    ok_j = p["jsd_anchor"] > p["jsd_rest"]
    if ok_h and ok_s and ok_j:
        return "**holds**"
    failed = [
        text
        for ok, text in (
            (ok_h, "anchored entropy not below the forks'"),
            (ok_s, "VEPO does not pick more anchored tokens than entropy"),
            (ok_j, "anchored JSD not above the rest"),
        )
        if not ok
    ]
    return "**does not fully hold** (" + ", ".join(failed) + ")"


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
    premise_before: dict[str, Any] | None,
    study: dict[str, Any] | None,
) -> str:
    import torch

    from visent.lab.premise import format_premise
    from visent.lab.rl import accuracy_block

    cmd = shlex.join(["visent", "demo", *argv])
    b = accuracy_block(before["accuracy"], before["n"])
    by_method = {(res["method"], float(res["noise"])): res for res in results.values()}
    not_comparable = comparability(ws_info, before, study, asdict(rl))
    if study:
        n_warm = int(study.get("warm_seeds", 1) or 1)
        design = (
            f"{n_warm} warm-starts × {study['seeds']} RL seeds" if n_warm > 1 else f"{study['seeds']} seeds"
        )
    lines = [
        "# visent lab demo",
        "",
        f"Command: `{cmd}`"
        + ("  \n**--quick: a smoke run; the numbers below mean nothing.**" if args.quick else ""),
        "",
        "## Verdict",
        "",
        (
            f"Task `{rl.task}`; held-out greedy accuracy on {b['n']} clean examples. Each answer leads with what "
            + (
                f"the multi-seed study says ({design}, `{study['command']}`, "
                "docs/lab-results.md), then what this single run measured, and whether the two agree."
                if study
                else "this single run measured (no study summary found for this task)."
            )
        ),
        "",
    ]
    if not_comparable:
        lines += [
            (
                f"**This run is not compared with the study:** {not_comparable} The study's verdicts are "
                "quoted as they are; this run's own numbers stand alone."
            ),
            "",
        ]
    for a, bm, noise, question in COMPARISONS:
        ra = by_method.get((a, noise))
        rb = by_method.get((bm, noise)) if bm is not None else None
        if ra is None or (bm is not None and rb is None):
            continue
        b_scores = before["scores"] if bm is None else rb["after_scores"]
        demo = paired_interval(ra["after_scores"], b_scores)
        lines.append(
            f"- *{question}* " + _verdict(a, bm, noise, demo, _study_pair(study, a, bm, noise), not_comparable)
        )
    if premise_before:
        p = premise_before
        lines.append(
            f"- *Does VEPO's premise hold here?* {_premise_holds(p)} on the warm-start: the counts read from the "
            f"image have mean entropy {p['entropy_anchor']:.2f} nats vs {p['entropy_fork']:.2f} for the wording "
            f"forks, and {p['jsd_anchor'] / max(p['jsd_rest'], 1e-30):.0f}× the JSD of the other tokens; "
            f"{100 * p['anchor_share_entropy_top']:.0f}% of the entropy top-20% are image-anchored vs "
            f"{100 * p['anchor_share_vepo_top']:.0f}% of the VEPO top-20% (base rate "
            f"{100 * p['anchor_share_all']:.0f}%)."
        )
    lines += [
        "",
        "## Run",
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
            f"{', '.join(ws_info['config']['tasks'])} for {ws_info.get('steps')} steps (seed {ws_info['config']['seed']}); "
            f"cached in `{ws_path}`."
        ),
        "",
        _warmstart_rule(ws_info, study),
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
            f"reward `{'r1_counting' if rl.task == 'tally' else 'r1_' + rl.task}` (accuracy + format) against the "
            "(possibly noisy) training label; accuracy is greedy, on the held-out set, against clean labels. "
            "\"Study\" is the mean ± standard error of the same change over the study's runs (its warm-starts × "
            "RL seeds, nested estimate)."
        ),
        "",
        (
            "| run | method | label noise | seed | held-out accuracy before | after | change (paired 95% interval) "
            "| study: change over seeds | reward (last quarter) | wall time |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, res in results.items():
        m, lo, hi = paired_interval(res["after_scores"], before["scores"])
        reward = res.get("reward_last_quarter")
        sp = _study_pair(study, res["method"], None, float(res["noise"]))
        st = "—"
        if sp:
            unit = f"{int(sp['n'])} runs, {int(sp['n_warm'])} warm-starts" if sp.get("n_warm", 1) > 1 else f"{int(sp['n'])} seeds"
            st = f"{sp['mean']:+.1f} ± {sp['se']:.1f} ({unit})"
        lines.append(
            f"| {label} | {_PRETTY.get(res['method'], res['method'])} | {pct(res['noise'], suffix='%')} | {res['seed']} | "
            f"{_ci(res['before'])} | {_ci(res['after'])} | {m:+.1f} pts [{lo:+.1f}, {hi:+.1f}] | {st} | "
            f"{'n/a' if reward is None else f'{reward:.3f}'} | {res['wall_s']:.0f} s |"
        )
    n = before["n"]
    lines += [
        "",
        (
            f"With {n} held-out examples one example is {100 / n:.1f} points. The paired interval compares the "
            "two models example by example on the same set; it measures how sure this run is about *this* "
            "seed's models, not how much another seed would differ — that spread is the study's."
        ),
        "",
    ]
    if premise_before:
        lines += [
            "## VEPO's premise, measured",
            "",
            (
                f"On the greedy responses to {int(premise_before['n_responses'])} held-out examples, each token is "
                "labelled from the task's grammar (`visent.data.synthetic.label_response`): *image-anchored* = the two "
                "counts read from the image (the asked colour's and the gray one), *forks* = the seven free wording "
                "choices (opening word, verb, two nouns, side remark, closing word, answer noun), *copied* = the "
                "closing count and the answer. Entropy and JSD (clean vs perturbed image, VEPO's Gaussian pixel "
                "perturbation) are the trainer's statistics (`visent.viz.scoring`). A model that stops writing the "
                "counts in this grammar has no anchored tokens to measure (—)."
            ),
            "",
            "Warm-start (before RL):",
            "",
            *format_premise(premise_before),
            "",
            (
                "After each run (anchored share of the entropy / VEPO top-20%; the trainer's logged "
                "`select/overlap_entropy_top`, last quarter):"
            ),
            "",
            (
                "| run | H anchored | H forks | JSD anchored | JSD rest | anchored in entropy top-20% "
                "| anchored in VEPO top-20% | select/overlap_entropy_top | anchored tokens found |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, res in results.items():
            p = res.get("premise")
            if not p:
                continue
            ov = res.get("overlap_entropy_top")

            def num(key: str, spec: str, scale: float = 1.0, unit: str = "", p: dict = p) -> str:
                v = p.get(key)
                # No anchored token found: their shares are 0 by construction, not a measurement.
                ok = isinstance(v, (int, float)) and math.isfinite(v)
                ok = ok and not (key.startswith("anchor_share") and not p.get("n_anchor"))
                return f"{scale * v:{spec}}{unit}" if ok else "—"

            lines.append(
                f"| {label} | {num('entropy_anchor', '.2f')} | {num('entropy_fork', '.2f')} | "
                f"{num('jsd_anchor', '.2e')} | {num('jsd_rest', '.2e')} | "
                f"{num('anchor_share_entropy_top', '.0f', 100, '%')} | {num('anchor_share_vepo_top', '.0f', 100, '%')} | "
                f"{'—' if ov is None else f'{ov:.2f}'} | {int(p.get('n_anchor', 0))} |"
            )
        lines.append("")
    lines += [
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
            "- `curves.png`: reward, held-out accuracy and mean token entropy per step for every run; the dashed "
            "line is the two-stage switch (read from the logged `entropy/stage`)."
        ),
        (
            f"- `tokens.html`: the warm-start's greedy responses on {int(token_summary.get('n_responses', 0))} "
            "held-out examples, clean vs perturbed image, tokens coloured by entropy, JSD and VEPO score, the VEPO "
            "top-20% boxed; image-anchored tokens are bold blue with a solid bar above, forks purple italic with a "
            f"dotted bar. Mean JSD (nats) of the selected tokens {token_summary.get('jsd_selected_mean', float('nan')):.2e} "
            f"vs the unselected {token_summary.get('jsd_unselected_mean', float('nan')):.2e}."
        ),
        "- `rl/<run>/`: each run's `metrics.jsonl`, `heldout.jsonl` and `result.json`.",
        "",
    ]
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.steps is not None and args.steps < 1:
        print("visent demo: --steps must be >= 1", file=sys.stderr)
        return 2
    from visent.data.synthetic import LABELLED_TASKS, TASK_MAKERS

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
    from visent.lab.rl import heldout_set, measure_before
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
    band = ws.info.get("band") or {}
    if band.get("band"):
        lo, hi = band["band"]
        state = "reached" if band.get("reached") else "NOT REACHED — not compared with the study"
        print(
            f"   band {100 * lo:.0f}–{100 * hi:.0f}% held-out greedy accuracy: {state} "
            f"({100 * band.get('accuracy', float('nan')):.1f}%, {band.get('rollbacks', 0)} roll-backs)",
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

    _header(3, n_stages, f"RL: {len(DEMO_RUNS)} runs × {rl.steps} steps through VisentGRPOTrainer")
    t = time.perf_counter()
    from visent.lab.pool import pool_map, workers

    jobs = [
        {
            "name": label, "method": method, "noise": noise, "settings": asdict(rl), "model_path": ws.path,
            "task": rl.task, "heldout_n": n_heldout, "warm_seed": ws_cfg.seed, "before": before,
            "seed": args.seed, "out_dir": os.path.join(out, "rl", label), "premise_n": len(premise_examples),
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
