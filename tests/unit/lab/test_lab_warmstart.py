"""Warm-start SFT: labels cover exactly the response, a few steps lower the loss, the cache round-trips."""

from __future__ import annotations

import pytest
import torch

from visent.data.synthetic import make_examples, target_response
from visent.lab import warmstart as ws
from visent.models import build_tiny

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
    from visent.lab import greedy

    monkeypatch.setattr(greedy, "greedy_responses", lambda *a, **k: responses)
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


# --------------------------------------------------------------------------------------------------
# The band rule: band_search on a fake whose accuracy is a known function of the "weights".


class FakeTraining:
    """One float of "weights" moved by ``rate(step) * lr_scale`` per step; accuracy = ``curve(weights)``."""

    def __init__(self, rate, curve):
        self.rate, self.curve, self.w = rate, curve, 0.0
        self.measured: list[tuple[str, float]] = []

    def train_step(self, step, lr_scale):
        self.w += self.rate(step) * lr_scale
        return {"loss": -self.w}

    def measure(self, kind):
        acc = self.curve(self.w)
        self.measured.append((kind, acc))
        return acc, 32 if kind == "screen" else 128

    def run(self, cfg):
        return ws.band_search(cfg, self.train_step, self.measure, lambda: self.w, self._restore)

    def _restore(self, w):
        self.w = w


def _band_cfg(**kw):
    base = {"band": (0.4, 0.6), "max_steps": 300, "check_every": 5, "screen_every": 10, "screen_margin": 0.1}
    return ws.WarmStartConfig(tasks=("tally",), **{**base, **kw})


def _plateau_then_climb(per_step):
    """20% until step 100, then +``per_step`` accuracy per step (weights = steps at lr_scale 1)."""
    return lambda w: min(1.0, 0.2 + max(0.0, w - 100) * per_step)


def test_band_search_lands_in_the_band_on_a_smooth_climb():
    fake = FakeTraining(lambda s: 1.0, _plateau_then_climb(0.013))
    out = fake.run(_band_cfg())
    assert out["reached"] and out["rollbacks"] == 0 and out["reason"] == "in band"
    assert 0.5 <= out["accuracy"] <= 0.6 and out["accuracy"] == pytest.approx(fake.curve(fake.w))
    # Screens every 10 steps until 30% (= 40% - margin: 33% at step 110), then a full check every 5 steps
    # (33%, 39.5%, 46% — in the band but below its centre, the aim — then 52.5%).
    screens = [c["step"] for c in out["checks"] if c["kind"] == "screen"]
    full = [c["step"] for c in out["checks"] if c["kind"] == "check"]
    assert screens == list(range(10, 111, 10)) and full == [110, 115, 120, 125]
    assert out["step"] == out["steps_trained"] == 125


def test_band_search_rolls_back_after_an_overshoot_and_replays_checking_every_step():
    # +4 points per step: the screen at 110 reads 60% → its full check overshoots (> 60%).
    fake = FakeTraining(lambda s: 1.0, _plateau_then_climb(0.04 + 1e-9))
    out = fake.run(_band_cfg())
    outcomes = [(c["step"], c["outcome"]) for c in out["checks"] if c["kind"] == "check"]
    assert (110, "overshoot") in outcomes and out["rollbacks"] == 1
    # Rolled back to the last state measured below the aim (the screen at step 100), then one check per
    # step: 24%, 28%, ... the first state at or above the aim (50%) is step 108 (52%).
    assert [s for s, o in outcomes if s > 100 and o != "overshoot"] == list(range(101, 109))
    assert out["reached"] and out["step"] == 108 and out["accuracy"] == pytest.approx(0.52, abs=1e-6)
    assert out["steps_trained"] == 110 + 8
    # The weights are those of 108 straight steps: the replay restored the snapshot.
    assert fake.w == pytest.approx(108.0)


def test_band_search_halves_the_lr_when_one_step_jumps_over_the_band():
    # A cliff: 20% below weight 100.5, 90% at and above → no whole step lands; half steps do not either,
    # but quarter steps over a linear ramp do. Here: a ramp 100.5 → 101.0 from 30% to 70%.
    def curve(w):
        if w < 100.5:
            return 0.2
        return min(0.9, 0.3 + (w - 100.5) * 0.8)

    fake = FakeTraining(lambda s: 1.0, curve)
    out = fake.run(_band_cfg(check_every=1, screen_every=1))
    assert out["reached"] and 0.4 <= out["accuracy"] <= 0.6
    assert out["lr_scale"] < 1.0 and out["rollbacks"] >= 2
    assert any(c["outcome"] == "overshoot" for c in out["checks"])


def test_band_search_flags_a_model_that_never_reaches_the_band():
    fake = FakeTraining(lambda s: 1.0, lambda w: 0.2)
    out = fake.run(_band_cfg(max_steps=50))
    assert not out["reached"] and out["reason"] == "max_steps" and out["step"] == 50
    # The last step is always measured in full, so the flag carries the final accuracy.
    assert out["checks"][-1]["step"] == 50 and out["checks"][-1]["kind"] == "check"
    assert out["accuracy"] == pytest.approx(0.2)
    # A cliff no step size can land on: the roll-backs run out.
    cliff = FakeTraining(lambda s: 1.0, lambda w: 0.2 if w < 100.5 else 0.9)
    out = cliff.run(_band_cfg(max_rollbacks=3))
    assert not out["reached"] and out["reason"] == "max_rollbacks" and out["rollbacks"] == 3


def test_band_config_is_validated_and_part_of_the_cache_key():
    cfg = ws.warmstart_config("tally")
    assert cfg.band == (0.4, 0.6) and cfg.band_aim() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="aim"):
        ws.WarmStartConfig(band=(0.4, 0.6), aim=0.7)
    assert ws.WarmStartConfig(**{**cfg.__dict__, "band": (0.3, 0.5)}).key() != cfg.key()
    assert ws.WarmStartConfig(**{**cfg.__dict__, "check_size": 64}).key() != cfg.key()
    with pytest.raises(ValueError, match="band"):
        ws.WarmStartConfig(band=(0.6, 0.4))
    # The probe-rule configs keep the keys they had before the band existed (cached models, studies).
    assert "band" not in repr(ws.WarmStartConfig().key()) and ws.WarmStartConfig().band is None


def test_sft_band_rule_restores_model_and_optimizer_exactly_on_a_roll_back(monkeypatch):
    """On a real tiny model: after an overshoot, the replayed steps reproduce the first pass bit for bit."""
    cfg = ws.WarmStartConfig(
        tasks=("counting",), batch_size=4, max_steps=12, warmup_steps=2, lr=5e-3, band=(0.4, 0.6),
        check_size=2, screen_size=1, check_every=3, screen_every=3, screen_margin=0.1, **SMALL,
    )
    model, processor = build_tiny("qwen2_5_vl", seed=0, **SMALL)
    # Accuracy by step: 10% until step 3, 90% at step 6 (an overshoot), 30% at 4 and 50% at 5.
    table = {3: 0.1, 4: 0.3, 5: 0.5, 6: 0.9}
    now = {"step": 0}
    seen: dict[int, list[torch.Tensor]] = {}

    def fingerprint():
        return torch.cat([p.detach().flatten().clone() for p in model.parameters()])

    def log(row):
        now["step"] = row["step"]
        seen.setdefault(row["step"], []).append(fingerprint())

    def fake_accuracy(m, proc, examples, batch_size=32, *, max_new_tokens=32, scorer=None):
        acc = table.get(now["step"], 0.0)
        return {"accuracy": acc, "per_task": {"counting": acc}, "n": len(examples), "responses": [], "scores": []}

    from visent.lab import sft as sft_module

    monkeypatch.setattr(sft_module, "greedy_accuracy", fake_accuracy)
    out = ws.sft(model, processor, cfg, progress=False, log=log)
    band = out["band"]
    assert band["reached"] and band["step"] == 5 and band["rollbacks"] == 1 and band["steps_trained"] == 8
    # Steps 4 and 5 were trained twice (first pass, then the replay from step 3): identical weights.
    assert len(seen[4]) == len(seen[5]) == 2
    assert torch.equal(seen[4][0], seen[4][1]) and torch.equal(seen[5][0], seen[5][1])
    assert torch.equal(fingerprint(), seen[5][1])
    assert out["heldout"]["accuracy"] == 0.5 and out["steps"] == 5


def test_band_checks_use_a_stream_disjoint_from_training_and_the_evaluation_set():
    import hashlib

    def content(exs):  # ids name the stream, so compare what the model sees: pixels and prompt
        return {hashlib.sha1(ex.images[0].tobytes() + ex.prompt.encode()).hexdigest() for ex in exs}

    check = content(ws.check_examples(("tally",), 64, seed=0))
    heldout = content(ws.heldout_examples(("tally",), 128, seed=0))
    train = content(ws.mixed_examples(("tally",), 256, 0, 0))
    assert len(check) == 64 and not check & heldout and not check & train


def test_band_search_at_max_steps_accepts_the_lower_half_of_the_band():
    fake = FakeTraining(lambda s: 1.0, lambda w: 0.45)  # inside the band, never at its centre
    out = fake.run(_band_cfg(max_steps=40))
    assert out["reached"] and out["step"] == 40 and out["accuracy"] == pytest.approx(0.45)
    assert [c["outcome"] for c in out["checks"] if c["kind"] == "check"][-1] == "in band"


def test_tower_first_config_is_validated_and_keys_only_when_set():
    from visent.lab.two_phase import phase_one_config

    # The one-phase recipe (tally's default is now two-phase, docs/lab-diagnosis.md §8).
    cfg = ws.WarmStartConfig(**{**ws.warmstart_config("tally").__dict__, "tower_first": None, "phase_two": "language_model"})
    two = ws.WarmStartConfig(**{**cfg.__dict__, "tower_first": 0.9})
    # Unset, the key is the one-phase recipe's (cached warm-starts and studies stay valid).
    assert "tower_first" not in cfg.__dict__ or cfg.tower_first is None
    assert two.key() != cfg.key()
    assert ws.WarmStartConfig(**{**cfg.__dict__, "tower_first": None}).key() == cfg.key()
    first = phase_one_config(two)
    assert first.band == (0.9, 1.0) and first.band_aim() == 0.9 and first.tower_first is None
    with pytest.raises(ValueError, match="tower_first"):
        ws.WarmStartConfig(**{**cfg.__dict__, "tower_first": 0.5})  # inside the band: not "competent"
    with pytest.raises(ValueError, match="tower_first"):
        ws.WarmStartConfig(tower_first=0.9)  # no band for phase 2


def test_transplant_copies_and_freezes_the_tower_and_keeps_the_fresh_language_model():
    from visent.lab.batching import response_loss, sft_batch
    from visent.lab.two_phase import transplant_vision_tower
    from visent.trainer.build import freeze_vision_tower

    trained, processor = build_tiny("qwen2_5_vl", seed=1, **SMALL)
    fresh, _ = build_tiny("qwen2_5_vl", seed=0, **SMALL)
    init = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    names = transplant_vision_tower(trained, fresh)
    probe, _ = build_tiny("qwen2_5_vl", seed=2, **SMALL)
    assert freeze_vision_tower(probe) == len(names) > 0
    src = dict(trained.named_parameters())
    for n, p in fresh.named_parameters():
        if n in names:
            assert not p.requires_grad and torch.equal(p, src[n])
        else:
            assert p.requires_grad and torch.equal(p, init[n])
    # The seeds differ, so a copy that did nothing would fail the check above.
    assert any(not torch.equal(src[n], init[n]) for n in names)
    # Phase 2 trains the language model only: one step moves it and leaves the tower as copied.
    opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    loss, _ = response_loss(fresh, sft_batch(processor, make_examples("counting", 4, seed=0)))
    loss.backward()
    opt.step()
    after = dict(fresh.named_parameters())
    assert all(torch.equal(after[n], src[n]) for n in names)
    assert any(not torch.equal(after[n], init[n]) for n in after if n not in names)


class FakeClasses(FakeTraining):
    """As FakeTraining, and the worst class's accuracy is ``worst(weights)`` (measure's third value)."""

    def __init__(self, rate, curve, worst):
        super().__init__(rate, curve)
        self.worst = worst

    def measure(self, kind):
        acc, n = super().measure(kind)
        return acc, n, self.worst(self.w)


def test_band_search_with_a_class_floor_trains_on_until_every_class_is_read():
    # +0.6 points per step from step 100: the mean reaches the aim (50%) at step 150 and leaves the band
    # (60%) after step 166; the worst class reaches 20% only at weight 160.
    def worst(w):
        return 0.0 if w < 160 else 0.25

    out = FakeClasses(lambda s: 1.0, _plateau_then_climb(0.006), worst).run(_band_cfg(min_class_accuracy=0.2))
    assert out["reached"] and out["step"] == 160 and out["accuracy"] == pytest.approx(0.56)
    outcomes = [(c["step"], c["outcome"]) for c in out["checks"] if c["kind"] == "check"]
    assert (150, "class below floor") in outcomes and (155, "class below floor") in outcomes
    assert outcomes[-1] == (160, "in band") and out["checks"][-1]["worst_class"] == pytest.approx(0.25)
    # The same run without the floor stops at the aim, where one class is never read.
    assert FakeClasses(lambda s: 1.0, _plateau_then_climb(0.006), worst).run(_band_cfg())["step"] == 150


def test_band_search_with_a_class_floor_that_the_band_never_meets_is_flagged():
    # Every class is read only above the band (the mean passes 60% at weight 131): roll-backs run out.
    fake = FakeClasses(lambda s: 1.0, _plateau_then_climb(0.013), lambda w: 0.0 if w < 135 else 0.3)
    out = fake.run(_band_cfg(min_class_accuracy=0.2, max_rollbacks=2))
    assert not out["reached"] and out["reason"] == "max_rollbacks"


def test_class_floor_needs_a_band_and_joins_the_cache_key_only_when_set():
    with pytest.raises(ValueError, match="min_class_accuracy"):
        ws.WarmStartConfig(tasks=("tally",), min_class_accuracy=0.2)
    base = _band_cfg()
    assert _band_cfg(min_class_accuracy=None).key() == base.key() != _band_cfg(min_class_accuracy=0.2).key()


def test_reset_projector_reinitialises_only_the_projector_and_freezes_the_encoder():
    from visent.lab.two_phase import reset_projector

    trained, _ = build_tiny("qwen2_5_vl", seed=1, **SMALL)
    fresh, _ = build_tiny("qwen2_5_vl", seed=0, **SMALL)
    before = {n: p.detach().clone() for n, p in trained.named_parameters()}
    names = reset_projector(trained, fresh, "qwen2_5_vl")
    assert names and all(n.startswith("model.visual.merger.") for n in names)
    init = dict(fresh.named_parameters())
    for n, p in trained.named_parameters():
        if n in names:
            assert p.requires_grad and torch.equal(p, init[n])  # the fresh projector, trained
        elif n.startswith("model.visual."):
            assert not p.requires_grad and torch.equal(p, before[n])  # the encoder: kept and frozen
        else:
            assert p.requires_grad and torch.equal(p, before[n])  # the language model keeps its wording
    # The seeds differ (norm weights start at 1 in both), so a copy that did nothing fails here.
    assert any(not torch.equal(init[n], before[n]) for n in names)
    with pytest.raises(ValueError, match="no projector known"):
        reset_projector(trained, fresh, "smolvlm")


def test_phase_two_is_validated_and_keys_only_when_not_the_default():
    cfg = ws.WarmStartConfig(**{**ws.warmstart_config("tally").__dict__, "phase_two": "language_model"})
    assert ws.WarmStartConfig(**{**cfg.__dict__, "phase_two": "language_model"}).key() == cfg.key()
    assert ws.WarmStartConfig(**{**cfg.__dict__, "phase_two": "projector"}).key() != cfg.key()
    with pytest.raises(ValueError, match="phase_two"):
        ws.WarmStartConfig(**{**cfg.__dict__, "phase_two": "tower"})
