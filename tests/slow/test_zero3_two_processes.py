"""The shipped `vepo` config under DeepSpeed ZeRO-3 with two CPU processes (``torch.distributed.run``, gloo).

Slow, and skipped where DeepSpeed is not installed (it is not a dependency: ``pip install deepspeed
--no-build-isolation`` builds its sdist against the installed torch). Under ZeRO-3 every forward and every
gather of the LM head is a collective, so a process that skipped its zero-advantage groups and one that did
not must still issue the same sequence of collectives in the counterfactual pass, or the run hangs. With
``--reward_funcs random`` some groups are uniform and some not, so the processes skip different rows. A
hang fails this test at the timeout (both processes are killed).

The model is a tiny checkpoint saved to disk first: with ``zero3_init`` transformers builds models under
``deepspeed.zero.Init``, which partitions each parameter as it is created, and the tiny builders' weight
initialisation indexes parameters that are already partitioned; ``from_pretrained`` handles that.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed"),
]

TIMEOUT_S = 300  # the run takes ~40 s on an idle 2-core machine
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZERO3 = {
    "zero_optimization": {"stage": 3, "overlap_comm": False, "stage3_gather_16bit_weights_on_model_save": True},
    "bf16": {"enabled": False},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
}


def test_vepo_trains_under_zero3_with_two_processes(tmp_path):
    from visent.trainer.sources import load_model

    checkpoint = tmp_path / "tiny"
    model, processor = load_model("tiny:qwen2_5_vl")
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    ds_config = tmp_path / "zero3.json"
    ds_config.write_text(json.dumps(ZERO3))
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
        str(29600 + os.getpid() % 1000), "-m", "visent.cli", "train", "--use_cpu", "true", "--bf16", "false",
        "--deepspeed", str(ds_config), "--config", "vepo", "--model_name_or_path", str(checkpoint),
        "--dataset", "lab:counting", "--dataset_size", "32", "--max_steps", "3", "--per_device_train_batch_size",
        "4", "--gradient_accumulation_steps", "1", "--num_generations", "2", "--max_completion_length", "6",
        "--reward_funcs", "random", "--output_dir", str(out), "--logging_steps", "1", "--save_steps", "3",
        "--report_to", "none",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Output to a file, not a pipe: a rank that outlived the launcher would hold a pipe open forever.
    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # torch.distributed.run starts each rank in its own session; on SIGTERM it stops them itself.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log = log_path.read_text()
            pytest.fail(f"ZeRO-3 run did not finish in {TIMEOUT_S} s (processes out of step in a collective?):\n"
                        + log[-3000:])
    log = log_path.read_text()
    assert proc.returncode == 0, log[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "vepo/skipped_responses" in r]
    assert len(steps) == 3
    assert all(r["guard/nonfinite_logits"] == 0 and r["entropy/mean"] > 0 for r in steps)
    assert 0 < sum(r["frac_reward_zero_std"] for r in steps) < 3, "some groups skipped and some not"
    # ZeRO-3 really ran: its checkpoint holds one parameter partition per process.
    saved = os.listdir(out / "checkpoint-3" / "global_step3")
    assert sum(name.startswith("zero_pp_rank_") and "model_states" in name for name in saved) == 2
