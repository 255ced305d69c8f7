"""The pass itself: ``counterfactual_stats`` teacher-forces responses with the clean and the perturbed
image (no gradient) and reduces the two final-hidden-state tensors to per-token statistics through
``visent.core.stats.token_stats_from_hidden`` (chunked: never ``(B, T, V)``).

Cost decisions (each computes the same function of the same inputs: exact in real arithmetic, float
results differ from the plain path by summation order only, ~1e-6 in float32; tested for every family in
``tests/unit/models/test_adapters_counterfactual.py``):

- clean and perturbed rows go through the model as ONE batch of 2·b rows (b = ``batch_size``);
- when the trainer already ran a clean forward of the same policy (``clean_hidden``), only the perturbed
  rows are forwarded;
- responses are grouped by prompt (``grouping``) and the perturbed image is drawn once per group
  (``images.perturb_images``); the vision encoder runs once per distinct image (``vision.VisionCache``);
  the prompt is run once per prompt and pass (``forward.shared_prefix_hidden``), as far as the adapter
  says each of these is exact for its family (``vision_cache``, ``shared_prefix``, ``reuse_positions``);
- a response that repeats another of the same prompt token for token is scored once;
- responses are sorted by length into chunks, and each call runs only as far as its longest response;
- a response whose "perturbed" images equal its clean ones (``identity``, or no image) gets the clean
  states as its perturbed ones, so its JSD is exactly 0 even where a kernel's float result depends on the
  batch row.

``forward="full"`` switches the savings of the perturbed rows off: they run through the model's own
full-sequence forward, the path of TRL's clean forward, so in bf16 both round alike (docs/metrics.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from visent.core.stats import TokenStats, token_stats_from_hidden
from visent.models.adapters import Adapter, require_adapter
from visent.trainer.counterfactual import forward as fw
from visent.trainer.counterfactual import grouping
from visent.trainer.counterfactual import images as vision
from visent.trainer.counterfactual.units import BatchImages, Pixels, pixel_source, row_inputs

__all__ = ["COUNTERFACTUAL_FORWARDS", "counterfactual_stats", "lockstep_forwards", "perturbed_token_logps"]

#: ``counterfactual_forward`` values: ``prefix_cached`` takes the savings the adapter allows (module doc);
#: ``full`` runs every row through the model's own full-sequence forward (pixels in, positions computed
#: by the model), the path of TRL's clean forward.
COUNTERFACTUAL_FORWARDS = ("prefix_cached", "full")


def lockstep_forwards(num_rows: int, batch_size: int, reuses_clean: bool, with_perturbed: bool) -> int:
    """Model calls ``counterfactual_stats(..., lockstep=True)`` makes at most for ``num_rows`` rows (fewer
    when repeats merge): one per chunk, none when a reused clean forward leaves nothing to run. The
    maximum of this over processes is every process's ``min_forwards``."""
    if reuses_clean and not with_perturbed:
        return 0
    return -(-num_rows // batch_size)


class _Pass:
    """What every chunk of one ``counterfactual_stats`` call shares (its arguments, resolved once)."""

    def __init__(self, backbone, batch, rows, perturbed, groups, adapter: Adapter, *, clean_hidden,
                 clean_position_ids, with_perturbed, forward_ctx, share_prefix, lockstep, full, with_clean=True):
        self.backbone, self.batch, self.adapter, self.groups = backbone, batch, adapter, groups
        self.images = BatchImages(batch, adapter)
        self.C = batch["completion_mask"].size(1)
        self.clean_hidden, self.with_perturbed = clean_hidden, with_perturbed
        self.forward_ctx = forward_ctx or contextlib.nullcontext
        has_images = batch.get("pixel_values") is not None
        self.has_images = has_images
        self.pert_src = pixel_source(self.images, perturbed, batch) if perturbed is not None else None
        # Every chunk exactly one model call under lockstep; ``full``: the clean pass's path.
        self.share_prefix = share_prefix and adapter.shared_prefix and not lockstep and not full
        self.reuse_positions = adapter.reuse_positions and not full
        self.uncached_masks = None if full else adapter.uncached_masks
        self.clean_position_ids = clean_position_ids if self.reuse_positions else None
        # Under lockstep every forward must run the same modules on every process (ZeRO-3 gathers each
        # module's parameters as it runs): a chunk without an image gets a throwaway image row.
        self.anchor = _anchor_row(self.images) if lockstep and has_images else None
        if self.anchor is not None and self.pert_src is not None:
            own = {i: self.images.pixels(None, i) for i in range(*self.images.spans[self.anchor])}
            self.pert_src = {**own, **self.pert_src}
        # ``with_clean=False``: only the perturbed rows are wanted (``perturbed_token_logps``).
        need_clean = self.need_clean = with_clean and clean_hidden is None
        need_pert = with_perturbed and perturbed is not None
        self.computes = need_clean or need_pert
        self.cache: vision.VisionCache | None = None
        if (has_images and rows and self.computes and not lockstep and not full
                and adapter.vision_cache and vision.accepts_encoder_outputs(backbone)):
            self.cache = self._vision_cache(rows, need_clean, need_pert)
        # Responses whose "perturbed" images are their clean ones (``identity``; or no image at all).
        self.same_as_clean = {
            b: self.pert_src is None or all(
                torch.equal(self.images.pixels(self.pert_src, i), self.images.pixels(None, i))
                for i in range(*self.images.spans[b])
            )
            for b in (rows if with_perturbed and with_clean else ())
        }

    def _vision_cache(self, rows, need_clean: bool, need_pert: bool) -> vision.VisionCache:
        # The images of a group's responses are equal (compared exactly; the perturbed ones share the
        # group's seed): encode one scored response's. Not the batch's first of the group: that one may
        # be skipped, and then its "perturbed" pixels were never perturbed.
        first_of: dict[int, int] = {}
        for b in rows:
            first_of.setdefault(self.groups[b], b)
        wanted = sorted({i for b in first_of.values() for i in range(*self.images.spans[b])})
        sources: dict[str, Pixels | None] = {"clean": None} if need_clean else {}
        if need_pert:
            sources["perturbed"] = self.pert_src
        alias = grouping.image_alias(self.images.spans, rows, self.groups, first_of)
        with self.forward_ctx():
            return vision.VisionCache(self.backbone, self.images, sources, wanted, alias=alias)

    def inputs(self, idx: Sequence[int], which: str) -> dict[str, Any]:
        source = None if which == "clean" else self.pert_src
        out = row_inputs(self.batch, idx, self.images)
        if self.has_images:
            out.update(self.images.inputs(idx, source))
        return vision.with_cached_images(out, self.images, idx, self.cache, which) if self.cache else out

    def _positions(self, fwd: list[int]) -> torch.Tensor | None:
        if self.clean_position_ids is not None:
            rows = torch.as_tensor(fwd, dtype=torch.long, device=self.clean_position_ids.device)
            return self.adapter.slice_positions(self.clean_position_ids, rows, slice(None))
        if self.reuse_positions and self.computes and (self.share_prefix or self.clean_hidden is None):
            return fw.position_ids(self.backbone, self.adapter, self.batch, fwd, self.images)
        return None

    def chunk_hidden(self, idx: list[int]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(h_clean, h_pert)``, each ``(len(idx), C, D)``, for one chunk of responses: one model call
        (two with a shared prefix), or none when a reused clean forward is all that is needed.
        ``h_clean`` is ``None`` when the pass was made ``with_clean=False``."""
        n = len(idx)
        no_image = self.anchor is not None and not any(self.images.has_images(b) for b in idx)
        fwd = idx + [self.anchor] if no_image else idx  # the anchor's output is dropped
        sel = torch.as_tensor(idx, dtype=torch.long, device=self.batch["completion_mask"].device)
        with self.forward_ctx():
            positions = self._positions(fwd)
            shared = self.share_prefix and self.cache is not None and positions is not None
            names = (["clean"] if self.need_clean else []) + (["perturbed"] if self.with_perturbed else [])
            if not names:
                h_clean = h_pert = self.clean_hidden[sel]
            elif shared:
                h = fw.shared_prefix_hidden(self.backbone, self.batch, idx, self.groups, names, self.cache,
                                            positions, self.C, self.images)
                h_clean = self._clean(sel, h[:n])
                h_pert = h[-n:] if self.with_perturbed else h_clean
            else:
                parts = [self.inputs(fwd, name) for name in names]
                inputs = parts[0] if len(parts) == 1 else fw.stack_inputs(*parts)
                if positions is not None:  # the perturbed rows have the clean rows' tokens and grids
                    rows = torch.arange(len(fwd), device=positions.device).repeat(len(parts))
                    inputs["position_ids"] = self.adapter.slice_positions(positions, rows, slice(None))
                masks = self.uncached_masks(self.backbone, inputs) if self.uncached_masks is not None else None
                if masks is not None:  # the model's own masks, built by the adapter (Gemma 3: without vmap)
                    inputs["attention_mask"] = masks
                h = fw.completion_hidden(self.backbone, inputs, self.C)
                h_clean = self._clean(sel, h[:n])
                h_pert = h[len(h) - len(fwd) :][:n] if self.with_perturbed else h_clean
        unchanged = [j for j, b in enumerate(idx) if self.same_as_clean.get(b, False)]
        if unchanged and h_clean is not None and h_pert is not h_clean:
            # Same inputs, same function: the clean states are the perturbed ones (bit for bit, which a
            # second forward need not give: some kernels' float results depend on the batch row).
            h_pert = h_pert.clone()
            h_pert[unchanged] = h_clean[unchanged]
        return h_clean, h_pert

    def _clean(self, sel: torch.Tensor, computed: torch.Tensor) -> torch.Tensor | None:
        if self.clean_hidden is not None:
            return self.clean_hidden[sel]
        return computed if self.need_clean else None

    def pad(self, calls: int) -> None:
        """``calls`` throw-away forwards (results unused): they keep sharded processes in step."""
        row = [self.anchor if self.anchor is not None else 0]
        for _ in range(calls):
            with self.forward_ctx():
                fw.completion_hidden(self.backbone, self.inputs(row, "clean"), self.C)


def _anchor_row(images: BatchImages) -> int:
    """The first response with an image (0 if none): the throwaway row of lockstep chunks and padding
    forwards, so that every lockstep forward runs the vision encoder when the batch has images."""
    return next((b for b in range(len(images.spans)) if images.has_images(b)), 0)


def _chunks(batch: dict[str, Any], rows: list[int], inverse: list[int], batch_size: int):
    """Rows sorted by length (each forward runs only as far as its longest response) when there is more
    than one chunk, with ``inverse`` following them; then the chunks."""
    if len(rows) > batch_size:
        mask = batch["completion_mask"]
        lengths = mask[torch.as_tensor(rows, dtype=torch.long, device=mask.device)].sum(1).tolist()
        by_length = sorted(range(len(rows)), key=lambda j: lengths[j])
        new_pos = {old: new for new, old in enumerate(by_length)}
        rows, inverse = [rows[j] for j in by_length], [new_pos[j] for j in inverse]
    return [rows[s : s + batch_size] for s in range(0, len(rows), batch_size)], inverse


@torch.no_grad()
def counterfactual_stats(
    backbone: torch.nn.Module,
    lm_head: torch.nn.Module,
    batch: dict[str, Any],
    rows: Sequence[int],
    perturbed_pixel_values: Pixels | torch.Tensor | None,
    *,
    clean_hidden: torch.Tensor | None = None,
    clean_position_ids: torch.Tensor | None = None,
    with_perturbed: bool = True,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    batch_size: int = 8,
    gather_ctx: Callable[[torch.Tensor, torch.Tensor | None], Any] | None = None,
    forward_ctx: Callable[[], Any] | None = None,
    min_forwards: int = 0,
    share_prefix: bool = True,
    lockstep: bool = False,
    forward: str = "prefix_cached",
    groups: Sequence[int] | None = None,
    adapter: Adapter | None = None,
) -> TokenStats:
    """Token statistics ``(len(rows), C)`` for the responses ``rows`` of a generation batch.

    Args:
        backbone / lm_head: from ``_trl_seam.backbone_and_head``.
        batch: TRL's generation batch (``prompt_ids``/``prompt_mask`` ``(B, P)``, ``completion_ids``/
            ``completion_mask`` ``(B, C)``, per-token inputs ``(B, P + C)``, image inputs, ``num_images``).
        rows: indices of the responses to score.
        perturbed_pixel_values: ``perturb_images`` or ``perturb_batch_images`` output covering the images
            of ``rows`` (``None``: no images in the batch).
        clean_hidden: ``(B, C, D)`` clean hidden states already computed by the trainer, or ``None``.
        clean_position_ids: the rope positions of that same clean forward (the adapter's layout), or
            ``None``; the perturbed rows reuse them where the adapter has ``reuse_positions``.
        with_perturbed: ``False`` computes only the clean pass (entropy-only scores); the perturbed fields
            then equal the clean ones (JSD 0).
        temperature: τ, logits are divided by it (as in sampling).
        chunk_size: tokens per chunk in ``token_stats_from_hidden``.
        batch_size: responses per forward (clean + perturbed makes 2× this many rows).
        gather_ctx: callable ``(weight, bias) -> context manager`` gathering a sharded LM head (ZeRO-3);
            entered once per call, after every forward, whatever the rows.
        forward_ctx: callable ``() -> context manager`` around the model forwards only (the trainer's
            autocast); the statistics themselves are always computed in float32 outside it.
        min_forwards: run throw-away forwards until at least this many model calls were made. Under
            ZeRO-3 / FSDP every forward is a collective, so all processes must make the same number of
            calls even when skipping left them different numbers of rows: pass ``lockstep=True`` and the
            maximum over processes of ``lockstep_forwards``.
        share_prefix: run each prompt once per pass and its responses against its cache, where the adapter
            allows it (``forward`` module).
        lockstep: make every chunk exactly one model call whatever a process's rows hold (sharded models):
            no shared prefix and no separate vision-encoder call, whose count would depend on the rows; a
            chunk without an image carries a throwaway image row so every call runs the vision encoder
            too (when the batch has images). Each process then issues its forwards (equal in number),
            then one LM-head gather.
        forward: a ``COUNTERFACTUAL_FORWARDS`` name (module docstring).
        groups: ``prompt_groups(batch, rows, adapter=...)`` if the caller has it (computed otherwise).
        adapter: the model family's (``visent.models``); ``None`` looks it up from ``backbone``, and a
            model no adapter serves is refused (``UnsupportedModel``).
    """
    if forward not in COUNTERFACTUAL_FORWARDS:
        raise ValueError(f"counterfactual forward {forward!r} is not known; valid: {', '.join(COUNTERFACTUAL_FORWARDS)}")
    adapter = require_adapter(backbone, what="counterfactual pass") if adapter is None else adapter
    mask = batch["completion_mask"]
    groups = grouping.prompt_groups(batch, rows, adapter=adapter) if groups is None else list(groups)
    # Token-for-token repeats of a response of the same prompt get its statistics.
    unique, inverse = grouping.distinct_responses(batch, list(rows), groups)
    chunks, inverse = _chunks(batch, unique, inverse, batch_size)
    # The model calls run in inference mode (no version counters or view tracking: ~5% of the pass on the
    # tiny models); their outputs only feed the statistics below, whose results are ordinary tensors.
    # Not under lockstep: ZeRO-3 / FSDP gather parameters inside the forward, and those must stay
    # ordinary tensors for the update's backward.
    with torch.inference_mode(not lockstep):
        run = _Pass(
            backbone, batch, unique, perturbed_pixel_values, groups, adapter, clean_hidden=clean_hidden,
            clean_position_ids=clean_position_ids, with_perturbed=with_perturbed, forward_ctx=forward_ctx,
            share_prefix=share_prefix, lockstep=lockstep, full=forward == "full",
        )
        hidden = [run.chunk_hidden(idx) for idx in chunks]
        forwards = len(chunks) if (clean_hidden is None or with_perturbed) else 0
        if mask.size(0) > 0:
            run.pad(min_forwards - forwards)
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
    # The LM head is gathered once, after every forward: each process issues the same collectives.
    with gather_ctx(weight, bias) if gather_ctx is not None else contextlib.nullcontext():
        parts = [
            token_stats_from_hidden(h_clean, h_pert, weight, mask[torch.as_tensor(idx, device=mask.device)],
                                    temperature=temperature, chunk_size=chunk_size, lm_head_bias=bias)
            for idx, (h_clean, h_pert) in zip(chunks, hidden)
        ]
    if not parts:
        z = torch.zeros(0, mask.size(1), device=mask.device)
        return TokenStats(entropy=z, entropy_perturbed=z, jsd=z, kl=z)
    back = torch.as_tensor(inverse, dtype=torch.long, device=mask.device)
    fields = ("entropy", "entropy_perturbed", "jsd", "kl")
    return TokenStats(**{f: torch.cat([getattr(p, f) for p in parts])[back] for f in fields})


@torch.no_grad()
def perturbed_token_logps(
    backbone: torch.nn.Module,
    batch: dict[str, Any],
    rows: Sequence[int],
    perturbed_pixel_values: Pixels | torch.Tensor | None,
    token_logps: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    groups: Sequence[int],
    batch_size: int = 8,
    forward: str = "prefix_cached",
    forward_ctx: Callable[[], Any] | None = None,
    adapter: Adapter | None = None,
) -> torch.Tensor:
    """``(len(rows), C)`` float32 log-probs of the sampled completion tokens of responses ``rows`` with their
    images from ``perturbed_pixel_values`` (``counterfactual_stats``' forms), zero at padding; no gradient.

    The perturbed half of the pass alone, reduced to the sampled tokens (VPPO's score, PAPO's term;
    ``visent.trainer.perception_pass``): the same model calls, the same savings, in inference mode, and
    the LM head only at completion positions. ``token_logps(hidden (n, C, D), targets (n, C), valid (n, C)
    bool) -> (n, C)`` turns final hidden states into those log-probs (the trainer passes TRL's own kernel,
    so the numbers are those of TRL's forward). ``groups``: responses with one group share their prompt
    and their perturbed images (``prompt_groups`` for one draw per prompt; ``range(B)`` for one draw per
    response, where nothing is shared). ``forward="full"`` runs every row through the model's own
    full-sequence forward (no vision cache, shared prefix or reused positions). Not for sharded models
    (ZeRO-3 / FSDP): the number of model calls depends on the rows.
    """
    if forward not in COUNTERFACTUAL_FORWARDS:
        raise ValueError(f"counterfactual forward {forward!r} is not known; valid: {', '.join(COUNTERFACTUAL_FORWARDS)}")
    adapter = require_adapter(backbone, what="perception pass") if adapter is None else adapter
    mask = batch["completion_mask"]
    groups = list(groups)
    # No two responses share an image (one draw per response): no prefix call, which would only add one.
    shares = len({groups[b] for b in rows}) < len(rows)
    unique, inverse = grouping.distinct_responses(batch, list(rows), groups)
    chunks, inverse = _chunks(batch, unique, inverse, batch_size)
    with torch.inference_mode():  # as in counterfactual_stats; the reduction below runs outside it
        run = _Pass(
            backbone, batch, unique, perturbed_pixel_values, groups, adapter, clean_hidden=None,
            clean_position_ids=None, with_perturbed=True, forward_ctx=forward_ctx, share_prefix=shares,
            lockstep=False, full=forward == "full", with_clean=False,
        )
        hidden = [run.chunk_hidden(idx)[1] for idx in chunks]
    parts = []
    for idx, h in zip(chunks, hidden):
        sel = torch.as_tensor(idx, dtype=torch.long, device=mask.device)
        parts.append(token_logps(h, batch["completion_ids"][sel], mask[sel].bool()).float())
    if not parts:
        return torch.zeros(0, mask.size(1), device=mask.device)
    return torch.cat(parts)[torch.as_tensor(inverse, dtype=torch.long, device=mask.device)]
