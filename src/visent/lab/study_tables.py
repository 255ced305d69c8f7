"""``visent study``'s tables and summary, rendered from the runs' ``result.json`` files apart from running them.

- ``results_tables``: held-out accuracy per method × noise (mean ± sd over runs), the warm-starts, the
  paired differences (``paired_table``: nested estimate, 95% interval, wins/ties/losses and the smallest
  difference the design detects) and VEPO's premise per method (``premise_tables``);
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



_WARM_DIR = re.compile(r"warm-(-?\d+)$")


def load_results(root: str) -> list[dict[str, Any]]:
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

    lines += warmstart_table(baselines)

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
        "warmstart_premise": _mean_premise([b["premise"] for b in baselines.values() if b.get("premise")]) or None,
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
            by_noise.setdefault(noise, []).append((mdd, f"{_plain(a)} − {_plain(b)}", d))
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

