"""Config validation: every invalid combination fails early with one message that says what to do.

Two levels: ``VisentConfig(...)`` raises ``ValueError`` with the message; ``visent train`` prints that
message on one line and exits with status 2, without a traceback (checked in-process for every case and
end to end in a subprocess for a few).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from visent.core.policy_loss import AGGREGATIONS
from visent.core.schedules import SCHEDULES
from visent.core.scores import SCORES
from visent.data.loaders import FORMATS
from visent.rewards import REWARDS
from visent.trainer.cli import main as train_main
from visent.trainer.config import VisentConfig

# (overrides, message fragment)
INVALID = [
    ({"selection_ratio": 0.0}, "selection_ratio must be in (0, 1]"),
    ({"selection_ratio": -0.2}, "selection_ratio must be in (0, 1]"),
    ({"selection_ratio": 1.5}, "selection_ratio must be in (0, 1]"),
    ({"entropy_switch": 0.0}, "entropy_switch must be in (0, 1)"),
    ({"entropy_switch": 1.0}, "entropy_switch must be in (0, 1)"),
    ({"entropy_switch": 1.3}, "entropy_switch must be in (0, 1)"),
    ({"entropy_coef_max": -1e-3}, "entropy_coef_max must be >= 0"),
    ({"entropy_coef_min": -1.0}, "entropy_coef_min must be >= 0"),
    ({"score_alpha": 1.5}, "score_alpha must be in [0, 1]"),
    ({"perturbation_strength": -2.0}, "perturbation_strength must be >= 0"),
    (
        {"use_liger_kernel": True, "liger_kernel_config": {"fused_linear_cross_entropy": True}, "token_score": "vepo"},
        "fused linear cross-entropy",
    ),
    (
        {
            "use_liger_kernel": True,
            "liger_kernel_config": {"fused_linear_cross_entropy": True},
            "token_score": "none",
            "entropy_schedule": "two_stage",
        },
        "fused linear cross-entropy",
    ),
]
UNKNOWN_NAMES = [
    ("token_score", "vepo2", ["none", *SCORES]),
    ("loss_aggregation", "mean", list(AGGREGATIONS)),
    ("entropy_schedule", "two-stage", list(SCHEDULES)),
    ("selection_granularity", "sequence", ["response", "batch"]),
    ("selection_mode", "highest", ["top", "bottom", "random"]),
    ("perturbation", "gauss", ["pixel_values_gaussian", "no_image"]),
    ("reward_funcs", ["math", "mathh"], list(REWARDS)),
]


def make(tmp_path: Path, **overrides) -> VisentConfig:
    return VisentConfig(output_dir=str(tmp_path / "out"), report_to="none", **overrides)


def test_the_defaults_are_valid(tmp_path):
    cfg = make(tmp_path)
    assert cfg.token_score == "vepo" and 0 < cfg.selection_ratio <= 1 and 0 < cfg.entropy_switch < 1


@pytest.mark.parametrize("overrides,fragment", INVALID, ids=[json.dumps(o)[:60] for o, _ in INVALID])
def test_invalid_values_fail_with_one_clear_message(tmp_path, overrides, fragment):
    with pytest.raises(ValueError) as err:
        make(tmp_path, **overrides)
    assert fragment in str(err.value)


@pytest.mark.parametrize("boundary", [{"selection_ratio": 1.0}, {"selection_ratio": 1e-6}, {"entropy_switch": 0.5},
                                      {"entropy_coef_max": 0.0, "entropy_coef_min": 0.0}])  # fmt: skip
def test_boundaries_inside_the_ranges_are_accepted(tmp_path, boundary):
    make(tmp_path, **boundary)


@pytest.mark.parametrize("field,value,valid", UNKNOWN_NAMES, ids=[f for f, _, _ in UNKNOWN_NAMES])
def test_unknown_names_list_the_valid_ones(tmp_path, field, value, valid):
    with pytest.raises(ValueError) as err:
        make(tmp_path, **{field: value})
    message = str(err.value)
    assert repr(value if not isinstance(value, list) else value[1]) in message
    for name in valid:
        assert name in message, (name, message)


def test_liger_layer_kernels_without_fused_cross_entropy_are_allowed(tmp_path):
    # Only the fused linear cross-entropy hides the per-token distributions; other kernels are fine. The
    # check runs before TRL's (which needs liger installed), so reaching that point proves ours passed.
    try:
        make(tmp_path, use_liger_kernel=True, liger_kernel_config={"fused_linear_cross_entropy": False})
    except ValueError as err:
        assert "fused linear cross-entropy" not in str(err)
    except ImportError:
        pass


def test_liger_default_config_with_entropy_features_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fused linear cross-entropy"):
        try:
            make(tmp_path, use_liger_kernel=True, token_score="vepo")
        except ImportError:  # TRL's own check (liger not installed) ran: ours did not fire
            pass


# --- the CLI ---------------------------------------------------------------------------------------------

CLI_BASE = ["--model_name_or_path", "tiny:qwen2_5_vl", "--dataset", "lab:counting", "--report_to", "none"]


def _cli(tmp_path: Path, yaml_text: str, extra: list[str] = ()) -> list[str]:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    return ["--config", str(cfg), *CLI_BASE, "--output_dir", str(tmp_path / "out"), *extra]


CLI_CASES = [
    ("selection_ratio: 1.5\n", "selection_ratio must be in (0, 1]"),
    ("entropy_switch: 1.0\n", "entropy_switch must be in (0, 1)"),
    ("entropy_coef_min: -0.001\n", "entropy_coef_min must be >= 0"),
    ("token_score: vepo2\n", "valid: none, vepo"),
    ("reward_funcs: [nope]\n", "valid: math"),
    ("selection_ratoi: 0.2\n", "did you mean selection_ratio"),
    ("- not\n- a mapping\n", "top level must be a mapping"),
]


@pytest.mark.parametrize("yaml_text,fragment", CLI_CASES, ids=[c[1][:30] for c in CLI_CASES])
def test_train_cli_rejects_bad_configs_with_one_line(tmp_path, capsys, monkeypatch, yaml_text, fragment):
    from visent.trainer import sources

    def no_model(*a, **k):  # validation must happen before any model is built
        raise AssertionError("reached model loading with an invalid config")

    monkeypatch.setattr(sources, "load_model", no_model)
    assert train_main(_cli(tmp_path, yaml_text)) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and err.startswith("visent train:") and "Traceback" not in err
    assert len(err.splitlines()) == 1, err


def test_train_cli_reaches_the_liger_check_from_yaml(tmp_path, capsys, monkeypatch):
    from visent.trainer import sources

    monkeypatch.setattr(sources, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model")))
    yaml_text = "use_liger_kernel: true\nliger_kernel_config: {fused_linear_cross_entropy: true}\n"
    assert train_main(_cli(tmp_path, yaml_text)) == 2
    assert "fused linear cross-entropy" in capsys.readouterr().err


def test_undetectable_dataset_format_lists_the_valid_formats(tmp_path, capsys, monkeypatch):
    from visent.trainer import sources

    monkeypatch.setattr(sources, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model")))
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"question": "q", "label": "a"}) + "\n")
    argv = _cli(tmp_path, "{}\n")
    argv[argv.index("lab:counting")] = str(data)
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot tell the format" in err and "Traceback" not in err
    for name in FORMATS:
        assert name in err


def test_perturbation_on_a_dataset_without_images_is_refused(tmp_path, capsys, monkeypatch):
    from visent.trainer import sources

    def no_model(*a, **k):
        raise AssertionError("reached model loading: the image-less dataset was accepted")

    monkeypatch.setattr(sources, "load_model", no_model)
    # lmm-r1 rows whose chat message holds no image part load fine as text-only examples.
    data = tmp_path / "text_only.jsonl"
    rows = [{"question": f"What is {i}+1?", "answer": f"$\\boxed{{{i + 1}}}$",
             "message": json.dumps([{"role": "user", "content": [{"type": "text", "text": f"What is {i}+1?"}]}])}
            for i in range(4)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from visent.data.loaders import load_examples

    examples, _ = load_examples(data)
    assert len(examples) == 4 and not any(ex.images for ex in examples)  # the premise: a valid, image-less set
    argv = _cli(tmp_path, "token_score: vepo\nreward_funcs: [math]\n")
    argv[argv.index("lab:counting")] = str(data)
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "image" in err and "perturbation" in err


@pytest.mark.parametrize("yaml_text,fragment", [CLI_CASES[0], CLI_CASES[3], CLI_CASES[5]], ids=["ratio", "score", "key"])
def test_train_subprocess_exits_2_without_traceback(tmp_path, yaml_text, fragment):
    proc = subprocess.run(
        [sys.executable, "-m", "visent.cli", "train", *_cli(tmp_path, yaml_text)],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("visent train:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing was started
