"""visent.trainer.dynamic_sampling.fill_batch: the refill loop on fake chunks (no model)."""

from __future__ import annotations

import pytest
import torch

from visent.trainer.dynamic_sampling import DynamicSamplingError, fill_batch


def _run(metrics, rows, K=2, max_tries=20, rule="easyr1", on_exhaust="error"):
    """``metrics``: one list of per-response metrics per chunk; a batch is the list of (chunk, response) ids."""
    chunks = iter(metrics)
    seen = []

    def generate(chunk_rows):
        i = len(seen)
        seen.append(list(chunk_rows))
        m = torch.tensor(next(chunks), dtype=torch.float64)
        return [(i, j) for j in range(len(m))], m

    def draw(groups):
        return [f"new{len(seen)}-{g}" for g in range(groups) for _ in range(K)]

    batch, stats = fill_batch(
        rows, K, generate, lambda b, idx: [b[i] for i in idx.tolist()], lambda parts: [x for part in parts for x in part], draw,
        rule=rule, max_tries=max_tries, on_exhaust=on_exhaust,
    )
    return batch, stats, seen


def test_refills_until_full_and_truncates():
    rows = ["a", "a", "b", "b", "c", "c"]  # 3 groups of 2
    # chunk 0 keeps group 1 only; chunk 1 keeps groups 0 and 2; chunk 2 keeps all (only 0 needed... truncated)
    batch, stats, seen = _run([[1, 1, 0, 1, 0, 0], [1, 0, 1, 1, 0, 1], [1, 0, 1, 0, 0, 1]], rows)
    assert batch == [(0, 2), (0, 3), (1, 0), (1, 1), (1, 4), (1, 5)]
    assert (stats.kept, stats.dropped, stats.tries) == (3, 3, 2)
    assert seen[0] == rows and len(seen[1]) == 6 and seen[1][0].startswith("new")


def test_full_first_chunk_returns_it_unchanged():
    batch, stats, _ = _run([[1, 0, 0, 1]], ["a", "a", "b", "b"])
    assert batch == [(0, 0), (0, 1), (0, 2), (0, 3)] and (stats.tries, stats.dropped) == (1, 0)


def test_clear_error_when_the_data_cannot_fill():
    with pytest.raises(DynamicSamplingError, match=r"found 0 of 2 groups .* in 3 generation rounds"):
        _run([[1, 1, 0, 0]] * 3, ["a", "a", "b", "b"], max_tries=3)


def test_verl_rule_keeps_graded_groups_easyr1_drops():
    rows = ["a", "a"]
    batch, _, _ = _run([[0.995, 0.999]], rows, rule="verl")
    assert len(batch) == 2
    with pytest.raises(DynamicSamplingError):
        _run([[0.995, 0.999]], rows, rule="easyr1", max_tries=1)


def test_top_up_fills_with_the_last_rounds_uninformative_groups():
    rows = ["a", "a", "b", "b", "c", "c"]  # 3 groups of 2
    # round 0 keeps group 2; round 1 keeps none: after 2 tries, 2 groups are missing and come from round 1
    batch, stats, _ = _run([[1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 1]], rows, max_tries=2, on_exhaust="top_up")
    assert batch == [(0, 4), (0, 5), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert (stats.kept, stats.topped_up, stats.tries, stats.dropped) == (1, 2, 2, 5)


def test_top_up_takes_only_the_missing_groups_after_the_last_rounds_informative_ones():
    rows = ["a", "a", "b", "b", "c", "c"]
    # one round only: group 1 is informative, then groups 0 and 2 (uniform) top the batch up
    batch, stats, _ = _run([[0, 0, 1, 0, 1, 1]], rows, max_tries=1, on_exhaust="top_up")
    assert sorted(batch) == [(0, j) for j in range(6)] and batch[:2] == [(0, 2), (0, 3)]
    assert (stats.kept, stats.topped_up) == (1, 2)


def test_unknown_on_exhaust_is_refused():
    with pytest.raises(ValueError, match="on_exhaust"):
        _run([[1, 0]], ["a", "a"], on_exhaust="skip")
