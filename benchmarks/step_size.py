"""Issue #17, item 4: is VEPO's loss from a competent start a step-size effect? (docs/lab-step-size.md)

Runs lab RL (``visent.lab.rl.run_method``: the method's YAML through ``visent train``'s parser and the
real ``VisentGRPOTrainer``) from two pinned tally warm-starts, with per-step diagnostics that
``visent study`` does not record:

- ``steps.jsonl`` per run: ``update_norm`` = ‖θ_after − θ_before‖₂ of one optimizer step (all trainable
  parameters), ``param_norm``, and the step's learning rate;
- the trainer's own ``metrics.jsonl`` (``grad_norm`` before clipping, ``loss/clip_ratio/*``,
  ``entropy/mean``, ``select/fraction``, ``rewards/r1_counting/parse_fail_rate``, ...).

``visent study`` is not used because it always trains ``warmstart_config(task)`` (one recipe; the
competent start needs another) and fixes one learning rate per folder; the runs themselves are the same
``run_method`` calls the study makes, with the same held-out set (128 clean examples of the warm-start's
held-out stream), premise examples (first 32) and seeds.

Usage (one worker, resumable: a run whose ``result.json`` exists is skipped)::

    OMP_NUM_THREADS=1 python benchmarks/step_size.py run --out runs/step-size \
        --starts ws91 ws50 --methods grpo vepo vepo_matched_step --seeds 0 1 2 3 [--lr 3e-4]
    python benchmarks/step_size.py summary --out runs/step-size > docs/lab-step-size.json

A job's label is the lab method, suffixed ``@lr<value>`` when ``--lr`` departs from the task's default
and ``@clip<value>`` when ``--max-grad-norm`` replaces the trainer's 1.0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

from visent.intervals import paired_interval
from visent.io import read_jsonl

TASK = "tally"
HELDOUT_N = 128
PREMISE_N = 32


def start_configs() -> dict[str, Any]:
    """The two warm-starts, pinned (not ``warmstart_config``, whose recipe issue #17 changes).

    ``ws50``: the tally recipe of docs/lab-results.md (early stop at teacher-forced probe 0.25, checked
    every 10 steps: 190 SFT steps, 50.0% greedy on this machine). ``ws91``: the same recipe, stopping at
    probe 0.93 checked every step (224 SFT steps, 91.4% greedy here) — a competent start like the one
    another CPU reached with the ws50 recipe (95.3%). The SFT climb is steep here (84% after 235 steps
    and 99% after 240 with other stops), hence the check every step; ``ws84`` and ``ws99`` are those two.
    """
    from visent.lab.warmstart import WarmStartConfig

    base = {"seed": 0, "tasks": (TASK,), "vocab_size": 768, "max_steps": 600}
    return {
        "ws50": WarmStartConfig(**base, target_accuracy=0.25),
        "ws91": WarmStartConfig(**base, target_accuracy=0.93, eval_every=1),
        # Two more competent starts on either side (same recipe, other stops): 235 and 240 SFT steps.
        "ws84": WarmStartConfig(**base, target_accuracy=0.85, eval_every=5),
        "ws99": WarmStartConfig(**base, target_accuracy=0.9),
    }


def _update_norm_callback(path: str):
    import torch
    from transformers import TrainerCallback

    class UpdateNorm(TrainerCallback):
        """‖Δθ‖₂ of each optimizer step → ``steps.jsonl`` (a flat copy of the weights: ~1M floats)."""

        def __init__(self) -> None:
            self.before: torch.Tensor | None = None

        @staticmethod
        def _flat(model) -> torch.Tensor:
            return torch.cat([p.detach().reshape(-1).double() for p in model.parameters() if p.requires_grad])

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            self.before = self._flat(model) if model is not None else None

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            if self.before is None or model is None:
                return
            after = self._flat(model)
            lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
            row = {
                "step": int(state.global_step),
                "update_norm": float((after - self.before).norm()),
                "param_norm": float(after.norm()),
                "lr": lr,
            }
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return UpdateNorm()


def _diagnostics(out_dir: str) -> list[Any]:
    """The update-norm callback for one run (``<out_dir>/steps.jsonl``), handed to ``run_method``."""
    path = os.path.join(out_dir, "steps.jsonl")
    if os.path.exists(path):
        os.remove(path)  # a rerun starts afresh
    return [_update_norm_callback(path)]


def label_for(method: str, lr: float | None, max_grad_norm: float | None = None) -> str:
    label = method if lr is None else f"{method}@lr{lr:g}"
    return label if max_grad_norm is None else f"{label}@clip{max_grad_norm:g}"


def _prepare_start(out: str, name: str) -> dict[str, Any]:
    """Warm-start ``name`` (cached under ``out/ws``) and its held-out baseline (``out/<name>/baseline.json``)."""
    from visent.io import write_json_atomic
    from visent.lab.rl import RLSettings, heldout_set, measure_before
    from visent.lab.warmstart import warm_start

    cfg = start_configs()[name]
    ws = warm_start(os.path.join(out, "ws"), cfg, eval_per_task=16, progress=False)
    base_path = os.path.join(out, name, "baseline.json")
    if os.path.exists(base_path):
        with open(base_path, encoding="utf-8") as f:
            baseline = json.load(f)
    else:
        rl = RLSettings.for_task(TASK)
        acc = measure_before(ws.model, ws.processor, heldout_set(TASK, HELDOUT_N, cfg.seed), rl.max_completion_length)
        from visent.lab.premise import measure_premise

        premise, _ = measure_premise(
            ws.model, ws.processor, heldout_set(TASK, PREMISE_N, cfg.seed), seed=0,
            max_new_tokens=rl.max_completion_length,
        )
        baseline = {
            "accuracy": acc["accuracy"], "n": acc["n"], "warmstart": os.path.basename(ws.path),
            "sft_steps": ws.info.get("steps"), "probe_exact": ws.info.get("probe_exact"), "premise": premise,
        }
        write_json_atomic(base_path, baseline)
    baseline["path"] = ws.path
    baseline["seed"] = cfg.seed
    return baseline


def cmd_run(args: argparse.Namespace) -> int:
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    from visent.lab.rl import METHODS, RLSettings, heldout_set, run_method

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        print(f"step_size: unknown method(s) {unknown}; valid: {', '.join(METHODS)}", file=sys.stderr)
        return 2
    # The recipe this sweep was measured with (docs/lab-step-size.md): 30 steps, the method configs' frozen
    # vision tower — pinned, so that a later lab recipe (issue #21) does not change what it measures.
    settings = dataclasses.replace(
        RLSettings.for_task(TASK, learning_rate=args.lr), steps=30, eval_points=2, freeze_vision_tower=None
    )
    extra = {} if args.max_grad_norm is None else {"max_grad_norm": args.max_grad_norm}
    failures = 0
    for name in args.starts:
        base = _prepare_start(args.out, name)
        print(f"== {name}: {base['warmstart']} at {100 * base['accuracy']:.1f}% ({base['sft_steps']} SFT steps)", flush=True)
        heldout = heldout_set(TASK, HELDOUT_N, base["seed"])
        for seed in args.seeds:  # seed-major: an interrupted sweep has every method at the first seeds
            for method in args.methods:
                label = label_for(method, args.lr, args.max_grad_norm)
                out_dir = os.path.join(args.out, name, label, f"seed-{seed}")
                if os.path.exists(os.path.join(out_dir, "result.json")):
                    continue
                t0 = time.perf_counter()
                try:
                    res = run_method(
                        method, settings, model_path=base["path"], heldout=heldout,
                        before={"accuracy": base["accuracy"], "n": base["n"]}, noise=0.0, seed=seed,
                        out_dir=out_dir, progress=False, premise_examples=heldout[:PREMISE_N],
                        extra=extra, callbacks=_diagnostics(out_dir),
                    )
                except Exception as e:  # noqa: BLE001 (one broken run must not lose the sweep)
                    failures += 1
                    print(f"   {name} {label} seed {seed}: FAILED {type(e).__name__}: {e}", flush=True)
                    continue
                print(
                    f"   {name} {label} seed {seed}: {100 * res['after']['accuracy']:.1f}% "
                    f"({time.perf_counter() - t0:.0f} s)", flush=True,
                )
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------ summary


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """Paired ``a − b`` over common seeds: mean, sample std, 95% t interval, wins/ties/losses."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    est = paired_interval(d)
    return {
        "mean": est["mean"], "sd": float("nan") if est["sd"] is None else est["sd"], "ci95": est["ci"], "n": len(d),
        "diffs": d, "seeds": seeds,
        "wins": sum(x > 1e-9 for x in d), "ties": sum(abs(x) <= 1e-9 for x in d), "losses": sum(x < -1e-9 for x in d),
    }


def run_summary(run_dir: str) -> dict[str, Any]:
    """One run's accuracy and the mean of its per-step diagnostics (first step, all steps, last 10)."""
    with open(os.path.join(run_dir, "result.json"), encoding="utf-8") as f:
        res = json.load(f)
    metrics = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"), missing_ok=True) if "loss/policy_loss" in r or "reward" in r]
    steps = read_jsonl(os.path.join(run_dir, "steps.jsonl"), missing_ok=True)

    def col(rows, key):
        return [r.get(key) for r in rows]

    keys = {
        "grad_norm": "grad_norm",
        "clip_region": "loss/clip_ratio/region_mean",
        "entropy": "entropy/mean",
        "select_fraction": "select/fraction",
        "parse_fail": "rewards/r1_counting/parse_fail_rate",
        "reward": "reward",
        "completion_length": "completions/mean_length",
    }
    diag: dict[str, Any] = {}
    for short, key in keys.items():
        v = col(metrics, key)
        diag[short] = {"first": _mean(v[:1]), "mean": _mean(v), "last10": _mean(v[-10:])}
    u = col(steps, "update_norm")
    diag["update_norm"] = {"first": _mean(u[:1]), "mean": _mean(u), "last10": _mean(u[-10:])}
    # Per-token weight of a selected token relative to GRPO's 1/N_valid: 1/fraction under selected_mean.
    premise = res.get("premise") or {}
    heldout = read_jsonl(os.path.join(run_dir, "heldout.jsonl"), missing_ok=True)
    return {
        "after": res["after"]["accuracy"],
        "mid": next((r["heldout/accuracy"] for r in heldout if r["step"] == 15), None),
        "n_anchor": premise.get("n_anchor"),
        "responses_sample": res.get("after_responses_sample", [])[:3],
        "diag": diag,
        "per_step": {
            "grad_norm": col(metrics, "grad_norm"),
            "update_norm": u,
            "entropy": col(metrics, "entropy/mean"),
            "clip_region": col(metrics, "loss/clip_ratio/region_mean"),
            "parse_fail": col(metrics, "rewards/r1_counting/parse_fail_rate"),
            "select_fraction": col(metrics, "select/fraction"),
            "reward": col(metrics, "reward"),
        },
    }


def _fmt_pair(p: dict[str, Any] | None) -> str:
    if p is None:
        return "—"
    ci = "" if p["ci95"] is None else f" [{p['ci95'][0]:+.1f}, {p['ci95'][1]:+.1f}]"  # 95% t interval
    return f"{p['mean']:+.1f}{ci} ({p['wins']}/{p['ties']}/{p['losses']})"


def markdown(summary: dict[str, Any]) -> str:
    """The tables of docs/lab-step-size.md from ``summary``'s JSON."""
    lines: list[str] = []
    for name, st in summary["starts"].items():
        b = st["baseline"]
        labels = sorted(st["methods"], key=lambda m: (m.split("@")[0] != "grpo", "@" in m, m))
        lines += [
            f"#### `{name}`: warm-start {100 * b['accuracy']:.1f}% ({b['sft_steps']} SFT steps, `{b['warmstart']}`)",
            "",
            (
                "| run | seeds | accuracy per seed | mean | − warm-start | − GRPO | − VEPO | − VEPO matched step "
                "| − GRPO at lr 1.5e-4 |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for lab in labels:
            m = st["methods"][lab]
            # Compared with the same lr (and the default clipping): "vepo@lr0.0003@clip0" − "grpo@lr0.0003".
            lr = next((part for part in lab.split("@")[1:] if part.startswith("lr")), None)
            suffix = f"@{lr}" if lr else ""
            cells = []
            for other in ("grpo", "vepo", "vepo_matched_step"):
                ref = other + suffix
                cells.append("—" if ref == lab else _fmt_pair(st["pairs"].get(f"{lab}|{ref}")))
            cells.append(_fmt_pair(st["pairs"].get(f"{lab}|grpo")) if lr else "(same)")
            per = " ".join(f"{m['accuracy'][s]:.1f}" for s in sorted(m["accuracy"]))
            lines.append(
                f"| {lab} | {len(m['seeds'])} | {per} | {m['mean']:.1f} | {_fmt_pair(m['vs_start'])} | "
                + " | ".join(cells) + " |"
            )
        lines += [
            "",
            (
                "| run | grad norm (step 1; mean) | update norm (step 1; mean) | entropy (step 1 → last 10) | "
                "parse fail (mean; last 10) | selected fraction | clip fraction |"
            ),
            "|---|---|---|---|---|---|---|",
        ]
        for lab in labels:
            d = st["methods"][lab]["diag_mean"]

            def f(key, field, digits=3, d=d):
                v = d[key][field]
                return "—" if v is None else f"{v:.{digits}f}"

            lines.append(
                f"| {lab} | {f('grad_norm', 'first')}; {f('grad_norm', 'mean')} | "
                f"{f('update_norm', 'first', 4)}; {f('update_norm', 'mean', 4)} | "
                f"{f('entropy', 'first')} → {f('entropy', 'last10')} | "
                f"{f('parse_fail', 'mean')}; {f('parse_fail', 'last10')} | {f('select_fraction', 'mean')} | "
                f"{f('clip_region', 'mean')} |"
            )
        lines.append("")
    return "\n".join(lines)


def cmd_summary(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {"task": TASK, "heldout_n": HELDOUT_N, "starts": {}}
    for name in sorted(os.listdir(args.out)):
        base_path = os.path.join(args.out, name, "baseline.json")
        if not os.path.exists(base_path):
            continue
        with open(base_path, encoding="utf-8") as f:
            baseline = json.load(f)
        runs: dict[str, dict[int, dict[str, Any]]] = {}
        for label in sorted(os.listdir(os.path.join(args.out, name))):
            ldir = os.path.join(args.out, name, label)
            if not os.path.isdir(ldir):
                continue
            for sd in sorted(os.listdir(ldir)):
                rdir = os.path.join(ldir, sd)
                if sd.startswith("seed-") and os.path.exists(os.path.join(rdir, "result.json")):
                    runs.setdefault(label, {})[int(sd[5:])] = run_summary(rdir)
        acc = {lab: {s: 100 * r["after"] for s, r in rs.items()} for lab, rs in runs.items()}
        b = 100 * baseline["accuracy"]
        methods = {}
        for lab, rs in runs.items():
            vals = list(acc[lab].values())
            methods[lab] = {
                "seeds": sorted(rs),
                "accuracy": acc[lab],
                "mean": sum(vals) / len(vals),
                "vs_start": paired(acc[lab], {s: b for s in acc[lab]}),
                "diag_mean": {
                    k: {f: _mean([r["diag"][k][f] for r in rs.values()]) for f in ("first", "mean", "last10")}
                    for k in next(iter(rs.values()))["diag"]
                },
                "n_anchor": {s: r["n_anchor"] for s, r in rs.items()},
                "responses_sample": {s: r["responses_sample"] for s, r in rs.items()},
                **({"per_step": {s: r["per_step"] for s, r in rs.items()}} if args.per_step else {}),
            }
        pairs = {}
        for a in runs:
            for c in runs:
                if a != c:
                    p = paired(acc[a], acc[c])
                    if p is not None:
                        pairs[f"{a}|{c}"] = p
        if args.compact:
            # The report's comparisons only: each run against GRPO, VEPO and the matched step at its own
            # lr, and against GRPO at the lab's lr.
            def wanted(key: str) -> bool:
                a, c = key.split("|")
                lr = next((part for part in a.split("@")[1:] if part.startswith("lr")), None)
                refs = {m + (f"@{lr}" if lr else "") for m in ("grpo", "vepo", "vepo_matched_step")} | {"grpo"}
                return c in refs

            # Per-seed differences follow from the methods' per-seed accuracies.
            pairs = {k: {f: x for f, x in v.items() if f not in ("diffs", "seeds")} for k, v in pairs.items() if wanted(k)}
            for m in methods.values():
                m.pop("responses_sample", None)
        out["starts"][name] = {
            "baseline": {k: baseline[k] for k in ("accuracy", "n", "warmstart", "sft_steps", "probe_exact")},
            "methods": methods,
            "pairs": pairs,
        }
    for path in args.onestep:
        with open(path, encoding="utf-8") as f:
            one = json.load(f)
        out.setdefault("onestep", {})[one["start"]] = one
    if args.markdown:
        print(markdown(out))
    else:
        json.dump(out, sys.stdout, indent=1)
        print()
    return 0


# ------------------------------------------------------------------------------------------ one step


def cmd_onestep(args: argparse.Namespace) -> int:
    """How far one update moves each kind of token, per method, under Adam's first step and under SGD.

    A fixed batch: the target responses of ``--n`` held-out examples, teacher-forced from the start
    model, all with advantage +1 (a batch of correct answers being reinforced; on-policy, ratio 1, so the
    clipped surrogate's gradient is ``-A ∇log π / denominator`` on the trained tokens). The VEPO and
    entropy top-20% of each response are chosen as the trainer chooses them
    (``visent.viz.scoring.score_responses``: clean vs perturbed pass, ``select_tokens``). For each method
    the gradient is turned into an update (Adam's first step, ``-lr · ĝ/(|ĝ| + ε)`` with ``ĝ`` the
    gradient clipped to norm 1 as the trainer does, lr = the task's; and an SGD step ``-η g`` with one
    small η for every method, where the change is still linear in η), applied to the weights, and the
    change of log π on the batch's tokens is averaged per token kind and over the tokens VEPO selects.
    """
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    from visent.core.selection import select_tokens
    from visent.data.synthetic import response_spans, target_response, token_kinds
    from visent.lab.rl import RLSettings, heldout_set
    from visent.lab.warmstart import sft_batch, warm_start
    from visent.viz.scoring import score_responses

    cfg = start_configs()[args.start]
    ws = warm_start(os.path.join(args.out, "ws"), cfg, eval_per_task=16, progress=False)
    model, processor = ws.model.float().eval(), ws.processor
    lr = RLSettings.for_task(TASK).learning_rate
    examples = heldout_set(TASK, args.n, cfg.seed)
    records = score_responses(
        model, processor, examples, [target_response(ex) for ex in examples], method="vepo", ratio=0.2,
        batch_size=16, compute_reward=False,
    )
    batch = sft_batch(processor, examples)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    targets = batch["labels"][:, 1:]
    valid = targets != -100
    B, T = targets.shape
    kinds = [["pad"] * T for _ in range(B)]
    masks = {"vepo": torch.zeros(B, T), "entropy": torch.zeros(B, T)}
    for b, (ex, rec) in enumerate(zip(examples, records)):
        pos = valid[b].nonzero().flatten().tolist()
        if len(pos) != len(rec.tokens):
            raise RuntimeError(f"example {ex.id}: {len(pos)} label tokens but {len(rec.tokens)} scored tokens")
        ks = token_kinds(rec.tokens, response_spans(ex))
        ent = torch.tensor([rec.signals["entropy"]], dtype=torch.float64)
        ent_top = select_tokens(ent, torch.ones_like(ent), 0.2, "response", "top")[0]
        for i, p in enumerate(pos):
            kinds[b][p] = ks[i] or "template"
            masks["vepo"][b, p] = float(rec.selected[i])
            masks["entropy"][b, p] = float(ent_top[i])
    v = valid.float()
    methods = {  # name -> (trained tokens, denominator)
        "grpo": (v, v.sum()),
        "vepo": (masks["vepo"], masks["vepo"].sum()),
        "vepo_matched_step": (masks["vepo"], v.sum()),
        "entropy_top20": (masks["entropy"], masks["entropy"].sum()),
    }
    params = [p for p in model.parameters() if p.requires_grad]

    def token_logps() -> torch.Tensor:
        logits = model(**inputs).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, targets.clamp_min(0)[..., None])[..., 0]
        return torch.where(valid, lp, torch.zeros_like(lp))

    with torch.no_grad():
        before = token_logps()
    logps = token_logps()
    grads = {}
    for name, (w, denom) in methods.items():
        loss = -(logps * w).sum() / denom  # A = +1 for every row
        grads[name] = torch.autograd.grad(loss, params, retain_graph=True)

    def norm(ts) -> float:
        return float(torch.sqrt(sum((t.double() ** 2).sum() for t in ts)))

    def adam_first_step(g):
        scale = min(1.0, 1.0 / max(norm(g), 1e-12))  # clip_grad_norm_(max_norm=1.0)
        return [-lr * (t * scale) / ((t * scale).abs() + 1e-8) for t in g]

    eta = args.eta
    groups = {
        "all": v.bool(),
        "anchor": torch.tensor([[k == "anchor" for k in row] for row in kinds]),
        "fork": torch.tensor([[k == "fork" for k in row] for row in kinds]),
        "derived": torch.tensor([[k == "derived" for k in row] for row in kinds]),
        "template": torch.tensor([[k == "template" for k in row] for row in kinds]),
    }
    out: dict[str, Any] = {
        "start": args.start, "warmstart": os.path.basename(ws.path), "n_responses": B, "lr": lr, "sgd_eta": eta,
        "tokens": {g: int(m.sum()) for g, m in groups.items()},
        "selected_fraction": {k: float(m.sum() / v.sum()) for k, m in masks.items()},
        "anchor_share": {k: float((m.bool() & groups["anchor"]).sum() / m.sum()) for k, m in masks.items()},
        "fork_share": {k: float((m.bool() & groups["fork"]).sum() / m.sum()) for k, m in masks.items()},
        "methods": {},
    }
    for name, (w, _) in methods.items():
        row: dict[str, Any] = {"grad_norm": norm(grads[name])}
        for opt, step in (("adam", adam_first_step(grads[name])), ("sgd", [-eta * t for t in grads[name]])):
            with torch.no_grad():
                for p, d in zip(params, step):
                    p.add_(d)
                delta = token_logps() - before
                for p, d in zip(params, step):
                    p.sub_(d)
            sel = w.bool() & valid
            res = {"update_norm": norm(step)}
            vsel = masks["vepo"].bool() & valid
            for g, m in {**groups, "trained": sel, "untrained": valid & ~sel, "vepo_selected": vsel}.items():
                res[f"dlogp_{g}"] = float(delta[m].mean()) if m.any() else None
            row[opt] = res
        out["methods"][name] = row
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--starts", nargs="+", default=["ws91", "ws50"], choices=sorted(start_configs()))
    r.add_argument("--methods", nargs="+", default=["grpo", "vepo", "vepo_matched_step"])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    r.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the task's)")
    r.add_argument(
        "--max-grad-norm", type=float, default=None,
        help="gradient clipping threshold for every run (0 = none; default: the trainer's 1.0)",
    )
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    s.add_argument("--markdown", action="store_true", help="the report's tables instead of the JSON")
    s.add_argument("--per-step", action="store_true", help="include every run's per-step series in the JSON")
    s.add_argument("--compact", action="store_true", help="only the report's comparisons, no response samples")
    s.add_argument("--onestep", nargs="*", default=[], help="onestep JSON files to include under 'onestep'")
    o = sub.add_parser("onestep")
    o.add_argument("--out", required=True)
    o.add_argument("--start", default="ws91", choices=sorted(start_configs()))
    o.add_argument("--n", type=int, default=32, help="responses in the fixed batch")
    o.add_argument("--eta", type=float, default=1e-3, help="SGD step size (one for every method)")
    args = p.parse_args(argv)
    return {"run": cmd_run, "summary": cmd_summary, "onestep": cmd_onestep}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
