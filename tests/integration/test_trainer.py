"""VisentGRPOTrainer through TRL's real GRPOTrainer on tiny locally built Qwen2(.5)-VL models (CPU).

Covers: the token mask gates the policy gradient token by token; skipping the counterfactual pass for
zero-advantage responses changes neither loss nor gradients; the two-stage schedule's logged coefficient
and its effect on entropy against a GRPO control; resuming from a checkpoint continues the schedule.
"""

from __future__ import annotations

import zlib

import pytest
import torch

from visent.trainer.callbacks import MetricsJsonlCallback, read_metrics
from visent.trainer.config import VisentConfig
from visent.trainer.grpo import SELECTED_COUNT, SKIPPED, TOKEN_MASK, VisentGRPOTrainer
from visent.trainer.sources import load_model, load_train_dataset, resolve_rewards

K = 4  # responses per prompt


def make_trainer(tmp_path, *, kind="qwen2_5_vl", rewards=("random",), callbacks=(), **overrides):
    cfg = {
        "output_dir": str(tmp_path),
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "gradient_checkpointing": False,
        "num_generations": K,
        "per_device_train_batch_size": 8,
        "max_completion_length": 12,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "dataset": "lab:counting",
        "dataset_size": 32,
        "seed": 0,
    }
    cfg.update(overrides)
    config = VisentConfig(**cfg)
    model, processor = load_model(f"tiny:{kind}")
    funcs = [r if callable(r) else resolve_rewards([r])[0] for r in rewards]
    return VisentGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=load_train_dataset("lab:counting", cfg["dataset_size"], 0),
        processing_class=processor,
        callbacks=[MetricsJsonlCallback(), *callbacks],
    )


def rows_for(trainer, n_prompts):
    ds = trainer.train_dataset
    return [ds[i] for i in range(n_prompts) for _ in range(K)]


def mixed_reward(completions, answer, **kw):
    """Constant within groups whose answer is even (zero advantage), varied by the response text otherwise."""
    out = []
    for c, a in zip(completions, answer):
        text = c[-1]["content"] if isinstance(c, list) else c
        out.append(1.0 if int(a) % 2 == 0 else float(zlib.crc32(text.encode()) % 3))
    return out


def test_tokens_outside_the_mask_get_exactly_zero_policy_gradient(tmp_path):
    trainer = make_trainer(tmp_path, token_score="vepo", selection_ratio=0.25, skip_uniform_groups=False)
    trainer.model.train()
    batch = trainer.generation_batch(rows_for(trainer, 2))
    mask, valid = batch[TOKEN_MASK], batch["completion_mask"].float()
    adv = batch["advantages"]
    assert (adv != 0).any(), "the random reward should give some non-zero advantages"
    assert ((mask == 1) & (valid == 0)).sum() == 0
    assert (valid * (1 - mask)).sum() > 0, "some valid tokens must be unselected for the test to mean anything"

    real = trainer.forward_logps_and_entropies
    leaf = {}

    def logps_as_leaf(model, inputs, compute_entropy=True):
        logps, ent = real(model, inputs, compute_entropy)
        leaf["logps"] = logps.detach().clone().requires_grad_(True)
        return leaf["logps"], ent.detach()

    trainer.forward_logps_and_entropies = logps_as_leaf
    loss = trainer.compute_policy_loss(trainer.model, batch)
    loss.backward()
    grad = leaf["logps"].grad
    outside = (mask == 0)
    assert torch.equal(grad[outside], torch.zeros_like(grad[outside]))
    inside = (mask == 1) & (adv[:, None] != 0)
    assert (grad[inside] != 0).all(), "selected tokens of responses with an advantage must get gradient"


def test_skipping_zero_advantage_responses_is_exact(tmp_path):
    trainer = make_trainer(tmp_path, rewards=(mixed_reward,), token_score="vepo", selection_ratio=0.3,
                           entropy_schedule="max", entropy_coef_max=0.01)
    trainer.model.train()
    skipped_batch = trainer.generation_batch(rows_for(trainer, 4))
    skipped = skipped_batch[SKIPPED]
    assert skipped.any() and (~skipped).any(), "need both skipped and scored responses"

    trainer.args.skip_uniform_groups = False
    full_batch = {k: v for k, v in skipped_batch.items() if not k.startswith("visent_")}
    full_batch = trainer.after_generation(full_batch, None)
    assert not full_batch[SKIPPED].any()
    # The masks really differ on skipped rows (so equality below is not vacuous) ...
    assert not torch.equal(full_batch[TOKEN_MASK][skipped], skipped_batch[TOKEN_MASK][skipped])
    # ... they agree on scored rows, and the selected-token counts agree everywhere.
    assert torch.equal(full_batch[TOKEN_MASK][~skipped], skipped_batch[TOKEN_MASK][~skipped])
    assert torch.equal(full_batch[SELECTED_COUNT], skipped_batch[SELECTED_COUNT])

    def loss_and_grads(batch):
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_policy_loss(trainer.model, batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    loss_a, grads_a = loss_and_grads(skipped_batch)
    loss_b, grads_b = loss_and_grads(full_batch)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def test_two_stage_coefficient_and_entropy_against_grpo(tmp_path):
    steps, switch, lam = 6, 0.5, 2.0
    common = {"max_steps": steps, "token_score": "none", "entropy_coef_max": lam, "entropy_coef_min": lam,
              "entropy_switch": switch, "learning_rate": 3e-3, "dataset_size": 64, "per_device_train_batch_size": 8}
    runs = {}
    for name, schedule in (("grpo", "none"), ("two_stage", "two_stage")):
        trainer = make_trainer(tmp_path / name, entropy_schedule=schedule, **common)
        trainer.train()
        runs[name] = {row["step"]: row for row in read_metrics(str(tmp_path / name))}
    two = runs["two_stage"]
    # Logged step n is the n-th update, taken at global step n-1; the switch is at step ceil(switch·steps).
    for n in range(1, steps + 1):
        expected = lam if n - 1 < 3 else -lam
        assert two[n]["entropy/coef"] == pytest.approx(expected), n
        assert two[n]["entropy/stage"] == (0 if n - 1 < 3 else 1)
        assert runs["grpo"][n]["entropy/coef"] == 0.0
    # entropy/mean at step n is measured before update n: steps 1..3 are stage 1 (↑), 4..6 stage 2 (↓).
    ent = {k: {n: runs[k][n]["entropy/mean"] for n in runs[k]} for k in runs}
    assert ent["two_stage"][1] == pytest.approx(ent["grpo"][1], abs=1e-4)  # same seed, same start
    rise = ent["two_stage"][4] - ent["two_stage"][1]
    rise_grpo = ent["grpo"][4] - ent["grpo"][1]
    assert rise > rise_grpo, (ent["two_stage"], ent["grpo"])
    fall = ent["two_stage"][6] - ent["two_stage"][4]
    fall_grpo = ent["grpo"][6] - ent["grpo"][4]
    assert fall < fall_grpo, (ent["two_stage"], ent["grpo"])


class StopAt:
    """Stop training after a given global step (a crash after a checkpoint)."""

    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):  # every other callback event is a no-op
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_resume_continues_the_schedule_exactly(tmp_path):
    common = {"max_steps": 4, "entropy_schedule": "two_stage", "entropy_switch": 0.5, "entropy_coef_max": 0.1,
              "entropy_coef_min": 0.2, "token_score": "entropy", "save_strategy": "steps", "save_steps": 2}
    full = make_trainer(tmp_path / "full", **common)
    full.train()
    expected = [(r["step"], r["entropy/coef"]) for r in read_metrics(str(tmp_path / "full"))]
    assert [c for _, c in expected] == pytest.approx([0.1, 0.1, -0.2, -0.2])

    stopped = make_trainer(tmp_path / "resumed", callbacks=[StopAt(3)], **common)
    stopped.train()  # runs steps 1..3, checkpoint at step 2
    assert [r["step"] for r in read_metrics(str(tmp_path / "resumed"))] == [1, 2, 3]
    resumed = make_trainer(tmp_path / "resumed", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2"))
    got = [(r["step"], r["entropy/coef"]) for r in read_metrics(str(tmp_path / "resumed"))]
    assert got == expected


def test_trls_own_clean_forward_is_reused(tmp_path):
    """With num_iterations > 1 TRL runs a no-grad clean forward for old log-probs: its hidden states are
    handed to the mask builder instead of running the clean pass again."""
    trainer = make_trainer(tmp_path, num_iterations=2, token_score="vepo", skip_uniform_groups=False)
    trainer.model.train()
    seen = {}
    real = trainer.after_generation

    def spy(batch, clean_hidden):
        seen["hidden"] = clean_hidden
        return real(batch, clean_hidden)

    trainer.after_generation = spy
    batch = trainer.generation_batch(rows_for(trainer, 2))
    hidden = seen["hidden"]
    assert "old_per_token_logps" in batch
    assert hidden is not None and hidden.shape[:2] == batch["completion_ids"].shape
    assert batch[TOKEN_MASK].sum() > 0

    trainer.args.num_iterations = 1  # aligned steps: TRL runs no clean forward, nothing to reuse
    trainer.num_iterations = 1
    trainer.generation_batch(rows_for(trainer, 2))
    assert seen["hidden"] is None


def test_loss_matches_a_float64_hand_computation(tmp_path):
    """Clipped surrogate on the selected tokens with vLLM IS weights, β·k3 KL on all valid tokens, the
    scheduled entropy term and gradient-accumulation scaling, recomputed by hand from the same log-probs."""
    coef, beta, eps = 0.05, 0.1, 0.2
    trainer = make_trainer(tmp_path, token_score="vepo", selection_ratio=0.5, entropy_schedule="max",
                           entropy_coef_max=coef, skip_uniform_groups=False)
    trainer.model.train()
    batch = trainer.generation_batch(rows_for(trainer, 2))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logps, ent = trainer.forward_logps_and_entropies(trainer.model, batch)
    shape = logps.shape

    def rand():
        return torch.rand(shape, generator=g).to(logps.device)

    batch["old_per_token_logps"] = logps - (rand() - 0.5)  # ratios in [0.6, 1.6]
    batch["ref_per_token_logps"] = logps + (rand() - 0.5)
    batch["importance_sampling_ratio"] = 0.5 + rand()
    # Engine-side settings the seam reads from TRL (a reference model and vLLM are not built on CPU).
    trainer.beta, trainer.use_vllm, trainer.vllm_importance_sampling_correction = beta, True, True
    trainer.current_gradient_accumulation_steps = 2

    loss = trainer.compute_policy_loss(trainer.model, batch)

    d = lambda x: x.double()
    lp, old, ref, iw, H = d(logps), d(batch["old_per_token_logps"]), d(batch["ref_per_token_logps"]), \
        d(batch["importance_sampling_ratio"]), d(ent)
    m, w = d(batch["completion_mask"]), d(batch["completion_mask"]) * d(batch[TOKEN_MASK])
    A = d(batch["advantages"])[:, None]
    rho = torch.exp(lp - old)
    per_token = -torch.minimum(rho * A, rho.clamp(1 - eps, 1 + eps) * A) * iw
    policy = (per_token * w).sum() / w.sum()
    k3 = torch.exp(ref - lp) - (ref - lp) - 1
    kl = (k3 * m).sum() / m.sum()
    l_ent = -((H * m).sum(1) / m.sum(1)).mean()
    expected = (policy + beta * kl + coef * l_ent) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("coef", [0.0, 0.05])
def test_entropy_carries_gradient_only_with_a_nonzero_coefficient(tmp_path, coef):
    trainer = make_trainer(tmp_path, token_score="none", entropy_schedule="max" if coef else "none",
                           entropy_coef_max=coef or 1e-3)
    trainer.model.train()
    batch = trainer.generation_batch(rows_for(trainer, 2))
    real = trainer.forward_logps_and_entropies
    reached = []

    def spy(model, inputs, compute_entropy=True):
        logps, ent = real(model, inputs, compute_entropy)
        assert ent.requires_grad
        ent.register_hook(lambda grad: reached.append(grad))
        return logps, ent

    trainer.forward_logps_and_entropies = spy
    trainer.compute_policy_loss(trainer.model, batch).backward()
    assert bool(reached) == (coef != 0.0)


@pytest.mark.slow  # three checkpoints with optimizer state, two model builds (~30 s on 2 cores)
def test_cli_resume_from_latest_checkpoint(tmp_path):
    import shutil

    from visent.trainer.cli import main

    out = tmp_path / "run"
    argv = ["--model_name_or_path", "tiny:qwen2_vl", "--dataset", "lab:counting", "--max_steps", "3",
            "--reward_funcs", "random", "--num_generations", "4", "--per_device_train_batch_size", "4",
            "--max_completion_length", "8", "--output_dir", str(out), "--save_steps", "1", "--logging_steps", "1",
            "--token_score", "none", "--entropy_schedule", "two_stage", "--entropy_switch", "0.5",
            "--gradient_checkpointing", "false", "--report_to", "none"]
    assert main(argv) == 0
    first = [(r["step"], r["entropy/coef"]) for r in read_metrics(str(out))]
    assert [c for _, c in first] == pytest.approx([1e-3, 1e-3, -1e-3])
    shutil.rmtree(out / "checkpoint-3")
    shutil.rmtree(out / "checkpoint-2")  # as if the run died after checkpoint 1
    assert main([*argv, "--resume_from_checkpoint", "true"]) == 0
    assert [(r["step"], r["entropy/coef"]) for r in read_metrics(str(out))] == first


def test_mask_is_built_once_per_generation_batch(tmp_path):
    """steps_per_generation=2: two optimizer steps consume one generation batch and one mask."""
    trainer = make_trainer(tmp_path, max_steps=2, steps_per_generation=2, per_device_train_batch_size=4,
                           token_score="vepo")
    calls, used = [], []
    real_after, real_loss = trainer.after_generation, trainer.compute_policy_loss

    def after(batch, clean_hidden):
        out = real_after(batch, clean_hidden)
        calls.append(out["visent_token_mask"].clone())
        return out

    def loss(model, inputs):
        used.append(inputs["visent_token_mask"].clone())
        return real_loss(model, inputs)

    trainer.after_generation, trainer.compute_policy_loss = after, loss
    trainer.train()
    assert len(calls) == 1 and len(used) == 2
    # The two updates saw disjoint halves of the one mask (TRL shuffles rows, the mask moves with them).
    assert sorted(map(tuple, torch.cat(used).tolist())) == sorted(map(tuple, calls[0].tolist()))


def test_a_batch_mixing_image_and_text_only_prompts_trains(tmp_path):
    """TRL marks a text-only prompt's images as None, which the processor rejects in a batch that also has
    images; the seam passes an empty list instead. Text-only responses fall back to entropy scores."""
    trainer = make_trainer(tmp_path, token_score="vepo", selection_ratio=0.5, skip_uniform_groups=False)
    trainer.model.train()
    rows = rows_for(trainer, 2)
    for row in rows[K:]:  # the second prompt's K copies lose their image
        row["images"] = []
    batch = trainer.generation_batch(rows)
    assert batch["num_images"] == [1] * K + [0] * K
    metrics = trainer._metrics["train"]
    assert metrics["vepo/no_image_responses"][-1] == float(K)
    assert (batch[TOKEN_MASK].sum(1) > 0).all()
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_policy_loss(trainer.model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
