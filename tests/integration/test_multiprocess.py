"""Two CPU processes (``torch.distributed.run``, gloo): visent's metrics are combined over processes.

Slow (two processes start and import torch, ~15 s). The invariant checked needs no knowledge of which
responses landed where: a response's counterfactual pass is skipped exactly when its group's rewards are
all equal, so the logged ``vepo/skipped_responses`` must equal TRL's (already global)
``frac_reward_zero_std`` times the global batch. One process's share would be half of that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PER_DEVICE, PROCESSES, K = 4, 2, 2


def test_counts_are_summed_over_processes(tmp_path):
    out = tmp_path / "out"
    # torchrun sets RANK/WORLD_SIZE; accelerate then runs MULTI_CPU over gloo (`accelerate launch --cpu`
    # starts a single process).
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(PROCESSES), "--master_port",
        str(29500 + os.getpid() % 1000), "-m", "visent.cli", "train", "--use_cpu", "true",
        "--gradient_accumulation_steps", "1", "--config", "vepo", "--model_name_or_path", "tiny:qwen2_5_vl",
        "--dataset", "lab:counting", "--dataset_size", "32", "--max_steps", "3", "--per_device_train_batch_size",
        str(PER_DEVICE), "--num_generations", str(K), "--max_completion_length", "6", "--reward_funcs", "format",
        "--output_dir", str(out), "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(cmd, check=False, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "vepo/skipped_responses" in r]
    assert len(steps) == 3
    global_batch = PER_DEVICE * PROCESSES
    for r in steps:
        assert r["vepo/skipped_responses"] == pytest.approx(r["frac_reward_zero_std"] * global_batch)
        assert r["time/counterfactual_s"] > 0 and r["entropy/mean"] > 0
        assert r["guard/nonfinite_logits"] == 0
    # An untrained model never writes the format: every group is uniform, all 8 responses skipped.
    assert any(r["vepo/skipped_responses"] == global_batch for r in steps)
