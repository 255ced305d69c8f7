"""``visent train --config NAME|FILE.yaml [--key value ...]``: train any method config (GRPO, VEPO, two-stage entropy, VPPO, PAPO, CPPO, DAPO).

``--config`` takes a YAML file or the name of a config shipped with visent (``visent.configs``: ``vepo``,
``grpo``, ``two_stage``, ...). The YAML file holds ``VisentConfig`` fields (TRL's ``GRPOConfig`` fields plus visent's); ``--key value``
pairs override it (later wins), as in TRL's own scripts. Booleans take ``true``/``false`` (a bare
``--flag`` means true), lists take several values (``--reward_funcs counting format``), dicts a JSON string.

Examples::

    visent train --config vepo --model_name_or_path tiny:qwen2_5_vl --dataset lab:counting --max_steps 2
    visent train --config my_method.yaml --model_name_or_path Qwen/Qwen2.5-VL-3B-Instruct --dataset data/train.jsonl
    accelerate launch --config_file zero3.yaml -m visent.cli train --config vepo   # multi-GPU

A bad config (unknown key, bad value, inconsistent settings) exits with status 2 and one message, no traceback.
This module parses arguments only; ``visent.trainer.build`` constructs the trainer.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from typing import Any

from visent.trainer.build import ConfigError, build_trainer

__all__ = ["ConfigError", "latest_complete_checkpoint", "main", "parse_config"]


def _split_overrides(argv: list[str]) -> tuple[str | None, list[tuple[str, list[str]]], bool]:
    """``(config_path, [(key, values)], wants_help)`` from ``--config F --k v1 v2 --flag --k=v ...``."""
    config_path, pairs, wants_help = None, [], False
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in ("-h", "--help"):
            wants_help, i = True, i + 1
            continue
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: options are written --key value")
        key, eq, inline = token[2:].partition("=")
        values = [inline] if eq else []
        i += 1
        if not eq:
            while i < len(argv) and not (argv[i].startswith("--") and len(argv[i]) > 2 and not _is_number(argv[i])):
                values.append(argv[i])
                i += 1
        key = key.replace("-", "_")
        if key == "config":
            if len(values) != 1:
                raise ConfigError("--config takes exactly one YAML file or shipped config name")
            config_path = values[0]
        else:
            pairs.append((key, values))
    return config_path, pairs, wants_help


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config fields, got {type(data).__name__}")
    return data


def _tokens(key: str, value: Any) -> list[str]:
    """CLI tokens for one YAML value (HfArgumentParser does the typing)."""
    if value is None:
        return []
    if isinstance(value, bool):
        return [f"--{key}", "true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *[str(v) for v in value]]
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", str(value)]


def _dict_fields() -> set[str]:
    """Names of ``VisentConfig`` fields whose type admits a dict."""
    from visent.trainer.config import VisentConfig

    return {f.name for f in fields(VisentConfig) if f.init and "dict" in str(f.type)}


#: Config keys that describe the file's own reward terms (weights per function, the filter's function).
_REWARD_DEPENDENTS = ("reward_weights", "dynamic_sampling_metric")


def _drop_reward_dependents(data: dict[str, Any], overridden: set[str], where: str) -> None:
    """A command-line ``--reward_funcs`` replaces the file's reward: the file's weights and filter function
    name its terms, so they go too (unless restated), with a one-line notice (e.g. ``--config dapo
    --reward_funcs my_reward`` then filters groups on ``my_reward``)."""
    if "reward_funcs" not in overridden or "reward_funcs" not in data:
        return
    dropped = [k for k in _REWARD_DEPENDENTS if k in data and k not in overridden]
    for key in dropped:
        data.pop(key)
    if dropped:
        print(
            f"visent train: --reward_funcs replaces {where}'s reward_funcs; its {' and '.join(dropped)} "
            "(for those functions) are dropped",
            file=sys.stderr,
        )


def parse_config(argv: list[str]):
    """``VisentConfig`` from ``--config FILE.yaml`` and ``--key value`` overrides. Raises ``ConfigError``."""
    from transformers import HfArgumentParser

    from visent.trainer.config import VisentConfig, config_field_names, suggest

    config_path, pairs, wants_help = _split_overrides(argv)
    class _Parser(HfArgumentParser):
        def error(self, message):  # argparse would print usage and exit; we want one clear message
            raise ConfigError(message)

    parser = _Parser(VisentConfig, prog="visent train")
    if wants_help:
        parser.print_help()
        raise SystemExit(0)
    known = set(config_field_names())
    if config_path:
        from visent.configs import resolve_config

        try:
            config_path = str(resolve_config(config_path))
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
    data = _load_yaml(config_path) if config_path else {}
    where = config_path or "command line"
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown config key {key!r}{suggest(key)}")
    _drop_reward_dependents(data, {k for k, _ in pairs}, where)
    # Dict-valued fields (liger_kernel_config, model_init_kwargs, ...) bypass argparse, which cannot type
    # them: YAML mappings are taken as they are and command-line values as JSON.
    dict_fields = _dict_fields()
    tokens: list[str] = []
    dicts: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            dicts[key] = value
        else:
            tokens += _tokens(key, value)
    for key, values in pairs:
        if key not in known:
            raise ConfigError(f"unknown option --{key}{suggest(key)}")
        if key in dict_fields and len(values) == 1 and values[0].lstrip().startswith("{"):
            try:
                dicts[key] = json.loads(values[0])
            except json.JSONDecodeError as e:
                raise ConfigError(f"--{key}: not a valid JSON object: {e}") from None
            continue
        tokens += [f"--{key}", *(values or ["true"])]
    if "output_dir" not in data and not any(k == "output_dir" for k, _ in pairs):
        stem = os.path.splitext(os.path.basename(config_path))[0] if config_path else "train"
        tokens += ["--output_dir", os.path.join("runs", stem)]

    try:
        namespace = parser.parse_args(args=tokens)
        inputs = {f.name: getattr(namespace, f.name) for f in fields(VisentConfig) if f.init and hasattr(namespace, f.name)}
        config = VisentConfig(**{**inputs, **dicts})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except ValueError as e:  # __post_init__ cross-field checks (ours and TRL's)
        raise ConfigError(f"{where}: {e}") from None
    if config.model_name_or_path is None:
        raise ConfigError(f"{where}: model_name_or_path is required (e.g. --model_name_or_path tiny:qwen2_5_vl)")
    if config.dataset is None:
        raise ConfigError(f"{where}: dataset is required (e.g. --dataset lab:counting)")
    return config


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest ``checkpoint-N`` folder of ``output_dir`` that was completely written, or ``None``.

    transformers writes a checkpoint's files in place and ``trainer_state.json`` last, so a process killed
    while saving leaves a newer folder without it; transformers' own "latest" would pick that folder and
    fail to load it. Only folders holding ``trainer_state.json`` count.
    """
    import re

    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        m = re.fullmatch(r"checkpoint-(\d+)", name)
        if m and os.path.isfile(os.path.join(output_dir, name, "trainer_state.json")):
            steps.append(int(m.group(1)))
    return os.path.join(output_dir, f"checkpoint-{max(steps)}") if steps else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from visent.trainer.precision import SetupRefused

    try:
        config = parse_config(argv)
        resume = config.resume_from_checkpoint
        if isinstance(resume, str) and resume.lower() in ("true", "latest"):
            resume = latest_complete_checkpoint(config.output_dir)
            if resume is None:
                raise ConfigError(
                    f"--resume_from_checkpoint {config.resume_from_checkpoint}: no complete checkpoint-N folder "
                    f"in {config.output_dir}"
                )
        trainer = build_trainer(config)
    except (ConfigError, SetupRefused) as e:  # SetupRefused: visent.trainer.precision / real_scale
        print(f"visent train: {e}", file=sys.stderr)
        return 2
    from visent.data.errors import DataError

    try:
        trainer.train(resume_from_checkpoint=resume)
    except DataError as e:
        # A dataset image that passed the load-time header check but does not decode: the message names
        # the file, row and field; checkpoints written so far are kept for --resume_from_checkpoint.
        print(f"visent train: {e}", file=sys.stderr)
        return 1
    trainer.save_model(config.output_dir)
    _release_process_group()
    return 0


def _release_process_group() -> None:
    """End a multi-process run by destroying its process group. Left to interpreter exit, the backend's
    threads can be torn down while still joinable ("terminate called without an active exception", exit
    -6) after the model was saved, so a finished run would be reported as failed; torch also warns when a
    process group outlives the run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
