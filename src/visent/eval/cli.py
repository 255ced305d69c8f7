"""``visent eval``: score a model on benchmarks with the training verifiers.

    visent eval --model tiny:qwen2_5_vl --data lab:counting:32 --out runs/eval-tiny
    visent eval --model ckpt/ --data geo3k=data/geometry3k.jsonl --data shared/data/mathvista/data/testmini.json \\
        --template think_boxed --max-new-tokens 1024 --out runs/eval-ckpt
    visent eval --model Qwen/Qwen2.5-VL-3B-Instruct --data screenspot_v2/screenspot_web_v2.json \\
        --reward grounding=grounding_resized --out runs/ss
    visent eval --model ckpt/ --data wemath=We-Math/data/testmini.json \\
        --map prompt=question,choices=option,answer=answer,images=image_path,id=ID --out runs/wemath
    visent eval --model ckpt/ --suite vppo --suite-root ~/bench --samples 8 --temperature 1.0 \\
        --template think_boxed --max-new-tokens 2048 --out runs/vppo

Exit codes: 0 done; 2 bad usage or input found before generating (unknown suite or missing suite data, bad
--map, a missing column, an empty file, bad --samples/--temperature), one line each; 1 an error while
generating (an image that does not open) or an --out folder made with other settings. Rerunning with the
same ``--out`` resumes: rows already in ``predictions.jsonl`` are not generated again.
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
    from visent.eval.suites import ROOT_ENV, SUITES

    p = argparse.ArgumentParser(prog="visent eval", description=__doc__.split("\n\n")[0],
                                epilog="`visent eval compare RUN_A RUN_B` compares two finished runs (see its --help).")
    p.add_argument("--model", required=True, help="model path or Hub id of a supported family, or tiny:<family> (e.g. tiny:qwen3_vl)")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]SOURCE",
        help="a benchmark (repeatable): lab:TASK[:N[:SEED]], a jsonl of examples, or any dataset file/folder/Hub "
        "id that `visent data inspect` reads",
    )
    p.add_argument("--suite", default=None, metavar="NAME",
                   help=f"the benchmarks of a paper: {', '.join(f'{k} ({len(v)} benchmarks)' for k, v in SUITES.items())}; "
                        "combines with --data")
    p.add_argument("--suite-root", default=None, metavar="DIR",
                   help=f"folder holding the suite's benchmarks (default ${ROOT_ENV}); layout in docs/eval.md")
    p.add_argument("--map", dest="mapping", default=None, metavar="FIELD=COLUMN,...",
                   help="field mapping for --data files, as in `visent data inspect` (nested columns a.b.0 allowed): "
                        "prompt=question,choices=options,answer=answer,images=image; choices composes 'A. ..' "
                        "options into the prompt and accepts the letter or the option text")
    p.add_argument("--split", default=None, help="split of a Hub dataset given with --data")
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
    p.add_argument("--samples", type=int, default=1, metavar="K",
                   help="completions per example (default 1: greedy); K > 1 reports avg@K and pass@K with 95%% "
                        "intervals over examples; needs --temperature > 0")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature (default 0: greedy; VPPO/PAPO report avg@8 at 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed; each example's samples come from (seed, example id), so they do not "
                        "depend on batching or resuming")
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
    common = {"template": args.template, "system_prompt": args.system, "max_new_tokens": args.max_new_tokens,
              "samples": args.samples, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed}
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


def _checked_settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(EvalSettings, judge or None)`` from the arguments; every check that needs no data or weights.

    Raises ``ValueError`` / ``DataError`` with a one-line message (the CLI exits 2).
    """
    from visent.data.formats.generic import parse_mapping
    from visent.eval.generation import render_template
    from visent.eval.harness import EvalSettings, check_sampling
    from visent.eval.judge import judge_from_args
    from visent.eval.suites import SUITES
    from visent.models import check_supported

    settings = EvalSettings(
        model=args.model,
        template=args.template,
        system_prompt=args.system,
        max_new_tokens=args.max_new_tokens,
        rewards={},
        noise=None if args.noise is None else [args.noise, args.noise_seed],
        samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    if not args.data and args.suite is None:
        raise ValueError("give --data SOURCE (repeatable) and/or --suite NAME")
    if args.suite is not None and args.suite not in SUITES:
        raise ValueError(f"unknown suite {args.suite!r}; suites: {', '.join(SUITES)}")
    if args.mapping is not None:
        parse_mapping(args.mapping)  # a bad entry is refused here, before anything is read
    check_sampling(settings)
    # Generation only: any image-text-to-text model; a text-only or unknown one is refused in one line
    # (status 2), from its config, before any data is read or weight loaded.
    try:
        check_supported(args.model, need_adapter=False)
    except OSError:
        pass  # no such folder, or offline: reported when the model is loaded, as before
    settings.rewards = _parse_rewards(args.reward)
    render_template(args.template, "")
    judge = judge_from_args(args)  # a bad --judge URL or a missing --judge-model: status 2
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    return settings, judge


def _load_benchmarks(args: argparse.Namespace) -> list[Any]:
    """The suite's and ``--data``'s benchmarks, label noise injected; one stderr line per noisy benchmark.

    The loaders log a multi-line report of skipped rows; here each benchmark gets one line instead (the
    caller prints it), and a load that keeps nothing is one error.
    """
    import logging

    from visent.eval.sources import resolve
    from visent.eval.suites import resolve_suite

    data_logger = logging.getLogger("visent.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        benchmarks = []
        if args.suite is not None:
            benchmarks += resolve_suite(args.suite, args.suite_root, limit=args.limit,
                                        progress=not args.no_progress, image_check=args.image_check)
        benchmarks += [
            resolve(spec, format=args.format, image_root=args.image_root, limit=args.limit, task=args.task,
                    progress=not args.no_progress, image_check=args.image_check, mapping=args.mapping,
                    split=args.split)
            for spec in args.data
        ]
        if args.noise is not None:
            from visent.data.noise import inject_label_noise

            for bench in benchmarks:
                if hasattr(bench.examples, "with_label_noise"):  # a memory-mapped table: swap its label columns
                    bench.examples, report = bench.examples.with_label_noise(args.noise, args.noise_seed)
                else:
                    bench.examples, report = inject_label_noise(bench.examples, args.noise, args.noise_seed)
                print(f"{bench.name}: {report.summary()}", file=sys.stderr)
    finally:
        data_logger.setLevel(level)
    return benchmarks


def _generate_and_report(args: argparse.Namespace, benchmarks: list[Any], settings: Any, judge: Any) -> int:
    """Run the (resumable) evaluation into ``--out`` and print its table; the exit status."""
    from visent.eval.generation import LazyBackend
    from visent.eval.harness import EvalConfigError, pending, run_eval
    from visent.eval.judge import JudgeUnavailable
    from visent.eval.report import markdown_table
    from visent.eval.sources import EvalDataError
    from visent.models import UnsupportedModel

    out = Path(args.out)
    if args.overwrite:
        for name in ("predictions.jsonl", "run.json", "results.json", "results.md"):
            (out / name).unlink(missing_ok=True)
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
    print(markdown_table(outcome.summary), end="")
    print(
        f"wrote {outcome.out / 'results.json'} and results.md ({outcome.generated} generated, {outcome.reused} reused)",
        file=sys.stderr,
    )
    if judge is not None:
        print(f"judge: {judge.calls} request(s) this run, {judge.failures} without a usable verdict "
              "(scored by the rule; see judge/judge_clean in predictions.jsonl)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:  # `visent eval compare A B`: no model, its own options
        from visent.eval.compare import main as compare_main

        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    from visent.data.errors import DataError
    from visent.eval.sources import EvalDataError
    from visent.eval.suites import SuiteDataMissing

    try:
        settings, judge = _checked_settings(args)
    except (ValueError, DataError) as exc:  # EvalConfigError and a bad --map are ValueErrors too
        print(f"visent eval: {exc}", file=sys.stderr)
        return 2
    try:
        benchmarks = _load_benchmarks(args)
    except SuiteDataMissing as exc:
        for line in exc.lines:  # every missing benchmark at once, one line each
            print(f"visent eval: {line}", file=sys.stderr)
        return 2
    except (EvalDataError, ValueError) as exc:
        # Bad input found before anything is generated: nothing in --out has been touched.
        print(f"visent eval: {exc}", file=sys.stderr)
        return 2
    for bench in benchmarks:
        if bench.skipped:
            reasons = ", ".join(f"{count} x {reason}" for reason, count in sorted(bench.skipped.items()))
            print(f"visent eval: {bench.name}: skipped {sum(bench.skipped.values())} row(s) ({reasons}); "
                  f"`visent data inspect {bench.source}` lists them", file=sys.stderr)
    return _generate_and_report(args, benchmarks, settings, judge)


if __name__ == "__main__":
    sys.exit(main())
