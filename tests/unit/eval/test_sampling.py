"""K samples per example: avg@K / pass@K and their intervals, resumable rows, reproducible seeded sampling."""

from __future__ import annotations

import json
import math
import random

import pytest

from visent.data.synthetic import target_response
from visent.eval.harness import EvalConfigError, EvalSettings, check_sampling, run_eval
from visent.eval.report import markdown_table, summarize
from visent.eval.sources import Benchmark, resolve
from visent.intervals import example_mean_interval, t_quantile, wilson_interval

# Two-sided 97.5% Student-t quantiles (printed tables, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize(("df", "ref"), sorted(T975.items()))
def test_t_quantile_matches_the_printed_table(df, ref):
    assert t_quantile(0.975, df) == pytest.approx(ref, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-ref, abs=1e-3)


def _slow_t_interval(values):
    """Reference: the textbook t interval, computed in float64 by hand from the printed quantile."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def test_example_interval_is_the_t_interval_over_examples():
    values = [0.0, 0.25, 0.5, 0.5, 0.75, 1.0, 0.125, 0.875, 0.375, 0.625, 0.5]  # n = 11, df = 10
    lo, hi = example_mean_interval(values)
    ref = _slow_t_interval(values)
    assert lo == pytest.approx(ref[0], abs=2e-4) and hi == pytest.approx(ref[1], abs=2e-4)
    # All examples alike: the t interval would be a point; Wilson over the n examples is used instead.
    assert example_mean_interval([0.0] * 6) == pytest.approx(wilson_interval(0, 6))


def test_interval_over_examples_covers_at_the_nominal_rate():
    """Simulated benchmark: per-example difficulty p_i ~ Beta, K=8 Bernoulli(p_i) samples each. The
    interval over examples should cover the true avg@K about 95% of the time; treating the n*K samples as
    independent (Wilson on n*K) covers far less because samples of one example are correlated."""
    rng = random.Random(0)
    n, k, trials = 40, 8, 400
    cover_examples = cover_naive = 0
    for _ in range(trials):
        ps = [rng.betavariate(0.5, 0.5) for _ in range(n)]
        truth = 0.5  # mean of Beta(0.5, 0.5)
        means = [sum(rng.random() < p for _ in range(k)) / k for p in ps]
        lo, hi = example_mean_interval(means)
        cover_examples += lo <= truth <= hi
        lo_n, hi_n = wilson_interval(sum(means) * k, n * k)
        cover_naive += lo_n <= truth <= hi_n
    assert 0.91 <= cover_examples / trials <= 0.99
    assert cover_naive / trials < 0.8


def _rows(name, scores_per_example):
    rows = []
    for i, scores in enumerate(scores_per_example):
        k = len(scores)
        row = {"benchmark": name, "id": str(i), "task": "math", "score": sum(scores) / k,
               "score_clean": sum(scores) / k, "parse_failed": 0.0, "is_noisy": False}
        if k > 1:
            row.update(k=k, scores=scores, scores_clean=scores, **{"pass": max(scores), "pass_clean": max(scores)})
        rows.append(row)
    return rows


def test_summary_reports_avg_and_pass_at_k():
    per_example = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]]
    block = summarize(_rows("b", per_example))["b"]
    assert block["k"] == 4
    assert block["accuracy_clean"] == pytest.approx((0.5 + 0 + 1 + 0.25 + 0) / 5)
    assert block["pass_at_k_clean"] == pytest.approx(3 / 5)
    assert block["ci95_pass_clean"] == pytest.approx(list(wilson_interval(3, 5)))
    assert block["ci95_clean"] == pytest.approx(list(example_mean_interval([0.5, 0, 1, 0.25, 0])))
    table = markdown_table({"b": block})
    assert "avg@K" in table and "pass@K" in table and "| b | math | 5 | 4 | 35.0 [" in table


def test_one_sample_summary_is_unchanged():
    block = summarize(_rows("g", [[1], [0], [1]]))["g"]
    assert "k" not in block and "pass_at_k" not in block
    assert block["ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert markdown_table({"g": block}).startswith("| benchmark | task | n | accuracy % [95% CI] |")


class Sampler:
    """Stand-in for a sampling backend: K responses per example, the right answer in sample 0 only for
    even positions in the lab stream; records every example it was asked for."""

    def __init__(self, k, fail_after=None):
        self.k, self.fail_after, self.seen = k, fail_after, []

    def __call__(self, examples):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen += [ex.id for ex in examples]
        out = []
        for ex in examples:
            right = target_response(ex)
            good = int(ex.id.rsplit("-", 1)[-1]) % 2 == 0 if ex.id[-1].isdigit() else True
            out.append([right if (good and j == 0) else "<answer>999</answer>" for j in range(self.k)])
        return out


def test_sampled_rows_resume_and_refuse_other_settings(tmp_path):
    bench = resolve("lab:counting:6")
    settings = EvalSettings(model="stand-in", samples=3, temperature=1.0, seed=7)
    first = Sampler(3, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_eval([bench], first, tmp_path, settings, batch_size=2, progress=False)
    saved = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(saved) == 2 and all(r["k"] == 3 and len(r["responses"]) == 3 for r in saved)

    second = Sampler(3)
    outcome = run_eval([bench], second, tmp_path, settings, batch_size=2, progress=False)
    assert outcome.generated == 4 and outcome.reused == 2
    assert not set(second.seen) & {r["id"] for r in saved}  # only the unscored examples were generated
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["scores"][1:] == [0.0, 0.0]
        assert r["score"] == pytest.approx(sum(r["scores"]) / 3) and r["pass"] == max(r["scores"])
        assert r["response"] == r["responses"][0]
    block = outcome.summary["lab-counting"]
    assert block["k"] == 3 and block["pass_at_k"] == pytest.approx(sum(r["pass"] for r in rows) / 6)

    for changed in (EvalSettings(model="stand-in", samples=4, temperature=1.0, seed=7),
                    EvalSettings(model="stand-in", samples=3, temperature=0.7, seed=7)):
        with pytest.raises(EvalConfigError, match="different settings"):
            run_eval([bench], Sampler(changed.samples), tmp_path, changed, progress=False)


def test_backend_must_return_k_samples(tmp_path):
    bench = Benchmark("c", resolve("lab:counting:2").examples, "lab")
    settings = EvalSettings(model="stand-in", samples=2, temperature=1.0)
    with pytest.raises(RuntimeError, match="2 completions per prompt"):
        run_eval([bench], lambda exs: ["x" for _ in exs], tmp_path, settings, progress=False)


def test_greedy_folder_from_before_sampling_existed_still_resumes(tmp_path):
    bench = resolve("lab:counting:2")
    settings = EvalSettings(model="stand-in")
    run_eval([bench], lambda exs: [target_response(e) for e in exs], tmp_path, settings, progress=False)
    run_file = tmp_path / "run.json"
    stored = json.loads(run_file.read_text())
    for key in ("samples", "temperature", "top_p", "seed"):
        del stored["settings"][key]  # what an older visent wrote
    run_file.write_text(json.dumps(stored))
    outcome = run_eval([bench], lambda exs: [], tmp_path, settings, progress=False)
    assert outcome.reused == 2 and outcome.generated == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"samples": 0}, "--samples"), ({"samples": 4}, "--temperature"), ({"temperature": -1.0}, "--temperature"),
     ({"top_p": 0.0, "temperature": 1.0}, "--top-p")],
)
def test_impossible_sampling_settings_are_refused(kwargs, message):
    with pytest.raises(EvalConfigError, match=message):
        check_sampling(EvalSettings(model="m", **kwargs))


def test_transformers_sampling_is_seeded_per_example(tmp_path):
    """On the tiny model: K samples per example; an example's samples do not depend on the batch it is in,
    another seed gives other samples, and greedy stays greedy (K=1 at temperature 0 is one string each)."""
    from PIL import Image

    from visent.data.schema import Example
    from visent.eval.generation import TransformersBackend
    from visent.models import load_model_and_processor

    image = tmp_path / "im.png"
    Image.new("RGB", (56, 56), (0, 120, 0)).save(image)
    exs = [Example(id="a", task="math", prompt="Count.", images=[str(image)], answer="1"),
           Example(id="b", task="math", prompt="What is 2+2?", answer="4")]
    model, processor = load_model_and_processor("tiny:qwen2_5_vl", need_adapter=False)

    def backend(**kw):
        return TransformersBackend(model, processor, max_new_tokens=8, **kw)

    sampler = backend(samples=3, temperature=1.0, seed=5)
    both = sampler(exs)
    assert [len(s) for s in both] == [3, 3] and all(isinstance(t, str) for s in both for t in s)
    assert sampler([exs[1]]) == [both[1]]  # same samples alone as in a batch of two
    assert len(set(both[0])) > 1  # temperature 1 on a random model: the samples differ
    assert backend(samples=3, temperature=1.0, seed=6)(exs) != both
    greedy = backend()(exs)
    assert all(isinstance(t, str) for t in greedy) and backend()(exs) == greedy
    one = backend(samples=1, temperature=1.0, seed=5)(exs)
    assert all(isinstance(t, str) for t in one)


def test_vllm_backend_asks_for_k_samples_with_a_seed_per_example(monkeypatch):
    """vLLM is not installed here: the backend's request building and output shape are checked with a
    stand-in engine (``n=K`` and a per-request seed, one list of K texts per prompt)."""
    from types import SimpleNamespace

    from visent.data.schema import Example
    from visent.eval import generation
    from visent.eval.generation import VLLMBackend, example_seed

    backend = VLLMBackend.__new__(VLLMBackend)
    backend.samples, backend.temperature, backend.top_p, backend.seed = 3, 1.0, 0.9, 11
    backend.max_new_tokens, backend.template, backend.system_prompt = 64, "plain", None
    backend.params = "greedy-params"
    backend._sampling_params = lambda **kw: kw
    backend.processor = None
    seen = {}

    class Engine:
        def generate(self, requests, params, use_tqdm):
            seen["params"] = params
            return [SimpleNamespace(outputs=[SimpleNamespace(text=f"{i}-{j}") for j in range(3)])
                    for i in range(len(requests))]

    backend.llm = Engine()
    exs = [Example(id="a", task="math", prompt="p"), Example(id="b", task="math", prompt="q")]
    monkeypatch.setattr(generation, "chat_prompt", lambda processor, ex, template, system: ex.prompt)
    out = backend(exs)
    assert out == [["0-0", "0-1", "0-2"], ["1-0", "1-1", "1-2"]]
    assert seen["params"] == [
        {"n": 3, "temperature": 1.0, "top_p": 0.9, "max_tokens": 64, "seed": example_seed(11, ex)} for ex in exs
    ]
    backend.samples, backend.temperature = 1, 0.0
    assert backend._params(exs) == "greedy-params"
