"""``visent demo``'s ``report.md``: rendered from the run's measurements, apart from running them.

``render_report`` writes the verdict section (``COMPARISONS``, worded by ``visent.lab.verdict``), the
warm-start's stopping rule, the premise numbers, the per-run table, the commands and the timings;
``comparability`` says when this run must not be set against the study (another band, other RL settings);
``load_study`` reads the study summary shipped with visent (``visent/lab/summaries/study-<task>.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
from dataclasses import asdict
from typing import Any

from visent.eval.report import pct
from visent.lab.verdict import PRETTY, verdict_sentence
from visent.lab.warmstart_config import WarmStartConfig

__all__ = ["COMPARISONS", "comparability", "load_study", "paired_interval", "render_report", "study_summary_path"]


# (a, b, noise, text): the comparisons the verdict spells out; b None = the warm-start.
COMPARISONS: tuple[tuple[str, str | None, float, str], ...] = (
    ("grpo", None, 0.0, "Does RL (GRPO) improve on the warm-start?"),
    ("vepo", "grpo", 0.0, "Does VEPO beat GRPO on clean labels?"),
    ("vepo", "entropy_top20", 0.0, "Does VEPO beat entropy top-20% selection?"),
    ("two_stage", "grpo", 0.5, "Does the two-stage entropy schedule beat GRPO at 50% label noise?"),
)


def _ci(block: dict[str, Any]) -> str:
    lo, hi = block["ci95"]
    return f"{pct(block['accuracy'], suffix='%')} [{pct(lo, suffix='%')}, {pct(hi, suffix='%')}]"


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


# RL settings a study and a demo run must share to be compared (the rest — eval points — only changes
# when the curve is sampled).
_COMPARED_RL = ("task", "steps", "prompts_per_step", "num_generations", "max_completion_length",
                "learning_rate", "temperature", "freeze_vision_tower", "beta")


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
        # WarmStartConfig.recipe()'s fields at their defaults: a warm-start saved before a field existed had it so.
        defaults = WarmStartConfig().recipe()
        recipe = ws_info.get("config") or {}
        mine = {k: recipe.get(k, default) for k, default in defaults.items()}
        theirs = study.get("warmstart_recipe")
        if theirs is None:
            return (
                "the study summary does not record its warm-start recipe (it predates the two-phase "
                "warm-start of issue #21): rerun `visent study` to compare."
            )
        if {k: theirs.get(k, d) for k, d in defaults.items()} != mine:
            return f"the study's warm-starts were made by another recipe ({theirs} vs {mine})."
        if rl is not None:
            return rl_settings_differ(study, rl)
    return None



def rl_settings_differ(study: dict[str, Any], rl: dict[str, Any]) -> str | None:
    """Why ``study`` is about another RL experiment than ``rl`` (``RLSettings`` as a dict), or ``None``."""
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


def _sft_steps(ws_info: dict[str, Any]) -> str:
    """"N steps", or for the two-phase warm-start both phases (docs/lab-diagnosis.md §8)."""
    first = ws_info.get("tower_phase")
    if not first:
        return f"{ws_info.get('steps')} steps"
    what = {"projector": "the vision→text projector re-initialised", "language_model": "the language model re-initialised"}
    redo = what.get(ws_info["config"].get("phase_two", "language_model"), "phase 2")
    reached = "reached" if first.get("reached") else "did not reach"
    return (
        f"two phases: {first.get('steps')} steps of the whole model (a {100 * first.get('target', 0):.0f}% check, "
        f"{reached}: {100 * (first.get('accuracy') or 0):.1f}%), then {ws_info.get('steps')} steps with {redo}"
    )


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


def _premise_section(premise_before: dict[str, Any] | None, results: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: VEPO's premise on the warm-start and after each run (token roles from the task grammar)."""
    from visent.lab.premise import format_premise

    lines: list[str] = []
    if not premise_before:
        return lines
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
    return lines


def _closing_sections(results: dict[str, dict[str, Any]], token_summary: dict[str, Any]) -> list[str]:
    """Markdown: every run's command and what each artefact shows."""
    lines: list[str] = []
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
    return lines


def _run_rows(results: dict[str, dict[str, Any]], before: dict[str, Any], study: dict[str, Any] | None) -> list[str]:
    """Markdown rows of the runs table: accuracy before/after, this run's paired change and the study's."""
    lines: list[str] = []
    for label, res in results.items():
        m, lo, hi = paired_interval(res["after_scores"], before["scores"])
        reward = res.get("reward_last_quarter")
        sp = _study_pair(study, res["method"], None, float(res["noise"]))
        st = "—"
        if sp:
            unit = f"{int(sp['n'])} runs, {int(sp['n_warm'])} warm-starts" if sp.get("n_warm", 1) > 1 else f"{int(sp['n'])} seeds"
            st = f"{sp['mean']:+.1f} ± {sp['se']:.1f} ({unit})"
        lines.append(
            f"| {label} | {PRETTY.get(res['method'], res['method'])} | {pct(res['noise'], suffix='%')} | {res['seed']} | "
            f"{_ci(res['before'])} | {_ci(res['after'])} | {m:+.1f} pts [{lo:+.1f}, {hi:+.1f}] | {st} | "
            f"{'n/a' if reward is None else f'{reward:.3f}'} | {res['wall_s']:.0f} s |"
        )
    return lines


def _verdict_section(
    args: argparse.Namespace, cmd: str, rl: Any, b: dict[str, Any], before: dict[str, Any],
    results: dict[str, dict[str, Any]], study: dict[str, Any] | None, premise_before: dict[str, Any] | None,
    ws_info: dict[str, Any],
) -> list[str]:
    """Markdown: the title, the command and the verdict per comparison (study first, then this run)."""
    by_method = {(res["method"], float(res["noise"])): res for res in results.values()}
    not_comparable = comparability(ws_info, before, study, asdict(rl))
    other_rl = rl_settings_differ(study, asdict(rl)) if study else None
    if other_rl:
        # Another RL experiment: its verdicts answer other questions, so none is quoted beside this run.
        study = None
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
                else "this single run measured (no study summary for this task under these RL settings)."
            )
        ),
        "",
    ]
    if other_rl:
        lines += [f"**No study is quoted:** {other_rl} This run's own numbers stand alone.", ""]
    elif not_comparable:
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
            f"- *{question}* "
            + verdict_sentence(a, bm, noise, demo, _study_pair(study, a, bm, noise), None if other_rl else not_comparable)
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
    return lines


def render_report(
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

    from visent.lab.rl import accuracy_block

    cmd = shlex.join(["visent", "demo", *argv])
    b = accuracy_block(before["accuracy"], before["n"])
    lines = _verdict_section(args, cmd, rl, b, before, results, study, premise_before, ws_info)
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
            f"{', '.join(ws_info['config']['tasks'])} for {_sft_steps(ws_info)} (seed {ws_info['config']['seed']}); "
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
    same_rl = study if study and not rl_settings_differ(study, asdict(rl)) else None
    lines += _run_rows(results, before, same_rl)
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
    lines += _premise_section(premise_before, results)
    lines += _closing_sections(results, token_summary)
    return "\n".join(lines)
