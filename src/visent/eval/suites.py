"""The benchmark suites of the papers (``visent eval --suite vepo|vppo``): one table of per-benchmark facts.

Each benchmark is read from a local copy under a root folder (``--suite-root DIR`` or ``$VISENT_EVAL_ROOT``),
at the sub-path a download of the published dataset lands on: ``ROOT/<folder>/<file as published>``, e.g.
``huggingface-cli download AI4Math/MathVista --repo-type dataset --local-dir ROOT/mathvista`` gives
``ROOT/mathvista/data/testmini-*.parquet``. Where a benchmark is also published as a GitHub file layout
(MathVista, MATH-Vision, We-Math, LogicVista, MM-EUREKA's K12 set) that layout is accepted too. The
first layout found wins. Rows are parsed by the ordinary loaders (``visent.data``): a known ``format``, or
the ``generic`` format with a ``--map``-style mapping; nothing here re-implements parsing.

Scoring: every benchmark here is scored by the ``math`` verifier (``visent.rewards.math``): the last
``\\boxed{}`` / ``<answer>`` against the label; for multiple choice the option letter *or* the option text
is accepted (the options are kept in ``meta["choices"]``). Papers' settings: VPPO and PAPO report avg@8 at
temperature 1.0, top-p 1.0, 2048 new tokens (PAPO-Eval ``papo_eval/run_infer.sh``); VEPO reports greedy
accuracy (``docs``/``METHOD.md``) — so ``--suite vppo`` wants ``--samples 8 --temperature 1.0``.

Sources of the facts (third-party material, cited, not copied):

- the VPPO benchmark list and Hub ids: github.com/huaixuheqing/VPPO-RL README ("Evaluation Data" table;
  results "average accuracy@8 with an inference temperature of 1.0"). VPPO evaluates on *filtered* copies of
  MathVerse, MathVision and DynaMath (its own Hub collection, chamber111/VPPO-Eval); the suite reads the
  published originals, so those three numbers are not directly comparable to VPPO's table;
- PAPO-Eval (github.com/xhguo7/PAPO-Eval): rollouts n=8, temperature 1.0, top_p 1.0, max_new_tokens 2048;
- the dataset cards on huggingface.co quoted per row below.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visent.data.schema import Example
from visent.eval.sources import Benchmark, EvalDataError

ROOT_ENV = "VISENT_EVAL_ROOT"


@dataclass(frozen=True)
class Layout:
    """One accepted local layout of a benchmark.

    Attributes:
        path: relative to ``ROOT``; a file, a folder of table files, or a glob that must match one file.
        format: a ``visent.data`` format name (``generic`` takes ``mapping``).
        mapping: the generic format's field mapping, ``visent data inspect --map`` syntax.
        task: the generic format's task for rows without options (their verifier).
        image_root: folder, relative to ``ROOT``, to look for images in first (None: next to the file).
        origin: where this layout is published.
    """

    path: str
    format: str
    mapping: str | None = None
    task: str | None = None
    image_root: str | None = None
    origin: str = ""


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark of a suite: its published source, the split the papers use, the local layouts read,
    and an optional fix-up of loaded rows (``post``, e.g. HallusionBench's 1/0 labels to Yes/No)."""

    key: str
    title: str
    hub_id: str
    split: str
    layouts: tuple[Layout, ...]
    rows: int | None = None  # rows in the published split (the docs table's "rows" column)
    post: Callable[[Example], Example] | None = None
    source: str = ""
    note: str = ""

    @property
    def folder(self) -> str:
        return self.layouts[0].path.split("/", 1)[0]


# ----------------------------------------------------------------------------------------------- fix-ups


def _set_answer(ex: Example, answer: str) -> None:
    # Suites load clean data (noise, if any, is injected later), so the clean label moves with the answer.
    ex.answer = answer
    ex.clean_answer = answer


def yes_no_answer(ex: Example) -> Example:
    """HallusionBench stores ``gt_answer`` as "1" (yes) / "0" (no); the model is asked a yes/no question
    and answers in words, so the label becomes "Yes" / "No" (matched case-insensitively by the verifier)."""
    label = {"1": "Yes", "0": "No"}.get(ex.answer.strip())
    if label is not None:
        _set_answer(ex, label)
    return ex


def inline_options(ex: Example) -> Example:
    """Benchmarks that write the options into the question (MathVerse ``"Choices:\\nA:30°\\nB:40°"``): keep
    the prompt as published, but record the options so the verifier accepts the option text as well as the
    letter. A row whose options cannot be read, or whose label is neither a letter nor an option, stays a
    free-form (letter-only) row."""
    from visent.data.formats.context import LETTERS, split_lettered_options

    split = split_lettered_options(ex.prompt, line_start=True)
    if split is None:
        return ex
    options = split[1]
    label = ex.answer.strip()
    if len(label) == 1 and label.upper() in LETTERS[: len(options)]:
        idx = LETTERS.index(label.upper())
    elif label in options:
        idx = options.index(label)
    else:
        return ex
    ex.task = "multiple_choice"
    ex.meta = {**ex.meta, "choices": options, "answer_text": options[idx]}
    _set_answer(ex, LETTERS[idx])
    return ex


# ------------------------------------------------------------------------------------------------- table

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.key: spec
    for spec in (
        BenchmarkSpec(
            "geo3k", "Geo3K", "hiyouga/geometry3k", "test", rows=601,
            # Card: features images (list of Image), problem ("<image>..."), answer (the option's value).
            layouts=(Layout("geo3k/data/test-*.parquet", "geometry3k", origin="Hub parquet"),),
            source="https://huggingface.co/datasets/hiyouga/geometry3k (VPPO README)",
            note="free-form answer (the value of the right option)",
        ),
        BenchmarkSpec(
            "mmk12", "MMK12", "FanqingM/MMK12", "test", rows=2000,
            layouts=(
                # Hub: data/test-*.parquet, rows id, subject, question (options inline as "A. .." lines),
                # answer (the letter), image ({bytes, path}); 2,000 four-option questions, 500 each of math,
                # physics, chemistry, biology. Layout as read by third-party code (lmms-eval's mmk12 task
                # note; importers reading data/*.parquet), not by the dataset card, which is not in reach here.
                Layout("mmk12/data/test-*.parquet", "generic",
                       "prompt=question,answer=answer,images=image,id=id,subject=subject", task="math",
                       origin="Hub parquet"),
                # MM-EUREKA's own eval copy: eval/k12/k12.json, rows {id, question, answer, image_path} with
                # image_path relative to the json (sample in shared/data/mmk12): a different, 500-row math set.
                Layout("mmk12/k12.json", "mmk12", origin="github.com/ModalMinds/MM-EUREKA eval/k12"),
            ),
            post=inline_options,
            source="https://huggingface.co/datasets/FanqingM/MMK12",
            note="Hub test split (2,000 multiple choice, options inside the question); MM-EUREKA's 500-row "
            "k12.json is read when the Hub copy is absent",
        ),
        BenchmarkSpec(
            "hallusionbench", "HallusionBench", "lmms-lab/HallusionBench", "image", rows=951,
            # Card: category, subcategory, visual_input, set_id, figure_id, sample_note, question_id, question,
            # gt_answer_details, gt_answer ("1" yes / "0" no), filename, image; splits image (951), non_image.
            # question_id repeats across figures, so rows keep the file:row id.
            layouts=(Layout("hallusionbench/data/image-*.parquet", "generic",
                            "prompt=question,answer=gt_answer,images=image,category=category,"
                            "subcategory=subcategory,figure_id=figure_id", task="math", origin="Hub parquet"),),
            post=yes_no_answer,
            source="https://huggingface.co/datasets/lmms-lab/HallusionBench",
            note="yes/no questions; the label 1/0 is read as Yes/No",
        ),
        BenchmarkSpec(
            "mathvista", "MathVista", "AI4Math/MathVista", "testmini", rows=1000,
            layouts=(
                Layout("mathvista/data/testmini-*.parquet", "mathvista", origin="Hub parquet"),
                Layout("mathvista/data/testmini.json", "mathvista", origin="github.com/lupantech/MathVista"),
            ),
            source="https://huggingface.co/datasets/AI4Math/MathVista",
            note="multi_choice rows are labelled by option text; free_form rows use MathVista's precision",
        ),
        BenchmarkSpec(
            "wemath", "We-Math", "We-Math/We-Math", "testmini", rows=1740,
            # data/testmini.json rows: ID, split, knowledge concept, question, option ("A. ..;B. .."),
            # answer (letter), image_path (relative to data/), key, question number, ...
            layouts=(Layout("wemath/data/testmini.json", "generic",
                            "prompt=question,choices=option,answer=answer,images=image_path,id=ID,"
                            "knowledge_concept=knowledge concept", origin="github.com/We-Math/We-Math"),),
            source="https://github.com/We-Math/We-Math (data/testmini.json); Hub: We-Math/We-Math",
            note="options composed into the prompt from the 'option' column; letter or option text accepted",
        ),
        BenchmarkSpec(
            "mathverse", "MathVerse", "AI4Math/MathVerse", "testmini", rows=3940,
            # Card (config testmini): sample_index, problem_index, problem_version, question, image, answer,
            # question_type, metadata, query_wo, query_cot; all five visual versions of the 788 problems.
            layouts=(Layout("mathverse/testmini.parquet", "generic",
                            "prompt=question,answer=answer,images=image,id=sample_index,"
                            "problem_version=problem_version,question_type=question_type", task="math",
                            origin="Hub parquet (config testmini)"),),
            post=inline_options,
            source="https://huggingface.co/datasets/AI4Math/MathVerse",
            note="testmini, all five image versions; options are inside the question text",
        ),
        BenchmarkSpec(
            "mathvision", "MathVision", "MathLLMs/MathVision", "test", rows=3040,
            layouts=(
                Layout("mathvision/data/test-*.parquet", "mathvision", origin="Hub parquet"),
                Layout("mathvision/data/test.jsonl", "mathvision", origin="github.com/mathllm/MATH-V"),
            ),
            source="https://huggingface.co/datasets/MathLLMs/MathVision",
            note="full test split (3,040); testmini (304) can be run with --data",
        ),
        BenchmarkSpec(
            "dynamath", "DynaMath", "DynaMath/DynaMath_Sample", "sample_variant1", rows=501,
            # Card: id, question, image (path text), decoded_image (Image), ground_truth, answer_type, subject,
            # knowledge_level; config paths data/sample1-* .. data/sample10-* for sample_variant1..10.
            layouts=(Layout("dynamath/data/sample1-*.parquet", "generic",
                            "prompt=question,answer=ground_truth,images=decoded_image,id=id,"
                            "answer_type=answer_type,subject=subject", task="math", origin="Hub parquet"),),
            post=inline_options,
            source="https://huggingface.co/datasets/DynaMath/DynaMath_Sample",
            note="the first of the 10 variants",
        ),
        BenchmarkSpec(
            "logicvista", "LogicVista", "lscpku/LogicVista", "test", rows=448,
            # data/dataset.json maps an id to {imagename, question, answer, reasoning, skill, capability, ..};
            # images in data/images/ (the repo's data/README.md).
            layouts=(Layout("logicvista/data/dataset.json", "generic",
                            "prompt=question,answer=answer,images=imagename,skill=skill", task="math",
                            image_root="logicvista/data/images", origin="github.com/Yijia-Xiao/LogicVista"),),
            post=inline_options,
            source="https://github.com/Yijia-Xiao/LogicVista (data/README.md); Hub: lscpku/LogicVista",
            note="answers are option letters; options are mostly drawn in the image",
        ),
        BenchmarkSpec(
            "mmmu_pro", "MMMU-Pro", "MMMU/MMMU_Pro", "test", rows=1730,
            # Card (config "standard (10 options)"): id, question, options (a Python list in a string),
            # explanation, image_1 .. image_7, img_type, answer (letter), topic_difficulty, subject.
            layouts=(Layout("mmmu_pro/standard (10 options)", "generic",
                            "prompt=question,choices=options,answer=answer,images=image_*,id=id,subject=subject",
                            origin="Hub parquet (config 'standard (10 options)')"),),
            source="https://huggingface.co/datasets/MMMU/MMMU_Pro",
            note="standard setting, 10 options composed into the prompt",
        ),
    )
}

SUITES: dict[str, tuple[str, ...]] = {
    # VEPO (docs/METHOD.md): Geo3K, MMK12, HallusionBench, MathVista, We-Math, MathVerse, MathVision.
    "vepo": ("geo3k", "mmk12", "hallusionbench", "mathvista", "wemath", "mathverse", "mathvision"),
    # VPPO README: MathVerse, DynaMath, MMK12, Geo3K, MathVision, We-Math, LogicVista, MMMU-Pro.
    "vppo": ("mathverse", "dynamath", "mmk12", "geo3k", "mathvision", "wemath", "logicvista", "mmmu_pro"),
}


class SuiteDataMissing(EvalDataError):
    """Local copies of one or more suite benchmarks are absent; ``lines`` has one line per benchmark."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def suite_root(root: str | os.PathLike | None) -> Path:
    """The folder the suite benchmarks live under: ``root``, else ``$VISENT_EVAL_ROOT``."""
    value = root if root is not None else os.environ.get(ROOT_ENV)
    if not value:
        raise EvalDataError(f"--suite needs the folder the benchmarks are in: --suite-root DIR or {ROOT_ENV}=DIR "
                            "(layout: docs/eval.md)")
    return Path(value).expanduser()


def _find(root: Path, layout: Layout) -> Path | None:
    target = root / layout.path
    if any(ch in layout.path for ch in "*?["):
        hits = sorted(glob.glob(glob.escape(str(root)) + "/" + layout.path))
        if len(hits) > 1:
            raise EvalDataError(f"{target}: {len(hits)} files match ({', '.join(Path(h).name for h in hits)}); "
                                "keep one copy of the split")
        return Path(hits[0]) if hits else None
    return target if target.exists() else None


def locate(spec: BenchmarkSpec, root: Path) -> tuple[Layout, Path] | None:
    """The first of the benchmark's layouts present under ``root``, with its path."""
    for layout in spec.layouts:
        path = _find(root, layout)
        if path is not None:
            return layout, path
    return None


def missing_line(spec: BenchmarkSpec, suite: str, root: Path) -> str:
    looked = " or ".join(str(root / layout.path) for layout in spec.layouts)
    return (f"{spec.title} (suite {suite}): no local copy at {looked}; download {spec.hub_id} "
            f"(split {spec.split}) from the Hugging Face Hub into {root / spec.folder} ({spec.source})")


def resolve_suite(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    progress: bool = False,
    image_check: str = "header",
) -> list[Benchmark]:
    """The benchmarks of suite ``name``, each loaded from its local copy under the root.

    Raises :class:`SuiteDataMissing` listing every benchmark without a local copy (all at once, before
    anything is loaded), and :class:`EvalDataError` for an unknown suite or a copy that does not load.
    """
    if name not in SUITES:
        raise EvalDataError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    base = suite_root(root)
    specs = [BENCHMARKS[key] for key in SUITES[name]]
    found, missing = [], []
    for spec in specs:
        hit = locate(spec, base)
        if hit is None:
            missing.append(missing_line(spec, name, base))
        else:
            found.append((spec, *hit))
    if missing:
        raise SuiteDataMissing(missing)
    return [load_benchmark(spec, layout, path, base, limit=limit, progress=progress, image_check=image_check)
            for spec, layout, path in found]


def load_benchmark(spec: BenchmarkSpec, layout: Layout, path: Path, root: Path, *, limit: int | None = None,
                   progress: bool = False, image_check: str = "header") -> Benchmark:
    """Load one located benchmark through the ordinary loaders, then apply its fix-up to the rows."""
    from visent.eval.sources import resolve

    image_root = str(root / layout.image_root) if layout.image_root else None
    bench = resolve(f"{spec.key}={path}", format=layout.format, mapping=layout.mapping, image_root=image_root,
                    limit=limit, progress=progress, image_check=image_check, default_task=layout.task)
    if spec.post is not None:
        # Materialised rows (images stay paths / lazy embedded handles), each fixed once.
        bench.examples = [spec.post(ex) for ex in bench.examples]
    return bench


def suite_table_markdown() -> str:
    """The suites as a Markdown table (what ``docs/eval.md`` shows)."""
    lines = ["| key | benchmark | Hub id | split | rows | local path under ROOT | suites | notes |",
             "|---|---|---|---|---:|---|---|---|"]
    for key, spec in BENCHMARKS.items():
        suites = ", ".join(s for s, keys in SUITES.items() if key in keys)
        paths = "<br>".join(f"`{layout.path}`" for layout in spec.layouts)
        rows = f"{spec.rows:,}" if spec.rows is not None else "-"
        lines.append(f"| {key} | {spec.title} | {spec.hub_id} | {spec.split} | {rows} | {paths} | {suites} | {spec.note} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "BENCHMARKS",
    "ROOT_ENV",
    "SUITES",
    "BenchmarkSpec",
    "Layout",
    "SuiteDataMissing",
    "inline_options",
    "locate",
    "resolve_suite",
    "suite_root",
    "suite_table_markdown",
    "yes_no_answer",
]
