"""Real-scale device check for issue 20, in one call: random weights, no network, <= 8 minutes on one H100.

Parts (``--parts``, all by default), each printing one or a few ``[part]`` lines:

- ``update``: on Qwen2.5-VL-3B built from its config, one AdamW step at lr 1e-6 (the papers' full
  fine-tuning lr) from a real gradient, applied to the language model's weights held in float32 (visent's
  default: fp32 master weights, ``visent.trainer.precision``) and in bfloat16 (a released checkpoint loaded
  as stored): the fraction of weights that changed, and the fraction the half-ulp formula predicts.
- ``steps``: for each of ``--methods`` (method config names, ``src/visent/configs/<name>.yaml``: grpo, vepo,
  vppo, papo_g, cppo by default; random rewards and no dynamic-sampling refills, so every method steps the
  same rows), training steps through the real ``VisentGRPOTrainer`` on the 3B (fp32 master weights, bf16
  autocast on a GPU), with generation (transformers, ``--K`` responses of ``--C`` tokens for ``--prompts``
  prompts of ``lab:counting``, random rewards): median step time after a warm-up step, the
  counterfactual pass's share, peak CUDA memory.
- ``cf7b``: the counterfactual pass alone on Qwen2.5-VL-7B (bf16 weights), clean + perturbed rows in one
  pass and with the clean hidden states reused (``benchmarks/gpu/counterfactual.py``'s batch).
- ``floor``: the statistics floor: JSD and |entropy gap| between the clean image and the image perturbed
  by Gaussian noise of std 1e-6 (which bf16 pixel values cannot even hold) on the 7B, per forward path:
  ``prefix_cached`` (perturbed rows through the pass's prompt cache, clean hidden states from a full
  forward, as the trainer reuses TRL's) and ``full`` (the perturbed rows through the clean forward's path:
  ``counterfactual_stats(..., forward="full")``, config ``counterfactual_forward: full``).

``--tiny``: every model replaced by a few-layer stand-in of the same family, so the script runs on a CPU
in a couple of minutes (``tests/slow/test_benchmark_scripts.py``).

Usage (repository root)::

    PYTHONPATH=src python benchmarks/gpu/real_scale.py                  # one H100
    PYTHONPATH=src python benchmarks/gpu/real_scale.py --tiny           # CPU
"""

from __future__ import annotations

import argparse
import gc
import inspect
import math
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import counterfactual as cfbench  # benchmarks/gpu/counterfactual.py: the 7B builder and batch

from visent.trainer.counterfactual import counterfactual_stats, perturb_batch_images
from visent.trainer.precision import vanishing_update_fraction

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

# Qwen/Qwen2.5-VL-3B-Instruct config.json: decoder and vision tower (vocabulary 151,936, tied embeddings).
QWEN25_VL_3B = {
    "text": {"vocab_size": 151_936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                 "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128_000,
                 "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                     "mrope_section": [16, 24, 24]}},
    "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
                   "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                   "fullatt_block_indexes": [7, 15, 23, 31]},
    "tie_word_embeddings": True,
}
# --tiny: the same structure, a few layers wide enough for M-RoPE (head_dim 16 -> sections [2, 3, 3]).
TINY_3B = {
    "text": dict(QWEN25_VL_3B["text"], vocab_size=4096, hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}),
    "vision": dict(QWEN25_VL_3B["vision"], depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                   out_hidden_size=64, fullatt_block_indexes=[1]),
    "tie_word_embeddings": True,
}


def say(part: str, text: str) -> None:
    print(f"[{part}] {text}", flush=True)


def peak() -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if CUDA else "n/a (CPU)"


def build_3b(tiny: bool):
    """``(model, processor)``: Qwen2.5-VL-3B's architecture (random weights, float32) with the tiny
    tokenizer's special-token ids; ids the tokenizer lacks decode to nothing, which random rewards ignore."""
    import transformers

    from visent.models.tiny.qwen import SPECIAL_TOKENS, build_processor, build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    processor = build_processor("qwen2_5_vl", tokenizer, max_image_side=112)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    arch = TINY_3B if tiny else QWEN25_VL_3B
    text = dict(arch["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=arch["tie_word_embeddings"])
    cfg = transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=arch["vision"], image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=arch["tie_word_embeddings"],
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model, processor


def part_update(model, processor, lr: float) -> None:
    """One AdamW step from a real gradient, on fp32 and on bf16 copies of each trained tensor."""
    g = torch.Generator().manual_seed(0)
    vocab = len(processor.tokenizer)
    ids = torch.randint(0, vocab, (2, 256), generator=g).to(DEVICE)
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=CUDA):
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1)).backward()
    del logits
    counts = {torch.float32: 0, torch.bfloat16: 0}
    moved_total = 0
    bf16_copies = []
    for p in model.parameters():
        if not p.requires_grad or p.grad is None:
            continue
        live = p.grad != 0  # weights with no gradient (embedding rows of unseen tokens) move in no dtype
        moved_total += int(live.sum())
        for dtype in counts:
            w = p.detach().to(dtype).clone().requires_grad_(True)
            w.grad = p.grad.to(dtype)
            torch.optim.AdamW([w], lr=lr, weight_decay=0.0).step()
            counts[dtype] += int(((w.detach() != p.detach().to(dtype)) & live).sum())
        bf16_copies.append(p.detach()[live].to(torch.bfloat16))
    predicted = 1 - vanishing_update_fraction(bf16_copies, lr)
    model.zero_grad(set_to_none=True)
    say("update", f"one AdamW step at lr {lr:g} on {moved_total:,} trained weights with a gradient: "
        f"float32 weights {counts[torch.float32] / moved_total:.1%} changed, bfloat16 weights "
        f"{counts[torch.bfloat16] / moved_total:.1%} changed (half-ulp formula: {predicted:.1%})")


class _StepClock:
    """A ``TrainerCallback`` collecting step wall times and logged metrics."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if CUDA:
                    torch.cuda.synchronize()
                clock.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if CUDA:
                    torch.cuda.synchronize()
                clock.times.append(time.perf_counter() - clock.t0)

            def on_log(self, args, state, control, logs=None, **kw):
                clock.logs.append(dict(logs or {}))

        self.times, self.logs, self.t0 = [], [], 0.0
        self.callback = _Callback()


def part_steps(model, processor, methods: list[str], args) -> None:
    from visent.trainer.cli import parse_config
    from visent.trainer.grpo import VisentGRPOTrainer
    from visent.trainer.sources import load_train_dataset, resolve_rewards

    dataset = load_train_dataset("lab:counting", 64, 0)
    for method in methods:
        out = tempfile.mkdtemp(prefix=f"real_scale_{method}_")
        argv = [
            "--config", method, "--model_name_or_path", "tiny:qwen2_5_vl",
            "--dataset", "lab:counting", "--output_dir", out, "--report_to", "none", "--save_strategy", "no",
            "--max_steps", str(1 + args.steps), "--num_generations", str(args.K), "--per_device_train_batch_size",
            str(args.K * args.prompts), "--gradient_accumulation_steps", "1", "--max_completion_length", str(args.C),
            "--logging_steps", "1", "--gradient_checkpointing", "true" if CUDA else "false",
            "--use_cpu", "false" if CUDA else "true", "--bf16", "true" if CUDA else "false",
            # the baselines' configs name the authors' reward and DAPO's refills: random rewards, no refills
            "--reward_funcs", "random", "--dynamic_sampling", "none",
        ]
        config = parse_config(argv)
        # Every method sees the same images: the baselines' real-scale pixel budget would resize the lab's small
        # images up to 200,704 px and time the image size, not the method.
        config.min_pixels = config.max_pixels = None
        clock = _StepClock()
        trainer = VisentGRPOTrainer(model=model, reward_funcs=resolve_rewards(["random"]), args=config,
                                    train_dataset=dataset, processing_class=processor, callbacks=[clock.callback])
        if CUDA:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        timed = clock.times[1:] or clock.times
        cf = [r["time/counterfactual_s"] for r in clock.logs[1:] if "time/counterfactual_s" in r]
        pp = [r["time/perception_pass_s"] for r in clock.logs[1:] if "time/perception_pass_s" in r]
        say("steps", f"{method}: {statistics.median(timed):.2f} s/step (median of {len(timed)} after 1 warm-up; "
            f"{args.prompts} prompts x K={args.K}, {args.C} completion tokens, generation included), "
            f"counterfactual pass {statistics.median(cf) if cf else 0:.2f} s, perception pass (VPPO/PAPO) "
            f"{statistics.median(pp) if pp else 0:.2f} s, peak CUDA memory {peak()}")
        trainer.accelerator.free_memory()
        del trainer
        model.zero_grad(set_to_none=True)
        gc.collect()


def _cf_setup(tiny: bool, B: int, C: int):
    """The 7B (bf16), a batch of B responses after one prompt image each, and its backbone/head."""
    model = cfbench.build_model("7b", smoke=tiny)
    batch = cfbench.make_batch(B, C, 16 if tiny else 128, 64 if tiny else 448, group=min(4, B), patch=14)
    return model, batch, model.base_model, model.get_output_embeddings()


def _gib(x: float) -> str:
    return "n/a (CPU)" if math.isnan(x) else f"{x:.2f} GiB"


def part_cf7b(model, batch, backbone, head, C: int) -> None:
    from visent.models import adapter_for
    from visent.perturb import PatchLayout

    B = batch["completion_ids"].size(0)
    seeds = [i // 4 for i in range(B)]
    perturbed = perturb_batch_images(batch, seeds, "pixel_values_gaussian", 2.0, PatchLayout(),
                                     adapter=adapter_for(model))
    rows = list(range(B))
    with torch.no_grad():
        clean = backbone(**cfbench.full_inputs(batch), use_cache=False).last_hidden_state[:, -C - 1 : -1]
        both = cfbench.measure(lambda: counterfactual_stats(backbone, head, batch, rows, perturbed), 2)
        reuse = cfbench.measure(
            lambda: counterfactual_stats(backbone, head, batch, rows, perturbed, clean_hidden=clean), 2)
    tokens = int(batch["completion_mask"].sum())
    say("cf7b", f"Qwen2.5-VL-7B architecture, {B} responses, {tokens} response tokens: clean+perturbed "
        f"{both[0]:.3f} s (peak extra {_gib(both[1])}), perturbed only (clean reused) {reuse[0]:.3f} s "
        f"(peak extra {_gib(reuse[1])})")


def part_floor(model, batch, backbone, head, C: int) -> None:
    from visent.models import adapter_for
    from visent.perturb import PatchLayout

    B = batch["completion_ids"].size(0)
    perturbed = perturb_batch_images(batch, [i // 4 for i in range(B)], "pixel_values_gaussian", 1e-6,
                                     PatchLayout(), adapter=adapter_for(model))
    rows, valid = list(range(B)), batch["completion_mask"].bool()
    # `forward` (the counterfactual_forward option, issue 20 item 5); older checkouts lack it
    has_option = "forward" in inspect.signature(counterfactual_stats).parameters
    with torch.no_grad():
        clean = backbone(**cfbench.full_inputs(batch), use_cache=False).last_hidden_state[:, -C - 1 : -1]
        paths = {"prefix_cached": {"clean_hidden": clean}}
        if has_option:
            paths = {name: {"clean_hidden": clean, "forward": name} for name in ("prefix_cached", "full")}
        for name, kw in paths.items():
            s = counterfactual_stats(backbone, head, batch, rows, perturbed, **kw)
            jsd, gap = s.jsd.float()[valid], s.gap.float().abs()[valid]
            say("floor", f"{name}: perturbation std 1e-6, JSD mean {jsd.mean():.2e} max {jsd.max():.2e}, "
                f"|entropy gap| mean {gap.mean():.2e} max {gap.max():.2e} over {int(valid.sum())} tokens")
    if not has_option:
        say("floor", "full: skipped: counterfactual_stats has no `forward` (counterfactual_forward) option in this "
            "checkout (issue 20 item 5 adds it)")


def main() -> None:
    from visent.trainer.build import freeze_vision_tower

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="few-layer stand-ins (CPU)")
    ap.add_argument("--parts", nargs="+", default=["update", "steps", "cf7b", "floor"],
                    choices=["update", "steps", "cf7b", "floor"])
    ap.add_argument("--methods", nargs="+", default=["grpo", "vepo", "vppo", "papo_g", "cppo"],
                    help="method config names (src/visent/configs/<name>.yaml) to step; CPPO's two extra passes "
                    "carry gradient (the most memory)")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--K", type=int, default=8, help="responses per prompt")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step")
    ap.add_argument("--C", type=int, default=None, help="completion tokens (default 256; --tiny 8)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per method, after one warm-up")
    ap.add_argument("--cf_B", type=int, default=8, help="responses in the 7B counterfactual batch")
    args = ap.parse_args()
    args.C = args.C or (8 if args.tiny else 256)
    device = torch.cuda.get_device_name() if CUDA else "CPU"
    print(f"# real_scale {time.strftime('%Y-%m-%d %H:%M')} {device} torch {torch.__version__}"
          f"{' TINY stand-ins' if args.tiny else ''}", flush=True)
    start = time.perf_counter()
    if {"update", "steps"} & set(args.parts):
        model, processor = build_3b(args.tiny)
        freeze_vision_tower(model)  # as every config does: the language model is trained
        n = sum(p.numel() for p in model.parameters())
        say("model", f"Qwen2.5-VL-3B architecture{' (tiny stand-in)' if args.tiny else ''}: {n:,} parameters, float32")
        if "update" in args.parts:
            part_update(model, processor, args.lr)
        if "steps" in args.parts:
            part_steps(model, processor, args.methods, args)
        del model
        gc.collect()
        if CUDA:
            torch.cuda.empty_cache()
    if {"cf7b", "floor"} & set(args.parts):
        C = 16 if args.tiny else 1024
        model, batch, backbone, head = _cf_setup(args.tiny, 4 if args.tiny else args.cf_B, C)
        if "cf7b" in args.parts:
            part_cf7b(model, batch, backbone, head, C)
        if "floor" in args.parts:
            part_floor(model, batch, backbone, head, C)
    print(f"# done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
