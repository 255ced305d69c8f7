"""score_responses on tiny Qwen2-VL / Qwen2.5-VL: the trainer's counterfactual pass outside training.

The statistics are checked against an independent float64 reference: each example alone (no padding,
no batching), full-vocabulary logits from the model's own forward with the clean image and with the
image removed (``no_image`` sets ``pixel_values`` to zeros, so the reference can rebuild it exactly).
"""

from __future__ import annotations

import math

import pytest
import torch

from visent.data.schema import Example
from visent.data.synthetic import make_examples
from visent.models import build_tiny

KINDS = ("qwen2_5_vl", "qwen2_vl")
from visent.perturb import PatchLayout
from visent.viz.scoring import decode_tokens, pixel_values_to_images, score_responses

RESPONSES = ["<think>I count 3 red shapes.</think><answer>3</answer>", "<answer>12</answer>", "two"]


@pytest.fixture(scope="module", params=KINDS)
def tiny(request):
    model, processor = build_tiny(request.param, hidden_size=64, num_layers=2, seed=0)
    return model, processor


@pytest.fixture(scope="module")
def examples():
    return make_examples("counting", 3, seed=5)


def _reference(model, processor, example: Example, response_ids: list[int]) -> dict[str, torch.Tensor]:
    """float64 entropy / perturbed entropy / JSD for one example with the image zeroed as perturbation."""
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}] * len(example.images) + [{"type": "text", "text": example.prompt}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    enc = processor(text=[text], images=list(example.images), return_tensors="pt")
    P = enc["input_ids"].shape[1]
    ids = torch.cat([enc["input_ids"], torch.tensor([response_ids])], dim=1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "image_grid_thw": enc["image_grid_thw"]}
    if "mm_token_type_ids" in enc:
        inputs["mm_token_type_ids"] = torch.cat(
            [enc["mm_token_type_ids"], torch.zeros(1, len(response_ids), dtype=torch.long)], dim=1
        )
    out = {}
    with torch.no_grad():
        for name, pv in (("clean", enc["pixel_values"]), ("pert", torch.zeros_like(enc["pixel_values"]))):
            logits = model(**inputs, pixel_values=pv).logits[0, P - 1 : -1].double()
            out[name] = torch.log_softmax(logits, dim=-1)
    lp, lq = out["clean"], out["pert"]
    p, q = lp.exp(), lq.exp()
    lm = torch.logaddexp(lp, lq) - math.log(2)
    return {
        "entropy": -(p * lp).sum(-1),
        "entropy_perturbed": -(q * lq).sum(-1),
        "jsd": (0.5 * (p * (lp - lm)).sum(-1) + 0.5 * (q * (lq - lm)).sum(-1)).clamp(min=0),
    }


def test_stats_match_a_float64_reference(tiny, examples):
    model, processor = tiny
    tok = processor.tokenizer
    records = score_responses(model, processor, examples, RESPONSES, perturbation="no_image", batch_size=3)
    for rec, ex, resp in zip(records, examples, RESPONSES):
        ids = tok.encode(resp, add_special_tokens=False) + [tok.eos_token_id]
        assert rec.token_ids == ids
        assert "".join(rec.tokens) == resp + tok.eos_token
        ref = _reference(model, processor, ex, ids)
        for name, values in ref.items():
            got = torch.tensor(rec.signals[name], dtype=torch.float64)
            torch.testing.assert_close(got, values, atol=2e-5, rtol=1e-4, msg=lambda m, w=f"{ex.id} {name}": f"{w}: {m}")
        gap = torch.tensor(rec.signals["entropy_perturbed"]) - torch.tensor(rec.signals["entropy"])
        torch.testing.assert_close(torch.tensor(rec.signals["gap"]), gap)


def test_identity_gives_exactly_zero_jsd_and_noise_gives_positive(tiny, examples):
    model, processor = tiny
    same = score_responses(model, processor, examples, RESPONSES, perturbation="identity")
    for rec in same:
        assert all(v == 0.0 for v in rec.signals["jsd"]) and all(v == 0.0 for v in rec.signals["kl"])
        assert rec.signals["entropy_perturbed"] == rec.signals["entropy"]
    noisy = score_responses(model, processor, examples, RESPONSES, perturbation="pixel_values_gaussian", seed=1)
    for rec, ref in zip(noisy, same):
        assert all(v > 0.0 for v in rec.signals["jsd"])
        assert rec.signals["entropy"] == pytest.approx(ref.signals["entropy"], abs=1e-5)  # the clean pass is the same


def test_perturbation_is_seeded(tiny, examples):
    model, processor = tiny
    a = score_responses(model, processor, examples[:1], RESPONSES[:1], seed=3)
    b = score_responses(model, processor, examples[:1], RESPONSES[:1], seed=3)
    c = score_responses(model, processor, examples[:1], RESPONSES[:1], seed=4)
    assert a[0].signals["jsd"] == b[0].signals["jsd"]
    assert a[0].signals["jsd"] != c[0].signals["jsd"]


@pytest.mark.parametrize("method,ratio", [("vepo", 0.2), ("jsd", 0.5), ("entropy", 0.3)])
def test_selection_is_the_top_ratio_of_the_chosen_score(tiny, examples, method, ratio):
    model, processor = tiny
    for rec in score_responses(model, processor, examples, RESPONSES, method=method, ratio=ratio):
        n = len(rec.tokens)
        assert sum(rec.selected) == max(1, math.ceil(ratio * n))
        scores = rec.signals[f"score:{method}"]
        chosen = [s for s, keep in zip(scores, rec.selected) if keep]
        others = [s for s, keep in zip(scores, rec.selected) if not keep]
        assert not others or min(chosen) >= max(others)
        assert rec.selection_method == method


def test_greedy_responses_when_none_are_given(tiny, examples):
    model, processor = tiny
    records = score_responses(model, processor, examples, None, max_new_tokens=5)
    eos = {processor.tokenizer.eos_token_id, *model.generation_config.eos_token_id}
    for rec in records:
        assert 1 <= len(rec.token_ids) <= 5
        assert not any(t in eos for t in rec.token_ids[:-1])  # cut right after the first end-of-turn
        assert len(rec.images) == 1 and len(rec.perturbed_images) == 1
        assert rec.reward in (0.0, 1.0)  # the counting verifier scored it


def test_rows_without_an_image_fall_back_to_entropy(tiny):
    model, processor = tiny
    text_only = Example(id="t0", task="other", prompt="Say something.", answer="x")
    with_image = make_examples("counting", 1, seed=9)[0]
    recs = score_responses(model, processor, [text_only, with_image], ["hello there world", "3"], ratio=0.5)
    rec = recs[0]
    assert all(v == 0.0 for v in rec.signals["jsd"]) and rec.images == [] and rec.reward is None
    assert "entropy alone" in rec.meta["note"]
    ent = rec.signals["entropy"]
    chosen = [e for e, keep in zip(ent, rec.selected) if keep]
    others = [e for e, keep in zip(ent, rec.selected) if not keep]
    assert min(chosen) >= max(others)
    assert "note" not in recs[1].meta and any(v > 0 for v in recs[1].signals["jsd"])


def test_clean_image_round_trips_through_pixel_values(tiny, examples):
    _, processor = tiny
    ex = examples[0]
    enc = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=ex.images, return_tensors="pt")
    (img,) = pixel_values_to_images(enc["pixel_values"], enc["image_grid_thw"], PatchLayout.from_processor(processor))
    original = torch.tensor(list(ex.images[0].convert("RGB").getdata()), dtype=torch.int16)
    back = torch.tensor(list(img.getdata()), dtype=torch.int16)
    assert img.size == ex.images[0].size
    assert (original - back).abs().max().item() <= 1


def test_decode_tokens_reassembles_multibyte_text(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    text = "héllo 🙂 wörld <answer>3</answer>"
    ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    pieces = decode_tokens(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text + tok.eos_token
    assert "\ufffd" not in "".join(pieces)


def test_bad_arguments_fail_clearly(tiny, examples):
    model, processor = tiny
    with pytest.raises(ValueError, match="unknown perturbation 'blur'; valid: pixel_values_gaussian"):
        score_responses(model, processor, examples, RESPONSES, perturbation="blur")
    with pytest.raises(ValueError, match="unknown token score method 'vep'; valid: vepo"):
        score_responses(model, processor, examples, RESPONSES, method="vep")
    with pytest.raises(ValueError, match="ratio must be in"):
        score_responses(model, processor, examples, RESPONSES, ratio=0)
    with pytest.raises(ValueError, match="got 2 responses for 3 examples"):
        score_responses(model, processor, examples, RESPONSES[:2])
    with pytest.raises(ValueError, match=r"response 1 \(example 'counting-5-1'\): empty response"):
        score_responses(model, processor, examples, ["a", [], "b"])
