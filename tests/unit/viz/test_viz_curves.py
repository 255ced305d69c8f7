"""curves.png from metrics.jsonl: one line per run and panel, the switch point marked, clear errors."""

from __future__ import annotations

import json

import pytest

from visent.viz.curves import detect_switch_steps, plot_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(method: str, steps: int = 12, switch: int | None = None, accuracy_every: int = 0) -> list[dict]:
    rows = []
    for s in range(1, steps + 1):
        row = {"step": s, "reward": 0.1 * s + len(method) * 0.01, "entropy/mean": 2.0 - 0.05 * s, "entropy": 9.0}
        if switch is not None:
            row["entropy/stage"] = int(s >= switch)
            row["entropy/coef"] = 1e-3 if s < switch else -1e-3
        if accuracy_every and s % accuracy_every == 0:
            row["eval/accuracy"] = s / steps
        rows.append(row)
    return rows


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _vertical_lines(ax) -> list[float]:
    xs = []
    for line in ax.get_lines():
        x = list(line.get_xdata())
        if len(x) == 2 and x[0] == x[1] and line.get_linestyle() == "--":
            xs.append(float(x[0]))
    return xs


def _run_lines(ax) -> dict[str, tuple[list, list]]:
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in ax.get_lines()
        if line.get_linestyle() != "--"
    }


def test_png_with_one_line_per_run_and_the_detected_switch(tmp_path):
    runs = {
        "grpo": _write(tmp_path / "grpo" / "metrics.jsonl", _rows("grpo")),
        "two_stage": _write(tmp_path / "two_stage" / "metrics.jsonl", _rows("two_stage", switch=10)),
    }
    out = tmp_path / "out" / "curves.png"
    fig = plot_curves(runs, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    axes = fig.axes
    assert len(axes) == 2  # no accuracy logged: reward and entropy only
    for ax in axes:
        assert _vertical_lines(ax) == [10.0]
    rows = _rows("two_stage", switch=10)
    reward = _run_lines(axes[0])
    assert set(reward) == {"grpo", "two_stage"}
    assert reward["two_stage"][1] == pytest.approx([r["reward"] for r in rows])
    # visent's `entropy/mean` is preferred over TRL's `entropy`.
    assert _run_lines(axes[1])["grpo"][1] == pytest.approx([r["entropy/mean"] for r in rows])


def test_accuracy_panel_only_where_logged_and_explicit_switch(tmp_path):
    runs = {"vepo": _rows("vepo", accuracy_every=4), "grpo": _rows("grpo", switch=6)}
    fig = plot_curves(runs, tmp_path / "c.png", switch_step=9)
    assert len(fig.axes) == 3
    acc = _run_lines(fig.axes[1])
    assert acc["vepo"][0] == [4.0, 8.0, 12.0]
    assert "grpo" not in acc  # a run that logged no accuracy draws no line there
    for ax in fig.axes:
        assert _vertical_lines(ax) == [9.0]  # the explicit switch wins over the detected one


def test_no_switch_line_without_a_stage_change(tmp_path):
    fig = plot_curves([_rows("grpo")], tmp_path / "c.png")
    assert all(_vertical_lines(ax) == [] for ax in fig.axes)


def test_labels_from_run_folders(tmp_path):
    a = _write(tmp_path / "runA" / "metrics.jsonl", _rows("a"))
    _write(tmp_path / "runB" / "metrics.jsonl", _rows("b"))
    fig = plot_curves([a, tmp_path / "runB"], tmp_path / "c.png")
    assert set(_run_lines(fig.axes[0])) == {"runA", "runB"}


def test_detect_switch_steps_is_unordered_input_safe():
    rows = _rows("x", switch=5)[::-1]
    assert detect_switch_steps(rows) == [5.0]
    assert detect_switch_steps(_rows("x")) == []


def test_bad_metrics_fail_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not valid JSON"):
        plot_curves({"x": bad}, tmp_path / "c.png")
    nostep = tmp_path / "nostep.jsonl"
    nostep.write_text('{"reward": 0.5}\n')
    with pytest.raises(ValueError, match=r"nostep.jsonl, row 1: missing or non-numeric 'step'"):
        plot_curves([nostep], tmp_path / "c.png")
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        plot_curves([tmp_path / "missing"], tmp_path / "c.png")
