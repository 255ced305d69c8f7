"""The counterfactual pass on hand-built generation batches: per-prompt seeding, one perturbation per prompt,
text-only rows falling back to entropy, and reuse of a clean forward the trainer already ran."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visent.models import adapter_named
from visent.models.qwen import patch_row_spans
from visent.perturb import PatchLayout
from visent.trainer import counterfactual as cf
from visent.trainer.counterfactual import forward as cf_forward
from visent.trainer.counterfactual import grouping as cf_grouping
from visent.trainer.counterfactual import images as cf_images

#: Every Qwen adapter cuts, groups and perturbs patch rows alike.
QWEN = adapter_named("qwen2_5_vl")


def full_inputs(batch, rows, adapter=QWEN):
    """Model inputs of responses ``rows`` in full, with their clean images."""
    return cf.row_inputs(batch, rows, cf.BatchImages(batch, adapter), with_images=True)
from visent.models.unwrap import backbone_and_head


@pytest.fixture(scope="module")
def tiny():
    from visent.models import build_tiny

    return build_tiny("qwen2_5_vl", hidden_size=64, num_layers=2)


def make_batch(processor, with_image, seed=0, completion_len=6, texts=None):
    """Rows: one per entry of ``with_image``: an image index, a tuple of them (several images), or None;
    ``texts`` (default "How many shapes?" for every row) gives each row's question."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    images = [Image.fromarray((rng.rand(56, 56, 3) * 255).astype("uint8")) for _ in range(3)]
    questions, texts, imgs = texts, [], []
    for r, idx in enumerate(with_image):
        content = [{"type": "text", "text": questions[r] if questions else "How many shapes?"}]
        for i in () if idx is None else (idx if isinstance(idx, tuple) else (idx,)):
            content = [{"type": "image"}] + content
            imgs.append(images[i])
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                   tokenize=False))
    enc = processor(images=imgs or None, text=texts, return_tensors="pt", padding=True)
    n = len(with_image)
    completion = torch.randint(10, 100, (n, completion_len), generator=torch.Generator().manual_seed(seed))
    cmask = torch.ones_like(completion)
    cmask[0, completion_len - 2 :] = 0
    batch = {
        "prompt_ids": enc["input_ids"],
        "prompt_mask": enc["attention_mask"],
        "completion_ids": completion,
        "completion_mask": cmask,
        "num_images": [0 if i is None else len(i) if isinstance(i, tuple) else 1 for i in with_image],
        "advantages": torch.linspace(-1, 1, n),
    }
    if imgs:
        batch["pixel_values"] = enc["pixel_values"]
        batch["image_grid_thw"] = enc["image_grid_thw"]
    if "mm_token_type_ids" in enc:
        batch["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(completion)], 1)
    return batch


def test_seeds_are_shared_by_a_prompts_responses_only(tiny):
    _, processor = tiny
    batch = make_batch(processor, [0, 1, 0, 2, None, None])
    seeds = cf.prompt_seeds(batch, base_seed=0, step=5, adapter=QWEN)
    assert seeds[0] == seeds[2]  # same prompt (text + image), different positions
    assert len({seeds[0], seeds[1], seeds[3]}) == 3  # same text, different images
    assert seeds[4] == seeds[5] and seeds[4] != seeds[0]
    assert cf.prompt_seeds(batch, 0, 6, adapter=QWEN)[0] != seeds[0]
    assert cf.prompt_seeds(batch, 1, 5, adapter=QWEN)[0] != seeds[0]


def test_one_perturbation_per_prompt(tiny, monkeypatch):
    _, processor = tiny
    batch = make_batch(processor, [0, 0, 0, 1, 1, 1])
    calls = []
    import visent.perturb

    real = visent.perturb.perturb_pixel_values  # what the Qwen adapter's perturb calls, once per prompt
    monkeypatch.setattr(visent.perturb, "perturb_pixel_values", lambda *a, **k: calls.append(1) or real(*a, **k))
    seeds = cf.prompt_seeds(batch, 0, 0, adapter=QWEN)
    out = cf.perturb_batch_images(batch, seeds, "pixel_values_gaussian", None, PatchLayout.from_processor(processor), adapter=QWEN)
    assert len(calls) == 2
    spans = patch_row_spans(batch)
    rows = [out[a:b] for a, b, _, _ in spans]
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2]) and not torch.equal(rows[0], rows[3])
    for (a, b, _, _) in spans:
        assert not torch.equal(out[a:b], batch["pixel_values"][a:b])


def test_image_row_spans_with_text_only_rows(tiny):
    _, processor = tiny
    batch = make_batch(processor, [None, 0, None, 1])
    spans = patch_row_spans(batch)
    per_image = batch["image_grid_thw"].prod(-1).tolist()
    assert spans[0] == (0, 0, 0, 0) and spans[2][0] == spans[2][1]
    assert spans[1] == (0, per_image[0], 0, 1)
    assert spans[3] == (per_image[0], per_image[0] + per_image[1], 1, 2)


def test_reusing_a_clean_forward_matches_and_skips_the_clean_rows(tiny):
    model, processor = tiny
    batch = make_batch(processor, [0, 1, 2, 0])
    backbone, head = backbone_and_head(model)
    seeds = cf.prompt_seeds(batch, 0, 0, adapter=QWEN)
    perturbed = cf.perturb_batch_images(batch, seeds, "pixel_values_gaussian", None, PatchLayout.from_processor(processor), adapter=QWEN)
    rows_seen = []
    handle = backbone.register_forward_hook(lambda m, a, out: rows_seen.append(out.last_hidden_state.size(0)))
    try:
        fresh = cf.counterfactual_stats(backbone, head, batch, [0, 1, 2, 3], perturbed, batch_size=4)
        # Clean and perturbed in one batch: the 3 distinct prompts once per pass, then the 4 responses per pass.
        assert rows_seen == [6, 8]
        rows_seen.clear()
        fresh_plain = cf.counterfactual_stats(backbone, head, batch, [0, 1, 2, 3], perturbed, batch_size=4,
                                              share_prefix=False)
        assert rows_seen == [8]  # clean and perturbed in ONE forward
        rows_seen.clear()
        clean = cf.completion_hidden(backbone, full_inputs(batch, [0, 1, 2, 3]), 6)
        rows_seen.clear()
        reused = cf.counterfactual_stats(backbone, head, batch, [1, 3], perturbed, clean_hidden=clean, batch_size=4)
        assert rows_seen == [2, 2]  # only the perturbed rows are forwarded
    finally:
        handle.remove()
    for field in ("entropy", "entropy_perturbed", "jsd", "kl"):
        torch.testing.assert_close(getattr(reused, field), getattr(fresh, field)[[1, 3]], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(getattr(fresh_plain, field), getattr(fresh, field), atol=1e-5, rtol=1e-4)


def test_text_only_rows_fall_back_to_entropy(tiny, tmp_path):
    """Through the trainer's mask builder: text-only rows are selected by entropy and counted."""
    from visent.core.selection import select_tokens
    from visent.data.synthetic import make_examples, to_trl_dataset
    from visent.models import build_tiny
    from visent.rewards import REWARDS
    from visent.trainer.config import VisentConfig
    from visent.trainer.grpo import TOKEN_MASK, VisentGRPOTrainer

    # Its own model: the trainer moves it to the accelerator, which must not affect the shared fixture.
    model, processor = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=2)
    config = VisentConfig(output_dir=str(tmp_path), report_to="none", num_generations=2,
                          per_device_train_batch_size=4, max_completion_length=6, gradient_checkpointing=False,
                          selection_ratio=0.5, skip_uniform_groups=False)
    trainer = VisentGRPOTrainer(model=model, reward_funcs=[REWARDS["random"]], args=config,
                                train_dataset=to_trl_dataset(make_examples("counting", 4, 0)),
                                processing_class=processor)
    trainer.model.train()
    device = trainer.accelerator.device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in make_batch(processor, [0, None, 1, None]).items()}
    out = trainer.after_generation(dict(batch), None)
    metrics = trainer._metrics["train"]
    assert metrics["vepo/no_image_responses"][-1] == 2.0
    backbone, head = backbone_and_head(model)
    stats = cf.counterfactual_stats(backbone, head, batch, [1, 3], None, with_perturbed=False)
    valid = batch["completion_mask"][[1, 3]].float()
    expected = select_tokens(stats.entropy, valid, 0.5, "response", "top")
    assert torch.equal(out[TOKEN_MASK][[1, 3]], expected)
    assert out[TOKEN_MASK].sum(1).tolist() == [2.0, 3.0, 3.0, 3.0]  # ceil(0.5·n) per response


def test_several_images_per_prompt(tiny):
    """Rows with two images: spans cover both, one draw perturbs both, identity leaves JSD exactly 0."""
    model, processor = tiny
    batch = make_batch(processor, [(0, 1), 2, (0, 1), (1, 2)])
    spans = patch_row_spans(batch)
    per_image = batch["image_grid_thw"].prod(-1).tolist()
    assert spans[0] == (0, per_image[0] + per_image[1], 0, 2)
    assert spans[-1][1] == batch["pixel_values"].size(0) and spans[-1][3] == 7
    layout = PatchLayout.from_processor(processor)
    seeds = cf.prompt_seeds(batch, 0, 0, adapter=QWEN)
    assert seeds[0] == seeds[2] and seeds[0] != seeds[3]
    noisy = cf.perturb_batch_images(batch, seeds, "pixel_gaussian", None, layout, adapter=QWEN)
    (a0, a1, _, _), (c0, c1, _, _) = spans[0], spans[2]
    assert torch.equal(noisy[a0:a1], noisy[c0:c1]) and not torch.equal(noisy[a0:a1], batch["pixel_values"][a0:a1])
    backbone, head = backbone_and_head(model)
    same = cf.perturb_batch_images(batch, seeds, "identity", None, layout, adapter=QWEN)
    stats = cf.counterfactual_stats(backbone, head, batch, [0, 1, 2, 3], same, batch_size=4)
    assert torch.equal(stats.jsd, torch.zeros_like(stats.jsd))
    stats = cf.counterfactual_stats(backbone, head, batch, [0, 1, 2, 3], noisy, batch_size=2)
    assert (stats.jsd[batch["completion_mask"].bool()] > 0).all()


def test_processes_can_be_kept_in_step_with_throwaway_forwards(tiny):
    """A process whose rows were all skipped still makes the forward calls a sharded model needs."""
    model, processor = tiny
    batch = make_batch(processor, [0, 1])
    backbone, head = backbone_and_head(model)
    calls = []
    handle = backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        stats = cf.counterfactual_stats(backbone, head, batch, [], batch["pixel_values"], min_forwards=2, lockstep=True)
        assert len(calls) == 2 and stats.jsd.shape == (0, 6)
        calls.clear()
        cf.counterfactual_stats(backbone, head, batch, [0, 1], batch["pixel_values"], batch_size=1, min_forwards=1,
                                lockstep=True)
        assert len(calls) == 2  # one call per chunk, already at least min_forwards: no extra call
        calls.clear()
        cf.counterfactual_stats(backbone, head, batch, [0, 1], batch["pixel_values"], batch_size=1, min_forwards=3,
                                lockstep=True)
        assert len(calls) == 3
    finally:
        handle.remove()


def test_vision_encoder_runs_once_per_distinct_image_with_the_same_statistics(tiny, monkeypatch):
    """The K responses of a prompt repeat its image: the encoder sees each distinct clean and perturbed
    image once (one call), the perturbed rows reuse the clean rows' rope positions, and the statistics
    equal those of the unoptimised path."""
    model, processor = tiny
    batch = make_batch(processor, [0, 0, 1, None, 0, (1, 2), 1], completion_len=7)
    backbone, head = backbone_and_head(model)
    assert cf.accepts_encoder_outputs(backbone)
    perturbed = cf.perturb_batch_images(batch, cf.prompt_seeds(batch, 0, 3, adapter=QWEN), "pixel_values_gaussian", None,
                                        PatchLayout.from_processor(processor), adapter=QWEN)
    rows = [0, 1, 2, 3, 4, 5, 6]
    encoded = []
    handle = model.model.visual.register_forward_hook(
        lambda m, a, kw, out: encoded.append(int(kw["grid_thw"].size(0))), with_kwargs=True
    )
    try:
        deduped = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=3)
        # Clean: images 0, 1, 2 once each (not all 7 copies). Perturbed: one draw per prompt, and image 1 belongs
        # to two prompts ([1] and [1, 2]) with different seeds: 0, 1, 1', 2.
        assert encoded == [3 + 4]  # one encoder call for both
        encoded.clear()
        # The reference is the unoptimised path: every copy encoded, 3D rope positions computed by the
        # model for clean and perturbed rows alike.
        monkeypatch.setattr(cf_images, "accepts_encoder_outputs", lambda backbone: False)
        monkeypatch.setattr(cf_forward, "position_ids", lambda *args: None)
        every_copy = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=3)
        assert sum(encoded) == 2 * 7  # every copy of every image, clean and perturbed (7 image slots with images)
    finally:
        handle.remove()
    for field in ("entropy", "entropy_perturbed", "jsd", "kl"):
        torch.testing.assert_close(getattr(deduped, field), getattr(every_copy, field), atol=1e-6, rtol=1e-5)
    # Perturbation is visible (the test would pass vacuously if both passes saw the clean image).
    assert float(deduped.jsd.sum()) > 0


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def tiny_kind(request):
    from visent.models import build_tiny

    return build_tiny(request.param, hidden_size=64, num_layers=2)


def _plain(monkeypatch):
    """Switch the counterfactual pass to its unoptimised form: every row forwarded in full with its own
    pixels, rope positions computed by the model, and no merging of repeated responses."""
    monkeypatch.setattr(cf_images, "accepts_encoder_outputs", lambda backbone: False)
    monkeypatch.setattr(cf_forward, "position_ids", lambda *args: None)
    monkeypatch.setattr(cf_grouping, "distinct_responses", lambda batch, rows, groups: (list(rows), list(range(len(rows)))))


@pytest.mark.parametrize("completion_len,split", [(1, False), (7, False), (7, True)])
def test_shared_prompts_and_merged_repeats_give_the_plain_statistics(tiny_kind, monkeypatch, completion_len, split):
    """Prompt groups of different lengths (left padding), several images, a text-only group, repeated
    responses, and a group whose batch-first response is skipped (its pixels are then never perturbed):
    running each prompt once per pass and scoring repeats once gives the unoptimised path's statistics,
    with the trainer's clean forward reused or not, and with responses split by length or not."""
    model, processor = tiny_kind
    if split:  # these few rows never save enough to split: make any saving enough
        monkeypatch.setattr(cf_forward, "MIN_SPLIT_SAVING", 0)
    texts = ["How many?", "Count the red shapes in the picture, please.", "How many?", "Hi", "How many?",
             "Two images: how many?", "Count the red shapes in the picture, please.", "Hi", "How many?"]
    with_image = [0, 1, 0, None, 0, (1, 2), 1, None, 0]
    batch = make_batch(processor, with_image, completion_len=completion_len, texts=texts)
    batch["completion_ids"][4] = batch["completion_ids"][2]  # a repeat within group {0, 2, 4, 8}
    batch["completion_mask"][4] = batch["completion_mask"][2]
    if completion_len > 1:
        batch["completion_ids"][8, :3] = batch["completion_ids"][2, :3]
        batch["completion_mask"][8, 3:] = 0  # a shorter response: not a repeat of 2
        batch["completion_mask"][7, 4:] = 0  # the last chunk (7, 8) is shorter than the batch's C
    if split:
        batch["completion_mask"][[1, 3], 2:] = 0  # two short responses in the first chunk: worth a call
    backbone, head = backbone_and_head(model)
    groups = cf.prompt_groups(batch, adapter=QWEN)
    assert groups == [0, 1, 0, 2, 0, 3, 1, 2, 0]
    rows = [1, 2, 3, 4, 5, 6, 7, 8]  # response 0, its group's first, is skipped
    seeds = cf.prompt_seeds(batch, 0, 3, adapter=QWEN)
    perturbed = cf.perturb_batch_images(batch, seeds, "pixel_values_gaussian", None,
                                        PatchLayout.from_processor(processor), rows=rows, adapter=QWEN)
    calls = []
    handle = backbone.register_forward_hook(lambda m, a, out: calls.append(out.last_hidden_state.size(0)))
    try:
        fast = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=5)
        all_rows = list(range(len(with_image)))
        adapter = QWEN
        positions = cf_forward.position_ids(backbone, adapter, batch, all_rows, cf.BatchImages(batch, adapter))
        clean = cf.completion_hidden(backbone, full_inputs(batch, all_rows), completion_len)
        calls.clear()
        fast_reused = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, clean_hidden=clean,
                                              clean_position_ids=positions, batch_size=5)
    finally:
        handle.remove()
    distinct = len(cf.distinct_responses(batch, rows, groups)[0])
    assert distinct == 7
    # Reused clean pass: per chunk one call on the distinct prompts, then one on the responses (perturbed
    # only), or two on responses split by length.
    chunks = [min(5, distinct - s) for s in range(0, distinct, 5)]
    if split:
        assert len(calls) > 2 * len(chunks) and sum(calls) - sum(calls[0::3]) >= sum(chunks)
    else:
        assert calls[1::2] == chunks and all(c <= n for c, n in zip(calls[0::2], chunks))
    with monkeypatch.context() as m:
        _plain(m)
        plain = cf.counterfactual_stats(backbone, head, batch, rows, perturbed, batch_size=5)
    assert float(plain.jsd.sum()) > 0
    for field in ("entropy", "entropy_perturbed", "jsd", "kl"):
        torch.testing.assert_close(getattr(fast, field), getattr(plain, field), atol=2e-6, rtol=1e-4)
        torch.testing.assert_close(getattr(fast_reused, field), getattr(plain, field), atol=2e-6, rtol=1e-4)


def test_groups_compare_pixels_and_prompts_exactly(tiny):
    _, processor = tiny
    batch = make_batch(processor, [0, 0, 1, 0], texts=["A?", "A?", "A?", "B?"])
    assert cf.prompt_groups(batch, adapter=QWEN) == [0, 0, 1, 2]
    spans = patch_row_spans(batch)
    batch["pixel_values"] = batch["pixel_values"].clone()
    batch["pixel_values"][spans[1][0], 5] += 1e-3  # one pixel value of one copy differs
    assert cf.prompt_groups(batch, adapter=QWEN) == [0, 1, 2, 3]


def test_length_parts_split_only_when_it_saves_enough(monkeypatch):
    # One long response among short ones: the short ones run 4 positions instead of 29.
    lengths = [5] * 20 + [30]
    assert cf.length_parts(lengths) == [list(range(20)), [20]]
    assert cf.length_parts([5, 6, 5, 6]) == [[0, 1, 2, 3]]  # saves 4 positions: not worth a call
    assert cf.length_parts([7] * 9) == [list(range(9))]
    assert cf.length_parts([1]) == [[0]]
    monkeypatch.setattr(cf_forward, "MIN_SPLIT_SAVING", 0)
    assert cf.length_parts([5, 9, 5, 9]) == [[0, 2], [1, 3]]
    assert cf.length_parts([8, 9, 8, 9]) == [[0, 1, 2, 3]]  # under a quarter of 32 positions


def test_distinct_responses_merge_only_exact_repeats_within_a_prompt():
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 0], [5, 6, 7, 9], [5, 6, 7, 0], [5, 6, 7, 0], [5, 6, 7, 3]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
    batch = {"completion_ids": ids, "completion_mask": mask}
    # Rows 0/1: a repeat. Row 2: longer. Row 3: same tokens, another prompt. Row 5: differs only under padding.
    unique, inverse = cf.distinct_responses(batch, [0, 1, 2, 3, 4, 5], groups=[0, 0, 0, 1, 1, 0])
    assert unique == [0, 2, 3]
    assert inverse == [0, 0, 1, 2, 2, 0]
    assert cf.distinct_responses(batch, [], groups=[0] * 6) == ([], [])


def test_groups_of_selected_rows_only(tiny):
    _, processor = tiny
    batch = make_batch(processor, [0, 0, 1, 0, 1])
    assert cf.prompt_groups(batch, adapter=QWEN) == [0, 0, 1, 0, 1]
    assert cf.prompt_groups(batch, rows=[1, 3, 4], adapter=QWEN) == [0, 1, 2, 1, 3]  # rows 0 and 2: groups of their own


def test_perturbed_images_are_drawn_once_per_prompt_and_not_copied(tiny):
    model, processor = tiny
    batch = make_batch(processor, [0, 1, 0, (1, 2), 0, None])
    layout = PatchLayout.from_processor(processor)
    rows = [1, 2, 3, 4, 5]  # response 0 (first of its prompt) is skipped
    seeds = cf.prompt_seeds(batch, 0, 2, rows=rows, adapter=QWEN)
    assert seeds[0] is None and seeds[2] == seeds[4]
    images = cf.perturb_images(batch, seeds, "pixel_values_gaussian", None, layout, rows, adapter=QWEN)
    assert sorted(images) == [1, 2, 3, 4, 5]  # image 0 belongs to the skipped response only
    assert images[2] is images[5]  # the two scored copies of prompt 0's image: one tensor
    full = cf.perturb_batch_images(batch, seeds, "pixel_values_gaussian", None, layout, rows, adapter=QWEN)
    starts = [0, *batch["image_grid_thw"].prod(-1).cumsum(0).tolist()]  # first patch row of each image
    for i, rows_i in images.items():
        assert torch.equal(full[starts[i] : starts[i + 1]], rows_i)
        assert not torch.equal(rows_i, batch["pixel_values"][starts[i] : starts[i + 1]])
    assert torch.equal(full[: starts[1]], batch["pixel_values"][: starts[1]])  # skipped: clean pixels
    backbone, head = backbone_and_head(model)
    a = cf.counterfactual_stats(backbone, head, batch, rows, images, batch_size=3)
    b = cf.counterfactual_stats(backbone, head, batch, rows, full, batch_size=3, share_prefix=False)
    for field in ("entropy", "entropy_perturbed", "jsd", "kl"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), atol=2e-6, rtol=1e-4)


def _collectives(model, batch, rows, *, min_forwards, clean_hidden=None, perturbed=None):
    """The sequence of collectives one simulated process issues in a lockstep pass: ``forward`` (a
    backbone call, a collective under ZeRO-3 / FSDP), ``vision`` (the vision encoder running inside it,
    whose parameters ZeRO-3 gathers too) and ``gather`` / ``release`` (the LM head)."""
    import contextlib

    backbone, head = backbone_and_head(model)
    events: list[str] = []

    @contextlib.contextmanager
    def gather(weight, bias):
        events.append("gather")
        yield
        events.append("release")

    handles = [backbone.register_forward_pre_hook(lambda *a: events.append("forward")),
               backbone.visual.register_forward_pre_hook(lambda *a: events.append("vision"))]
    try:
        cf.counterfactual_stats(backbone, head, batch, rows, perturbed, clean_hidden=clean_hidden, batch_size=2,
                                min_forwards=min_forwards, lockstep=True, gather_ctx=gather)
    finally:
        for h in handles:
            h.remove()
    return events


@pytest.mark.parametrize("reuse_clean", [False, True])
def test_lockstep_processes_issue_the_same_collectives_whatever_their_rows(tiny, reuse_clean):
    """Processes holding no rows, some, all, responses that merge (duplicate prompt and image, a repeated
    response) and text-only rows issue the same sequence of forwards, vision-encoder calls and LM-head
    gathers when each passes the maximum of ``lockstep_forwards`` as ``min_forwards`` (as the trainer does)."""
    model, processor = tiny
    batch = make_batch(processor, [0, 0, 1, None, None, 2])
    batch["completion_ids"][1] = batch["completion_ids"][0]  # a repeat: rows 0 and 1 merge into one
    batch["completion_mask"][1] = batch["completion_mask"][0]
    seeds = cf.prompt_seeds(batch, 0, 0, adapter=QWEN)
    perturbed = cf.perturb_images(batch, seeds, "pixel_values_gaussian", None, PatchLayout.from_processor(processor), adapter=QWEN)
    clean = None
    if reuse_clean:
        clean = cf.completion_hidden(model.base_model, full_inputs(batch, range(6)), 6)
    ranks = {"none": [], "some": [2], "all": [0, 1, 2, 3, 4, 5], "duplicates": [0, 1], "text_only": [3, 4],
             "mixed": [3, 5, 4]}
    need = max(cf.lockstep_forwards(len(r), 2, clean is not None, True) for r in ranks.values())
    seen = {name: _collectives(model, batch, rows, min_forwards=need, clean_hidden=clean, perturbed=perturbed)
            for name, rows in ranks.items()}
    expected = ["forward", "vision"] * need + ["gather", "release"]
    for name, events in seen.items():
        assert events == expected, f"{name}: {events}"
