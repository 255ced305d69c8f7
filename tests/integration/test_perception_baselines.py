"""VPPO's and PAPO's trainer side on tiny Qwen2.5-VL (CPU): the perturbed pass, the score → mask → α chain,
the deferred mask equal to the immediate one, and PAPO's extra term against a hand computation."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import make_trainer, rows_for

from visent.core.kl_scores import perception_kl_score
from visent.core.selection import keep_count
from visent.trainer.grpo import DEFERRED, TOKEN_MASK
from visent.trainer.perception_pass import PERTURBED_LOGPS, S_HAT, SHAPED

VPPO = {
    "token_score": "perception_kl", "selection_ratio": 0.4, "loss_aggregation": "token_mean", "trajectory_beta_min": 0.9,
    "perturbation": "blackout_14px", "perturbation_strength": 0.5, "perturbation_scope": "response",
}


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
    # per-response draws (VPPO): two responses of one prompt see different blackouts; per prompt (PAPO) the same
    from visent.trainer.counterfactual import perturb_batch_images, prompt_seeds
    from visent.trainer.perception_pass import _response_seed

    B = batch["completion_ids"].size(0)
    seeds = prompt_seeds(batch, 0, 0, adapter=trainer.model_adapter)
    per_response = perturb_batch_images(batch, [_response_seed(s, i) for i, s in enumerate(seeds)], "blackout_14px",
                                        0.5, trainer.image_geometry, groups=list(range(B)), adapter=trainer.model_adapter)
    per_prompt = perturb_batch_images(batch, seeds, "blackout_14px", 0.5, trainer.image_geometry,
                                      adapter=trainer.model_adapter)
    assert not torch.equal(per_response.view(B, -1)[0], per_response.view(B, -1)[1])
    assert torch.equal(per_prompt.view(B, -1)[0], per_prompt.view(B, -1)[1])


def test_deferred_vppo_mask_equals_the_immediate_one(tmp_path):
    trainer = make_trainer(tmp_path, **VPPO)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    deferred = {k: v for k, v in batch.items() if k != TOKEN_MASK}
    deferred[DEFERRED] = torch.ones(batch["completion_ids"].size(0), dtype=torch.bool)
    trainer.compute_policy_loss(trainer.model, deferred)
    torch.testing.assert_close(deferred[TOKEN_MASK], batch[TOKEN_MASK])


def test_papo_term_matches_a_hand_computation(tmp_path):
    papo = {"token_score": "none", "loss_aggregation": "token_mean", "perturbation": "patch_blackout",
            "perturbation_strength": 0.6}
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


def test_papo_raw_blackout_is_one_draw_per_prompt(tmp_path):
    from visent.trainer.counterfactual import prompt_seeds
    from visent.trainer.perception_pass import raw_view_pixels

    trainer = make_trainer(tmp_path, token_score="none", perception_kl_coef=0.02, perturbation="raw_blackout",
                           perturbation_strength=0.6)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    seeds = prompt_seeds(batch, 0, 0, adapter=trainer.model_adapter)
    pixels = raw_view_pixels(trainer, batch, "raw_blackout", 0.6, seeds)
    assert pixels.shape == batch["pixel_values"].shape and not torch.allclose(pixels, batch["pixel_values"])
    per_row = pixels.shape[0] // batch["completion_ids"].size(0)  # one equal-size image per row in lab:counting
    rows = pixels.view(batch["completion_ids"].size(0), per_row, -1)
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[4])  # K = 4 responses share a draw


def test_perception_pass_through_the_counterfactual_forward_equals_trls_forward(tmp_path):
    """The default path (``counterfactual_forward: prefix_cached``) gives the reference path's log-probs (TRL's
    forward of every row, ``full``) for VPPO's per-response draws and PAPO's per-prompt raw-image view, with
    the trainer's own temperature; per family: ``tests/unit/models/test_adapters_perception_pass.py``."""
    from visent.trainer.perception_pass import perturbed_logps, uses_counterfactual_forward

    papo = {"token_score": "none", "perception_kl_coef": 0.02, "perturbation": "raw_blackout", "perturbation_strength": 0.6}
    for i, overrides in enumerate((VPPO, papo)):
        trainer = make_trainer(tmp_path / str(i), temperature=0.8, **overrides)
        batch = trainer.generation_batch(rows_for(trainer, 2))
        assert uses_counterfactual_forward(trainer)
        fast = perturbed_logps(trainer, batch)
        trainer.args.counterfactual_forward = "full"
        assert not uses_counterfactual_forward(trainer)
        reference = perturbed_logps(trainer, batch)
        valid = batch["completion_mask"].bool()
        assert not torch.allclose(reference[valid], _clean_logps(trainer, batch)[valid])  # the images changed
        torch.testing.assert_close(fast * valid, reference * valid, atol=1e-5, rtol=0)


def test_cppo_term_carries_gradient_through_both_views(tmp_path):
    trainer = make_trainer(tmp_path, token_score="none", loss_aggregation="token_mean", contrastive_perception_coef=1.0,
                           contrastive_perception_gate=False)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    trainer.model.eval()
    base = make_trainer(tmp_path / "b", token_score="none", loss_aggregation="token_mean")
    base.model.load_state_dict(trainer.model.state_dict())
    base.model.eval()
    with_term = trainer.compute_policy_loss(trainer.model, dict(batch))
    without = base.compute_policy_loss(base.model, dict(batch))
    assert with_term.item() != without.item()
    with_term.backward()
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    sel = trainer._metrics["eval"]["loss/contrastive_selected_fraction"][-1]
    assert 0 < sel <= 1
    # the same term rebuilt by hand: the views from the batch's seeds, the k3 margins, the selection
    from visent.trainer.contrastive_pass import CPPO_SEED
    from visent.trainer.perception_pass import raw_view_pixels

    seeds = batch[CPPO_SEED].tolist()
    with torch.no_grad():
        lp, h = trainer.forward_logps_and_entropies(trainer.model, batch)
        out = []
        for kind, off in (("cppo_preserving", 0), ("cppo_removing", 1)):
            px = raw_view_pixels(trainer, batch, kind, None, [x * 2 + off for x in seeds])
            out.append(trainer.forward_logps_and_entropies(trainer.model, {**batch, "pixel_values": px}))
    m = batch["completion_mask"].double()
    (lp_p, _), (lp_c, h_c) = out
    k3 = lambda a, b: ((b - a).clamp(-20, 20).exp() - (b - a).clamp(-20, 20) - 1).clamp(-10, 10)
    delta = (h_c - h).double() * m
    r = torch.relu(delta) / (h_c.double() + 1e-6)
    cpl_tok = torch.nn.functional.softplus((k3(lp.double(), lp_p.double()) - k3(lp.double(), lp_c.double())) / 0.1)
    total = 0.0
    count = 0
    for b in range(m.size(0)):
        rising = (delta[b] > 0) & (m[b] > 0)
        k = max(1, int(rising.sum().item() * 0.5))
        if rising.sum() == 0:
            continue
        thr = r[b][rising].sort(descending=True).values[k - 1]
        keep = rising & (r[b] >= thr)
        total += cpl_tok[b][keep].sum().item()
        count += int(keep.sum())
    assert abs((with_term - without).item() - total / count) < 1e-4


def test_cppo_gated_term_runs_the_views_on_positive_rows_only_and_equals_the_full_batch_term(tmp_path):
    from visent.core.entropy_shift_selection import entropy_shift_selection
    from visent.core.perception_loss import contrastive_perception_loss
    from visent.trainer.contrastive_pass import CPPO_SEED, contrastive_term
    from visent.trainer.perception_pass import raw_view_pixels

    trainer = make_trainer(tmp_path, token_score="none", loss_aggregation="token_mean", contrastive_perception_coef=1.0)
    batch = trainer.generation_batch(rows_for(trainer, 2))
    B = batch["completion_ids"].size(0)
    batch["advantages"] = torch.tensor([1.0, -1.0, 0.0, 0.5, -0.5, 2.0, 0.0, -2.0])[:B]  # rows 0, 3, 5 positive
    trainer.model.eval()
    mask = batch["completion_mask"].float()
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def grads_of(term):
        return torch.autograd.grad(term, params, allow_unused=True)

    rows_seen = []
    forward = trainer.forward_logps_and_entropies

    def counting(model, inputs, **kw):
        rows_seen.append(inputs["completion_ids"].size(0))
        return forward(model, inputs, **kw)

    trainer.forward_logps_and_entropies = counting
    logps, h = forward(trainer.model, batch)
    got = contrastive_term(trainer, trainer.model, batch, logps, h, mask, {})
    g_got = grads_of(got)
    assert rows_seen == [3, 3]  # each view runs on the three positive-advantage rows only
    # The reference: both views on every row, the gate applied by the selection.
    logps, h = forward(trainer.model, batch)
    seeds = batch[CPPO_SEED].tolist()
    views = [
        forward(trainer.model, {**batch, "pixel_values": raw_view_pixels(trainer, batch, k, None, [s * 2 + o for s in seeds])})
        for k, o in (("cppo_preserving", 0), ("cppo_removing", 1))
    ]
    selected = entropy_shift_selection(h.detach(), views[1][1].detach(), mask, batch["advantages"], 0.5, True)
    assert selected[[1, 2, 4, 6, 7][: B - 3]].sum() == 0 and selected.sum() > 0
    want = contrastive_perception_loss(logps, views[0][0], views[1][0], selected, trainer.args.contrastive_perception_tau)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for a, b in zip(g_got, grads_of(want)):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
        else:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    # No positive advantage: no token can be selected, the views do not run.
    rows_seen.clear()
    batch["advantages"] = -batch["advantages"].abs()
    assert contrastive_term(trainer, trainer.model, batch, logps, h, mask, {}) == 0.0 and rows_seen == []
    # Unless every forward is a collective (ZeRO-3 / FSDP): then the views run on every row, selecting none.
    trainer._forwards_are_collective = lambda: True
    term = contrastive_term(trainer, trainer.model, batch, logps, h, mask, {})
    assert rows_seen == [B, B] and float(term) == 0.0
