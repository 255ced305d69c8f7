"""Two CPU processes (``torch.distributed.run``, gloo) training VEPO with the counterfactual pass in lockstep:
whatever each process skipped, both issue the same sequence of forwards, vision-encoder calls and LM-head
gathers (issue 20, item 2, end to end through the real trainer).

Why not under ZeRO-3 itself: DeepSpeed is not a dependency (``tests/slow/test_zero3_two_processes.py`` runs
it where it is installed), and FSDP is refused for configs with token statistics (docs/training.md). So
the processes train with DDP, the trainer is told that its forwards are collective
(``_forwards_are_collective``: the one switch ZeRO-3 flips), and each process records what the sharded
engine would turn into collectives.
One process gets different rows: its responses' advantages are nudged off zero, so it scores them while
the other skips all of its (an untrained model never writes the format: every group is uniform).

Slow (two processes start, import torch and train 2 steps, ~30 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent(
    """
    import contextlib, json, os, sys

    from visent.trainer import grpo

    rank = int(os.environ["RANK"])
    events, rows_seen = [], []
    grpo.VisentGRPOTrainer._forwards_are_collective = lambda self: True  # what ZeRO-3 / FSDP switch on
    real_mask, real_stats = grpo.VisentGRPOTrainer._token_mask, grpo.counterfactual_stats

    def token_mask(self, batch, clean_hidden, clean_positions=None):
        if rank == 1:  # this process scores its responses; the other skips all of its (uniform groups)
            batch["advantages"] = batch["advantages"] + 1e-3
        return real_mask(self, batch, clean_hidden, clean_positions)

    def counterfactual_stats(backbone, head, batch, rows, *args, **kw):
        gather = kw["gather_ctx"]

        @contextlib.contextmanager
        def recording(weight, bias):
            events.append("gather")
            with gather(weight, bias):
                yield
            events.append("release")

        kw["gather_ctx"] = recording
        rows_seen.append(len(rows))
        hooks = [backbone.register_forward_pre_hook(lambda *a: events.append("forward")),
                 backbone.visual.register_forward_pre_hook(lambda *a: events.append("vision"))]
        events.append("pass")
        try:
            return real_stats(backbone, head, batch, rows, *args, **kw)
        finally:
            for h in hooks:
                h.remove()

    grpo.VisentGRPOTrainer._token_mask = token_mask
    grpo.counterfactual_stats = counterfactual_stats
    from visent.cli import main

    try:
        code = main(sys.argv[2:])
    finally:
        with open(os.path.join(sys.argv[1], f"collectives-{rank}.json"), "w") as f:
            json.dump({"events": events, "rows": rows_seen}, f)
    sys.exit(code)
    """
)


def test_processes_with_different_rows_issue_the_same_collectives(tmp_path):
    out = tmp_path / "out"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
        str(30500 + os.getpid() % 1000), str(driver), str(tmp_path), "train", "--use_cpu", "true",
        "--gradient_accumulation_steps", "1", "--config", "vepo", "--model_name_or_path", "tiny:qwen2_5_vl",
        "--dataset", "lab:counting", "--dataset_size", "16", "--max_steps", "2", "--per_device_train_batch_size",
        "4", "--num_generations", "2", "--max_completion_length", "6", "--reward_funcs", "format",
        "--counterfactual_batch_size", "2", "--output_dir", str(out), "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(cmd, check=False, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((tmp_path / f"collectives-{r}.json").read_text()) for r in (0, 1)]
    assert seen[0]["rows"] != seen[1]["rows"], seen  # the processes really held different rows
    print(f"\nrows per pass: {seen[0]['rows']} vs {seen[1]['rows']}; events: {seen[0]['events']}")
    assert seen[0]["events"] == seen[1]["events"]
    assert seen[0]["events"].count("gather") == seen[0]["events"].count("pass") >= 2
    assert "forward" in seen[0]["events"]
