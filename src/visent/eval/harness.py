"""``visent eval``: generation over benchmarks (greedy, or K samples each), scored by the training verifiers,
resumable.

Output folder layout (``--out DIR``):

- ``predictions.jsonl``: append-only, one scored example per line (``benchmark``, ``id``, ``task``,
  ``response``, ``score`` vs ``answer``, ``score_clean`` vs ``clean_answer``, ``parse_failed``,
  ``components``, labels). A rerun skips every ``(benchmark, id)`` already there, so an interrupted run
  resumes where it stopped; a torn last line (crash mid-write) is ignored and that row redone. With K > 1
  samples per example a row is written once all K are scored and adds ``k``, ``responses``, ``scores``,
  ``scores_clean`` (lists of K), ``pass`` / ``pass_clean`` (the best of the K, for pass@K); ``score`` /
  ``score_clean`` are then the means over the K samples and ``response`` the first sample.
- ``run.json``: the settings that determine the generations (model, prompt template, system prompt,
  max_new_tokens, reward overrides, samples per example, temperature, top-p, seed). Resuming with
  different settings is refused, so one folder never
  mixes generations from two configurations.
- ``results.json`` and ``results.md``: per-benchmark accuracy with a 95% interval (Wilson; with K samples,
  avg@K with a t interval over examples and pass@K, see ``report``), against the clean and the (possibly
  noisy) training labels; rewritten atomically after every batch.

Scores use ``visent.rewards``: each example's task picks its verifier (``TASK_REWARDS``) unless
``rewards={"grounding": "grounding_resized", ...}`` overrides it (e.g. for a model that speaks
Qwen2.5-VL's resized-pixel coordinates).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from visent.data.schema import Example
from visent.eval.judge import combine_samples
from visent.eval.report import markdown_table, summarize
from visent.eval.sources import Benchmark
from visent.io import json_lines, write_atomic, write_json_atomic

logger = logging.getLogger(__name__)

# One completion per example; with ``EvalSettings.samples`` K > 1, one list of K completions per example.
Generate = Callable[[Sequence[Example]], list[Any]]
PREDICTIONS = "predictions.jsonl"


class EvalConfigError(ValueError):
    """A setting that cannot work (or conflicts with what the output folder already holds)."""


@dataclass
class EvalSettings:
    """Everything that determines the generations; stored in ``run.json`` and checked on resume.

    Attributes:
        model: model name or path (``tiny:qwen2_5_vl`` builds the lab's tiny model).
        template: key of ``generation.PROMPT_TEMPLATES`` or a literal string with ``{prompt}``.
        system_prompt: optional system message (else a row's ``meta["system_prompt"]``).
        max_new_tokens: generation budget per example.
        rewards: task -> reward name overrides (e.g. ``{"grounding": "grounding_resized"}``).
        judge: ``judge.Judge.settings()`` (URL, model, mode, prompt version) when an LLM judge scores, else
            None; ``run_eval`` sets it from its ``judge`` argument.
        noise: ``[rate, seed]`` when label noise was injected before scoring, else None.
        samples: completions per example (K); 1 is greedy evaluation as before.
        temperature: sampling temperature; 0 means greedy decoding.
        top_p: nucleus-sampling mass (1.0 = off).
        seed: base seed of the sampling; each example's samples are drawn from a generator seeded by
            ``(seed, example id)``, so they do not depend on batching or on where a run was resumed.
    """

    model: str
    template: str = "plain"
    system_prompt: str | None = None
    max_new_tokens: int = 512
    rewards: dict[str, str] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    noise: list[float] | None = None
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


def _key(benchmark: str, example_id: str) -> str:
    return f"{benchmark}\x1f{example_id}"


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Records in ``predictions.jsonl``; unparsable lines (a torn final write) are skipped with a warning."""
    if not path.exists():
        return []
    records = []
    for lineno, record in json_lines(path, on_bad="none"):
        if record is None:
            logger.warning(
                "%s line %d is not valid JSON (interrupted write?); that row will be redone", path, lineno
            )
        elif isinstance(record, dict) and "benchmark" in record and "id" in record:
            records.append(record)
    return records


def _repair_tail(path: Path) -> None:
    """Make sure the file ends with a newline so an append after a torn line starts a fresh line."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            last = handle.read(1)
        if last != b"\n":
            with path.open("ab") as handle:
                handle.write(b"\n")


def check_run_settings(out: Path, settings: EvalSettings) -> None:
    """Write ``run.json`` on first use; refuse to resume a folder made with different settings."""
    run_file = out / "run.json"
    current = asdict(settings)
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
        except ValueError:
            previous = None
        if previous is not None:
            # A folder written before a setting existed was made with that setting's default (e.g. greedy
            # runs predate ``samples``): compare against the default, so such a folder still resumes.
            defaults = {k: v for k, v in asdict(EvalSettings(model="")).items() if k != "model"}
            previous = {**defaults, **previous}
        if previous is not None and previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise EvalConfigError(
                f"{out} already holds predictions made with different settings ({', '.join(changed)}: "
                f"{ {k: previous.get(k) for k in changed} } vs { {k: current.get(k) for k in changed} }); "
                "use another --out folder, or --overwrite to discard them"
            )
    write_json_atomic(
        run_file, {"settings": current, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    )


def check_sampling(settings: EvalSettings) -> None:
    """Refuse sampling settings that cannot work: K < 1, a negative temperature, top-p outside (0, 1],
    or K > 1 greedy samples (they would all be the same completion)."""
    if not isinstance(settings.samples, int) or settings.samples < 1:
        raise EvalConfigError(f"--samples must be an integer >= 1, got {settings.samples!r}")
    if not settings.temperature >= 0 or settings.temperature != settings.temperature:
        raise EvalConfigError(f"--temperature must be >= 0, got {settings.temperature!r}")
    if not 0 < settings.top_p <= 1:
        raise EvalConfigError(f"--top-p must be in (0, 1], got {settings.top_p!r}")
    if settings.samples > 1 and settings.temperature == 0:
        raise EvalConfigError(
            f"--samples {settings.samples} with --temperature 0 would repeat one greedy completion; "
            "set --temperature (the papers use 1.0)"
        )


def score_example(
    example: Example, response: str, rewards: dict[str, str], judge: Any = None
) -> dict[str, Any]:
    """One prediction record: the response scored against ``answer`` and ``clean_answer``.

    With ``judge`` (a ``judge.Judge``) the rule scores are then reviewed by the LLM judge (``Judge.review``);
    it raises ``judge.JudgeUnavailable`` when the endpoint fails, which stops the run before the batch is
    written.
    """
    from visent.rewards import get_reward, reward_for_task

    reward = get_reward(rewards[example.task]) if example.task in rewards else reward_for_task(example.task)
    row = {"id": example.id, "meta": example.meta}
    result = reward.score_one(response, example.answer, **row)
    clean = (
        result
        if example.clean_answer == example.answer
        else reward.score_one(response, example.clean_answer, **row)
    )
    record = {
        "id": example.id,
        "task": example.task,
        "reward": reward.name,
        "response": response,
        "score": result.score,
        "score_clean": clean.score,
        "parse_failed": result.parse_failed,
        "label_error": result.label_error or clean.label_error,
        "components": clean.components,
        "answer": example.answer,
        "clean_answer": example.clean_answer,
        "is_noisy": bool(example.is_noisy),
    }
    return record if judge is None else judge.review(example, record)


def score_samples(
    example: Example, responses: Sequence[str], rewards: dict[str, str], **score_kwargs: Any
) -> dict[str, Any]:
    """One prediction record for K sampled responses: each scored by :func:`score_example` (extra keyword
    arguments are passed on to it), then combined.

    ``score`` / ``score_clean`` are the means over the K samples (avg@K's per-example term), ``pass`` /
    ``pass_clean`` the best (pass@K's), ``parse_failed`` the share of unparsable samples, ``components`` the
    per-component means; ``response`` is the first sample and ``responses`` / ``scores`` / ``scores_clean``
    keep all K in order.
    """
    rows = [score_example(example, response, rewards, **score_kwargs) for response in responses]
    k = len(rows)
    first = rows[0]
    scores = [float(r["score"]) for r in rows]
    scores_clean = [float(r["score_clean"]) for r in rows]
    keys = sorted({name for r in rows for name in r["components"]})
    components = {
        name: sum(float(r["components"].get(name, 0.0)) for r in rows) / k for name in keys
    }
    return {
        **first,
        "response": first["response"],
        "score": sum(scores) / k,
        "score_clean": sum(scores_clean) / k,
        "parse_failed": sum(bool(r["parse_failed"]) for r in rows) / k,
        "label_error": any(r["label_error"] for r in rows),
        "components": components,
        "k": k,
        "responses": [r["response"] for r in rows],
        "scores": scores,
        "scores_clean": scores_clean,
        "pass": max(scores),
        "pass_clean": max(scores_clean),
        # With a judge, its per-sample verdicts and the rule scores it reviewed (empty without one).
        **combine_samples(rows),
    }


def pending(benchmarks: Sequence[Benchmark], out: str | Path) -> int:
    """How many examples of ``benchmarks`` have no prediction in ``out`` yet."""
    done = {_key(r["benchmark"], r["id"]) for r in read_predictions(Path(out) / PREDICTIONS)}
    return sum(_key(b.name, ex.id) not in done for b in benchmarks for ex in b.examples)


@dataclass
class EvalOutcome:
    """What a run did: ``summary`` per benchmark (see ``report.summarize``), rows generated now vs reused."""

    summary: dict[str, dict[str, Any]]
    generated: int
    reused: int
    out: Path


def _check_run(benchmarks: Sequence[Benchmark], settings: EvalSettings, batch_size: int) -> None:
    """Refuse, before anything is generated, what ``run_eval`` cannot do (``EvalConfigError``)."""
    from visent.rewards import TASK_REWARDS, get_reward

    names = [b.name for b in benchmarks]
    if len(set(names)) != len(names):
        raise EvalConfigError(
            f"benchmark names must be unique, got {names}; name them with --data NAME=SOURCE"
        )
    for reward_name in settings.rewards.values():
        try:
            get_reward(reward_name)
        except KeyError as exc:
            raise EvalConfigError(str(exc.args[0])) from None
    for bench in benchmarks:
        unscorable = sorted({ex.task for ex in bench.examples} - set(TASK_REWARDS) - set(settings.rewards))
        if unscorable:
            raise EvalConfigError(
                f"benchmark {bench.name!r} has tasks without a verifier: {unscorable}; set --task or --reward TASK=NAME"
            )
    if batch_size < 1:
        raise EvalConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_sampling(settings)


def run_eval(
    benchmarks: Sequence[Benchmark],
    generate: Generate,
    out: str | Path,
    settings: EvalSettings,
    *,
    batch_size: int = 8,
    progress: bool = True,
    judge: Any = None,
) -> EvalOutcome:
    """Generate and score every example not yet in ``out/predictions.jsonl``, then write the results.

    Args:
        benchmarks: named example sets (``sources.resolve``); names must be unique.
        generate: a backend (``generation.TransformersBackend`` / ``VLLMBackend``) or any
            ``examples -> completions`` callable.
        out: the output folder (created).
        settings: the generation settings, recorded in ``run.json``.
        batch_size: examples per ``generate`` call; predictions are appended after each batch.
        progress: show a tqdm bar.
        judge: an optional ``judge.Judge`` reviewing every score (``score_example``); its settings replace
            ``settings.judge``.
    """
    from tqdm.auto import tqdm

    # run.json records the judge that actually scores, so the resume check covers it.
    settings = replace(settings, judge=None if judge is None else judge.settings())
    _check_run(benchmarks, settings, batch_size)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_run_settings(out, settings)
    pred_path = out / PREDICTIONS
    existing: dict[str, dict[str, Any]] = {}
    for record in read_predictions(pred_path):
        existing.setdefault(_key(record["benchmark"], record["id"]), record)  # first write wins
    done = set(existing)
    _repair_tail(pred_path)

    wanted = {_key(b.name, ex.id) for b in benchmarks for ex in b.examples}
    todo = [(b.name, ex) for b in benchmarks for ex in b.examples if _key(b.name, ex.id) not in done]
    # Duplicate ids within a benchmark would be scored once and then look "done": refuse them.
    if len(wanted) != sum(len(b.examples) for b in benchmarks):
        raise EvalConfigError(
            "duplicate example ids within a benchmark; ids must be unique for resumable evaluation"
        )

    records = [r for key, r in existing.items() if key in wanted]
    meta = {
        "model": settings.model,
        "settings": asdict(settings),
        "benchmarks": {
            b.name: {"source": b.source, "n": len(b.examples), "skipped_rows": b.skipped} for b in benchmarks
        },
    }

    def write_results() -> dict[str, dict[str, Any]]:
        summary = summarize(records)
        write_json_atomic(out / "results.json", {**meta, "results": summary})
        header = f"# Evaluation of `{settings.model}`\n\n"
        write_atomic(out / "results.md", header + markdown_table(summary))
        return summary

    k = settings.samples
    bar = tqdm(total=len(todo), desc="visent eval", unit="ex", disable=not progress)
    generated = 0
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            responses = generate([ex for _, ex in chunk])
            if len(responses) != len(chunk):
                raise RuntimeError(f"backend returned {len(responses)} completions for {len(chunk)} prompts")
            if k > 1 and any(not isinstance(r, (list, tuple)) or len(r) != k for r in responses):
                raise RuntimeError(f"backend must return {k} completions per prompt (samples={k})")
            lines = []
            for (bench_name, ex), response in zip(chunk, responses):
                if k > 1:
                    scored = score_samples(ex, response, settings.rewards, judge=judge)
                else:
                    scored = score_example(ex, response, settings.rewards, judge)
                record = {"benchmark": bench_name, **scored}
                records.append(record)
                lines.append(json.dumps(record, ensure_ascii=False))
            with pred_path.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            generated += len(chunk)
            bar.update(len(chunk))
            write_results()
    finally:
        bar.close()
    summary = write_results()
    return EvalOutcome(summary=summary, generated=generated, reused=len(records) - generated, out=out)
