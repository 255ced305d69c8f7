"""The tiny locally built Qwen2(.5)-VL behaves like a real checkpoint through the real processor classes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from visent.data.synthetic import make_examples, target_response
from visent.models import build_tiny, load_model_and_processor
from visent.models.tiny.qwen import SPECIAL_TOKENS

# The lab's kinds (its warm-start cache keys and studies use these two).
KINDS = ("qwen2_5_vl", "qwen2_vl")


@pytest.fixture(scope="module", params=KINDS)
def tiny(request):
    model, processor = build_tiny(request.param, hidden_size=64, num_layers=2, seed=0)
    return request.param, model, processor


def _messages(text: str, n_images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


@pytest.mark.parametrize("size", [(56, 56), (84, 56), (112, 84)])
def test_chat_template_expands_one_pad_token_per_merged_patch(tiny, size):
    _, _, processor = tiny
    w, h = size
    image = Image.new("RGB", (w, h), (10, 200, 30))
    text = processor.apply_chat_template(_messages("How many?"), add_generation_prompt=True, tokenize=False)
    assert text.count("<|image_pad|>") == 1 and text.endswith("<|im_start|>assistant\n")
    enc = processor(text=[text], images=[[image]], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    tok = processor.tokenizer
    # Sizes are multiples of 28 inside the pixel range: no resize, (h/14)·(w/14) patches, merged 2×2.
    expected = (h // 14) * (w // 14) // 4
    assert ids.count(tok.convert_tokens_to_ids("<|image_pad|>")) == expected
    assert enc["image_grid_thw"].tolist() == [[1, h // 14, w // 14]]
    assert enc["pixel_values"].shape[0] == (h // 14) * (w // 14)
    start = ids.index(tok.convert_tokens_to_ids("<|vision_start|>"))
    end = ids.index(tok.convert_tokens_to_ids("<|vision_end|>"))
    assert end - start - 1 == expected


def test_two_images_in_one_prompt_each_get_their_placeholders(tiny):
    _, _, processor = tiny
    images = [Image.new("RGB", (56, 56)), Image.new("RGB", (112, 56))]
    text = processor.apply_chat_template(_messages("Compare.", 2), add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[images], return_tensors="pt")
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert enc["input_ids"][0].tolist().count(pad) == 4 + 8


def test_config_ids_match_tokenizer(tiny):
    _, model, processor = tiny
    tok, cfg = processor.tokenizer, model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg.get_text_config().vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id in model.generation_config.eos_token_id
    # Special tokens are single ids that survive an encode round trip.
    for t in SPECIAL_TOKENS:
        assert tok.encode(t, add_special_tokens=False) == [tok.convert_tokens_to_ids(t)]


def test_forward_reads_the_image(tiny):
    _, model, processor = tiny
    exs = make_examples("counting", 2, seed=3)
    texts = [
        processor.apply_chat_template(_messages(e.prompt), add_generation_prompt=True, tokenize=False)
        + target_response(e)
        for e in exs
    ]
    enc = processor(text=texts, images=[e.images for e in exs], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (*enc["input_ids"].shape, len(processor.tokenizer))
    assert torch.isfinite(logits).all()
    # A different image (same text) must change the logits after the image: the vision path is wired in.
    enc2 = dict(enc)
    enc2["pixel_values"] = enc["pixel_values"].flip(0)
    with torch.no_grad():
        logits2 = model(**enc2).logits
    assert (logits - logits2)[:, -5:].abs().max() > 1e-4


def test_greedy_generation_decodes(tiny):
    _, model, processor = tiny
    ex = make_examples("classification", 1, seed=0)[0]
    text = processor.apply_chat_template(_messages(ex.prompt), add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[ex.images], return_tensors="pt")
    out = model.generate(
        **enc, max_new_tokens=6, do_sample=False, suppress_tokens=[model.config.image_token_id]
    )
    new = out[0, enc["input_ids"].shape[1] :]
    assert 1 <= new.numel() <= 6
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


def test_build_is_deterministic_by_seed():
    m1, p1 = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=1, seed=7)
    m2, p2 = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=1, seed=7)
    m3, _ = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=1, seed=8)
    assert p1.tokenizer.get_vocab() == p2.tokenizer.get_vocab()
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)


def test_build_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny("qwen2_vl", hidden_size=64, num_layers=1, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_extra_texts_extend_the_vocabulary():
    _, base = build_tiny("qwen2_vl", hidden_size=64, num_layers=1)
    _, extra = build_tiny("qwen2_vl", hidden_size=64, num_layers=1, texts=["zebra quokka"] * 20)
    word = "Ġquokka"
    assert word not in base.tokenizer.get_vocab() and word in extra.tokenizer.get_vocab()


def test_target_responses_are_short():
    _, processor = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=1)
    for task in ("counting", "grounding", "classification"):
        for ex in make_examples(task, 20, seed=1):
            ids = processor.tokenizer.encode(target_response(ex), add_special_tokens=False)
            assert len(ids) <= 24, (task, target_response(ex), len(ids))


def test_unknown_tiny_name_lists_valid_ones():
    with pytest.raises(ValueError, match="tiny:qwen2_5_vl.*tiny:qwen2_vl"):
        load_model_and_processor("tiny:llava")
    with pytest.raises(ValueError, match="qwen2_5_vl, qwen2_vl, qwen3_vl"):
        build_tiny("no_such_family")


def test_saved_tiny_model_reloads_through_from_pretrained(tmp_path):
    model, processor = load_model_and_processor("tiny:qwen2_5_vl", hidden_size=64, num_layers=1, seed=1)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2, processor2 = load_model_and_processor(str(tmp_path))
    assert type(model2) is type(model) and type(processor2) is type(processor)
    ex = make_examples("grounding", 1, seed=0)[0]
    text = processor.apply_chat_template(_messages(ex.prompt), add_generation_prompt=True, tokenize=False)
    text2 = processor2.apply_chat_template(_messages(ex.prompt), add_generation_prompt=True, tokenize=False)
    assert text == text2
    enc = processor(text=[text], images=[ex.images], return_tensors="pt")
    enc2 = processor2(text=[text2], images=[ex.images], return_tensors="pt")
    assert torch.equal(enc["input_ids"], enc2["input_ids"])
    assert torch.allclose(enc["pixel_values"], enc2["pixel_values"])
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, model2.eval()(**enc2).logits, atol=1e-5)


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_processor(str(tmp_path))
