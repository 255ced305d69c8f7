"""``visent data inspect PATH``: load a dataset, show what was loaded and skipped, optionally add noise.

Exit codes: 0 loaded (even with skipped rows, which are listed), 1 a data error (always the case in
``--strict`` mode when a row is bad; the message names file, row and field), 2 bad usage (unknown format,
bad ``--map``), also when nothing at all could be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from visent.data.errors import DataError


def _build_parser() -> argparse.ArgumentParser:
    from visent.data.formats.context import IMAGE_CHECKS
    from visent.data.loaders import FORMATS

    parser = argparse.ArgumentParser(prog="visent data", description="Dataset tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("inspect", help="load a dataset and report loaded/skipped rows and one example",
                       description="Load PATH (a file, folder or Hub id), print counts of loaded and skipped "
                                   "rows with reasons, and one example.")
    p.add_argument("path", help="jsonl/json/parquet file, folder, Visual-RFT .pth, or Hub id (owner/name)")
    p.add_argument("--format", default=None,
                   help=f"dataset layout (detected when omitted); one of: {', '.join(sorted(FORMATS))}")
    p.add_argument("--map", dest="mapping", default=None, metavar="FIELD=COLUMN,...",
                   help="field mapping for the generic format, e.g. prompt=question,answer=label,images=image")
    p.add_argument("--task", default=None, help="task for the generic format (math, grounding, ...)")
    p.add_argument("--strict", action="store_true", help="fail on the first bad row instead of skipping it")
    p.add_argument("--limit", type=int, default=None, help="read at most N rows")
    p.add_argument("--image-root", default=None, help="folder to look for images in first")
    p.add_argument("--allow-missing-images", action="store_true",
                   help="keep rows whose image files are absent (text-only) instead of skipping them")
    p.add_argument("--image-check", default="header", choices=IMAGE_CHECKS,
                   help="header (default): open each image and read its size; decode: also decode it fully "
                        "(catches truncated files); exists: only check image files are there")
    p.add_argument("--no-cache", action="store_true",
                   help="re-read the source even when an up-to-date cached copy exists (and refresh it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / cache line on stderr")
    p.add_argument("--split", default=None, help="split of a Hub dataset")
    p.add_argument("--noise", type=float, default=None, metavar="RATE",
                   help="inject label noise at RATE in [0, 1] and show what was corrupted")
    p.add_argument("--seed", type=int, default=0, help="seed for --noise")
    p.add_argument("--show", type=int, default=5, help="how many corrupted rows to list with --noise")
    return parser


def _describe(ex: Any) -> str:
    images = [im if isinstance(im, str) else
              (f"<{type(im).__name__} {getattr(im, 'size', '')}>" if hasattr(im, "mode") else repr(im))
              for im in ex.images]
    meta = {k: v for k, v in ex.meta.items() if k != "classes"}
    if "classes" in ex.meta:
        meta["classes"] = f"<{len(ex.meta['classes'])} classes>"
    prompt = ex.prompt if len(ex.prompt) <= 400 else ex.prompt[:397] + "..."
    lines = [f"  id:      {ex.id}", f"  task:    {ex.task}", f"  prompt:  {prompt!r}", f"  images:  {images}",
             f"  answer:  {ex.answer!r}"]
    if ex.is_noisy:
        lines.append(f"  clean:   {ex.clean_answer!r}  (noisy)")
    lines.append(f"  meta:    {json.dumps(meta, ensure_ascii=False, default=str)}")
    return "\n".join(lines)


def inspect(args: argparse.Namespace) -> int:
    import logging

    from visent.data.table import load_table

    # The report below lists skipped rows; the loader's own warning would repeat it on stderr.
    data_logger = logging.getLogger("visent.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        return _inspect(args, load_table)
    finally:
        data_logger.setLevel(level)


def _inspect(args: argparse.Namespace, load_table: Any) -> int:
    try:
        # One streaming pass (or the cached result of one): the counts below come from it.
        table = load_table(
            args.path, args.format, strict=args.strict, mapping=args.mapping, limit=args.limit,
            image_root=args.image_root, allow_missing_images=args.allow_missing_images,
            image_check=args.image_check, task=args.task, split=args.split, use_cache=not args.no_cache,
            progress=not args.no_progress)
    except DataError as err:
        print(f"visent data inspect: error: {err}", file=sys.stderr)
        return 2 if err.reason == "config" else 1
    print(table.report.summary())
    print(f"cache: {table.cache_dir}")
    if not len(table):
        print("no examples loaded", file=sys.stderr)
        return 1
    print("example:")
    print(_describe(table[0]))
    if args.noise is not None:
        try:
            _, noise_report = table.with_label_noise(args.noise, args.seed)
        except ValueError as err:
            print(f"visent data inspect: error: {err}", file=sys.stderr)
            return 2
        print(noise_report.summary(max_rows=args.show))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and usage errors (2)
        return int(exc.code or 0)
    if args.command == "inspect":
        return inspect(args)
    parser.print_help()
    return 2
