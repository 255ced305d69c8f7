"""VEPO's counterfactual pass on real-size Qwen2.5-VL-3B / -7B and Qwen3-VL-8B *architectures* (random weights,
no download).

Needs one CUDA GPU (an H100 80 GB fits the 7B with the defaults). For each model it measures, on the same
batch (B responses of C completion tokens after a prompt with one image), median of ``--reps`` after a
warm-up, with ``torch.cuda`` timers and peak-memory counters:

- ``grpo_old_logps``  the no-grad teacher-forced forward GRPO runs anyway (per-token log-probs, computed
  in chunks as TRL's fused LM head does),
- ``grpo_train``      forward + backward of the policy on the batch (gradient checkpointing, vision tower
  frozen as in VEPO); with ``grpo_old_logps`` this is a GRPO step without generation,
- ``visent_cf``       visent's counterfactual pass: clean + perturbed rows in one batched forward, statistics
  from hidden states in chunks (``visent.trainer.counterfactual.counterfactual_stats``),
- ``visent_cf_reuse`` the same when the trainer already has the clean hidden states (only the perturbed
  rows are forwarded),
- ``authors_cf``      the authors' pipeline: two full forwards to float32 ``(B, C, V)`` logits, full
  softmax probabilities, statistics over the materialised tensors.

Generation is not timed (it dominates a real step and is identical with and without VEPO), so the printed
step-time ratio ``(grpo + visent_cf) / grpo`` is an upper bound on VEPO's relative overhead.

Usage (from the repository root, on a GPU machine)::

    PYTHONPATH=src python benchmarks/gpu/counterfactual.py --models 3b 7b qwen3vl8b --B 8 --C 1024
    PYTHONPATH=src python benchmarks/gpu/counterfactual.py --smoke --models 3b qwen3vl8b --B 4 --C 32 \
        --reps 1 --image_px 128 --prompt_text 16          # a few-layer stand-in: checks the script on a CPU

Qwen3-VL-8B (``qwen3vl8b``): 16-px patches, mean/std 0.5, deepstack features from vision layers 8/16/24
(cached with the image embeddings by the counterfactual pass), interleaved M-RoPE.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from visent.models import adapter_for
from visent.perturb import PatchLayout
from visent.trainer.counterfactual import counterfactual_stats, perturb_batch_images

# Published architecture hyper-parameters of the two checkpoints (config.json of each).
ARCHS = {
    "3b": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
               "num_key_value_heads": 2, "tie_word_embeddings": True, "out_hidden_size": 2048},
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
               "num_key_value_heads": 4, "tie_word_embeddings": False, "out_hidden_size": 3584},
    # Qwen3-VL-8B-Instruct: a Qwen3-8B decoder (head_dim 128) and a 27-layer 1152-wide vision encoder.
    "qwen3vl8b": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
                      "num_key_value_heads": 8, "tie_word_embeddings": False, "out_hidden_size": 4096, "family": "qwen3_vl"},
}
TITLES = {"3b": "Qwen2.5-VL-3B", "7b": "Qwen2.5-VL-7B", "qwen3vl8b": "Qwen3-VL-8B"}
# --smoke: a few-layer stand-in of the same shapes, to check this script on a CPU before spending GPU time.
SMOKE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "tie_word_embeddings": True, "out_hidden_size": 64}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
VOCAB = 151_936
IMAGE_TOKEN, VISION_START, VISION_END = 151655, 151652, 151653


def family(name: str) -> str:
    return ARCHS[name].get("family", "qwen2_5_vl")


def patch_size(name: str) -> int:
    return 16 if family(name) == "qwen3_vl" else 14


def build_model(name: str, smoke: bool = False):
    import transformers

    a = dict(SMOKE if smoke else ARCHS[name], family=family(name))  # 3b/7b leave "family" to family()
    text = {"vocab_size": VOCAB, "hidden_size": a["hidden_size"], "intermediate_size": a["intermediate_size"],
                "num_hidden_layers": a["num_hidden_layers"], "num_attention_heads": a["num_attention_heads"],
                "num_key_value_heads": a["num_key_value_heads"], "max_position_embeddings": 32768}
    common = {"image_token_id": IMAGE_TOKEN, "vision_start_token_id": VISION_START, "vision_end_token_id": VISION_END,
                  "tie_word_embeddings": a["tie_word_embeddings"]}
    if a["family"] == "qwen3_vl":
        head_dim = 16 if smoke else 128
        text.update(head_dim=head_dim, rope_parameters={
            "rope_type": "default", "rope_theta": 5e6, "mrope_interleaved": True,
            "mrope_section": [4, 2, 2] if smoke else [24, 20, 20]})
        vision = {"depth": 2 if smoke else 27, "hidden_size": 64 if smoke else 1152,
                      "intermediate_size": 128 if smoke else 4304, "num_heads": 4 if smoke else 16,
                      "out_hidden_size": a["out_hidden_size"], "patch_size": 16, "spatial_merge_size": 2,
                      "temporal_patch_size": 2, "num_position_embeddings": 2304,
                      "deepstack_visual_indexes": [0] if smoke else [8, 16, 24]}
        cfg = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **common)
        model_cls = transformers.Qwen3VLForConditionalGeneration
    else:
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6,
                                   "mrope_section": [2, 3, 3] if smoke else [16, 24, 24]}
        vision = {"depth": 2 if smoke else 32, "hidden_size": 64 if smoke else 1280,
                      "intermediate_size": 128 if smoke else 3420, "num_heads": 4 if smoke else 16,
                      "out_hidden_size": a["out_hidden_size"], "patch_size": 14, "spatial_merge_size": 2,
                      "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}
        cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        model_cls = transformers.Qwen2_5_VLForConditionalGeneration
    cfg._attn_implementation = "sdpa"
    with torch.device(DEVICE):
        model = model_cls(cfg).to(torch.bfloat16)
    model.eval()
    return model


def make_batch(B: int, C: int, prompt_text: int, image_px: int, group: int, seed: int = 0, patch: int = 14) -> dict:
    """A TRL-shaped generation batch: B = (B/group) prompts × group responses, one image per prompt."""
    g = torch.Generator().manual_seed(seed)
    grid = (image_px // (2 * patch)) * 2  # whole merged 2×2 blocks, as the processor's resize makes it
    n_img_tokens = (grid // 2) ** 2
    prompts = []
    for _ in range(B // group):
        text = torch.randint(0, 150_000, (prompt_text,), generator=g)
        ids = torch.cat([text[:8], torch.tensor([VISION_START]), torch.full((n_img_tokens,), IMAGE_TOKEN),
                         torch.tensor([VISION_END]), text[8:]])
        prompts += [ids] * group
    prompt_ids = torch.stack(prompts)
    completion_ids = torch.randint(0, 150_000, (B, C), generator=g)
    lengths = torch.randint(C // 2, C + 1, (B,), generator=g)
    completion_mask = (torch.arange(C)[None] < lengths[:, None]).long()
    rows = grid * grid
    pv_prompt = [torch.randn(rows, 3 * 2 * patch * patch, generator=g) for _ in range(B // group)]
    pixel_values = torch.cat([pv for pv in pv_prompt for _ in range(group)])
    batch = {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "pixel_values": pixel_values.to(torch.bfloat16), "image_grid_thw": torch.tensor([[1, grid, grid]] * B),
        "num_images": [1] * B,
        # As TRL hands it over: 1 on image tokens, zeros over the completion (M-RoPE needs it).
        "mm_token_type_ids": torch.cat([(prompt_ids == IMAGE_TOKEN).long(), torch.zeros_like(completion_ids)], 1),
    }
    return {k: (v.to(DEVICE) if torch.is_tensor(v) else v) for k, v in batch.items()}


def full_inputs(batch: dict, pixel_values=None) -> dict:
    return {
        "input_ids": torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
        "attention_mask": torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1),
        "pixel_values": batch["pixel_values"] if pixel_values is None else pixel_values,
        "image_grid_thw": batch["image_grid_thw"],
        "mm_token_type_ids": batch["mm_token_type_ids"],
    }


def measure(fn, reps: int) -> tuple[float, float]:
    """(median seconds, peak GiB allocated beyond what was live before) of ``fn``."""
    fn()  # warm-up
    if DEVICE == "cpu":  # --smoke on a CPU: time only
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, float("nan")
    torch.cuda.synchronize()
    times, peaks = [], []
    for _ in range(reps):
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        peaks.append((torch.cuda.max_memory_allocated() - base) / 2**30)
    return statistics.median(times), max(peaks)


def logps_chunked(model, batch, C: int, chunk: int = 1024) -> torch.Tensor:
    """Per-token log-probs of the completion from hidden states, a chunk of tokens at a time."""
    backbone, head = model.base_model, model.get_output_embeddings()
    h = backbone(**full_inputs(batch), use_cache=False).last_hidden_state[:, -C - 1 : -1]
    flat, ids = h.reshape(-1, h.size(-1)), batch["completion_ids"].reshape(-1)
    out = []
    for i in range(0, flat.size(0), chunk):
        z = head(flat[i : i + chunk]).float()
        out.append(z.gather(-1, ids[i : i + chunk, None]).squeeze(-1) - torch.logsumexp(z, -1))
    return torch.cat(out).view(h.shape[:2])


def authors_stats(model, batch, perturbed_pv, C: int):
    """The materialising pipeline: float32 (B, C, V) logits of both passes, full probabilities."""
    logits = model(**full_inputs(batch), use_cache=False).logits[:, -C - 1 : -1].float()
    logits_p = model(**full_inputs(batch, perturbed_pv), use_cache=False).logits[:, -C - 1 : -1].float()
    p, q = torch.softmax(logits, -1), torch.softmax(logits_p, -1)
    m = 0.5 * (p + q)
    h = -(p * torch.log(p + 1e-12)).sum(-1)
    hp = -(q * torch.log(q + 1e-12)).sum(-1)
    jsd = 0.5 * (p * (torch.log(p + 1e-12) - torch.log(m + 1e-12))).sum(-1) + 0.5 * (
        q * (torch.log(q + 1e-12) - torch.log(m + 1e-12))).sum(-1)
    return h, hp, jsd


def run_model(name: str, args) -> dict:
    model = build_model(name, args.smoke)
    model.model.visual.requires_grad_(False)  # VEPO trains with the vision tower frozen
    model.gradient_checkpointing_enable()
    batch = make_batch(args.B, args.C, args.prompt_text, args.image_px, args.group, patch=patch_size(name))
    C = args.C
    n_tokens = int(batch["completion_mask"].sum())
    adapter = adapter_for(model)
    # The released processors' geometry: Qwen2.5-VL patch 14 and CLIP mean/std; Qwen3-VL patch 16 and 0.5/0.5.
    layout = (PatchLayout(patch_size=16, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
              if family(name) == "qwen3_vl" else PatchLayout())
    seeds = [i // args.group for i in range(args.B)]  # one noise draw per prompt
    perturbed = perturb_batch_images(batch, seeds, "pixel_values_gaussian", 2.0, layout, adapter=adapter)
    backbone, head = model.base_model, model.get_output_embeddings()
    res = {"model": name, "B": args.B, "C": C, "response_tokens": n_tokens}

    with torch.no_grad():
        res["grpo_old_logps"] = measure(lambda: logps_chunked(model, batch, C), args.reps)
        clean_hidden = backbone(**full_inputs(batch), use_cache=False).last_hidden_state[:, -C - 1 : -1]
        rows = list(range(args.B))
        res["visent_cf"] = measure(lambda: counterfactual_stats(
            backbone, head, batch, rows, perturbed, batch_size=args.cf_batch, chunk_size=args.chunk), args.reps)
        res["visent_cf_reuse"] = measure(lambda: counterfactual_stats(
            backbone, head, batch, rows, perturbed, clean_hidden=clean_hidden, batch_size=args.cf_batch,
            chunk_size=args.chunk), args.reps)
        if not args.skip_authors:
            try:
                res["authors_cf"] = measure(lambda: authors_stats(model, batch, perturbed, C), 1)
            except torch.OutOfMemoryError:
                res["authors_cf"] = "out of memory"
            torch.cuda.empty_cache()

    model.train()

    def train_step():
        model.zero_grad(set_to_none=True)
        lp = logps_chunked(model, batch, C)
        (-(lp * batch["completion_mask"]).sum() / n_tokens).backward()

    res["grpo_train"] = measure(train_step, args.reps)
    model.zero_grad(set_to_none=True)
    grpo = res["grpo_old_logps"][0] + res["grpo_train"][0]
    res["step_ratio_upper_bound"] = (grpo + res["visent_cf"][0]) / grpo
    res["step_ratio_upper_bound_reuse"] = (grpo + res["visent_cf_reuse"][0]) / grpo
    return res  # the model is freed with this frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["3b", "7b"], choices=sorted(ARCHS))
    ap.add_argument("--B", type=int, default=8, help="responses per batch")
    ap.add_argument("--group", type=int, default=4, help="responses per prompt (K)")
    ap.add_argument("--C", type=int, default=1024, help="max completion tokens (lengths drawn in [C/2, C])")
    ap.add_argument("--prompt_text", type=int, default=128, help="text tokens in the prompt")
    ap.add_argument("--image_px", type=int, default=448, help="square image side (448 px: 256 visual tokens at patch 14, 196 at 16)")
    ap.add_argument("--cf_batch", type=int, default=8, help="responses per counterfactual forward")
    ap.add_argument("--chunk", type=int, default=1024, help="tokens per statistics chunk")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip_authors", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--smoke", action="store_true", help="tiny stand-in architecture (checks the script, e.g. on CPU)")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    print(f"# {time.strftime('%Y-%m-%d')} {device} torch {torch.__version__}{' SMOKE' if args.smoke else ''}")
    results = []
    for name in args.models:
        r = run_model(name, args)
        results.append(r)
        k = r["response_tokens"] / 1000
        print(f"\n{TITLES[name]} architecture, B={r['B']} C={r['C']} ({r['response_tokens']} response tokens)")
        for key in ("grpo_old_logps", "grpo_train", "visent_cf", "visent_cf_reuse", "authors_cf"):
            v = r.get(key)
            if v is None:
                continue
            if isinstance(v, str):
                print(f"  {key:16s} {v}")
                continue
            print(f"  {key:16s} {v[0]:7.3f} s  ({v[0] / k * 1000:7.1f} ms / 1k tokens)   peak extra {v[1]:6.2f} GiB")
        if isinstance(r.get("authors_cf"), tuple):
            print(f"  authors/visent counterfactual: time {r['authors_cf'][0] / r['visent_cf'][0]:.2f}x, "
                  f"peak memory {r['authors_cf'][1] / max(r['visent_cf'][1], 1e-9):.2f}x")
        print(f"  step-time ratio (without generation, an upper bound): vepo/grpo = {r['step_ratio_upper_bound']:.3f}"
              f"   (reusing the clean forward: {r['step_ratio_upper_bound_reuse']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
