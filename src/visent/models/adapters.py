"""What differs between VLM families, as data: one frozen ``Adapter`` per family in a plain dict.

The trainer's counterfactual pass (``visent.trainer.counterfactual``), the perturbations
(``visent.perturb``) and the loaders ask the adapter of the model they hold (``adapter_for(model)``,
looked up by the Hugging Face ``config.model_type``) instead of assuming one family's inputs.

The image-input API. TRL's generation batch holds the images of all responses concatenated along
dim 0 of its image keys (``pixel_values`` and, depending on the family, ``image_grid_thw``,
``image_sizes``, ``pixel_attention_mask``, ...); ``batch["num_images"][b]`` images belong to response b.
An adapter cuts that into **image units**, one ``dict[str, Tensor]`` per image holding that image's
slice of every image key (``split_images(batch) -> list[list[ImageUnit]]``, one list per response),
and puts units back together into model inputs (``join_images(per_response_units) -> dict``). Everything
the counterfactual pass does with images (grouping equal prompts, seeding, perturbing once per prompt,
caching vision-encoder outputs per distinct image, selecting the images of some responses) works on
units, so a family only says how to cut and join.

Layouts (``Adapter.layout``):

- ``"patch_rows"`` (Qwen-VL): ``pixel_values`` ``(Σ rows, C·tp·p·p)`` patch-flattened rows and
  ``image_grid_thw`` ``(n_images, 3)``; a unit is ``{"pixel_values": (t·h·w, C·tp·p·p),
  "image_grid_thw": (1, 3)}``.
- ``"images"`` (Gemma 3, LLaVA-style without tiling): ``pixel_values`` ``(n_images, C, H, W)``; a unit is
  that image's ``(1, C, H, W)`` slice plus its slice of any per-image key.
- ``"tiles"`` (SmolVLM2 / Idefics3, LLaVA-OneVision): an image is several crops / tiles with their masks
  or sizes; the family's own ``split_images`` / ``join_images`` say how they are stored.

Perturbing: ``perturb(kind, units, generator, strength, geometry) -> units`` perturbs the images of ONE
prompt (every unit's non-pixel entries unchanged); ``geometry = image_geometry(processor)`` is whatever
that function needs from the processor (patch size, merge size, image mean/std, tile size).

Counterfactual-pass savings an adapter may switch on (each must be exact for the family; the tests in
``tests/unit/models/test_adapters_counterfactual.py`` compare every adapter's optimised pass with a plain
clean-plus-perturbed forward):

- ``vision_cache``: encode each distinct image once (``encode_images``) and hand the decoder its cached
  outputs (``encoder_outputs`` builds the model's ``mm_encoder_outputs`` value). Needs a vision encoder
  that sees each image on its own (block-diagonal attention), so copies get what the one computed gets.
- ``shared_prefix``: run each prompt once per pass and its responses against its cached keys/values.
  Needs ``vision_cache`` and ``reuse_positions`` and a decoder whose cache can be reordered and continued
  exactly (not true of every recurrent layer).
- ``reuse_positions``: the perturbed rows reuse the clean rows' (3D) rope positions
  (``get_rope_index``), which depend on tokens and image grids only.
- ``prefix_token_keys``: per-token inputs the shared prefix's prompt call carries (sliced to the prompt's
  columns), for a decoder that builds part of its attention mask from them (Gemma 3: bidirectional
  attention inside each image block, from ``token_type_ids``). The completion call gets none: its queries
  are text, which attends causally (as in generation after the first step).
- ``uncached_masks(backbone, inputs) -> masks | None``: optionally, the ``attention_mask`` argument of a
  model call without a cache (the shared prefix's prompt call, the pass's plain calls) built by the
  adapter: the masks the model would build from ``inputs`` (e.g. a dict of 4D masks per layer type),
  more cheaply; ``None``: the model builds them. Not used by ``counterfactual_forward: full``.

Hooks for the family-specific mechanics of those savings (the pass calls only these; each has a plain
default, so a family that needs nothing special sets nothing):

- ``rope_positions(backbone, inputs) -> positions | None``: the position ids the decoder would compute.
- ``slice_positions(positions, rows, columns) -> positions``: responses ``rows`` (a long tensor) and token
  positions ``columns`` (a slice) of a positions tensor. Default: ``(B, L)``; Qwen's M-RoPE: ``(3, B, L)``.
- ``join_positions(parts, rows) -> positions | None``: positions captured from several forwards joined
  along the responses, or ``None`` when they are not ``rows`` responses in this family's layout.
- ``copy_cache(kv) -> kv | None``: a cache sharing ``kv``'s tensors whose reordering leaves ``kv``
  usable (``None``: this cache cannot be copied; the pass then does not split a chunk by length).
  Default: transformers' layered ``Cache`` (a shallow copy per layer).
- ``reorder_cache(kv, index) -> kv``: ``kv`` with its rows replaced by rows ``index`` (a long tensor).
  Default: transformers' ``Cache.reorder_cache``.

A model whose ``model_type`` has no adapter: ``adapter_for`` returns ``None`` and ``require_adapter``
raises ``UnsupportedModel`` with one line naming the supported families. What runs without one is decided
in ``visent.models.loading``: an image-text-to-text model trains with configs that compute no token
statistics (TRL's own forward does everything there) and is refused, before anything is loaded, where
the counterfactual pass or a perturbation would need its layout; a text-only or unknown model is always
refused. The CLIs exit with status 2 on a refusal.

Adding a family (no other file needs a branch on its name):

1. write ``visent/models/<family>.py`` with its tiny builder (real transformers classes, random weights,
   ``visent.models.tokenizer.build_tokenizer`` for the vocabulary) and ``ADAPTERS = (Adapter(...), ...)``;
2. add the module's name to ``FAMILY_MODULES`` below;
3. the parametrised tests over ``all_adapters()`` then build its tiny model and check the counterfactual
   statistics, the perturbations and a short training run.

The pass and the trainer need no edit: ``tests/unit/trainer/test_new_family.py`` registers a family in
the test alone and gets every saving and a VEPO training step through its hooks.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "FAMILY_MODULES",
    "Adapter",
    "ImageUnit",
    "UnsupportedModel",
    "adapter_for",
    "adapter_named",
    "all_adapters",
    "concat_units",
    "copy_layered_cache",
    "join_positions",
    "reorder_cache",
    "require_adapter",
    "sequence_positions",
    "slice_positions",
    "split_by_image",
    "supported_families",
]

ImageUnit = dict[str, torch.Tensor]
"""One image's slice of each image-input key of a batch (leading dimension kept, so units concatenate)."""

#: Modules under ``visent.models`` whose ``ADAPTERS`` tuple makes up the table, in listing order.
FAMILY_MODULES: tuple[str, ...] = ("qwen", "gemma3", "idefics3", "llava_onevision")


class UnsupportedModel(ValueError):
    """A model visent has no adapter for (or that is not an image-text-to-text model at all)."""


def split_by_image(batch: dict[str, Any], keys: Sequence[str]) -> list[list[ImageUnit]]:
    """Units for layouts where every key in ``keys`` has one entry per image along dim 0
    (``pixel_values`` ``(n_images, ...)``, ``image_sizes`` ``(n_images, 2)``, ...). Keys absent from the
    batch are skipped. One list per response, ``batch["num_images"][b]`` units long."""
    B = batch["completion_ids"].size(0)
    num_images = batch.get("num_images") or [0] * B
    present = [k for k in keys if batch.get(k) is not None]
    out, i = [], 0
    for k in num_images:
        out.append([{key: batch[key][j : j + 1] for key in present} for j in range(i, i + k)])
        i += k
    return out


def concat_units(units: Sequence[Sequence[ImageUnit]]) -> dict[str, torch.Tensor]:
    """Model inputs for responses whose images are ``units``: each key concatenated along dim 0 over all
    units of all responses in order (empty dict when there is no unit)."""
    flat = [u for row in units for u in row]
    if not flat:
        return {}
    return {key: torch.cat([u[key] for u in flat]) for key in flat[0]}


def slice_positions(positions: torch.Tensor, rows: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor:
    """Rows ``rows`` and positions ``columns`` of ``(B, L)`` position ids (the plain 1D rope layout)."""
    return positions[rows][:, columns]


def sequence_positions(backbone: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """``rope_positions`` of a decoder with plain 1D rope that computes its own positions as
    ``arange(L) + cached length`` (Llama, Qwen2: ``position_ids is None`` in their forward), padding
    included: ``(b, L)``, the same for every row. Passing these is what the model does by itself, so a
    prompt run with a cache and its completions continued from it get the full forward's positions."""
    ids = inputs["input_ids"]
    return torch.arange(ids.size(1), device=ids.device).expand(ids.size(0), -1)


def join_positions(parts: Sequence[torch.Tensor | None], rows: int) -> torch.Tensor | None:
    """``(B, L)`` position ids of consecutive forwards joined along the responses, ``None`` unless they are
    ``rows`` responses of this layout."""
    if not parts or any(p is None or p.dim() != 2 for p in parts):
        return None
    out = torch.cat(list(parts), dim=0)
    return out if out.size(0) == rows else None


def copy_layered_cache(kv: Any) -> Any | None:
    """A transformers ``Cache`` sharing ``kv``'s tensors whose ``reorder_cache`` leaves ``kv`` untouched
    (reordering replaces each layer's tensors, it does not write into them). Layers that keep tensors in
    lists or dicts (a recurrent layer's conv / recurrent states) get their own containers, which
    reordering rebinds. ``None`` for a cache without ``layers`` (another cache API: not copied)."""
    import copy

    if not hasattr(kv, "layers"):
        return None
    part = copy.copy(kv)
    part.layers = []
    for layer in kv.layers:
        own = copy.copy(layer)
        for name, value in vars(layer).items():
            if isinstance(value, (list, dict)):
                setattr(own, name, copy.copy(value))
        part.layers.append(own)
    return part


def reorder_cache(kv: Any, index: torch.Tensor) -> Any:
    """``kv`` (a transformers ``Cache``) with its batch rows replaced by rows ``index``: each response's copy
    of its prompt's keys and values (``(rows, heads, P, d)`` per layer)."""
    kv.reorder_cache(index)
    return kv


def _no_perturb(kind, units, generator, strength, geometry):  # pragma: no cover - replaced per family
    raise NotImplementedError("this adapter defines no perturbation")


@dataclass(frozen=True)
class Adapter:
    """One VLM family: how its processor lays out images and what the counterfactual pass may save.

    Attributes:
        name: the ``tiny:<name>`` key, e.g. ``"qwen3_vl"``.
        model_types: Hugging Face ``config.model_type`` values served (usually one).
        model_class / processor_class: real transformers class names (docs and error messages).
        layout: ``"patch_rows"``, ``"images"`` or ``"tiles"`` (module docstring).
        image_keys: batch keys that hold image inputs, split per image by ``split_images``.
        token_keys: ``(B, P + C)`` per-token forward inputs the model needs besides ids and mask
            (``mm_token_type_ids`` for Qwen's M-RoPE, ``token_type_ids`` for Gemma 3's image attention).
        normalisation: where pixel mean/std come from, e.g. ``"image_processor (CLIP mean/std)"``.
        vision_cache / shared_prefix / reuse_positions: which savings are exact (module docstring).
        prefix_token_keys: per-token inputs of the shared prefix's prompt call (module docstring).
        uncached_masks: prebuilt attention masks of a call without a cache (module docstring).
        build_tiny: ``(**kw) -> (model, processor)``: random weights, local tokenizer, real classes.
        split_images / join_images: the image-unit API (module docstring).
        image_geometry: ``processor -> geometry`` for ``perturb``.
        perturb: ``(kind, units, generator, strength, geometry) -> units`` for one prompt's images.
        encode_images: ``(backbone, units) -> list`` of per-unit encoder outputs (any object).
        encoder_outputs: ``(pieces) -> mm_encoder_outputs["image"]`` value for the decoder.
        rope_positions: ``(backbone, inputs) -> (k, b, L)`` position ids the decoder would compute for
            ``inputs`` (ids, mask, per-token inputs, image inputs without pixels), or ``None``; needed by
            ``reuse_positions``.
        slice_positions / join_positions: the layout of ``rope_positions``' output (module docstring).
        copy_cache / reorder_cache: the decoder cache's copy and row selection (module docstring).
        image_budget: ``(processor, min_pixels, max_pixels) -> None`` sets the pixel budget the processor resizes
            each image into (either bound may be None: kept); None for a family whose processor has no such
            budget (fixed-size or tiled images), where ``min_pixels`` / ``max_pixels`` are refused.
        vision_modules: submodules of the inner model (``model.model``) that ``freeze_vision_tower``
            freezes: the vision encoder and its projection into the decoder (Qwen's ``visual`` holds both;
            Gemma 3 / LLaVA: ``vision_tower`` + ``multi_modal_projector``; Idefics3: ``vision_model`` +
            ``connector``). Names the model lacks are ignored.
        notes: one line for the docs (departures, caveats).
    """

    name: str
    model_types: tuple[str, ...]
    model_class: str
    processor_class: str
    layout: str
    image_keys: tuple[str, ...]
    token_keys: tuple[str, ...] = ()
    normalisation: str = "image_processor.image_mean / image_std"
    vision_cache: bool = False
    shared_prefix: bool = False
    reuse_positions: bool = False
    prefix_token_keys: tuple[str, ...] = ()
    uncached_masks: Callable[[torch.nn.Module, dict[str, Any]], Any] | None = None
    build_tiny: Callable[..., tuple[Any, Any]] | None = None
    split_images: Callable[[dict[str, Any]], list[list[ImageUnit]]] | None = None
    join_images: Callable[[Sequence[Sequence[ImageUnit]]], dict[str, torch.Tensor]] = concat_units
    image_geometry: Callable[[Any], Any] = lambda processor: None
    perturb: Callable[..., list[ImageUnit]] = _no_perturb
    encode_images: Callable[[torch.nn.Module, Sequence[ImageUnit]], list[Any]] | None = None
    encoder_outputs: Callable[[Sequence[Any]], Any] | None = None
    rope_positions: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor | None] | None = None
    slice_positions: Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor] = slice_positions
    join_positions: Callable[[Sequence[torch.Tensor | None], int], torch.Tensor | None] = join_positions
    copy_cache: Callable[[Any], Any | None] = copy_layered_cache
    reorder_cache: Callable[[Any, torch.Tensor], Any] = reorder_cache
    image_budget: Callable[[Any, int | None, int | None], None] | None = None
    vision_modules: tuple[str, ...] = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector")
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.layout not in ("patch_rows", "images", "tiles"):
            raise ValueError(f"adapter {self.name}: unknown layout {self.layout!r}")
        if self.shared_prefix and not (self.vision_cache and self.reuse_positions):
            raise ValueError(f"adapter {self.name}: shared_prefix needs vision_cache and reuse_positions")
        if self.reuse_positions and self.rope_positions is None:
            raise ValueError(f"adapter {self.name}: reuse_positions needs rope_positions")
        if self.vision_cache and (self.encode_images is None or self.encoder_outputs is None):
            raise ValueError(f"adapter {self.name}: vision_cache needs encode_images and encoder_outputs")

    def units(self, batch: dict[str, Any]) -> list[list[ImageUnit]]:
        """Image units per response (``[]`` for every response when the batch has no images)."""
        B = batch["completion_ids"].size(0)
        if batch.get("pixel_values") is None or not batch.get("num_images"):
            return [[] for _ in range(B)]
        if self.split_images is not None:
            return self.split_images(batch)
        return split_by_image(batch, self.image_keys)


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Adapter]:
    table: dict[str, Adapter] = {}
    for module in FAMILY_MODULES:
        for adapter in importlib.import_module(f"visent.models.{module}").ADAPTERS:
            if adapter.name in table:
                raise ValueError(f"two adapters named {adapter.name!r}")
            table[adapter.name] = adapter
    return table


def all_adapters() -> list[Adapter]:
    """Every adapter in the table, in ``FAMILY_MODULES`` order."""
    return list(_table().values())


def adapter_named(name: str) -> Adapter:
    """The adapter whose ``tiny:<name>`` key is ``name`` (``KeyError`` listing the valid names)."""
    table = _table()
    if name not in table:
        raise KeyError(f"unknown model family {name!r}; supported: {', '.join(table)}")
    return table[name]


def _model_type(obj: Any) -> str | None:
    config = getattr(obj, "config", obj)
    return getattr(config, "model_type", None)


def adapter_for(obj: Any) -> Adapter | None:
    """The adapter for a model, a config, or a ``model_type`` string; ``None`` when no family serves it.

    PEFT / DDP wrappers are looked through (their ``config`` is the wrapped model's)."""
    model_type = obj if isinstance(obj, str) else _model_type(obj)
    if model_type is None and hasattr(obj, "get_base_model"):
        model_type = _model_type(obj.get_base_model())
    for adapter in _table().values():
        if model_type in adapter.model_types:
            return adapter
    return None


def supported_families() -> str:
    """``"qwen2_vl (Qwen2VLForConditionalGeneration), ..."``: for one-line refusals."""
    return ", ".join(f"{a.name} ({a.model_class})" for a in _table().values())


def require_adapter(obj: Any, what: str = "model") -> Adapter:
    """``adapter_for(obj)`` or ``UnsupportedModel`` with one line naming the supported families."""
    adapter = adapter_for(obj)
    if adapter is None:
        model_type = obj if isinstance(obj, str) else _model_type(obj)
        raise UnsupportedModel(
            f"{what}: model_type {model_type!r} is not a supported vision-language family; supported: "
            f"{supported_families()}"
        )
    return adapter
