"""One lab RL run from a band warm-start with explicit settings: the unit of the RL diagnosis.

docs/lab-diagnosis.md is built from these runs. Each run trains through ``visent.lab.rl.run_method``
(the method's YAML, ``visent train``'s parser, the real trainer), so a setting found here is the setting
the study and the demo run. The warm-start is ``warmstart_config(task, warm_seed)`` cached under
``--warm-dir`` (trained on first use), and its greedy accuracy on the ``--heldout`` examples is cached
beside it, so every run of a warm-start is scored against the same "before".

    PYTHONPATH=src python benchmarks/lab_rl_probe.py --warm-seed 0 --steps 120 --freeze false \\
        --out runs/probe/ws0-unfrozen

Writes ``OUT/result.json``, ``OUT/metrics.jsonl`` (per-step reward, ``frac_reward_zero_std`` = share of
groups whose K rewards are all equal) and ``OUT/heldout.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="tally")
    p.add_argument("--method", default="grpo")
    p.add_argument("--warm-seed", type=int, default=0)
    p.add_argument("--warm-dir", default="runs/warm")
    p.add_argument("--seed", type=int, default=0, help="RL seed")
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--K", type=int, default=None, help="responses per prompt")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--freeze", type=_bool, default=None, help="freeze the vision tower (default: the task's)")
    p.add_argument("--eval-points", type=int, default=None)
    p.add_argument(
        "--tower-first", type=float, default=None,
        help="two-phase warm-start: tower trained to this check accuracy first (WarmStartConfig.tower_first)",
    )
    p.add_argument(
        "--min-class-accuracy", type=float, default=None,
        help="warm-start band rule: every answer class read at least this often (WarmStartConfig.min_class_accuracy)",
    )
    p.add_argument("--phase-two", choices=("language_model", "projector"), default=None,
                   help="with --tower-first: what the second phase re-initialises (WarmStartConfig.phase_two)")
    p.add_argument("--heldout", type=int, default=512, help="held-out examples scored before and after")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further VisentConfig fields")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the study's runs use 1)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch

    # The study runs every warm-start and RL run on one thread; other counts change float reductions (so the
    # warm-start stops elsewhere) and, several runs side by side, oversubscribe the cores.
    torch.set_num_threads(args.threads)
    from visent.io import write_json_atomic
    from visent.lab.rl import RLSettings, heldout_set, measure_before, run_method
    from visent.lab.warmstart import warm_start, warmstart_config

    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"lab_rl_probe: --set {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        extra[key] = value
    settings = RLSettings.for_task(
        args.task, steps=args.steps, learning_rate=args.lr, num_generations=args.K,
        prompts_per_step=args.prompts, temperature=args.temperature, eval_points=args.eval_points,
        freeze_vision_tower=args.freeze,
    )
    t0 = time.perf_counter()
    import dataclasses

    ws_cfg = warmstart_config(args.task, args.warm_seed)
    if args.tower_first is not None:
        ws_cfg = dataclasses.replace(ws_cfg, tower_first=args.tower_first)
    if args.phase_two is not None:
        ws_cfg = dataclasses.replace(ws_cfg, phase_two=args.phase_two)
    if args.min_class_accuracy is not None:
        ws_cfg = dataclasses.replace(ws_cfg, min_class_accuracy=args.min_class_accuracy)
    ws = warm_start(args.warm_dir, ws_cfg, progress=False)
    heldout = heldout_set(args.task, args.heldout, args.warm_seed)
    before_path = os.path.join(ws.path, f"before-{args.heldout}-{settings.max_completion_length}.json")
    if os.path.exists(before_path):
        with open(before_path) as f:
            before = json.load(f)
    else:
        before = measure_before(ws.model, ws.processor, heldout, settings.max_completion_length)
        write_json_atomic(before_path, before)
    warm_s = time.perf_counter() - t0
    result = run_method(
        args.method, settings, model_path=ws.path, heldout=heldout, before=before, noise=args.noise,
        seed=args.seed, out_dir=args.out, progress=False, extra=extra,
    )
    print(json.dumps({
        "out": args.out, "warm_seed": args.warm_seed, "before": before["accuracy"],
        "after": result["after"]["accuracy"], "warm_path": ws.path, "n": result["after"]["n"], "wall_s": round(result["wall_s"], 1),
        "eval_s": round(result["eval_s"], 1), "warm_s": round(warm_s, 1), "threads": torch.get_num_threads(),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
