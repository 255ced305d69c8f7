"""Step time of VEPO versus plain GRPO on the lab's tiny Qwen2.5-VL, side by side in one process (CPU).

Two ``VisentGRPOTrainer`` s are built from the same weights, one with ``src/visent/configs/grpo.yaml`` (all tokens)
and one with ``src/visent/configs/vepo.yaml`` (token selection from the counterfactual pass), both overridden with
the lab's RL settings (8 prompts × 8 responses per step, 28 completion tokens, lab reward). Each
measured step is a full training step through TRL's ``training_step`` — sampling, rewards, advantages,
(VEPO) the counterfactual pass and mask, the policy loss, backward — and an AdamW step; and every step
of either trainer starts from the same weights with the same sampling seed, so both trainers sample
identical responses and get identical rewards: the only difference in work is VEPO's. Steps of the two
trainers are interleaved (alternating which goes first) so machine load drifts hit both alike; each
step is run ``--repeats`` times per trainer and the fastest run counts (other processes' interference
only adds time); the median over steps after warm-up is reported.

A random model answers nothing right: every group's rewards are equal, every response is skipped and the
ratio says nothing. So the default model is the lab's warm-started one (``visent.lab.warmstart``, reloaded
from its cache under ``--warmstart-dir`` or trained there first, ~6 min on one core).

Usage:
    python benchmarks/vepo_overhead.py                         # noise 0 and 0.5, 2 warm-up + 7 measured steps, best of 2
    python benchmarks/vepo_overhead.py --model tiny:qwen2_5_vl # random tiny model (ratio meaningless)
    python benchmarks/vepo_overhead.py --model tiny:qwen3_vl --reward random --prompts 2 --K 4 --C 8 \
        --warmup 1 --steps 1 --repeats 1 --noise 0                 # any family in visent.models: a smoke run

The last line reads ``vepo/grpo step-time ratio: noise0=X noise0.5=Y``: per noise level, the median over
measured steps of (VEPO step time / GRPO step time on the same rows), step time being the CPU time of
this single-threaded process. On a shared machine wall-clock steps of the same work vary by 2x with
other jobs' load, which process CPU time mostly ignores; wall-clock ratios are printed too, and on an
idle machine the two agree.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import platform
import statistics
import sys
import time

import torch

from visent.configs import CONFIG_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_lab_model(spec: str, warmstart_dir: str):
    """``(model, processor, description)``."""
    if spec == "warmstart":
        try:
            from visent.lab.warmstart import WarmStartConfig, warm_start
        except ImportError as e:
            raise SystemExit(f"visent.lab.warmstart is not available ({e}); pass --model tiny:qwen2_5_vl or a path")

        result = warm_start(warmstart_dir, WarmStartConfig(), progress=False)
        acc = result.info.get("heldout", {}).get("accuracy")
        desc = f"warm-started tiny Qwen2.5-VL ({result.path}, held-out greedy accuracy {acc})"
        return result.model, result.processor, desc
    import json

    from visent.models import load_model_and_processor

    model, processor = load_model_and_processor(spec)
    info_path = os.path.join(spec, "warmstart.json")
    if os.path.isfile(info_path):  # a warm-start cache folder passed by path
        with open(info_path) as f:
            acc = json.load(f).get("heldout", {}).get("accuracy")
        return model, processor, f"warm-started tiny Qwen2.5-VL ({spec}, held-out greedy accuracy {acc})"
    return model, processor, f"{spec} (a random model answers nothing right: every group is uniform and skipped)"


def make_trainer(config_name: str, model, processor, dataset, args, out_dir: str, extra: list[str] = ()):
    from visent.trainer.build import freeze_vision_tower
    from visent.trainer.cli import parse_config
    from visent.trainer.grpo import VisentGRPOTrainer
    from visent.trainer.sources import resolve_rewards

    overrides = {
        "model_name_or_path": "unused", "dataset": f"lab:{args.task}", "reward_funcs": args.reward or f"r1_{args.task}",
        "learning_rate": 1e-4, "num_generations": args.K, "per_device_train_batch_size": args.prompts * args.K,
        "gradient_accumulation_steps": 1, "max_completion_length": args.C, "temperature": 1.0,
        "max_steps": 1000, "save_strategy": "no", "report_to": "none", "seed": 0, "perturbation_seed": 0,
        "use_cpu": True, "bf16": False, "gradient_checkpointing": False, "output_dir": out_dir,
        "logging_steps": 1000,
    }
    argv = ["--config", os.path.join(CONFIG_DIR, config_name)]
    for k, v in overrides.items():
        argv += [f"--{k}", str(v).lower() if isinstance(v, bool) else str(v)]
    for item in extra:  # KEY=VALUE overrides of this trainer's config
        key, _, value = item.partition("=")
        argv += [f"--{key}", value]
    config = parse_config(argv)
    config.model_init_kwargs = None
    # Timing compares the methods' own work on the same rows: no refills, the model's own image size.
    config.dynamic_sampling, config.min_pixels, config.max_pixels = "none", None, None
    freeze_vision_tower(model)
    return VisentGRPOTrainer(
        model=model, reward_funcs=resolve_rewards([args.reward or f"r1_{args.task}"]), args=config, train_dataset=dataset,
        processing_class=processor,
    )


class Runner:
    """One trainer, stepped from fixed weights through TRL's own ``training_step``; records step times,
    the time spent building the token mask and the responses whose counterfactual pass was skipped."""

    def __init__(self, name: str, trainer):
        from visent.trainer.grpo import SKIPPED

        self.name, self.trainer = name, trainer
        self.initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        self.times: list[float] = []  # wall clock, s
        self.cpu_times: list[float] = []  # CPU time of this process, s
        self.cf_times: list[float] = []
        self.pp_times: list[float] = []  # VPPO's / PAPO's perception pass (the trainer's time/perception_pass_s)
        self.skipped = self.responses = 0
        self._cf, self._skipped = 0.0, 0
        # The mask is built by `_add_mask` (at generation or, deferred, at the update); trainers from before
        # that split build it in `after_generation` (kept so older commits can be measured the same way).
        hook = "_add_mask" if hasattr(trainer, "_add_mask") else "after_generation"
        real = getattr(trainer, hook)

        def timed(batch, *rest):  # mask building (counterfactual pass, scores, selection)
            t0 = time.perf_counter()
            out = real(batch, *rest)
            self._cf += time.perf_counter() - t0
            self._skipped += int(batch[SKIPPED].sum()) if SKIPPED in batch else 0
            return out

        setattr(trainer, hook, timed)

    def step(self, rows, step: int, seed: int, record: bool, repeats: int = 1) -> None:
        """One training step on ``rows``, from the initial weights, run ``repeats`` times (identical work:
        same weights, same sampling seed); the fastest run is recorded, as ``timeit`` does, because
        interference from other processes only ever adds time."""
        best = None
        for _ in range(repeats):
            result = self._once(rows, step, seed)
            if best is None or result[1] < best[1]:
                best = result
        if record:
            dt, ct, cf, skipped, pp = best
            if pp is not None:
                self.pp_times.append(pp)
            self.times.append(dt)
            self.cpu_times.append(ct)
            self.cf_times.append(cf)
            self.skipped += skipped
            self.responses += len(rows)

    def _once(self, rows, step: int, seed: int) -> tuple[float, float, float, int, float | None]:
        tr = self.trainer
        pp = tr._metrics["train"].get("time/perception_pass_s", [])
        n_pp = len(pp)
        tr.model.load_state_dict(self.initial)
        params = [p for p in tr.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=tr.args.learning_rate)
        tr.model.train()
        tr.state.global_step = step
        tr.current_gradient_accumulation_steps = 1  # set by transformers' train loop, read by TRL's step
        self._cf, self._skipped = 0.0, 0
        torch.manual_seed(seed)
        gc.collect()
        gc.disable()  # a collection inside one trainer's step would be charged to it alone
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            tr.training_step(tr.model, rows, None)  # TRL: sample, score, (VEPO) mask, loss, backward
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt, ct = time.perf_counter() - t0, time.process_time() - c0
        finally:
            gc.enable()
        pp = tr._metrics["train"].get("time/perception_pass_s", [])
        return dt, ct, self._cf, self._skipped, (pp[-1] if len(pp) > n_pp else None)


def measure(noise: float, model, processor, args) -> float:
    import tempfile

    from visent.trainer.sources import load_train_dataset

    n_prompts = args.prompts * (args.warmup + args.steps)
    dataset = load_train_dataset(f"lab:{args.task}", n_prompts, 10_000, noise)
    with tempfile.TemporaryDirectory() as tmp:
        grpo = Runner("grpo", make_trainer("grpo.yaml", copy.deepcopy(model), processor, dataset, args, tmp))
        vepo = Runner(args.method, make_trainer(f"{args.method}.yaml", copy.deepcopy(model), processor, dataset,
                                                 args, tmp, args.vepo_set))
        for i in range(args.warmup + args.steps):
            rows = [dataset[j] for j in range(i * args.prompts, (i + 1) * args.prompts) for _ in range(args.K)]
            order = (grpo, vepo) if i % 2 == 0 else (vepo, grpo)
            for runner in order:
                runner.step(rows, step=i, seed=1000 + i, record=i >= args.warmup, repeats=args.repeats)
    def paired(a: list[float], b: list[float]) -> float:
        # Each VEPO step is paired with the GRPO step on the same rows, run right before or after it.
        return statistics.median(y / x for x, y in zip(a, b))

    med = statistics.median
    wall, cpu = paired(grpo.times, vepo.times), paired(grpo.cpu_times, vepo.cpu_times)
    print(f"noise={noise:g}: wall  GRPO {med(grpo.times) * 1e3:6.1f} ms  VEPO {med(vepo.times) * 1e3:6.1f} ms  "
          f"median paired ratio {wall:.3f}")
    print(f"noise={noise:g}: CPU   GRPO {med(grpo.cpu_times) * 1e3:6.1f} ms  VEPO {med(vepo.cpu_times) * 1e3:6.1f} ms  "
          f"median paired ratio {cpu:.3f}")
    print(f"noise={noise:g}: VEPO mask building (counterfactual pass, scores, selection) {med(vepo.cf_times) * 1e3:.1f} ms "
          f"wall per step; skipped the counterfactual pass for {vepo.skipped}/{vepo.responses} responses "
          f"(groups with all-equal rewards)")
    if vepo.pp_times:
        print(f"noise={noise:g}: perception pass (VPPO / PAPO) {med(vepo.pp_times) * 1e3:.1f} ms wall per step")
    # Directly measured, so free of the step-to-step noise of two separate steps: what VEPO adds to GRPO's step.
    print(f"noise={noise:g}: 1 + mask building / GRPO step (wall) = {1 + med(vepo.cf_times) / med(grpo.times):.3f}")
    print(f"noise={noise:g}: per-step wall ms GRPO {[round(t * 1e3) for t in grpo.times]}")
    print(f"noise={noise:g}: per-step wall ms VEPO {[round(t * 1e3) for t in vepo.times]}")
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="warmstart", help="'warmstart' (default), tiny:<family> or a path")
    parser.add_argument("--warmstart-dir", default=os.path.join(REPO, "runs", "warmstart"),
                        help="cache folder of visent.lab.warmstart (trained there on first use)")
    parser.add_argument("--task", default="counting")
    parser.add_argument("--reward", default=None,
                        help="reward name in visent.rewards.REWARDS (default r1_<task>: accuracy + format); "
                             "an accuracy-only reward such as 'counting' makes noisy groups uniform more often")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step (the lab RL default)")
    parser.add_argument("--K", type=int, default=8, help="responses per prompt")
    parser.add_argument("--C", type=int, default=28, help="max completion tokens")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each step per trainer; the fastest counts (interference only adds time)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--method", default="vepo",
                        help="config compared with grpo.yaml: vepo (default), vppo, papo_g, papo_d, vepo_weight, ...")
    parser.add_argument("--vepo-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of src/visent/configs/vepo.yaml, e.g. entropy_schedule=none to leave out its entropy bonus")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    model, processor, desc = load_lab_model(args.model, args.warmstart_dir)
    print(f"# {datetime.date.today()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), CPU float32")
    print(f"# model: {desc}")
    print(f"# task lab:{args.task}, {args.prompts} prompts x {args.K} responses, max {args.C} completion tokens, "
          f"{args.warmup} warm-up + {args.steps} measured steps per trainer, interleaved, "
          + (f"fastest of {args.repeats} runs of each" if args.repeats > 1 else "one run of each"))
    print(f"# src/visent/configs/grpo.yaml vs src/visent/configs/{args.method}.yaml{' with ' + ' '.join(args.vepo_set) if args.vepo_set else ''}"
          " (dynamic sampling off, the model's own image size)")
    ratios = {noise: measure(noise, model, processor, args) for noise in args.noise}
    print(f"{args.method}/grpo step-time ratio: " + " ".join(f"noise{n:g}={r:.3f}" for n, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
