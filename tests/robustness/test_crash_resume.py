"""Crash and resume: a ``visent train`` process killed with SIGKILL after a checkpoint, then resumed with
``--resume_from_checkpoint true``, ends with the same parameters as an uninterrupted run of the same length.

Everything that decides a step must come back from the checkpoint for that to hold: the weights, the
optimizer moments, the learning-rate schedule, the entropy schedule's step, the sampling RNG (torch state
in ``rng_state.pth``), the dataloader position, the per-prompt perturbation seeds and the seeded random
reward (both derived from the global step). The run uses VEPO selection with a perturbed pass, the
two-stage entropy schedule switching after the checkpoint, a linear learning-rate decay and a reward with
variance, so a mistake in any of these moves the final parameters.

The control is an uninterrupted run with identical arguments in a second process: that both
processes agree with each other without a crash is checked too, so a failure points at resuming and not
at run-to-run nondeterminism.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from visent.trainer.cli import latest_complete_checkpoint

MAX_STEPS = 4
SAVE_STEPS = 2

ARGS = [
    "--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", "lab:counting", "--dataset_size", "16",
    "--reward_funcs", "random", "--num_generations", "4", "--per_device_train_batch_size", "8",
    "--max_completion_length", "8", "--max_steps", str(MAX_STEPS), "--save_steps", str(SAVE_STEPS),
    "--logging_steps", "1", "--learning_rate", "1e-2", "--lr_scheduler_type", "linear",
    "--token_score", "vepo", "--selection_ratio", "0.5", "--skip_uniform_groups", "false",
    "--entropy_schedule", "two_stage", "--entropy_switch", "0.6", "--entropy_coef_max", "0.05",
    "--entropy_coef_min", "0.05", "--seed", "7", "--perturbation_seed", "3",
    "--gradient_checkpointing", "false", "--report_to", "none", "--dataloader_num_workers", "0",
]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU: the comparison is exact only on one deterministic device
    return env


def _train(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "visent.cli", "train", *ARGS, "--output_dir", str(out), *extra]
    with open(out.parent / f"{out.name}.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())


def _wait(proc: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, f"visent train failed ({rc}); log:\n{(out.parent / f'{out.name}.log').read_text()[-3000:]}"


def _params(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _assert_same_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= 1e-6, f"{what}: parameters differ by up to {worst:.3g}"


@pytest.mark.slow  # three tiny training processes (two at once), ~1 min on 2 loaded cores
def test_sigkill_after_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path):
    from visent.trainer.sources import load_model

    full_a, full_b = _train(tmp_path / "full_a"), _train(tmp_path / "full_b")
    model, _ = load_model("tiny:qwen2_5_vl")  # the weights every run starts from (built from a fixed seed)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _wait(full_a, tmp_path / "full_a")
    _wait(full_b, tmp_path / "full_b")
    full = _params(tmp_path / "full_a")
    _assert_same_params(full, _params(tmp_path / "full_b"), "two uninterrupted runs (control)")
    moved = max(float((full[k] - initial[k]).abs().max()) for k in full if k in initial)
    assert moved > 1e-3, "training did not change the parameters: the comparison would be vacuous"

    # The run to crash: SIGKILL as soon as the first checkpoint is complete (its trainer_state.json is
    # written last), long before the run would end.
    out = tmp_path / "crashed"
    proc = _train(out)
    deadline = time.monotonic() + 240
    marker = out / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json"
    while not marker.exists():
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{(tmp_path / 'crashed.log').read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "model.safetensors").exists(), "the run finished before it was killed"
    newest = latest_complete_checkpoint(str(out))
    assert newest is not None and int(newest.rsplit("-", 1)[1]) < MAX_STEPS

    resumed = _train(out, "--resume_from_checkpoint", "true")
    _wait(resumed, out)
    _assert_same_params(full, _params(out), "resumed run vs uninterrupted run")

    # Same schedule, step by step: the resumed run logs the steps after its checkpoint with the
    # uninterrupted run's entropy coefficient and learning rate.
    def steps(path: Path) -> dict[int, tuple[float, float]]:
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {r["step"]: (r["entropy/coef"], r["learning_rate"]) for r in rows if "entropy/coef" in r}

    expected, got = steps(tmp_path / "full_a"), steps(out)
    assert sorted(expected) == list(range(1, MAX_STEPS + 1))
    for step in range(int(newest.rsplit("-", 1)[1]) + 1, MAX_STEPS + 1):
        assert got[step] == pytest.approx(expected[step]), f"step {step}"


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    """A kill while a checkpoint is being written leaves a folder without trainer_state.json (written
    last); resuming must fall back to the previous complete checkpoint instead of failing on it."""
    assert latest_complete_checkpoint(str(tmp_path)) is None
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    partial = tmp_path / "checkpoint-12"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    (tmp_path / "checkpoint-9.tmp").mkdir()  # not a checkpoint name
    assert latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")


def test_checkpoint_weights_are_restored_under_their_saved_names(tmp_path):
    """transformers 5 saves Qwen2.5-VL weights under legacy names (``model.layers.*``) and its resume path
    loads them non-strictly under the in-memory names (``model.language_model.layers.*``), silently
    keeping whatever weights the model had. The trainer's loader must restore every tensor."""
    from visent.models.checkpoint import load_checkpoint_weights
    from visent.trainer.sources import load_model

    model, _ = load_model("tiny:qwen2_5_vl")
    model.save_pretrained(tmp_path / "ckpt")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    assert load_checkpoint_weights(model, str(tmp_path / "ckpt"))
    after = model.state_dict()
    assert all(torch.equal(after[k], saved[k]) for k in saved)

    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    dropped = sorted(weights)[len(weights) // 2]
    del weights[dropped]
    save_file(weights, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(RuntimeError, match="missing"):
        load_checkpoint_weights(model, str(tmp_path / "ckpt"))
