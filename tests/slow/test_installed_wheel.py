"""A built wheel works without the checkout: method configs by name, ``visent train``, ``visent demo``.

The wheel is built from a copy of the package sources (so the checkout gets no ``build/``), installed with
``pip install --no-deps --target`` into a temporary folder, and run from another folder with that folder
first on ``PYTHONPATH`` (torch, transformers and TRL come from this environment). Each command first
checks that ``visent`` is imported from the installed copy, not from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel is installed into."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: setuptools comes from this environment (the tests run offline).
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("visent-*.whl")
    target = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def _run(installed: Path, cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    env.pop("VISENT_CONFIGS", None)
    code = (
        "import sys, visent\n"
        f"assert visent.__file__.startswith({str(installed)!r}), visent.__file__\n"
        "from visent.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_the_wheel_holds_the_configs_and_the_study_summary(installed):
    package = installed / "visent"
    assert (package / "configs" / "vepo.yaml").is_file() and (package / "configs" / "grpo.yaml").is_file()
    assert (package / "configs" / "accelerate" / "zero3.yaml").is_file()
    assert (package / "lab" / "summaries" / "study-tally.json").is_file()
    shipped = sorted(p.name for p in (REPO / "src" / "visent" / "configs").glob("*.yaml"))
    assert sorted(p.name for p in (package / "configs").glob("*.yaml")) == shipped


def test_train_by_config_name_from_another_folder(installed, tmp_path):
    out = tmp_path / "run"
    proc = _run(
        installed, tmp_path, "train", "--config", "grpo", "--model_name_or_path", "tiny:qwen2_5_vl",
        "--dataset", "lab:counting", "--max_steps", "1", "--output_dir", str(out), "--dataset_size", "4",
        "--num_generations", "2", "--per_device_train_batch_size", "2", "--max_completion_length", "8",
        "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "metrics.jsonl").is_file()


def test_demo_runs_from_another_folder(installed, tmp_path):
    out = tmp_path / "demo"
    proc = _run(installed, tmp_path, "demo", "--quick", "--out", str(out), "--no-progress", "--steps", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "report.md").is_file() and (out / "demo.json").is_file()


def test_study_runs_from_another_folder(installed, tmp_path):
    out = tmp_path / "study"
    proc = _run(
        installed, tmp_path, "study", "--quick", "--out", str(out), "--methods", "grpo", "--noise", "0",
        "--seeds", "1", "--warm-seeds", "1", "--workers", "1", "--heldout", "4", "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "summary.json").is_file()
