"""What a band warm-start can be taught by RL: the probability it gives the right count, per true count.

RL only learns from a count it samples. Teacher-forcing each held-out example's target response, this
reads the model's distribution over the digits at the first count (the image-anchored token that decides
the answer) and prints, per true count: the greedy accuracy (from ``benchmarks/lab_rl_probe.py``'s cached
``before``), the mean probability of the right digit (the chance that one sampled response at τ = 1
is right there) and the digit the model puts most mass on.

    PYTHONPATH=src python benchmarks/lab_count_probs.py --warm-seeds 0 1 2 --n 128
"""

from __future__ import annotations

import argparse
from collections import defaultdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="tally")
    p.add_argument("--warm-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--warm-dir", default="runs/warm")
    p.add_argument("--n", type=int, default=128)
    args = p.parse_args(argv)

    import torch

    from visent.lab.rl import heldout_set
    from visent.lab.warmstart import sft_batch, warm_start, warmstart_config

    for w in args.warm_seeds:
        ws = warm_start(args.warm_dir, warmstart_config(args.task, w), progress=False)
        tok = ws.processor.tokenizer
        digits = {str(d): tok.convert_tokens_to_ids(str(d)) for d in range(10)}
        examples = heldout_set(args.task, args.n, w)
        stats: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for i in range(0, len(examples), 32):
            chunk = examples[i : i + 32]
            batch = sft_batch(ws.processor, chunk)
            labels = batch.pop("labels")
            with torch.no_grad():
                logits = ws.model(**batch).logits
            probs = torch.softmax(logits.float(), -1)
            for b, ex in enumerate(chunk):
                pos = [t for t in range(labels.shape[1]) if int(labels[b, t]) in digits.values()]
                t = pos[0]  # the first digit of the response: the asked colour's count
                dist = {d: float(probs[b, t - 1, i]) for d, i in digits.items()}
                stats[ex.answer].append((dist[ex.answer], max(dist, key=dist.get)))
        row = []
        for count, vals in sorted(stats.items()):
            p_right = sum(v for v, _ in vals) / len(vals)
            modes = defaultdict(int)
            for _, m in vals:
                modes[m] += 1
            top = max(modes, key=modes.get)
            row.append(f"{count}: p={p_right:.3f} mode {top}")
        print(f"warm-start {w}: " + "; ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
