"""Trainer callbacks: ``metrics.jsonl`` in the output directory.

One JSON object per logging step: ``{"step": global_step, <every logged key>: value, ...}``. Written by
the main process only. On a resumed run, lines logged after the checkpoint's step are dropped first, so
the file reads as one uninterrupted run. The end-of-training summary (``train_runtime`` …) is not a
logging step and is left out.
"""

from __future__ import annotations

import json
import math
import os

from transformers import TrainerCallback

from visent.io import read_jsonl

__all__ = ["METRICS_FILE", "MetricsJsonlCallback", "read_metrics"]

METRICS_FILE = "metrics.jsonl"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


def read_metrics(output_dir: str) -> list[dict]:
    """The rows of ``output_dir/metrics.jsonl``."""
    return read_jsonl(os.path.join(output_dir, METRICS_FILE))


class MetricsJsonlCallback(TrainerCallback):
    def __init__(self, output_dir: str | None = None):
        self.output_dir = output_dir

    def _path(self, args) -> str:
        return os.path.join(self.output_dir or args.output_dir, METRICS_FILE)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        path = self._path(args)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        kept = []
        if state.global_step > 0 and os.path.exists(path):  # resuming: keep what precedes the checkpoint
            with open(path) as f:
                kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= state.global_step]
        with open(path, "w") as f:
            f.writelines(kept)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "train_runtime" in logs:
            return
        row = {"step": int(state.global_step)}
        row.update({k: _clean(v) for k, v in logs.items()})
        with open(self._path(args), "a") as f:
            f.write(json.dumps(row) + "\n")
