"""``curves.png``: reward, held-out accuracy and entropy over training steps, one line per run.

Input is what the trainer writes: ``metrics.jsonl``, one JSON object per logging step with ``step``
(``visent.trainer.callbacks``), or the same rows as dicts. Which key holds each curve is looked up in a
short list of candidates (first present wins) unless given explicitly:

==========  ===================================================================================
panel       keys tried, in order
==========  ===================================================================================
reward      ``reward`` (TRL's mean reward), ``train/reward``
accuracy    ``eval/accuracy``, ``heldout/accuracy``, ``eval_accuracy``, ``accuracy`` — the panel is
            drawn only when some run logs one of them
entropy     ``entropy/mean`` (visent's mean over response tokens), ``entropy`` (TRL's)
==========  ===================================================================================

The two-stage switch point is drawn as a dashed vertical line on every panel: at ``switch_step`` when
given, otherwise wherever a run's logged ``entropy/stage`` changes (no line when none does).

Rendering uses matplotlib's Agg canvas on a standalone ``Figure`` (no pyplot state, no display).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from visent.io import json_lines

__all__ = ["PANEL_KEYS", "detect_switch_steps", "plot_curves", "read_metrics_rows"]

PANEL_KEYS: dict[str, tuple[str, ...]] = {
    "reward": ("reward", "train/reward"),
    "accuracy": ("eval/accuracy", "heldout/accuracy", "eval_accuracy", "accuracy"),
    "entropy": ("entropy/mean", "entropy"),
}
_TITLES = {"reward": "reward (train)", "accuracy": "held-out accuracy", "entropy": "mean token entropy (nats)"}

def read_metrics_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (or of ``DIR/metrics.jsonl``); errors name the file and line."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics file at {path!r} (expected the trainer's metrics.jsonl)")
    rows = []
    for n, row in json_lines(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")  # noqa: TRY004 (bad file content)
        rows.append(row)
    return _check_rows(rows, path)


def _check_rows(rows: Sequence[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
    out = []
    for n, row in enumerate(rows, 1):
        step = row.get("step") if isinstance(row, Mapping) else None
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            raise ValueError(f"{where}, row {n}: missing or non-numeric 'step' (got {step!r})")  # noqa: TRY004 (bad data)
        out.append(dict(row))
    return out


def _label_for_path(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        return os.path.basename(path.rstrip(os.sep))
    name = os.path.basename(path)
    return os.path.basename(os.path.dirname(path)) if name == "metrics.jsonl" else os.path.splitext(name)[0]


def _load_runs(runs: Any) -> dict[str, list[dict[str, Any]]]:
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if isinstance(runs, Mapping):
        items = list(runs.items())
    else:
        items = []
        for i, src in enumerate(runs):
            label = _label_for_path(src) if isinstance(src, (str, os.PathLike)) else f"run {i + 1}"
            items.append((label, src))
    out: dict[str, list[dict[str, Any]]] = {}
    for label, src in items:
        label = str(label)
        while label in out:  # two runs in folders with the same name
            label += "'"
        if isinstance(src, (str, os.PathLike)):
            out[label] = read_metrics_rows(src)
        elif isinstance(src, Sequence):
            out[label] = _check_rows(src, f"run {label!r}")
        else:
            raise TypeError(f"run {label!r}: expected a metrics.jsonl path or a list of dicts, got {type(src).__name__}")
    if not out:
        raise ValueError("plot_curves: no runs given")
    return out


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in sorted(rows, key=lambda r: r["step"]):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(float(row["step"]))
            ys.append(float(v))
    return xs, ys


def _resolve_key(runs: Mapping[str, Sequence[Mapping[str, Any]]], candidates: Sequence[str]) -> str | None:
    for key in candidates:
        if any(key in row for rows in runs.values() for row in rows):
            return key
    return None


def detect_switch_steps(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """Steps at which the logged ``entropy/stage`` changes (the first step logged in the new stage)."""
    out, prev = [], None
    for row in sorted(rows, key=lambda r: r["step"]):
        stage = row.get("entropy/stage")
        if stage is None:
            continue
        if prev is not None and stage != prev:
            out.append(float(row["step"]))
        prev = stage
    return out


def plot_curves(
    runs: Any,
    out_png: str | os.PathLike,
    switch_step: float | None = None,
    *,
    reward_key: str | None = None,
    accuracy_key: str | None = None,
    entropy_key: str | None = None,
    title: str | None = None,
    dpi: int = 120,
):
    """Draw the training curves of several runs and save them as a PNG.

    Args:
        runs: ``{label: path | rows}`` or a list of paths / row lists (labels from the run folder names).
            A path is a ``metrics.jsonl`` file or the output directory holding one; rows are dicts with
            ``step``.
        out_png: where to write the PNG (parent folders are created).
        switch_step: global step of the two-stage switch; ``None`` detects it from ``entropy/stage``.
        reward_key / accuracy_key / entropy_key: metric names, overriding ``PANEL_KEYS``.
        title: figure title.
        dpi: PNG resolution.

    Returns:
        The matplotlib ``Figure`` (its axes hold one line per run, plus the switch lines).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = _load_runs(runs)
    chosen = {
        "reward": reward_key or _resolve_key(data, PANEL_KEYS["reward"]),
        "accuracy": accuracy_key or _resolve_key(data, PANEL_KEYS["accuracy"]),
        "entropy": entropy_key or _resolve_key(data, PANEL_KEYS["entropy"]),
    }
    panels = [p for p in ("reward", "accuracy", "entropy") if p != "accuracy" or chosen["accuracy"]]
    if switch_step is not None:
        switches = [float(switch_step)]
    else:
        switches = sorted({s for rows in data.values() for s in detect_switch_steps(rows)})

    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        key = chosen[panel]
        drawn = False
        for label, rows in data.items():
            xs, ys = _series(rows, key) if key else ([], [])
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, linewidth=1.5, label=label)
                drawn = True
        for i, s in enumerate(switches):
            ax.axvline(s, color="black", linestyle="--", linewidth=1.0, label=f"switch (step {s:g})")
        ax.set_title(_TITLES[panel] + (f"\n[{key}]" if key else "\n[not logged]"), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    handles, labels = [], []
    for ax in axes:  # a run may miss a panel: gather legend entries from all of them
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if handles else 0, 1, 0.95 if title else 1))
    out_png = os.fspath(out_png)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, format="png")
    return fig
