"""The trainer's GRPO update against a plain float64 reference written here (issue #21, item 1).

One real ``VisentGRPOTrainer`` step (the shipped ``grpo`` config through ``visent train``'s parser, a tiny
Qwen2.5-VL, a lab task) with a reward that records what it scored. The reference recomputes, from the
recorded rewards and the batch the trainer trained on, in float64 and without any visent or TRL code:

- the group advantages ``A_i = (r_i − mean_group) / (std_group + 1e-4)`` (unbiased std, TRL 1.16 / the
  papers' GRPO);
- the policy-gradient loss at ratio 1 (one update per generation batch, so old = current policy):
  ``L = −Σ_i Σ_t A_i · log π(y_it | ·) · m_it / Σ m`` (token mean over the valid tokens, the configs'
  aggregation when every token is selected),

and the gradient of ``L`` on a float64 copy of the pre-step model. The trainer's gradient (read just
before the optimizer step, clipping off) must match it. A defect in advantages, masking, aggregation,
log-prob alignment, loss scaling or the image inputs of the loss forward would show as a mismatch.
"""

from __future__ import annotations

import pytest
import torch

K = 4


def _reward_recorder():
    seen: dict[str, list] = {"ids": [], "rewards": []}

    def reward(completions, completion_ids=None, **_):
        # Mixed within a group for almost any sampled text: a deterministic function of the response.
        out = [float(len(c[0]["content"]) % 3) for c in completions]
        seen["ids"] += [list(map(int, ids)) for ids in completion_ids]
        seen["rewards"] += out
        return out

    reward.__name__ = "recorded"
    return reward, seen


def _trainer(tmp_path, reward, callbacks):
    from visent.trainer.cli import parse_config
    from visent.trainer.grpo import VisentGRPOTrainer
    from visent.trainer.sources import load_model, load_train_dataset

    argv = [
        "--config", "grpo", "--model_name_or_path", "tiny:qwen2_5_vl",
        "--dataset", "lab:tally", "--dataset_size", "2", "--dataset_seed", "3",
        "--num_generations", str(K), "--per_device_train_batch_size", str(2 * K),
        "--gradient_accumulation_steps", "1", "--max_completion_length", "6", "--max_steps", "1",
        "--learning_rate", "1e-3", "--max_grad_norm", "0", "--temperature", "1.0", "--seed", "0",
        "--use_cpu", "true", "--bf16", "false", "--save_strategy", "no", "--report_to", "none",
        "--freeze_vision_tower", "false", "--output_dir", str(tmp_path),
    ]
    config = parse_config(argv)
    dataset = load_train_dataset(config.dataset, config.dataset_size, config.dataset_seed, 0.0)
    model, processor = load_model(config.model_name_or_path, None, config.needs_clean_stats)
    config.model_init_kwargs = None
    return VisentGRPOTrainer(
        model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
        processing_class=processor, callbacks=callbacks,
    )


def _reference_grads(state, batch, rewards, order, dtype=torch.float64):
    """float64 gradient of the ratio-1 GRPO loss (module docstring) w.r.t. every trainable parameter.

    ``rewards`` in generation order (groups of K consecutive rows); ``order[j]``: the generation row that
    is row ``j`` of the trained batch (TRL shuffles the batch before the update).
    """
    from visent.trainer.sources import load_model

    # A fresh model with the pre-step weights: a deep copy of the trainer's model would keep the
    # forward accelerate wraps around the original module (and so run the float32 original).
    ref, _ = load_model("tiny:qwen2_5_vl", None, False)
    ref.load_state_dict(state)
    ref = ref.to(dtype).train()
    r = torch.tensor(rewards, dtype=torch.float64).view(-1, K)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)[order]
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    C = batch["completion_ids"].size(1)
    C = batch["completion_ids"].size(1)
    # Which tokens are image tokens (Qwen2.5-VL's multimodal rope positions come from it): the
    # processor's marks for the prompt, none for the completion (the batch holds them for both).
    mm = batch["mm_token_type_ids"]
    assert mm.shape == ids.shape and not mm[:, -C:].any()
    out = ref(
        input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"].to(dtype),
        image_grid_thw=batch["image_grid_thw"], mm_token_type_ids=mm,
    )
    # Position t predicts token t + 1: the completion's tokens are predicted by the C positions before them.
    logp = torch.log_softmax(out.logits[:, -C - 1 : -1].double(), -1)
    logp = logp.gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    m = batch["completion_mask"].double()
    loss = -(adv[:, None] * logp * m).sum() / m.sum()
    loss.backward()
    return adv, {n: p.grad for n, p in ref.named_parameters() if p.requires_grad and p.grad is not None}


# ~15 s on an idle core (one tiny-model step plus a float64 forward/backward).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_one_grpo_step_matches_a_float64_reinforce_reference(tmp_path):
    from transformers import TrainerCallback

    torch.manual_seed(0)
    reward, seen = _reward_recorder()
    captured: dict = {}

    class Grab(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):
            captured["grads"] = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}
            # The weights before the optimizer step.
            captured["state"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    grab = Grab()
    trainer = _trainer(tmp_path, reward, [grab])
    grab.model = trainer.model
    original = trainer.compute_policy_loss

    def spy(model, inputs):
        captured["batch"] = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in inputs.items()}
        return original(model, inputs)

    trainer.compute_policy_loss = spy
    trainer.train()

    batch = captured["batch"]
    # The rows trained on are the rows scored (TRL shuffles them before the update: find the order).
    trained = [tuple(row[m.bool()].tolist()) for row, m in zip(batch["completion_ids"], batch["completion_mask"])]
    scored = [tuple(ids) for ids in seen["ids"]]
    assert len(set(scored)) == len(scored) == len(trained), "responses must be distinct to pair them up"
    order = [scored.index(t) for t in trained]
    assert len(set(seen["rewards"])) > 1, "the recorded reward must vary for the check to mean anything"

    adv, ref = _reference_grads(captured["state"], batch, seen["rewards"], order)
    torch.testing.assert_close(batch["advantages"].reshape(-1).double(), adv, rtol=1e-5, atol=1e-5)
    got = captured["grads"]
    assert set(ref) == set(got)
    flat_ref = torch.cat([ref[n].reshape(-1) for n in sorted(ref)])
    flat_got = torch.cat([got[n].reshape(-1).double() for n in sorted(ref)])
    assert flat_ref.norm() > 0
    # float32 trainer vs float64 reference: measured ≤ 2e-6 relative per tensor. (Leaving the image-token
    # marks out of the reference's forward changes Qwen's rope positions: 1% overall, 30–50% on q/k.)
    assert (flat_got - flat_ref).norm() / flat_ref.norm() < 1e-4
    for n in ref:
        assert (got[n].double() - ref[n]).norm() <= 1e-4 * ref[n].norm() + 1e-9, n
