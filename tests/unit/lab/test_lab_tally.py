"""The tally task: answers agree with the pixels, and the fork / image-anchored labels are where they should be."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest

from visent.data.synthetic import (
    label_response,
    make_examples,
    response_spans,
    target_response,
    task_texts,
    token_kinds,
)
from visent.data.synthetic.shapes import COLORS, GRAY
from visent.data.synthetic.tally import (
    TALLY_ANSWER_NOUNS,
    TALLY_CLOSERS,
    TALLY_NOTES,
    TALLY_NOUNS,
    TALLY_OPENERS,
    TALLY_VERBS,
)
from visent.lab.premise import premise_metrics, record_kinds
from visent.viz.records import TokenRecord


def _cells_of(ex, rgb) -> int:
    arr = np.asarray(ex.images[0].convert("RGB"), dtype=np.int16)
    hit = np.abs(arr - np.array(rgb)).sum(-1) <= 6
    cell, (w, h) = ex.meta["cell"], ex.images[0].size
    return sum(bool(hit[r : r + cell, c : c + cell].any()) for r in range(0, h, cell) for c in range(0, w, cell))


def test_tally_counts_and_answer_match_the_pixels():
    seen = set()
    for ex in make_examples("tally", 60, seed=0):
        color = ex.meta["color"]
        n, g = _cells_of(ex, COLORS[color]), _cells_of(ex, GRAY)
        assert (n, g) == (ex.meta["count"], ex.meta["gray"])
        assert ex.prompt == f"How many {color} shapes are there? Explain briefly."
        assert ex.answer == str(n) and ex.task == "counting"
        resp = target_response(ex)
        assert re.search(rf"I \w+ {n} {color} \w+ and {g} gray \w+\.", resp), resp
        assert resp.endswith(f" is {n}.</think><answer>{n}</answer>")
        seen.add(n)
    assert seen == {1, 2, 3, 4, 5}


def test_tally_images_are_the_counting_images():
    # Same renderer from the same RNG state: only the response (and the prompt's last words) differ.
    from visent.data.synthetic import TASK_MAKERS

    for k in range(5):
        t = TASK_MAKERS["tally"](random.Random(k), "t")
        c = TASK_MAKERS["counting"](random.Random(k), "c")
        assert np.array_equal(np.asarray(t.images[0]), np.asarray(c.images[0]))
        assert t.answer == c.answer and t.prompt == c.prompt + " Explain briefly."


def test_tally_wording_is_drawn_per_example():
    w = [ex.meta["wording"] for ex in make_examples("tally", 300, seed=1)]
    sizes = {
        "opener": TALLY_OPENERS, "verb": TALLY_VERBS, "noun": TALLY_NOUNS, "noun2": TALLY_NOUNS,
        "note": TALLY_NOTES, "closer": TALLY_CLOSERS, "answer_noun": TALLY_ANSWER_NOUNS,
    }
    for key, options in sizes.items():
        assert {x[key] for x in w} == set(range(len(options))), key


def test_generator_spans_mark_counts_as_anchored_and_choices_as_forks():
    for ex in make_examples("tally", 80, seed=2):
        resp = target_response(ex)
        spans = response_spans(ex)
        w, m = ex.meta["wording"], ex.meta
        by_kind = {k: [resp[a:b] for a, b, kk in spans if kk == k] for k in ("anchor", "fork", "derived")}
        assert by_kind["anchor"] == [str(m["count"]), str(m["gray"])]
        assert by_kind["derived"] == [ex.answer, ex.answer]
        first = lambda s: re.match(r"\w+", s).group()
        assert by_kind["fork"] == [
            first(TALLY_OPENERS[w["opener"]]), TALLY_VERBS[w["verb"]], TALLY_NOUNS[w["noun"]],
            TALLY_NOUNS[w["noun2"]], first(TALLY_NOTES[w["note"]]), TALLY_CLOSERS[w["closer"]],
            TALLY_ANSWER_NOUNS[w["answer_noun"]],
        ]
        # The grammar-based labeller, which works on any text, finds exactly the generator's spans.
        assert label_response(resp) == spans


def test_label_response_on_free_text():
    text = (
        "<think>Going cell by cell. I spot 2 red items and 0 gray shapes. Hence the count is 3."
        "</think><answer>3</answer>"
    )
    got = [(text[a:b], k) for a, b, k in label_response(text)]
    assert got == [
        ("Going", "fork"), ("spot", "fork"), ("2", "anchor"), ("items", "fork"), ("0", "anchor"),
        ("shapes", "fork"), ("Hence", "fork"), ("count", "fork"), ("3", "derived"), ("3", "derived"),
    ]
    # Outside the grammar: nothing is labelled, nothing raises.
    assert label_response("red red red 3") == []
    assert label_response("<think>I see 2 red</think>") == [(7, 8, "fork")]


def test_token_kinds_use_overlap_with_spans():
    pieces = ["<think>", "Looking", " at", " red", " has", " ", "2", ","]
    text = "".join(pieces)
    spans = [(text.index("Looking"), text.index("Looking") + 7, "fork"), (text.index("2"), text.index("2") + 1, "anchor")]
    assert token_kinds(pieces, spans) == [None, "fork", None, None, None, None, "anchor", None]
    # A token glued to a leading space still overlaps its word.
    assert token_kinds(["a", " 2x"], [(2, 3, "anchor")]) == [None, "anchor"]


def test_tokenizer_corpus_of_the_older_tasks_is_unchanged_by_tally():
    # The counting / grounding / classification studies stay reproducible: their tokenizer corpus does
    # not contain tally's text (the warm-start adds it only when it trains on tally).
    default = task_texts(5)
    assert not any("Explain briefly" in t for t in default)
    assert any("Explain briefly" in t for t in task_texts(5, tasks=("tally",)))


# --------------------------------------------------------------------------------------------------
# premise_metrics against a plain reference


def _reference(records, ratio=0.2):
    """Slow, obvious version: sort each response's tokens, take ceil(ratio·n), count kinds."""
    groups = {"anchor": [], "fork": [], "derived": [], None: []}
    jsds = {"anchor": [], "other": []}
    ent_top, vepo_top = [], []
    inter = union = 0
    for r in records:
        kinds = record_kinds(r)
        n = len(kinds)
        k = max(1, math.ceil(ratio * n))
        h, j, v = r.signals["entropy"], r.signals["jsd"], r.signals["score:vepo"]
        e_idx = set(sorted(range(n), key=lambda i: -h[i])[:k])
        v_idx = set(sorted(range(n), key=lambda i: -v[i])[:k])
        for i in range(n):
            groups[kinds[i]].append(h[i])
            jsds["anchor" if kinds[i] == "anchor" else "other"].append(j[i])
        ent_top += [kinds[i] for i in e_idx]
        vepo_top += [kinds[i] for i in v_idx]
        inter += len(e_idx & v_idx)
        union += len(e_idx | v_idx)
    mean = lambda xs: sum(xs) / len(xs)
    return {
        "entropy_anchor": mean(groups["anchor"]),
        "entropy_fork": mean(groups["fork"]),
        "entropy_rest": mean(groups["fork"] + groups["derived"] + groups[None]),
        "jsd_anchor": mean(jsds["anchor"]),
        "jsd_rest": mean(jsds["other"]),
        "anchor_share_entropy_top": ent_top.count("anchor") / len(ent_top),
        "anchor_share_vepo_top": vepo_top.count("anchor") / len(vepo_top),
        "fork_share_entropy_top": ent_top.count("fork") / len(ent_top),
        "overlap_entropy_vepo": inter / union,
    }


def _records(n: int, seed: int) -> list[TokenRecord]:
    rng = random.Random(seed)
    out = []
    for ex in make_examples("tally", n, seed=seed):
        resp = target_response(ex)
        # Word-ish pieces (as a BPE would cut them), ending with the end-of-turn token.
        pieces = re.findall(r"<[^>]+>|\s?\w+|[^\w\s]", resp) + ["<|im_end|>"]
        assert "".join(pieces) == resp + "<|im_end|>"
        m = len(pieces)
        out.append(
            TokenRecord(
                id=ex.id, prompt=ex.prompt, tokens=pieces, selected=[False] * m,
                signals={
                    "entropy": [rng.random() for _ in range(m)],
                    "jsd": [rng.random() * 1e-5 for _ in range(m)],
                    "score:vepo": [rng.random() for _ in range(m)],
                },
            )
        )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_premise_metrics_match_a_plain_reference(seed):
    records = _records(7, seed)
    got = premise_metrics(records)
    want = _reference(records)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert got["n_anchor"] == 2 * len(records) and got["n_fork"] == 7 * len(records)


def test_premise_metrics_on_a_hand_built_case():
    # One response; anchored counts get low entropy and high JSD, forks high entropy and no JSD.
    ex = next(e for e in make_examples("tally", 20, seed=5) if 31 <= len(re.findall(r"<[^>]+>|\s?\w+|[^\w\s]", target_response(e))) <= 35)
    resp = target_response(ex)
    pieces = re.findall(r"<[^>]+>|\s?\w+|[^\w\s]", resp)
    kinds = token_kinds(pieces, response_spans(ex))
    # Distinct fork entropies: which forks tie-breaking picks must not matter.
    h = [0.5 if k == "anchor" else 2.0 + 0.01 * i if k == "fork" else 0.0 for i, k in enumerate(kinds)]
    j = [1.0 if k == "anchor" else 0.0 for k in kinds]
    v = [hh * (1 + 10 * jj) for hh, jj in zip(h, j)]  # anchored: 5.5 > forks' ~2
    rec = TokenRecord(id="x", prompt="", tokens=pieces, selected=[False] * len(pieces),
                      signals={"entropy": h, "jsd": j, "score:vepo": v})
    m = premise_metrics([rec])
    k = math.ceil(0.2 * len(pieces))
    assert k == 7  # the 7 forks are exactly the entropy top-20%
    assert m["entropy_anchor"] == 0.5 and 2.0 < m["entropy_fork"] < 2.4
    assert m["anchor_share_entropy_top"] == 0.0 and m["fork_share_entropy_top"] == 1.0
    # VEPO's top-7: the 2 anchored counts (5.5), then the 5 highest-entropy forks (also in the entropy top).
    assert m["anchor_share_vepo_top"] == pytest.approx(2 / 7) and m["fork_share_vepo_top"] == pytest.approx(5 / 7)
    assert m["overlap_entropy_vepo"] == pytest.approx(5 / (7 + 2))
    assert m["jsd_anchor"] == 1.0 and m["jsd_rest"] == 0.0


def test_sft_probe_leaves_out_exactly_the_fork_tokens():
    from visent.lab.warmstart import fork_mask, sft_batch
    from visent.models import build_tiny

    _, processor = build_tiny(texts=task_texts(tasks=("tally",)), vocab_size=768, hidden_size=32, num_layers=1)
    exs = make_examples("tally", 3, seed=4)
    batch = sft_batch(processor, exs)
    mask = fork_mask(processor, exs, batch["labels"])
    tok = processor.tokenizer
    for b, ex in enumerate(exs):
        resp = target_response(ex)
        forks = [resp[a:e] for a, e, k in response_spans(ex) if k == "fork"]
        got = [tok.decode([int(i)]).strip() for i in batch["input_ids"][b][mask[b]]]
        assert got == forks
    # A task without forks masks nothing.
    c = make_examples("counting", 2, seed=0)
    assert not fork_mask(processor, c, sft_batch(processor, c)["labels"]).any()


def test_lab_datasets_default_to_their_task_reward():
    from visent.trainer.sources import resolve_rewards

    assert [r.name for r in resolve_rewards([], "lab:tally")] == ["r1_counting"]
    for task in ("counting", "grounding", "classification"):
        assert [r.name for r in resolve_rewards([], f"lab:{task}")] == [f"r1_{task}"]
