"""``visent eval``: score a model on benchmarks with the training verifiers.

    visent eval --model tiny:qwen2_5_vl --data lab:counting:32 --out runs/eval-tiny
    visent eval --model ckpt/ --data geo3k=data/geometry3k.jsonl --data shared/data/mathvista/data/testmini.json \\
        --template think_boxed --max-new-tokens 1024 --out runs/eval-ckpt
    visent eval --model Qwen/Qwen2.5-VL-3B-Instruct --data screenspot_v2/screenspot_web_v2.json \\
        --reward grounding=grounding_resized --out runs/ss

Exit codes: 0 done; 1 a data or runtime error (message names the file/row/setting); 2 bad usage.
Rerunning with the same ``--out`` resumes: rows already in ``predictions.jsonl`` are not generated again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

BACKENDS = ("auto", "transformers", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    from visent.eval.generation import PROMPT_TEMPLATES

    p = argparse.ArgumentParser(prog="visent eval", description=__doc__.split("\n\n")[0],
                                epilog="`visent eval compare RUN_A RUN_B` compares two finished runs (see its --help).")
    p.add_argument("--model", required=True, help="model path or Hub id of a supported family, or tiny:<family> (e.g. tiny:qwen3_vl)")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="[NAME=]SOURCE",
        help="a benchmark (repeatable): lab:TASK[:N[:SEED]], a jsonl of examples, or any dataset file/folder/Hub "
        "id that `visent data inspect` reads",
    )
    p.add_argument("--out", required=True, help="output folder (predictions.jsonl, results.json, results.md)")
    p.add_argument("--task", default=None, help="override every example's task (picks the verifier)")
    p.add_argument("--format", default=None, help="dataset layout for --data files (detected when omitted)")
    p.add_argument("--image-root", default=None, help="folder to look for images in first")
    p.add_argument("--image-check", default="header", choices=("header", "decode", "exists"),
                   help="header (default): read each image's header at load time, decode it when generating; "
                        "decode: decode each once at load time and skip rows whose images do not decode")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples of each benchmark")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="auto: vLLM when installed and on GPU")
    p.add_argument("--batch-size", type=int, default=8, help="examples per generation call")
    p.add_argument("--max-new-tokens", type=int, default=512, help="generation budget per example")
    p.add_argument(
        "--template",
        default="plain",
        help=f"prompt template: one of {', '.join(PROMPT_TEMPLATES)} or a string containing {{prompt}}",
    )
    p.add_argument("--system", default=None, help="system prompt (default: a row's own, else none)")
    p.add_argument(
        "--reward",
        action="append",
        default=[],
        metavar="TASK=NAME",
        help="verifier override per task, e.g. grounding=grounding_resized (Qwen2.5-VL) or grounding=grounding_grid1000",
    )
    p.add_argument(
        "--noise", type=float, default=None, metavar="RATE", help="inject label noise at RATE first"
    )
    p.add_argument("--noise-seed", type=int, default=0, help="seed for --noise")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--overwrite", action="store_true", help="discard what --out already holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from visent.eval.judge import add_judge_arguments  # --judge*; an unusable judge exits 2 (eval/judge.py)

    add_judge_arguments(p)
    return p


def _parse_rewards(items: list[str]) -> dict[str, str]:
    rewards = {}
    for item in items:
        task, sep, name = item.partition("=")
        if not sep or not task or not name:
            raise ValueError(f"--reward {item!r}: expected TASK=NAME")
        rewards[task.strip()] = name.strip()
    return rewards


def _device_and_dtype(device: str, dtype: str) -> tuple[str, Any]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, getattr(torch, dtype)


def _make_backend(args: argparse.Namespace, max_images: int) -> Any:
    from visent.eval.generation import TransformersBackend, VLLMBackend, vllm_available

    device, dtype = _device_and_dtype(args.device, args.dtype)
    backend = args.backend
    if backend == "auto":
        backend = (
            "vllm"
            if vllm_available() and device.startswith("cuda") and not args.model.startswith("tiny:")
            else "transformers"
        )
    common = {"template": args.template, "system_prompt": args.system, "max_new_tokens": args.max_new_tokens}
    if backend == "vllm":
        if not vllm_available():
            raise RuntimeError("--backend vllm: vLLM is not installed (pip install 'visent[vllm]')")
        if args.model.startswith("tiny:"):
            raise RuntimeError("--backend vllm needs a saved model folder or Hub id, not a tiny: model")
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(args.model)
        return VLLMBackend(
            args.model, processor, max_images=max_images, dtype=str(dtype).removeprefix("torch."), **common
        )
    from visent.models import load_model_and_processor

    kwargs = {} if args.model.startswith("tiny:") else {"dtype": dtype}
    model, processor = load_model_and_processor(args.model, need_adapter=False, **kwargs)
    model.to(device=device, dtype=dtype)
    return TransformersBackend(model, processor, **common)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:  # `visent eval compare A B`: no model, its own options
        from visent.eval.compare import main as compare_main

        return compare_main(argv[1:])
    from visent.eval.judge import JudgeUnavailable, judge_from_args

    args = build_parser().parse_args(argv)
    from visent.eval.generation import LazyBackend, render_template
    from visent.eval.harness import EvalConfigError, EvalSettings, pending, run_eval
    from visent.eval.sources import EvalDataError, resolve
    from visent.models import UnsupportedModel, check_supported

    try:
        # Generation only: any image-text-to-text model; a text-only or unknown one is refused in one line
        # (status 2), from its config, before any data is read or weight loaded.
        try:
            check_supported(args.model, need_adapter=False)
        except OSError:
            pass  # no such folder, or offline: reported when the model is loaded, as before
        rewards = _parse_rewards(args.reward)
        render_template(args.template, "")
        judge = judge_from_args(args)  # a bad --judge URL or a missing --judge-model: status 2
        if args.batch_size < 1 or args.max_new_tokens < 1:
            raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    except ValueError as exc:
        print(f"visent eval: {exc}", file=sys.stderr)
        return 2

    try:
        benchmarks = [
            resolve(spec, format=args.format, image_root=args.image_root, limit=args.limit, task=args.task,
                    progress=not args.no_progress, image_check=args.image_check)
            for spec in args.data
        ]
        if args.noise is not None:
            from visent.data.noise import inject_label_noise

            for bench in benchmarks:
                if hasattr(bench.examples, "with_label_noise"):  # a memory-mapped table: swap its label columns
                    bench.examples, report = bench.examples.with_label_noise(args.noise, args.noise_seed)
                else:
                    bench.examples, report = inject_label_noise(bench.examples, args.noise, args.noise_seed)
                print(
                    f"{bench.name}: {report.summary()}",
                    file=sys.stderr,
                )
    except (EvalDataError, ValueError) as exc:
        print(f"visent eval: {exc}", file=sys.stderr)
        return 1

    out = Path(args.out)
    if args.overwrite:
        for name in ("predictions.jsonl", "run.json", "results.json", "results.md"):
            (out / name).unlink(missing_ok=True)
    settings = EvalSettings(
        model=args.model,
        template=args.template,
        system_prompt=args.system,
        max_new_tokens=args.max_new_tokens,
        rewards=rewards,
        noise=None if args.noise is None else [args.noise, args.noise_seed],
    )
    max_images = max((len(ex.images) for b in benchmarks for ex in b.examples), default=1)
    backend = LazyBackend(lambda: _make_backend(args, max_images))
    todo = pending(benchmarks, out)
    print(
        f"visent eval: {todo} example(s) to generate, {sum(len(b.examples) for b in benchmarks) - todo} already in {out}",
        file=sys.stderr,
    )
    if judge is not None and todo:
        # One request before any model is loaded: a wrong URL, key or model name costs seconds, not a run.
        try:
            if judge.probe() != "correct":
                print(f"visent eval: warning: judge {judge.model} called an obviously right answer incorrect "
                      "in the probe; check its verdicts in predictions.jsonl", file=sys.stderr)
        except JudgeUnavailable as exc:
            print(f"visent eval: {exc}", file=sys.stderr)
            return 2
    try:
        outcome = run_eval(
            benchmarks, backend, out, settings, batch_size=args.batch_size, progress=not args.no_progress,
            judge=judge,
        )
    except JudgeUnavailable as exc:
        print(f"visent eval: {exc}; predictions written so far are kept, rerun to resume", file=sys.stderr)
        return 2
    except UnsupportedModel as exc:  # a Hub id is only checked when it is loaded
        print(f"visent eval: {exc}", file=sys.stderr)
        return 2
    except (EvalConfigError, EvalDataError) as exc:
        # An image that fails to open mid-run (header-checked only) lands here too; what was generated
        # before it is kept, so the rerun resumes.
        print(f"visent eval: {exc}", file=sys.stderr)
        return 1
    from visent.eval.report import markdown_table

    print(markdown_table(outcome.summary), end="")
    print(
        f"wrote {outcome.out / 'results.json'} and results.md ({outcome.generated} generated, {outcome.reused} reused)",
        file=sys.stderr,
    )
    if judge is not None:
        print(f"judge: {judge.calls} request(s) this run, {judge.failures} without a usable verdict "
              "(scored by the rule; see judge/judge_clean in predictions.jsonl)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
