"""What ``visent eval --data`` accepts, resolved to named benchmarks of :class:`Example` rows.

A spec is ``[NAME=]SOURCE`` where SOURCE is one of

- ``lab:TASK[:N[:SEED]]``: N (default 64) held-out synthetic examples of a lab task (``counting``,
  ``grounding``, ``classification``) from ``visent.lab``; never the warm-start training stream;
- a ``.jsonl`` file of serialised examples (one ``Example`` as a dict per line: ``id, task, prompt,
  images`` (paths), ``answer``, optional ``clean_answer, is_noisy, meta``), as written by
  :func:`write_examples_jsonl` — e.g. a noisy split saved for later evaluation;
- anything the data loaders read (a dataset file or folder in a published format, or a Hub id), with
  ``--format`` / ``--map`` / ``--image-root`` passed through (``--map`` is ``visent data inspect``'s field
  mapping, nested columns included); streamed by ``visent.data.table.load_table`` into a cached Arrow
  table.

The benchmark name defaults to ``lab-TASK`` or the file's stem (its folder's name for generic stems like
``testmini``/``test``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from visent.data.schema import Example
from visent.io import JsonlError, json_lines

DEFAULT_LAB_N = 64
_GENERIC_STEMS = {"test", "testmini", "train", "val", "validation", "data", "dev"}
_EXAMPLE_KEYS = {"id", "task", "prompt", "answer"}


@dataclass
class Benchmark:
    """One named evaluation set: its examples, where they came from, and rows the loader skipped."""

    name: str
    examples: Sequence[Example]  # a list, or a memory-mapped visent.data.table.ExampleTable
    source: str
    skipped: dict[str, int] = field(default_factory=dict)


class EvalDataError(ValueError):
    """A ``--data`` spec or file that cannot be used; the message names the spec/file, row and field."""


def _lab(spec: str) -> tuple[str, list[Example]]:
    from visent.data.synthetic import heldout_examples

    parts = spec.split(":")
    if len(parts) < 2 or not parts[1]:
        raise EvalDataError(f"--data {spec!r}: expected lab:TASK[:N[:SEED]]")
    task = parts[1]
    try:
        n = int(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_LAB_N
        seed = int(parts[3]) if len(parts) > 3 and parts[3] else 0
    except ValueError:
        raise EvalDataError(f"--data {spec!r}: N and SEED must be integers") from None
    try:
        return f"lab-{task}", heldout_examples([task], n, seed)
    except ValueError as exc:
        raise EvalDataError(f"--data {spec!r}: {exc}") from None


def write_examples_jsonl(path: str | Path, examples: list[Example]) -> None:
    """Serialise examples (image paths kept; in-memory PIL images are not serialisable and refused)."""
    lines = []
    for ex in examples:
        if any(not isinstance(im, str) for im in ex.images):
            raise EvalDataError(
                f"example {ex.id!r}: only image paths can be written to jsonl, not in-memory images"
            )
        lines.append(json.dumps(asdict(ex), ensure_ascii=False))
    from visent.io import write_atomic

    write_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def _looks_like_examples(path: Path) -> bool:
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    for _, row in json_lines(path, on_bad="none"):
        return isinstance(row, dict) and _EXAMPLE_KEYS <= set(row)
    return False


def read_examples_jsonl(path: Path) -> list[Example]:
    try:
        rows = list(json_lines(path))
    except JsonlError as exc:
        raise EvalDataError(str(exc)) from None
    examples = []
    base = path.parent
    for lineno, row in rows:
        where = f"{path}, line {lineno}"
        if not isinstance(row, dict):
            raise EvalDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        missing = sorted(_EXAMPLE_KEYS - set(row))
        if missing:
            raise EvalDataError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")
        images = row.get("images") or []
        if not isinstance(images, list) or not all(isinstance(im, str) for im in images):
            raise EvalDataError(f"{where}, field 'images': expected a list of file paths")
        images = [im if Path(im).is_absolute() else str(base / im) for im in images]
        examples.append(
            Example(
                id=str(row["id"]),
                task=str(row["task"]),
                prompt=str(row["prompt"]),
                images=images,
                answer=str(row["answer"]),
                clean_answer=row.get("clean_answer"),
                is_noisy=bool(row.get("is_noisy", False)),
                meta=dict(row.get("meta") or {}),
            )
        )
    return examples


def _why_empty(report) -> str:
    """Why a load produced nothing: an empty source, or the first reason its rows were skipped (e.g. the
    column a ``--map`` names is absent from every row)."""
    if not report.rows_seen:
        return " (the source holds no rows)"
    reason, count = max(report.skipped.items(), key=lambda kv: kv[1], default=(None, 0))
    if reason is None:
        return ""
    sample = (report.samples.get(reason) or [""])[0]
    return f": all {report.rows_seen} row(s) skipped, {count} x {reason}" + (f", e.g. {sample}" if sample else "")


def _default_name(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    if stem.lower() in _GENERIC_STEMS:
        parent = path.parent
        if parent.name.lower() in _GENERIC_STEMS | {"data"}:
            parent = parent.parent
        return f"{parent.name}-{stem}" if parent.name else stem
    return stem


def resolve(
    spec: str,
    *,
    format: str | None = None,
    image_root: str | None = None,
    limit: int | None = None,
    task: str | None = None,
    progress: bool = False,
    image_check: str = "header",
    mapping: str | dict[str, str] | None = None,
    split: str | None = None,
    default_task: str | None = None,
) -> Benchmark:
    """The benchmark for one ``--data`` spec (see the module doc).

    ``task`` overrides every example's task (which verifier scores it); ``limit`` keeps the first rows;
    ``mapping`` (``"prompt=question,answer=label"`` or a dict) selects the generic format's columns and
    ``split`` a Hub dataset's split, both as in ``visent data inspect``; ``default_task`` is the generic
    format's task for rows that do not set one (unlike ``task``, it does not override the loader's choice).
    Rows a dataset loader skips are logged by the loader and counted in ``Benchmark.skipped``. Dataset
    files are streamed into a cached, memory-mapped table (``visent.data.table``; ``progress`` shows a
    bar and the cache folder on stderr), so ``Benchmark.examples`` is then an ``ExampleTable``: a sequence
    of examples whose images are opened when generated.
    """
    name, source = ("", spec)
    if "=" in spec and not spec.startswith("lab:"):
        name, source = spec.split("=", 1)
    skipped: dict[str, int] = {}
    if source.startswith("lab:"):
        if mapping:
            raise EvalDataError(f"--data {spec!r}: --map applies to dataset files, not to lab: streams")
        default, examples = _lab(source)
    else:
        path = Path(source)
        if _looks_like_examples(path) and not mapping:
            default, examples = _default_name(path), read_examples_jsonl(path)
        else:
            from visent.data.errors import DataError
            from visent.data.table import load_table

            try:
                table = load_table(source, format=format, image_root=image_root, task=task or default_task,
                                   progress=progress,
                                   image_check=image_check, mapping=mapping, split=split)
            except DataError as exc:
                raise EvalDataError(f"--data {spec!r}: {exc}") from None
            skipped = dict(table.report.skipped)
            if not len(table):
                raise EvalDataError(f"--data {spec!r}: no examples{_why_empty(table.report)}")
            default = _default_name(path) if path.exists() else source.replace("/", "-")
            # Memory-mapped rows; images stay paths / undecoded bytes until a batch is generated.
            examples = table.with_task(task) if task is not None else table
            task = None
    if limit is not None:
        examples = examples[:limit]
    if task is not None:
        for ex in examples:
            ex.task = task
    if not examples:
        raise EvalDataError(f"--data {spec!r}: no examples")
    return Benchmark(name or default, examples, source, skipped)
