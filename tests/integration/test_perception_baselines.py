"""VPPO's and PAPO's trainer side on tiny Qwen2.5-VL (CPU): the perturbed pass, the score → mask → α chain,
the deferred mask equal to the immediate one, and PAPO's extra term against a hand computation."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import make_trainer, rows_for  # noqa: E402

from visent.core.kl_scores import perception_kl_score  # noqa: E402
from visent.core.selection import keep_count  # noqa: E402
from visent.trainer.grpo import DEFERRED, TOKEN_MASK  # noqa: E402
from visent.trainer.perception_pass import PERTURBED_LOGPS, S_HAT, SHAPED  # noqa: E402

VPPO = dict(
    token_score="perception_kl", selection_ratio=0.4, loss_aggregation="token_mean", trajectory_beta_min=0.9,
    perturbation="patch_blackout", perturbation_strength=0.5, perturbation_scope="response",
)


def _clean_logps(trainer, batch):
    with torch.no_grad():
        logps, _ = trainer.forward_logps_and_entropies(trainer.model, batch, compute_entropy=False)
    return logps.float()


def test_vppo_score_mask_and_shaping(tmp_path):
    trainer = make_trainer(tmp_path, **VPPO)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    valid = batch["completion_mask"].float()
    clean = _clean_logps(trainer, batch)
    aug = batch[PERTURBED_LOGPS]
    assert not torch.allclose(aug * valid, clean * valid)  # the blackout changes the policy
    scores = perception_kl_score(clean, aug, valid)
    mask = batch[TOKEN_MASK]
    torch.testing.assert_close(mask.sum(1), keep_count(valid.sum(1).long(), 0.4).float())
    # the kept tokens are the top-scoring ones of each response
    for b in range(mask.size(0)):
        kept, rest = scores[b][mask[b] > 0], scores[b][(mask[b] == 0) & (valid[b] > 0)]
        if kept.numel() and rest.numel():
            assert kept.min() >= rest.max() - 1e-6
    assert batch[S_HAT].min() >= 0 and batch[S_HAT].max() <= 1 and bool(batch[SHAPED].any())
    # per-response draws: two responses of one prompt see different blackouts (different perturbed log-probs
    # even where they share a token prefix is not guaranteed; different seeds are)
    from visent.trainer.perception_pass import _response_seed

    assert _response_seed(7, 0) != _response_seed(7, 1)


def test_deferred_vppo_mask_equals_the_immediate_one(tmp_path):
    trainer = make_trainer(tmp_path, **VPPO)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    deferred = {k: v for k, v in batch.items() if k != TOKEN_MASK}
    deferred[DEFERRED] = torch.ones(batch["completion_ids"].size(0), dtype=torch.bool)
    trainer.compute_policy_loss(trainer.model, deferred)
    torch.testing.assert_close(deferred[TOKEN_MASK], batch[TOKEN_MASK])


def test_papo_term_matches_a_hand_computation(tmp_path):
    papo = dict(token_score="none", loss_aggregation="token_mean", perturbation="patch_blackout", perturbation_strength=0.6)
    with_term = make_trainer(tmp_path / "a", perception_kl_coef=0.02, **papo)
    batch = with_term.generation_batch(rows_for(with_term, 2))
    without = make_trainer(tmp_path / "b", **papo)
    without.model.load_state_dict(with_term.model.state_dict())
    with_term.model.eval(), without.model.eval()
    a = with_term.compute_policy_loss(with_term.model, dict(batch))
    b = without.compute_policy_loss(without.model, dict(batch))
    lp = _clean_logps(with_term, batch).double()
    aug = batch[PERTURBED_LOGPS].double()
    m = batch["completion_mask"].double()
    d = (aug - lp).clamp(-20, 20)
    k3 = (d.exp() - d - 1).clamp(-10, 10)
    expected = -0.02 * (k3 * m).sum() / m.sum()
    assert abs((a - b).item() - expected.item()) < 1e-5
    assert expected.item() < 0  # maximised: the term lowers the loss
