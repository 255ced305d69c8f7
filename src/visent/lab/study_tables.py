"""``visent study``'s tables and summary, rendered from the runs' ``result.json`` files apart from running them.

- ``results_tables``: held-out accuracy per method × noise (mean ± sd over runs), the warm-starts, the
  accuracy during RL (``visent.lab.study_curves``), the paired differences (``paired_table``: nested
  estimate, 95% interval, wins/ties/losses and the smallest difference the design detects) and VEPO's
  premise per method (``premise_tables``);
- ``study_summary``: the numbers ``visent demo`` quotes (``summary.json``), with the RL settings;
- ``power_lines``: per noise rate, the range of method-vs-method differences the study detects, and the
  design that would detect 4 points where it does not.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from visent.lab.study_curves import curve_table, read_curve
from visent.lab.study_methods import (
    BASELINE_FAMILY,
    LABELS,
    PAIRS,
    SCHEDULE_FAMILY,
    SELECTION_FAMILY,
    plain,
)
from visent.lab.study_premise import mean_premise, premise_tables
from visent.lab.verdict import verdict_word

__all__ = [
    "PAIRS",
    "load_results",
    "paired_differences",
    "paired_table",
    "power_lines",
    "premise_tables",
    "results_tables",
    "study_summary",
]

RESULT_FILE = "result.json"

_WARM_DIR = re.compile(r"warm-(-?\d+)$")


def load_results(root: str) -> list[dict[str, Any]]:
    """Every finished run's ``result.json``, with ``warm_seed`` read from its folder (``warm-<w>``) and
    ``heldout_curve`` from its ``heldout.jsonl`` (``visent.lab.study_curves.read_curve``)."""
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
            r["heldout_curve"] = read_curve(dirpath)
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


def warmstart_table(baselines: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """Markdown: each warm-start's SFT steps, band, whether it landed and its accuracy before RL."""
    if not (len(baselines) > 1 or any(b.get("band") for b in baselines.values())):
        return []
    lines = [
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
    return lines


def _best(acc, cols: Sequence[str], noise: float) -> set[str]:
    """The methods of ``cols`` with the highest mean accuracy at ``noise`` (bold in the tables)."""
    means = {m: _mean_std(acc[(m, noise)])[0] for m in cols if acc.get((m, noise))}
    if not means:
        return set()
    top = max(means.values())
    return {m for m, v in means.items() if v == top}


def _methods_table(title: str, cols: Sequence[str], noises: Sequence[float], acc, base: str) -> list[str]:
    """Markdown: one row per method of ``cols``, one column per noise rate (accuracy, mean ± std (runs))."""
    lines = [
        f"### {title}: held-out greedy accuracy %, mean ± std (runs)",
        "",
        "| method | " + " | ".join(f"noise {100 * n:g}%" for n in noises) + " |",
        "|---" * (len(noises) + 1) + "|",
        "| warm-start (before RL) | " + " | ".join(base for _ in noises) + " |",
    ]
    marks = {n: _best(acc, cols, n) for n in noises}
    for m in cols:
        cells = [_acc_cell(acc, m, n, marks[n]) for n in noises]
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _acc_cell(acc, method: str, noise: float, marks: set[str]) -> str:
    """One accuracy cell, bold when ``method`` is among ``marks`` (the best of its column)."""
    c = _cell(acc.get((method, noise), []))
    return f"**{c}**" if method in marks and c != "—" else c


def _schedule_tables(results, sch: Sequence[str], noises: Sequence[float], acc, base: str) -> list[str]:
    """Markdown: the two-stage paper's table (noise × schedule) and the entropy each schedule reached."""
    ent = _grid(results, lambda r: r.get("entropy_last_quarter"))
    ent0 = _grid(results, lambda r: r.get("entropy_first"))
    lines = [
        "### Entropy schedule (two-stage paper's table): held-out greedy accuracy %, mean ± std (runs)",
        "",
        "| noise | warm-start | " + " | ".join(LABELS.get(m, m) for m in sch) + " |",
        "|---|---" + "|---" * len(sch) + "|",
    ]
    for n in sorted(noises, reverse=True):
        marks = _best(acc, sch, n)
        cells = [_acc_cell(acc, m, n, marks) for m in sch]
        lines.append(f"| {100 * n:g}% | {base} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean token entropy of sampled responses (nats): first step → last quarter of training",
        "",
        "| noise | " + " | ".join(LABELS.get(m, m) for m in sch) + " |",
        "|---" + "|---" * len(sch) + "|",
    ]
    for n in sorted(noises, reverse=True):
        cells = []
        for m in sch:
            a, b = ent0.get((m, n), []), ent.get((m, n), [])
            cells.append(f"{_mean_std(a)[0]:.3f} → {_mean_std(b)[0]:.3f}" if a and b else "—")
        lines.append(f"| {100 * n:g}% | " + " | ".join(cells) + " |")
    return lines + [""]


def results_tables(
    results: Sequence[dict[str, Any]],
    baseline: Mapping[str, Any] | Baselines | None,
    noises: Sequence[float],
    methods: Sequence[str],
    expected_seeds: int | None = None,
    expected_runs: int | None = None,
) -> str:
    """The markdown tables: warm-starts, selection family (methods × noise), schedule family (noise × methods),
    perception-aware baselines (methods × noise), every method's gain over its warm-start, paired
    differences (nested estimate), premise.

    ``baseline``: ``{warm_seed: {"accuracy", "n", ...}}`` (or one such dict). ``expected_runs`` (or
    ``len(methods) · len(noises) · expected_seeds`` for a one-warm-start grid) is the size of the full
    study, for the "partial study" line.
    """
    baselines = _as_baselines(baseline)
    acc = _grid(results, lambda r: r["after"]["accuracy"])
    noises = sorted({float(n) for n in noises})
    base = _warm_row(baselines)
    sel = [m for m in methods if m in SELECTION_FAMILY or m.startswith("vepo")]
    sch = [m for m in methods if m in SCHEDULE_FAMILY]
    # The baselines' table only when a baseline ran; GRPO and VEPO are its reference rows.
    ran_baseline = any(m in BASELINE_FAMILY and m not in ("grpo", "vepo") for m in methods)
    bas = [m for m in BASELINE_FAMILY if m in methods] if ran_baseline else []

    lines = warmstart_table(baselines)
    if sel:
        lines += _methods_table("Token selection (VEPO paper's comparison)", sel, noises, acc, base)
    if sch:
        lines += _schedule_tables(results, sch, noises, acc, base)
    if bas:
        lines += _methods_table("Perception-aware baselines (VPPO, PAPO, CPPO, DAPO)", bas, noises, acc, base)
    lines += gain_table(results, noises, methods, baselines)
    lines += curve_table(results, noises, methods)
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
        if any(c != "—" for c in cells):  # a pair no run has yet is left out
            rows.append(f"| {plain(a)} − {plain(b)} | " + " | ".join(cells) + " |")
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


def gain_table(
    results: Sequence[dict[str, Any]],
    noises: Sequence[float],
    methods: Sequence[str],
    baseline: Mapping[str, Any] | Baselines | None,
) -> list[str]:
    """Markdown: every method minus its run's own warm-start (RL's gain), nested estimate per noise rate."""
    rows = []
    for m in methods:
        cells = []
        for n in noises:
            d = paired_differences(results, m, None, n, baseline)
            cells.append("—" if d is None else _fmt_pair(d))
        if any(c != "—" for c in cells):
            rows.append(f"| {plain(m)} | " + " | ".join(cells) + " |")
    if len(rows) < 2:  # one method: the paired table's "− warm-start" row says it
        return []
    return [
        "### What RL gained: each method − its warm-start, points (same estimator as the paired differences)",
        "",
        "| method | " + " | ".join(f"noise {100 * n:g}%" for n in noises) + " |",
        "|---" * (len(noises) + 1) + "|",
        *rows,
        "",
    ]


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
    recipes = {json.dumps(b.get("recipe"), sort_keys=True) for b in baselines.values()}
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
        # The warm-starts' recipe beyond the band (two-phase, class floor); None when they differ or
        # the baselines predate it.
        "warmstart_recipe": json.loads(next(iter(recipes))) if len(recipes) == 1 else None,
        "warmstarts": warm_list,
        "warmstart_accuracy": sum(accs) / len(accs) if accs else None,
        "warmstart_premise": mean_premise([b["premise"] for b in baselines.values() if b.get("premise")]) or None,
        "pairs": pairs,
    }


def power_lines(summary: Mapping[str, Any], target: float = 4.0) -> list[str]:
    """Per noise rate: the smallest method-vs-method difference the study detects (95%, 80% power) and,
    when the worst contrast detects only more than ``target`` points, the smallest design that would
    detect ``target`` at that contrast's measured spreads (``visent.intervals.smallest_design``)."""
    from visent.intervals import smallest_design

    by_noise: dict[str, list[tuple[float, str, Mapping[str, Any]]]] = {}
    for key, d in summary.get("pairs", {}).items():
        a, b, noise = key.split("|")
        mdd = d.get("mdd", float("nan"))
        if b != "warm-start" and isinstance(mdd, (int, float)) and not math.isnan(mdd):
            by_noise.setdefault(noise, []).append((mdd, f"{plain(a)} − {plain(b)}", d))
    lines = []
    for noise, items in sorted(by_noise.items(), key=lambda kv: float(kv[0])):
        items.sort(key=lambda item: item[0])
        worst_mdd, worst, d = items[-1]
        lines.append(
            f"   power, noise {100 * float(noise):g}%: method-vs-method differences of "
            f"{items[0][0]:.1f}–{worst_mdd:.1f} points are detected (two-sided 95%, 80% power; worst: {worst})"
        )
        if worst_mdd > target:
            design = smallest_design(d.get("sd_between", float("nan")), d["sd_within"], target)
            lines.append(
                f"   to detect {target:g} points in {worst} at its measured spreads: "
                + (
                    f"{design[0]} warm-starts × {design[1]} RL seeds ({design[0] * design[1]} runs per method)"
                    if design
                    else "no design of ≤ 50 warm-starts × 20 seeds (the spread between warm-starts alone is too large)"
                )
            )
    return lines

