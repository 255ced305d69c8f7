"""The evaluation loop with stand-in generators: scoring against both labels, resuming, refusing mixes."""

from __future__ import annotations

import json

import pytest

from visent.data.noise import inject_label_noise
from visent.data.synthetic import target_response
from visent.eval.harness import (
    PREDICTIONS,
    EvalConfigError,
    EvalSettings,
    pending,
    read_predictions,
    run_eval,
)
from visent.eval.sources import Benchmark, resolve


class Oracle:
    """Answers every example with the lab's reference response (built from the clean label); counts calls."""

    def __init__(self, fail_after_calls: int | None = None):
        self.calls = 0
        self.generated = 0
        self.fail_after_calls = fail_after_calls

    def __call__(self, examples):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.generated += len(examples)
        return [target_response(ex) for ex in examples]


SETTINGS = EvalSettings(model="oracle", max_new_tokens=16)


def _bench(spec="lab:counting:6"):
    return resolve(spec)


def test_scores_against_clean_and_noisy_labels(tmp_path):
    bench = _bench()
    noisy, _ = inject_label_noise(bench.examples, rate=0.5, seed=3)
    outcome = run_eval(
        [Benchmark("count", noisy, "lab")], Oracle(), tmp_path, SETTINGS, batch_size=4, progress=False
    )
    result = outcome.summary["count"]
    # the oracle answers the clean label: right on every clean label, wrong on the 3 corrupted ones
    assert result["accuracy_clean"] == 1.0
    assert result["n_noisy"] == 3 and result["accuracy"] == pytest.approx(0.5)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"]["count"]["ci95_clean"][1] == 1.0
    assert "| count | counting | 6 | 100.0 [" in (tmp_path / "results.md").read_text()


def test_resume_after_interruption_generates_only_the_rest(tmp_path):
    benches = [_bench("lab:counting:5"), _bench("lab:grounding:4")]
    first = Oracle(fail_after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        run_eval(benches, first, tmp_path, SETTINGS, batch_size=3, progress=False)
    assert first.generated == 6 and len(read_predictions(tmp_path / PREDICTIONS)) == 6
    assert pending(benches, tmp_path) == 3

    second = Oracle()
    outcome = run_eval(benches, second, tmp_path, SETTINGS, batch_size=3, progress=False)
    assert second.generated == 3 and outcome.generated == 3 and outcome.reused == 6
    assert outcome.summary["lab-counting"]["n"] == 5 and outcome.summary["lab-grounding"]["n"] == 4
    assert outcome.summary["lab-grounding"]["accuracy_clean"] == 1.0

    third = Oracle()
    lines_before = (tmp_path / PREDICTIONS).read_text()
    outcome = run_eval(benches, third, tmp_path, SETTINGS, batch_size=3, progress=False)
    assert third.calls == 0 and outcome.generated == 0 and outcome.reused == 9
    assert (tmp_path / PREDICTIONS).read_text() == lines_before  # nothing appended


def test_torn_last_line_is_redone(tmp_path):
    bench = _bench("lab:counting:4")
    run_eval([bench], Oracle(), tmp_path, SETTINGS, batch_size=4, progress=False)
    path = tmp_path / PREDICTIONS
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # a crash in the middle of writing the last record
    assert pending([bench], tmp_path) == 1
    redo = Oracle()
    outcome = run_eval([bench], redo, tmp_path, SETTINGS, batch_size=4, progress=False)
    assert redo.generated == 1 and outcome.summary["lab-counting"]["n"] == 4
    assert len(read_predictions(path)) == 4


def test_refuses_to_mix_settings_in_one_folder(tmp_path):
    bench = _bench("lab:counting:2")
    run_eval([bench], Oracle(), tmp_path, SETTINGS, progress=False)
    other = EvalSettings(model="oracle", max_new_tokens=32)
    with pytest.raises(EvalConfigError, match="max_new_tokens"):
        run_eval([bench], Oracle(), tmp_path, other, progress=False)


def test_bad_settings_fail_clearly(tmp_path):
    bench = _bench("lab:counting:2")
    with pytest.raises(EvalConfigError, match="valid rewards"):
        run_eval(
            [bench], Oracle(), tmp_path, EvalSettings(model="m", rewards={"counting": "nope"}), progress=False
        )
    with pytest.raises(EvalConfigError, match="unique"):
        run_eval([bench, bench], Oracle(), tmp_path / "x", SETTINGS, progress=False)
    other = Benchmark("o", [bench.examples[0].__class__(id="1", task="other", prompt="q", answer="a")], "x")
    with pytest.raises(EvalConfigError, match="without a verifier"):
        run_eval([other], Oracle(), tmp_path / "y", SETTINGS, progress=False)


def test_reward_override_changes_the_verifier(tmp_path):
    # The lab's grounding answers are in original pixels; reading them as a [0,1000) grid must fail them.
    bench = _bench("lab:grounding:4")
    settings = EvalSettings(model="oracle", rewards={"grounding": "grounding_grid1000"})
    outcome = run_eval([bench], Oracle(), tmp_path, settings, progress=False)
    assert outcome.summary["lab-grounding"]["accuracy_clean"] == 0.0
    assert {r["reward"] for r in read_predictions(tmp_path / PREDICTIONS)} == {"grounding_grid1000"}
