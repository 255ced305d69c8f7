"""Building the token mask at the batch's only update, from that update's own clean forward, gives the
mask, counts and loss of the eager path (a separate clean + perturbed pass right after generation), and
forwards only the perturbed rows on top of the training forward."""

from __future__ import annotations

import torch
from test_trainer import make_trainer, mixed_reward, rows_for
from trl.trainer.utils import shuffle_sequence_dict, split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from visent.trainer import counterfactual as cf
from visent.trainer.grpo import DEFERRED, SELECTED_COUNT, SKIPPED, TOKEN_MASK


def test_deferred_mask_equals_the_eager_mask_and_saves_the_clean_forward(tmp_path):
    trainer = make_trainer(tmp_path, rewards=(mixed_reward,), token_score="vepo", selection_ratio=0.3)
    trainer.model.train()
    assert trainer.defers_mask(), "the default single-update setting should defer"
    eager = trainer.generation_batch(rows_for(trainer, 4))  # outside a training step: the mask is built now
    assert DEFERRED not in eager
    skipped = eager[SKIPPED]
    assert skipped.any() and (~skipped).any(), "want both skipped and scored responses"

    # TRL's own shuffle of the generation batch (pixel rows travel with their responses).
    torch.manual_seed(1)
    shuffled = unsplit_pixel_values_by_grid(shuffle_sequence_dict(split_pixel_values_by_grid(dict(eager))))
    deferred = {k: v for k, v in shuffled.items() if k not in (TOKEN_MASK, SELECTED_COUNT, SKIPPED)}
    deferred[DEFERRED] = torch.ones(len(skipped), dtype=torch.bool)

    rows_forwarded, rope_calls = [], []
    backbone = trainer.model.model
    handle = backbone.register_forward_hook(lambda m, a, out: rows_forwarded.append(out.last_hidden_state.size(0)))
    real_rope = backbone.get_rope_index
    backbone.get_rope_index = lambda *a, **k: rope_calls.append(1) or real_rope(*a, **k)
    try:
        loss_deferred = trainer.compute_policy_loss(trainer.model, deferred)
    finally:
        handle.remove()
        del backbone.get_rope_index
    B = len(skipped)
    scored = (~shuffled[SKIPPED]).nonzero().squeeze(1).tolist()
    groups = cf.prompt_groups(shuffled, adapter=trainer.model_adapter)
    distinct = cf.distinct_responses(shuffled, scored, groups)[0]
    # The training forward, then per chunk the distinct prompts and the distinct responses, perturbed only:
    # no clean pass.
    assert rows_forwarded[0] == B
    assert sum(rows_forwarded[2::2]) == len(distinct) <= len(scored)
    assert sum(rows_forwarded[1::2]) <= len({groups[b] for b in distinct}) * len(rows_forwarded[1::2])
    assert len(rope_calls) == 1  # the perturbed rows reuse the training forward's 3D rope positions

    assert torch.equal(deferred[TOKEN_MASK], shuffled[TOKEN_MASK])
    assert torch.equal(deferred[SELECTED_COUNT], shuffled[SELECTED_COUNT])
    assert torch.equal(deferred[SKIPPED], shuffled[SKIPPED])
    loss_eager = trainer.compute_policy_loss(trainer.model, shuffled)
    assert loss_deferred.item() == loss_eager.item()


def test_no_deferral_when_a_batch_gets_several_updates(tmp_path):
    for overrides in ({"num_iterations": 2}, {"steps_per_generation": 2, "per_device_train_batch_size": 4},
                      {"token_score": "random"}):
        trainer = make_trainer(tmp_path, token_score=overrides.pop("token_score", "vepo"), **overrides)
        trainer.model.train()
        assert not trainer.defers_mask(), overrides


def test_a_training_step_defers_and_still_trains_on_the_masked_tokens(tmp_path):
    trainer = make_trainer(tmp_path, rewards=(mixed_reward,), token_score="vepo", selection_ratio=0.3)
    trainer.current_gradient_accumulation_steps = 1  # set by transformers' train loop
    seen = {}
    real = trainer.compute_policy_loss

    def spy(model, inputs):
        seen["deferred"] = DEFERRED in inputs and TOKEN_MASK not in inputs
        loss = real(model, inputs)
        seen["mask"] = inputs.get(TOKEN_MASK)
        return loss

    trainer.compute_policy_loss = spy
    trainer.training_step(trainer.model, rows_for(trainer, 2), None)
    assert seen["deferred"] and seen["mask"] is not None and 0 < float(seen["mask"].mean()) < 1
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
