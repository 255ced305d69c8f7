"""``visent eval compare RUN_A RUN_B``: two evaluation runs, paired example by example.

    visent eval compare runs/eval-base runs/eval-vepo [--metric score_clean|score] [--json]

Each run is a ``visent eval --out`` folder. Rows of ``predictions.jsonl`` are paired by
``(benchmark, id)``; a row's score is its ``--metric`` field (default ``score_clean``, the score against the
clean label), which for sampled runs (``--samples K``) is already the mean over the K samples (the row's
``k``; greedy rows have none and count as K = 1).

Per benchmark (and overall) the table gives the paired count, A's and B's accuracy on the paired examples,
and B - A with a 95% **paired** interval:

- ``d_i = score_B(i) - score_A(i)`` for each paired example i; the interval is the Student-t interval on
  the mean of the ``d_i``: ``mean(d) +- t(0.975, n-1) * sd(d) / sqrt(n)`` (``sd`` with ``n - 1``).
  Pairing removes the between-example variance both runs share (hard questions are hard for both), so it
  is much narrower than comparing two independent accuracy intervals. For per-example means of K samples
  the within-example sampling noise is part of ``sd(d)``, so the interval covers it too. For binary
  (greedy) scores this is the usual paired-difference interval for two proportions.
- For binary scores the discordant counts are shown too: ``A+B-`` (A right, B wrong) and ``A-B+``, with
  the exact McNemar p-value (two-sided binomial test of the discordant pairs against 1/2) in ``--json``.
  When every pair agrees the t interval collapses to ``[0, 0]``; read it with the counts.
- ``pass@K`` (the row's ``pass`` / ``pass_clean``) is compared the same way where both runs sampled the
  same K > 1.
- ``all examples`` pools every paired example (weights benchmarks by size). ``mean of benchmarks`` is
  the unweighted mean over the benchmarks both runs have, as papers average their tables; its interval
  is normal, with variance ``sum(se_b^2) / B^2`` (benchmarks hold different examples, so independent).

Rows of one run without a partner in the other are counted per benchmark (``unpaired A/B``) and
benchmarks only one run has are listed, never dropped silently. The settings in the two ``run.json`` that
differ are printed above the table.

Bad input (a missing folder, no or an empty ``predictions.jsonl``, a row without a numeric metric, no
benchmark or example in common) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visent.eval.report import pct
from visent.intervals import Z95, mcnemar_exact, paired_interval
from visent.io import json_lines

METRICS = ("score_clean", "score")
PASS_FIELD = {"score": "pass", "score_clean": "pass_clean"}


class CompareError(ValueError):
    """An input ``visent eval compare`` cannot use; the message names the folder, file, line and field."""


# -- reading runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """One ``visent eval --out`` folder as compare sees it.

    ``rows`` maps ``(benchmark, id)`` to ``{"score": float, "k": int, "pass": float | None}`` for the chosen
    metric; ``unreadable`` lists lines skipped as invalid JSON; ``duplicates`` counts repeated keys (the
    first is kept, as the harness does).
    """

    path: Path
    settings: dict[str, Any] | None
    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    unreadable: list[int] = field(default_factory=list)
    duplicates: int = 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def load_run(folder: str | Path, metric: str = "score_clean") -> Run:
    """Read ``folder/predictions.jsonl`` (and ``run.json`` when present); CompareError on unusable input."""
    path = Path(folder)
    if not path.is_dir():
        raise CompareError(f"{path}: no such folder (expected a `visent eval --out` folder)")
    pred = path / "predictions.jsonl"
    if not pred.is_file():
        raise CompareError(f"{path}: no predictions.jsonl (is it a `visent eval --out` folder?)")
    settings = None
    run_file = path / "run.json"
    if run_file.is_file():
        try:
            settings = json.loads(run_file.read_text(encoding="utf-8")).get("settings")
        except (ValueError, AttributeError):
            settings = None
    run = Run(path, settings)
    for lineno, record in json_lines(pred, on_bad="none", errors="replace"):
        if record is None:
            run.unreadable.append(lineno)  # a torn write: the harness redoes that row on resume
            continue
        if not isinstance(record, dict) or "benchmark" not in record or "id" not in record:
            raise CompareError(f"{pred} line {lineno}: not a prediction record (needs 'benchmark' and 'id')")
        score = _number(record.get(metric))
        if score is None:
            raise CompareError(
                f"{pred} line {lineno}: field {metric!r} is missing or not a finite number "
                f"(got {record.get(metric)!r})"
            )
        k = record.get("k", 1)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CompareError(f"{pred} line {lineno}: field 'k' must be a positive integer, got {k!r}")
        key = (str(record["benchmark"]), str(record["id"]))
        if key in run.rows:
            run.duplicates += 1
            continue
        run.rows[key] = {"score": score, "k": k, "pass": _number(record.get(PASS_FIELD[metric]))}
    if not run.rows:
        raise CompareError(f"{pred}: no predictions in it")
    return run


# -- comparing ------------------------------------------------------------------------------------------


def _binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def _block(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Paired statistics of ``[(row_a, row_b), ...]``."""
    a = [ra["score"] for ra, _ in pairs]
    b = [rb["score"] for _, rb in pairs]
    n = len(pairs)
    block: dict[str, Any] = {
        "n": n,
        "a": math.fsum(a) / n if n else None,
        "b": math.fsum(b) / n if n else None,
        "diff": paired_interval([y - x for x, y in zip(a, b)]),
    }
    if n and _binary(a) and _binary(b):
        a_only = sum(x == 1.0 and y == 0.0 for x, y in zip(a, b))
        b_only = sum(x == 0.0 and y == 1.0 for x, y in zip(a, b))
        block["discordant"] = {"a_only": a_only, "b_only": b_only, "mcnemar_p": mcnemar_exact(a_only, b_only)}
    ks_a = sorted({ra["k"] for ra, _ in pairs})
    ks_b = sorted({rb["k"] for _, rb in pairs})
    block["k_a"], block["k_b"] = ks_a, ks_b
    if n and len(ks_a) == 1 and ks_a == ks_b and ks_a[0] > 1:
        pa = [ra["pass"] for ra, _ in pairs]
        pb = [rb["pass"] for _, rb in pairs]
        if all(v is not None for v in pa + pb):
            block["pass_at_k"] = {
                "k": ks_a[0],
                "a": math.fsum(pa) / n,
                "b": math.fsum(pb) / n,
                "diff": paired_interval([y - x for x, y in zip(pa, pb)]),
            }
    return block


def compare_runs(a: Run, b: Run) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (see the module docstring); CompareError when nothing pairs."""
    by_bench_a: dict[str, list[str]] = {}
    by_bench_b: dict[str, list[str]] = {}
    for bench, ex_id in a.rows:
        by_bench_a.setdefault(bench, []).append(ex_id)
    for bench, ex_id in b.rows:
        by_bench_b.setdefault(bench, []).append(ex_id)
    common = sorted(set(by_bench_a) & set(by_bench_b))
    if not common:
        raise CompareError(
            f"{a.path} and {b.path} have no benchmark in common (A: {', '.join(sorted(by_bench_a))}; "
            f"B: {', '.join(sorted(by_bench_b))})"
        )
    benchmarks: dict[str, Any] = {}
    all_pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for bench in common:
        ids_b = set(by_bench_b[bench])
        pairs = [(a.rows[(bench, i)], b.rows[(bench, i)]) for i in by_bench_a[bench] if i in ids_b]
        block = _block(pairs)
        block["unpaired_a"] = len(by_bench_a[bench]) - len(pairs)
        block["unpaired_b"] = len(by_bench_b[bench]) - len(pairs)
        benchmarks[bench] = block
        all_pairs.extend(pairs)
    if not all_pairs:
        raise CompareError(f"{a.path} and {b.path} share benchmarks ({', '.join(common)}) but no example id")
    overall = _block(all_pairs)
    overall["unpaired_a"] = sum(blk["unpaired_a"] for blk in benchmarks.values())
    overall["unpaired_b"] = sum(blk["unpaired_b"] for blk in benchmarks.values())
    scored = [blk for blk in benchmarks.values() if blk["n"]]
    macro: dict[str, Any] = {
        "benchmarks": len(scored),
        "a": math.fsum(blk["a"] for blk in scored) / len(scored),
        "b": math.fsum(blk["b"] for blk in scored) / len(scored),
    }
    macro_diff = math.fsum(blk["diff"]["mean"] for blk in scored) / len(scored)
    if all(blk["diff"]["se"] is not None for blk in scored):
        se = math.sqrt(math.fsum(blk["diff"]["se"] ** 2 for blk in scored)) / len(scored)
        macro["diff"] = {"mean": macro_diff, "se": se, "ci": [macro_diff - Z95 * se, macro_diff + Z95 * se]}
    else:
        macro["diff"] = {"mean": macro_diff, "se": None, "ci": None}
    settings_a, settings_b = a.settings or {}, b.settings or {}
    differ = {
        key: [settings_a.get(key), settings_b.get(key)]
        for key in sorted(set(settings_a) | set(settings_b))
        if settings_a.get(key) != settings_b.get(key)
    }
    return {
        "a": {
            "path": str(a.path),
            "model": settings_a.get("model"),
            "rows": len(a.rows),
            "unreadable_lines": a.unreadable,
            "duplicates": a.duplicates,
        },
        "b": {
            "path": str(b.path),
            "model": settings_b.get("model"),
            "rows": len(b.rows),
            "unreadable_lines": b.unreadable,
            "duplicates": b.duplicates,
        },
        "settings_differ": differ,
        "benchmarks": benchmarks,
        "only_in_a": {k: len(v) for k, v in sorted(by_bench_a.items()) if k not in by_bench_b},
        "only_in_b": {k: len(v) for k, v in sorted(by_bench_b.items()) if k not in by_bench_a},
        "all_examples": overall,
        "mean_of_benchmarks": macro,
    }


# -- output ---------------------------------------------------------------------------------------------


def _diff(d: dict[str, Any]) -> str:
    if d.get("mean") is None:
        return "-"
    text = f"{100 * d['mean']:+.1f}"
    if d.get("ci") is not None:
        lo, hi = d["ci"]
        text += f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return text


def _k(ks: list[int]) -> str:
    return ",".join(str(k) for k in ks) if ks else "-"


def format_table(result: dict[str, Any], metric: str) -> str:
    """The comparison as text: run names, differing settings, a Markdown table, unpaired notes."""
    a, b = result["a"], result["b"]

    def label(run: dict[str, Any]) -> str:
        return f"{run['path']} ({run['model'] or 'no run.json'})"

    lines = [f"A = {label(a)}, B = {label(b)}; metric {metric}"]
    if result["settings_differ"]:
        lines.append(
            "settings that differ: "
            + "; ".join(
                f"{key}: {json.dumps(va)} vs {json.dumps(vb)}"
                for key, (va, vb) in result["settings_differ"].items()
            )
        )
    # pass@K columns only when some benchmark was sampled K > 1 times by both runs.
    with_pass = any("pass_at_k" in blk for blk in result["benchmarks"].values())
    lines += [
        "",
        "| benchmark | n paired | K A/B | A % | B % | B - A pts [95% paired CI] | A+B- / A-B+ | "
        + ("pass@K A % | pass@K B % | pass@K B - A [95% CI] | " if with_pass else "")
        + "unpaired A/B |",
        "|---|---:|---|---:|---:|---|---|" + ("---:|---:|---|" if with_pass else "") + "---|",
    ]

    def row(name: str, blk: dict[str, Any]) -> str:
        disc = blk.get("discordant")
        disc_text = f"{disc['a_only']} / {disc['b_only']}" if disc else "-"
        pk = blk.get("pass_at_k")
        pass_text = f"{pct(pk['a'])} | {pct(pk['b'])} | {_diff(pk['diff'])} | " if pk else "- | - | - | "
        return (
            f"| {name} | {blk['n']} | {_k(blk['k_a'])}/{_k(blk['k_b'])} | {pct(blk['a'])} | {pct(blk['b'])} | "
            f"{_diff(blk['diff'])} | {disc_text} | {pass_text if with_pass else ''}"
            f"{blk['unpaired_a']}/{blk['unpaired_b']} |"
        )

    for name, blk in result["benchmarks"].items():
        lines.append(row(name, blk))
    lines.append(row("**all examples**", result["all_examples"]))
    macro = result["mean_of_benchmarks"]
    if macro["benchmarks"] > 1:  # with one benchmark it repeats the row above
        lines.append(
            f"| **mean of {macro['benchmarks']} benchmarks** | | | {pct(macro['a'])} | {pct(macro['b'])} | "
            f"{_diff(macro['diff'])} | |" + (" | | |" if with_pass else "") + " |"
        )
    notes = []
    for side in ("a", "b"):
        only = result[f"only_in_{side}"]
        if only:
            notes.append(
                f"only in {side.upper()} (not compared): "
                + ", ".join(f"{k} ({n} rows)" for k, n in only.items())
            )
        run = result[side]
        if run["unreadable_lines"]:
            notes.append(
                f"{side.upper()}: skipped unreadable predictions.jsonl line(s) "
                f"{', '.join(map(str, run['unreadable_lines'][:10]))} (a torn write; resume that run)"
            )
        if run["duplicates"]:
            notes.append(
                f"{side.upper()}: {run['duplicates']} repeated (benchmark, id) row(s); the first is used"
            )
    ks = [(name, blk["k_a"], blk["k_b"]) for name, blk in result["benchmarks"].items()]
    if any(ka != kb and (max(ka, default=1) > 1 or max(kb, default=1) > 1) for _, ka, kb in ks):
        notes.append(
            "K differs between the runs on some benchmark: scores are per-example means over each "
            "run's own samples; pass@K is only compared where both used the same K"
        )
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="visent eval compare",
        description="Compare two `visent eval --out` folders example by example "
        "(paired 95% intervals per benchmark).",
    )
    p.add_argument("run_a", metavar="RUN_A", help="baseline run folder (A)")
    p.add_argument("run_b", metavar="RUN_B", help="run folder compared against it (B); differences are B - A")
    p.add_argument(
        "--metric",
        default="score_clean",
        choices=METRICS,
        help="score_clean (default): against the clean labels; score: against the labels scored at "
        "eval time (noisy when --noise was used)",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_a = load_run(args.run_a, args.metric)
        run_b = load_run(args.run_b, args.metric)
        result = compare_runs(run_a, run_b)
    except CompareError as exc:
        print(f"visent eval compare: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable file (permissions, a folder named predictions.jsonl, ...)
        print(f"visent eval compare: {exc}", file=sys.stderr)
        return 2
    result["metric"] = args.metric
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result, args.metric), end="")
    return 0
