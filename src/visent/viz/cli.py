"""``visent inspect``: the token heatmap (``tokens.html``) for any model and dataset.

    visent inspect --model tiny:qwen2_5_vl --data lab:counting --out runs/inspect/tokens.html
    visent inspect --model runs/demo/vepo/final --data lab:grounding --n 4 --perturbation patch_blackout
    visent inspect --model Qwen/Qwen2.5-VL-3B-Instruct --data shared/data/geometry3k --template think_boxed \\
        --max-new-tokens 512 --out runs/inspect/geo3k.html

Greedy responses are generated (or read from ``--responses``), teacher-forced with the clean and the
perturbed image through the trainer's counterfactual pass, scored, and rendered.

Exit codes: 0 done; 1 a data or runtime error (message names the file/row/setting); 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    from visent.core.scores import SCORES
    from visent.perturb import PERTURBATIONS

    p = argparse.ArgumentParser(prog="visent inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder or Hub id of a supported family, or tiny:<family> (e.g. tiny:qwen3_vl)")
    p.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="lab:TASK[:N[:SEED]] (held-out synthetic examples), or a dataset file/folder/Hub id that "
        "`visent data inspect` reads",
    )
    p.add_argument("--out", default="tokens.html", help="HTML file to write (default: tokens.html)")
    p.add_argument("--n", type=int, default=8, help="number of examples (the first N of the dataset)")
    p.add_argument("--format", default=None, help="dataset layout for --data files (detected when omitted)")
    p.add_argument("--image-root", default=None, help="folder to look for images in first")
    p.add_argument("--task", default=None, help="override every example's task (picks the verifier)")
    p.add_argument(
        "--responses",
        default=None,
        metavar="JSONL",
        help="score these responses instead of greedy ones: a jsonl with {id, response} per line "
        "(e.g. `visent eval`'s predictions.jsonl)",
    )
    p.add_argument(
        "--perturbation", default="pixel_values_gaussian", help=f"one of: {', '.join(PERTURBATIONS)}"
    )
    p.add_argument("--strength", type=float, default=None, help="perturbation strength (default: the kind's own)")
    p.add_argument("--seed", type=int, default=0, help="perturbation seed")
    p.add_argument("--method", default="vepo", help=f"token score that selects tokens: {', '.join(SCORES)}")
    p.add_argument("--ratio", type=float, default=0.2, help="fraction of each response's tokens selected")
    p.add_argument("--alpha", type=float, default=0.7, help="VEPO mix weight of the JSD vs the entropy gap")
    p.add_argument("--temperature", type=float, default=1.0, help="logits are divided by this (as in sampling)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="greedy generation budget per example")
    p.add_argument("--batch-size", type=int, default=4, help="examples per forward")
    p.add_argument("--template", default="plain", help="prompt template (as in `visent eval`)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check(args: argparse.Namespace) -> None:
    """Usage errors that argparse cannot see, with what to do."""
    from visent.core.scores import SCORES
    from visent.eval.generation import render_template
    from visent.models import check_supported
    from visent.perturb import PERTURBATIONS

    try:
        check_supported(args.model)  # a model without a family adapter: one line, status 2, nothing loaded
    except OSError:
        pass  # no such folder, or offline: reported with a hint when the model is loaded
    if args.perturbation not in PERTURBATIONS:
        raise ValueError(f"--perturbation {args.perturbation!r} is unknown; valid: {', '.join(PERTURBATIONS)}")
    if args.method not in SCORES:
        raise ValueError(f"--method {args.method!r} is unknown; valid: {', '.join(SCORES)}")
    if not 0.0 < args.ratio <= 1.0:
        raise ValueError(f"--ratio must be in (0, 1], got {args.ratio}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    for name in ("n", "max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    render_template(args.template, "")
    if not args.out.lower().endswith((".html", ".htm")):
        raise ValueError(f"--out {args.out!r}: expected an .html file")


def _read_responses(path: str, ids: list[str]) -> list[str]:
    """Responses for ``ids`` from a jsonl of ``{id, response}`` rows; fails naming the file, line, field."""
    from visent.io import json_lines

    found: dict[str, str] = {}
    try:
        rows = list(json_lines(path))  # read whole first: a read error surfaces before any row is used
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--responses {path!r}: cannot read ({exc})") from None
    for n, row in rows:
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("response"), str):
            raise ValueError(f"{path}, line {n}: expected an object with 'id' and a string 'response'")
        found[str(row["id"])] = row["response"]
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"{path}: no response for example id(s) {', '.join(map(repr, missing[:5]))}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return [found[i] for i in ids]


def _load_model(name: str, device: str, dtype: str) -> tuple[Any, Any]:
    import torch

    from visent.models import load_model_and_processor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype)
    kwargs = {} if name.startswith("tiny:") else {"dtype": torch_dtype}
    model, processor = load_model_and_processor(name, **kwargs)
    model.to(device=device, dtype=torch_dtype)
    return model, processor


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    try:
        _check(args)
    except ValueError as exc:
        print(f"visent inspect: {exc}", file=sys.stderr)
        return 2

    from visent.eval.sources import EvalDataError, resolve

    try:
        bench = resolve(args.data, format=args.format, image_root=args.image_root, limit=args.n, task=args.task)
        examples = bench.examples
        responses = _read_responses(args.responses, [ex.id for ex in examples]) if args.responses else None
    except (EvalDataError, ValueError) as exc:
        print(f"visent inspect: {exc}", file=sys.stderr)
        return 1
    if bench.skipped:
        print(f"visent inspect: the loader skipped bad rows: {bench.skipped}", file=sys.stderr)

    from visent.models import UnsupportedModel
    from visent.viz.heatmap import write_tokens_html
    from visent.viz.scoring import score_responses

    try:
        model, processor = _load_model(args.model, args.device, args.dtype)
    except UnsupportedModel as exc:
        print(f"visent inspect: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        hint = "" if args.model.startswith("tiny:") or Path(args.model).exists() else " (no such local folder; tried it as a Hub id)"
        print(f"visent inspect: cannot load model {args.model!r}{hint}: {exc}", file=sys.stderr)
        return 1
    try:
        records = score_responses(
            model,
            processor,
            examples,
            responses,
            perturbation=args.perturbation,
            strength=args.strength,
            seed=args.seed,
            method=args.method,
            ratio=args.ratio,
            alpha=args.alpha,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            template=args.template,
            system_prompt=args.system,
            progress=not args.no_progress,
        )
    except (ValueError, TypeError) as exc:
        print(f"visent inspect: {exc}", file=sys.stderr)
        return 1
    from visent.perturb import DEFAULT_STRENGTH

    settings = {
        "model": args.model,
        "data": f"{args.data} ({len(examples)} examples)",
        "perturbation": args.perturbation,
        "strength": args.strength if args.strength is not None else DEFAULT_STRENGTH[args.perturbation],
        "seed": args.seed,
        "selection": f"{args.method} top-{args.ratio:g} per response",
        "responses": args.responses or f"greedy, ≤{args.max_new_tokens} new tokens",
    }
    out = Path(args.out)
    write_tokens_html(records, str(out), title=f"visent inspect: {bench.name}", settings=settings)
    print(f"visent inspect: wrote {out} ({len(records)} responses)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
