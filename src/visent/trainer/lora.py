"""LoRA for ``visent train``: TRL's ``ModelConfig`` LoRA fields turned into the ``peft.LoraConfig`` that
``trl.GRPOTrainer`` takes as ``peft_config`` (the trainer then wraps the model with ``get_peft_model``).

The fields (``use_peft``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``,
``lora_modules_to_save``, ``use_rslora``) live on ``VisentConfig`` under TRL's names, so a TRL recipe's
values carry over. Two things differ from TRL's ``get_peft_config``:

- **Default target modules.** TRL leaves them to peft, whose per-architecture table targets only
  ``q_proj``/``v_proj`` and, matched by suffix, also hits a vision encoder whose layers share those names
  (Qwen2.5-VL's ``visual`` blocks have ``gate_proj``/``up_proj``/``down_proj``, SigLIP towers have
  ``q_proj``/``k_proj``/``v_proj``). visent's default is every linear layer of the *language model* (the
  module ``get_decoder()`` returns: attention and MLP projections), as one anchored regex: the vision tower
  stays frozen like in full VEPO training (``freeze_vision_tower``) and the LM head stays plain, since
  TRL's fused head and the counterfactual pass read ``lm_head.weight`` directly and would bypass an
  adapter on it.
- **``lora_dropout`` defaults to 0.** The counterfactual pass compares a clean and a perturbed forward
  of the training-mode model; with adapter dropout each forward draws its own dropout mask, so the JSD
  would measure dropout noise as well as the image. A non-zero ``lora_dropout`` is refused when the token
  score needs the perturbed pass.

Every problem is a one-line ``ValueError`` raised before training: settings alone in
``lora_settings_error`` (from ``VisentConfig``), settings against the loaded model in
``lora_config_for``.
"""

from __future__ import annotations

import re
from typing import Any

import torch

__all__ = ["LORA_DEFAULTS", "language_model_targets", "lora_config_for", "lora_settings_error", "matched_modules"]

#: visent's defaults for the LoRA fields (TRL's, except ``lora_dropout``: module doc).
LORA_DEFAULTS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "lora_target_modules": None,
    "lora_modules_to_save": None,
    "use_rslora": False,
}

# Module types peft's LoRA can wrap (anything else makes get_peft_model raise deep inside).
_LORA_MODULE_TYPES: tuple[type, ...] = (
    torch.nn.Linear,
    torch.nn.Embedding,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.MultiheadAttention,
)


def _target_spec(value: Any) -> str | list[str] | None:
    """TRL's convention: one value is a regex (or ``all-linear``), several are module-name suffixes."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    value = list(value)
    return value[0] if len(value) == 1 else value


def lora_settings_error(config: Any) -> str | None:
    """The first problem with ``config``'s LoRA settings on their own, as one line, or ``None``."""
    changed = [name for name, default in LORA_DEFAULTS.items() if getattr(config, name) != default]
    if not config.use_peft:
        if changed:
            return f"{', '.join(changed)} set but use_peft is false; add use_peft: true to train a LoRA adapter"
        return None
    r, alpha, dropout = config.lora_r, config.lora_alpha, config.lora_dropout
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        return f"lora_r must be an integer >= 1 (the adapter rank); got {r!r}"
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        return f"lora_alpha must be > 0 (the adapter scale is lora_alpha / lora_r); got {alpha!r}"
    if not 0.0 <= dropout < 1.0:
        return f"lora_dropout must be in [0, 1); got {dropout}"
    if dropout > 0 and config.needs_perturbed_pass:
        return (
            f"lora_dropout={dropout} gives the clean and perturbed forwards of token_score={config.token_score!r} "
            "different dropout masks, so its JSD would measure dropout noise; use lora_dropout: 0"
        )
    for name in ("lora_target_modules", "lora_modules_to_save"):
        value = getattr(config, name)
        items = [value] if isinstance(value, str) else list(value or [])
        if value is not None and (not items or any(not isinstance(v, str) or not v.strip() for v in items)):
            return f"{name} must be one or more non-empty module names; got {value!r}"
    target = _target_spec(config.lora_target_modules)
    if isinstance(target, str) and target.lower() != "all-linear":
        try:
            re.compile(target)
        except re.error as e:
            return f"lora_target_modules={target!r} is one value, so peft reads it as a regex, and it is not one: {e}"
    if config.sync_ref_model:
        return (
            "sync_ref_model is not supported with use_peft: with LoRA TRL keeps no reference model to sync, it "
            "disables the adapter instead"
        )
    return None


def language_model_targets(model: torch.nn.Module) -> str:
    """peft ``target_modules`` regex for every linear layer of ``model``'s language model (module doc).

    E.g. ``model\\.language_model\\..*\\.(down_proj|gate_proj|k_proj|o_proj|q_proj|up_proj|v_proj)`` for
    Qwen2.5-VL. Raises ``ValueError`` when the model has no separate language model with linear layers.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    prefix = next((name for name, module in model.named_modules() if module is decoder), None)
    if not prefix:
        raise ValueError(
            f"cannot find the language model of {type(model).__name__} to put LoRA adapters on; "
            "name them with lora_target_modules"
        )
    output = model.get_output_embeddings()
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in decoder.named_modules()
            if name and isinstance(module, torch.nn.Linear) and module is not output
        }
    )
    if not leaves:
        raise ValueError(f"the language model of {type(model).__name__} has no linear layers; set lora_target_modules")
    return rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, leaves))})"


def matched_modules(lora_config: Any, model: torch.nn.Module) -> list[str]:
    """Names of the modules of ``model`` that ``lora_config`` puts an adapter on (peft's own matching)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    target = lora_config.target_modules
    if isinstance(target, str) and target.lower() == "all-linear":
        output = model.get_output_embeddings()
        return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not output]
    return [name for name, _ in model.named_modules() if name and check_target_module_exists(lora_config, name)]


def _listed(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def lora_config_for(config: Any, model: torch.nn.Module) -> Any:
    """``peft.LoraConfig`` for ``config`` on ``model`` (``None`` without ``use_peft``).

    Call after ``freeze_vision_tower``: an adapter on a frozen module is refused. Raises ``ValueError``
    (one line) when the targets match nothing, a module LoRA cannot wrap, the LM head or a frozen module.
    """
    if not config.use_peft:
        return None
    from peft import LoraConfig

    target = _target_spec(config.lora_target_modules)
    if target is None:
        target = language_model_targets(model)
    to_save = list(config.lora_modules_to_save) if config.lora_modules_to_save else None
    lora_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        modules_to_save=to_save,
        use_rslora=config.use_rslora,
        bias="none",
    )
    modules = dict(model.named_modules())
    names = matched_modules(lora_config, model)
    if not names:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, torch.nn.Linear)})
        raise ValueError(
            f"lora_target_modules={target!r} matches no module of {type(model).__name__} (its linear layers "
            f"end in {', '.join(leaves[:12])}{', …' if len(leaves) > 12 else ''})"
        )
    unsupported = [n for n in names if not isinstance(modules[n], _LORA_MODULE_TYPES)]
    if unsupported:
        raise ValueError(
            f"lora_target_modules={target!r} matches {_listed(unsupported)} ({type(modules[unsupported[0]]).__name__}), "
            "which LoRA cannot wrap; name linear layers such as q_proj"
        )
    output = model.get_output_embeddings()
    head = next((n for n, m in modules.items() if m is output), None)
    if head is not None and (
        head in names or any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", head) for m in to_save or [])
    ):
        raise ValueError(
            f"LoRA on the LM head ({head}) is not supported: TRL's fused log-probs and the counterfactual pass read "
            "its weight directly, so the adapter would be ignored; leave it out of lora_target_modules / "
            "lora_modules_to_save"
        )
    frozen = [n for n in names if not any(p.requires_grad for p in modules[n].parameters())]
    if frozen:
        raise ValueError(
            f"lora_target_modules={target!r} puts adapters on frozen modules ({_listed(frozen)}); set "
            "freeze_vision_tower: false to adapt the vision tower, or target language-model modules only"
        )
    if to_save:
        missing = [m for m in to_save if not any(re.match(rf"(^|.*\.){re.escape(m)}$", n) for n in modules)]
        if missing:
            raise ValueError(f"lora_modules_to_save names no module of {type(model).__name__}: {', '.join(missing)}")
        saved = [n for n in modules if n and any(re.match(rf"(^|.*\.){re.escape(m)}$", n) for m in to_save)]
        frozen = [n for n in saved if not any(p.requires_grad for p in modules[n].parameters())]
        if frozen:
            raise ValueError(
                f"lora_modules_to_save would train frozen modules ({_listed(frozen)}); set freeze_vision_tower: "
                "false to train the vision tower"
            )
    return lora_config
