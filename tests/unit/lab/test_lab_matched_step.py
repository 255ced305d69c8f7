"""`vepo_matched_step` is VEPO with one change: the policy loss's aggregation (docs/lab-step-size.md)."""

from __future__ import annotations

import dataclasses

from visent.lab import rl


def test_matched_step_differs_from_vepo_only_in_the_aggregation(tmp_path):
    kw = {"model_path": "tiny:qwen2_5_vl", "noise": 0.0, "seed": 1, "output_dir": str(tmp_path)}
    settings = rl.RLSettings.for_task("tally")
    vepo = dataclasses.asdict(rl.lab_config("vepo", settings, **kw))
    matched = dataclasses.asdict(rl.lab_config("vepo_matched_step", settings, **kw))
    differing = {k for k in vepo if vepo[k] != matched[k]}
    assert differing == {"loss_aggregation"}
    assert (vepo["loss_aggregation"], matched["loss_aggregation"]) == ("selected_mean", "token_mean")
