"""The TRL ``GRPOTrainer`` subclass and its config.

- ``config.py``        ``VisentConfig`` (TRL's ``GRPOConfig`` + visent's knobs)
- ``grpo.py``          ``VisentGRPOTrainer`` (token mask once per generation batch, own loss)
- ``counterfactual/``  the clean/perturbed teacher-forced pass → token statistics (units → grouping →
                       images → forward → stats)
- ``_trl_seam.py``     every use of TRL's private API, pinned to TRL 1.16
- ``callbacks.py``     ``metrics.jsonl``
- ``sources.py``       model / dataset / reward names → objects
- ``cli.py``           ``visent train``
- ``precision.py``     fp32 master weights; bf16 weights an lr-sized step cannot move are refused
- ``real_scale.py``    FSDP / vLLM setups that cannot work, refused before loading

Imports are lazy: ``import visent.trainer`` does not import TRL.
"""

from __future__ import annotations

__all__ = ["VisentConfig", "VisentGRPOTrainer"]


def __getattr__(name: str):
    if name == "VisentConfig":
        from visent.trainer.config import VisentConfig

        return VisentConfig
    if name == "VisentGRPOTrainer":
        from visent.trainer.grpo import VisentGRPOTrainer

        return VisentGRPOTrainer
    raise AttributeError(f"module 'visent.trainer' has no attribute {name!r}")
