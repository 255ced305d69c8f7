"""Curves of the RL diagnosis (docs/lab-diagnosis.md) from ``benchmarks/lab_rl_probe.py`` run folders.

    PYTHONPATH=src python benchmarks/lab_diagnosis_curves.py runs/probe/ws0-frz-300 runs/probe/ws0-unfr-120 ... \\
        --json docs/lab-diagnosis.json --png docs/lab-diagnosis.png

The JSON keeps, per run: its settings, the held-out greedy accuracy at each evaluation, and per block of
10 steps the mean training reward, the share of groups with mixed rewards (1 − TRL's
``frac_reward_zero_std``), the reward's parse-failure rate and the sampled tokens' mean entropy.
"""

from __future__ import annotations

import argparse
import json
import os


def _rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summarise(folder: str, block: int = 10) -> dict:
    metrics = _rows(os.path.join(folder, "metrics.jsonl"))
    held = _rows(os.path.join(folder, "heldout.jsonl"))
    result_path = os.path.join(folder, "result.json")
    result: dict = {}
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
    blocks = []
    for i in range(0, len(metrics), block):
        seg = metrics[i : i + block]

        def mean(key: str, seg=seg) -> float:
            vals = [r[key] for r in seg if isinstance(r.get(key), (int, float))]
            return round(sum(vals) / len(vals), 4) if vals else float("nan")

        blocks.append({
            "steps": [seg[0]["step"], seg[-1]["step"]],
            "reward": mean("reward"),
            "mixed_groups": round(1 - mean("frac_reward_zero_std"), 4),
            "parse_fail": mean("rewards/r1_counting/parse_fail_rate"),
            "entropy": mean("entropy/mean"),
        })
    return {
        "run": os.path.basename(folder.rstrip("/")),
        "settings": result.get("settings"),
        "extra": result.get("extra"),
        "finished": bool(result),
        "heldout": [[r["step"], r["heldout/accuracy"]] for r in held],
        "n_heldout": (result.get("after") or {}).get("n"),
        "wall_s": result.get("wall_s"),
        "blocks": blocks,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--json", required=True)
    p.add_argument("--png", required=True)
    args = p.parse_args(argv)
    runs = [summarise(f) for f in args.folders]
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(runs, f, indent=1)
        f.write("\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        xs, ys = zip(*r["heldout"])
        line = ax1.plot(xs, [100 * y for y in ys], marker="o", ms=3, label=r["run"])[0]
        bx = [(b["steps"][0] + b["steps"][1]) / 2 for b in r["blocks"]]
        ax2.plot(bx, [100 * b["mixed_groups"] for b in r["blocks"]], color=line.get_color(), label=r["run"])
    ax1.set(xlabel="RL step", ylabel="held-out greedy accuracy (%)", title="held-out accuracy (512 examples)")
    ax2.set(xlabel="RL step", ylabel="% of groups with mixed rewards", title="groups that carry a signal")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
