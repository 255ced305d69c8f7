"""Warm-start SFT: labels cover exactly the response, a few steps lower the loss, the cache round-trips."""

from __future__ import annotations

import pytest
import torch

from visent.lab import warmstart as ws
from visent.lab.tasks import make_examples, target_response
from visent.lab.tiny import build_tiny

SMALL = {"hidden_size": 64, "num_layers": 1}


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("qwen2_5_vl", seed=0, **SMALL)


def test_labels_are_exactly_the_response_and_end_of_turn(tiny):
    _, processor = tiny
    exs = make_examples("grounding", 2, seed=0) + make_examples("counting", 1, seed=0)
    batch = ws.sft_batch(processor, exs)
    tok = processor.tokenizer
    for b, ex in enumerate(exs):
        labelled = batch["labels"][b][batch["labels"][b] != -100]
        assert tok.decode(labelled) == target_response(ex) + "<|im_end|>"
        # Every labelled position holds the input token there (teacher forcing), none is padding.
        pos = batch["labels"][b] != -100
        assert torch.equal(batch["labels"][b][pos], batch["input_ids"][b][pos])
        assert batch["attention_mask"][b][pos].all()


def test_response_loss_exact_match_flags_rows():
    torch.manual_seed(0)

    class Fixed(torch.nn.Module):
        """Predicts a given (B, T, V) logits tensor whatever the input."""

        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, **_):
            return type("Out", (), {"logits": self.logits})()

    labels = torch.tensor([[-100, -100, 3, 1], [-100, 2, 2, 0]])
    logits = torch.randn(2, 4, 5)
    # Row 0: make the argmax right at every labelled target (next-token: logits[t] predicts labels[t+1]).
    logits[0, 1, 3] = logits[0, 2, 1] = 50.0
    logits[1, 0, 2] = logits[1, 1, 2] = 50.0
    logits[1, 2, 4] = 50.0  # row 1's last target is 0, predicted 4: wrong
    loss, exact = ws.response_loss(Fixed(logits), {"input_ids": labels.clamp(min=0), "labels": labels})
    assert exact.tolist() == [True, False]
    lp = torch.log_softmax(logits[:, :-1].double(), -1)
    tgt = labels[:, 1:]
    ref = -torch.stack([lp[b, t, tgt[b, t]] for b in range(2) for t in range(3) if tgt[b, t] != -100]).mean()
    assert torch.allclose(loss.double(), ref, atol=1e-5)


def test_a_few_sft_steps_lower_the_loss_versus_a_zero_lr_control():
    def held_loss(model, processor):
        batch = ws.sft_batch(processor, ws.heldout_examples(("counting", "classification"), 8, seed=0))
        with torch.no_grad():
            return ws.response_loss(model, batch)[0].item()

    cfg = ws.WarmStartConfig(
        tasks=("counting", "classification"),
        batch_size=8,
        max_steps=15,
        warmup_steps=2,
        lr=5e-3,
        target_accuracy=2.0,
        eval_every=100,
        probe_size=2,
        **SMALL,
    )
    model, processor = build_tiny("qwen2_5_vl", seed=0, **SMALL)
    before = held_loss(model, processor)
    ws.sft(model, processor, cfg, progress=False)
    after = held_loss(model, processor)
    control, _ = build_tiny("qwen2_5_vl", seed=0, **SMALL)
    ws.sft(control, processor, ws.WarmStartConfig(**{**cfg.__dict__, "lr": 1e-12}), progress=False)
    assert after < 0.6 * before
    assert held_loss(control, processor) == pytest.approx(before, rel=1e-3)


def test_greedy_accuracy_scores_with_the_task_verifiers(tiny, monkeypatch):
    model, processor = tiny
    exs = make_examples("counting", 3, seed=5) + make_examples("grounding", 2, seed=5)
    responses = [target_response(e) for e in exs]
    responses[0] = "<think>I see 9 red shapes.</think><answer>9</answer>"  # wrong count
    monkeypatch.setattr(ws, "greedy_responses", lambda *a, **k: responses)
    acc = ws.greedy_accuracy(model, processor, exs)
    assert acc["accuracy"] == pytest.approx(4 / 5)
    assert acc["per_task"] == {"counting": pytest.approx(2 / 3), "grounding": 1.0}


def test_greedy_responses_are_decoded_text(tiny):
    model, processor = tiny
    exs = make_examples("classification", 3, seed=0)
    out = ws.greedy_responses(model, processor, exs, batch_size=2, max_new_tokens=4)
    assert len(out) == 3 and all(isinstance(r, str) and "<|image_pad|>" not in r for r in out)


def test_warm_start_caches_and_reloads(tmp_path):
    cfg = ws.WarmStartConfig(batch_size=4, max_steps=2, warmup_steps=1, eval_every=1, probe_size=1, **SMALL)
    first = ws.warm_start(tmp_path, cfg, eval_per_task=2, progress=False)
    assert not first.info["cached"] and first.info["steps"] >= 1
    assert 0.0 <= first.info["heldout"]["accuracy"] <= 1.0
    again = ws.warm_start(tmp_path, cfg, eval_per_task=2, progress=False)
    assert again.info["cached"] and again.path == first.path
    s1, s2 = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    other = ws.WarmStartConfig(**{**cfg.__dict__, "seed": 1})
    assert other.key() != cfg.key()


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="lr"):
        ws.WarmStartConfig(lr=0.0)
    with pytest.raises(ValueError, match="tasks"):
        ws.WarmStartConfig(tasks=())


@pytest.mark.slow
def test_full_warm_start_reaches_partial_competence(tmp_path):
    result = ws.warm_start(tmp_path, ws.WarmStartConfig(), eval_per_task=50, progress=False)
    acc = result.info["heldout"]["accuracy"]
    assert 0.3 <= acc <= 0.75, result.info["heldout"]
