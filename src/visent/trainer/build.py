"""Construct a ``VisentGRPOTrainer`` from a ``VisentConfig``: model, data, rewards, LoRA, callbacks.

``build_trainer(config)`` is what ``visent train`` (``visent.trainer.cli``) and the lab call. Tools that
want to observe or adjust every trainer built in a process (benchmarks adding a diagnostic callback,
a sweep changing one setting) register an *extension* instead of patching this module:

    def extension(config):            # called with the parsed config before anything is loaded
        config.max_grad_norm = 0.5      # may adjust the config
        return [MyCallback()]           # callbacks to add to the trainer

    remove = register_extension(extension)   # ... remove() to unregister

Bad input raises ``ConfigError`` (one line; the CLI exits with status 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ConfigError", "TrainerExtension", "build_trainer", "freeze_vision_tower", "register_extension"]


class ConfigError(ValueError):
    """A problem with the user's configuration: reported as one line, exit status 2."""


#: ``extension(config) -> callbacks``: may adjust ``config``; returns callbacks for the trainer.
TrainerExtension = Callable[[Any], Sequence[Any]]
_EXTENSIONS: list[TrainerExtension] = []


def register_extension(extension: TrainerExtension) -> Callable[[], None]:
    """Run ``extension`` for every trainer ``build_trainer`` builds from now on; returns its remover."""
    _EXTENSIONS.append(extension)

    def remove() -> None:
        if extension in _EXTENSIONS:
            _EXTENSIONS.remove(extension)

    return remove


def freeze_vision_tower(model) -> int:
    """Freeze the vision encoder and its projection into the decoder (the family adapter's
    ``vision_modules``); returns how many tensors were frozen."""
    from visent.trainer.param_groups import vision_modules

    n = 0
    for module in vision_modules(model):
        for p in module.parameters():
            p.requires_grad_(False)
            n += 1
    return n


def build_trainer(config, callbacks: list | None = None):
    """Model, data and rewards resolved from ``config``, wrapped in a ``VisentGRPOTrainer``.

    Registered extensions run first (module docstring); their callbacks come after ``callbacks``.
    """
    from visent.models import UnsupportedModel, check_supported
    from visent.trainer.callbacks import MetricsJsonlCallback
    from visent.trainer.grpo import VisentGRPOTrainer
    from visent.trainer.real_scale import check_real_scale
    from visent.trainer.sources import dataset_has_images, load_model, load_train_dataset, resolve_rewards

    extra = [cb for extension in list(_EXTENSIONS) for cb in extension(config)]

    # Token statistics (the counterfactual pass) need the family's adapter; GRPO-style configs train any
    # image-text-to-text model through TRL's own forward (visent.models.loading).
    need_adapter = config.needs_clean_stats
    check_real_scale(config)  # FSDP with token statistics, vLLM colocate that cannot fit: refused before loading
    try:
        # A model visent cannot run is refused first, in one line (exit status 2), from its config alone.
        check_supported(config.model_name_or_path, need_adapter, **(config.model_init_kwargs or {}))
    except (UnsupportedModel, OSError) as e:  # OSError: no such folder, or a Hub id that cannot be fetched
        raise ConfigError(f"model_name_or_path: {e}") from None
    try:
        dataset = load_train_dataset(config.dataset, config.dataset_size, config.dataset_seed, config.label_noise)
        rewards = resolve_rewards(list(config.reward_funcs), config.dataset)
    except (ValueError, KeyError) as e:
        # KeyError's str() wraps the message in quotes
        raise ConfigError(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)) from None
    # From the Arrow column's list lengths: reading dataset["images"] would decode every image.
    if config.needs_perturbed_pass and not dataset_has_images(dataset):
        raise ConfigError(
            f"token_score={config.token_score!r} compares each token under the real and a perturbed image "
            f"(perturbation={config.perturbation!r}), but dataset {config.dataset!r} has no image in any row; "
            "use token_score: entropy (or random / none) for text-only data"
        )
    try:
        model, processor = load_model(config.model_name_or_path, config.model_init_kwargs, need_adapter)
    except UnsupportedModel as e:
        raise ConfigError(str(e)) from None
    config.model_init_kwargs = None  # used above; TRL would only warn that the model is already built
    if config.freeze_vision_tower:
        freeze_vision_tower(model)
    from visent.trainer.lora import lora_config_for

    try:
        peft_config = lora_config_for(config, model)  # None without use_peft; after freezing (it checks that)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return VisentGRPOTrainer(
        model=model,
        peft_config=peft_config,
        reward_funcs=rewards,
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[MetricsJsonlCallback(), *(callbacks or []), *extra],
    )
