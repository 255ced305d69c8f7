"""`visent train` on every family in the adapter table (``visent.models.all_adapters()``), and refusals.

For each family: ``--config vepo --model_name_or_path tiny:<family> --dataset lab:counting
--max_steps 2`` trains and logs a finite, non-zero ``vepo/jsd_mean`` (default suite); ``grpo.yaml`` and
``two_stage.yaml`` train too (slow tier: the Qwen2/2.5-VL rows of those two run in the default suite in
``test_trainer_configs.py``). Overrides keep it fast on CPU and give every group reward variance (a real
verifier scores 0 on every random response, and an all-zero group is skipped): ``--reward_funcs random``
and ``--skip_uniform_groups false``, with two prompts of 4 responses per step (with one, both steps' groups
get equal random rewards one time in 64, and GRPO then has nothing to learn).

Also: a Qwen3-VL checkpoint written by ``save_pretrained`` and loaded by path trains with vepo.yaml (the
deepstack case of the vision cache), and a model without adapter is refused by `visent train`, `visent
eval` and `visent inspect` with one line and exit status 2.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from visent.configs import CONFIG_DIR
from visent.models import all_adapters
from visent.trainer.callbacks import read_metrics
from visent.trainer.cli import main as train_main

FAMILIES = [a.name for a in all_adapters()]
FAST_ARGS = [
    "--dataset", "lab:counting", "--max_steps", "2", "--reward_funcs", "random", "--num_generations", "4",
    "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1", "--max_completion_length", "10",
    "--dataset_size", "8", "--save_strategy", "no", "--gradient_checkpointing", "false",
    "--skip_uniform_groups", "false",
]


def _train(config: str, model: str, out) -> list[dict]:
    argv = ["--config", os.path.join(CONFIG_DIR, f"{config}.yaml"), "--model_name_or_path", model,
            "--output_dir", str(out), *FAST_ARGS]
    assert train_main(argv) == 0
    rows = read_metrics(str(out))
    assert [r["step"] for r in rows] == [1, 2]
    return rows


def _cases():
    for name in FAMILIES:
        yield pytest.param("vepo", name, id=f"vepo-{name}")
        for config in ("grpo", "two_stage"):
            yield pytest.param(config, name, id=f"{config}-{name}", marks=pytest.mark.slow)


@pytest.mark.parametrize("config, family", list(_cases()))
def test_family_trains(config, family, tmp_path):
    rows = _train(config, f"tiny:{family}", tmp_path / "run")
    for row in rows:
        assert row["guard/nonfinite_loss_terms"] == 0 and row["entropy/mean"] > 0
        if config == "vepo":
            jsd = row["vepo/jsd_mean"]
            assert jsd is not None and math.isfinite(jsd) and jsd > 0, f"{family}: vepo/jsd_mean = {jsd}"
    # Every config freezes the vision tower (the adapter's vision_modules): the language model trained, the
    # encoder and its projection did not.
    from visent.models import adapter_named

    adapter = adapter_named(family)
    before, _ = adapter.build_tiny()
    after = _saved_weights(tmp_path / "run", before)
    before = before.state_dict()
    vision = {n for n in after if any(f".{m}." in f".{n}" for m in adapter.vision_modules)}
    assert vision, f"{family}: no vision parameter found among the saved weights"
    changed = {n for n, p in after.items() if not torch.equal(p, before[n])}
    assert changed - vision, f"{family}: no parameter changed in 2 steps"
    assert not changed & vision, f"{family}: frozen vision parameters changed: {sorted(changed & vision)[:3]}"


def _saved_weights(path, model) -> dict:
    """The saved weights of ``path`` under ``model``'s in-memory names (transformers renames some on save:
    loading them into ``model`` maps them back)."""
    loaded = type(model).from_pretrained(str(path))
    return {n: p.to(model.state_dict()[n].dtype) for n, p in loaded.state_dict().items()}


def test_saved_qwen3_vl_checkpoint_trains_with_vepo(tmp_path):
    from visent.models import load_model_and_processor

    model, processor = load_model_and_processor("tiny:qwen3_vl")
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    rows = _train("vepo", str(tmp_path / "ckpt"), tmp_path / "run")
    assert all(r["vepo/jsd_mean"] is not None and r["vepo/jsd_mean"] > 0 for r in rows)


@pytest.fixture(scope="module")
def text_only_checkpoint(tmp_path_factory):
    """A tiny text-only causal LM saved to disk: a model visent has no adapter for."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("text_only")
    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return str(path)


def _one_line_exit_2(capsys, code: int, command: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"visent {command}:"), err
    assert "'qwen2'" in err[0] and "qwen3_vl" in err[0] and "supported" in err[0]


def test_unsupported_model_is_refused_by_train_eval_and_inspect(text_only_checkpoint, tmp_path, capsys):
    from visent.eval.cli import main as eval_main
    from visent.viz.cli import main as inspect_main

    code = train_main(["--config", os.path.join(CONFIG_DIR, "vepo.yaml"),
                       "--model_name_or_path", text_only_checkpoint, "--output_dir", str(tmp_path / "t"),
                       *FAST_ARGS])
    _one_line_exit_2(capsys, code, "train")
    code = eval_main(["--model", text_only_checkpoint, "--data", "lab:counting", "--out", str(tmp_path / "e")])
    _one_line_exit_2(capsys, code, "eval")
    code = inspect_main(["--model", text_only_checkpoint, "--data", "lab:counting", "--out", str(tmp_path / "i.html")])
    _one_line_exit_2(capsys, code, "inspect")


def test_unknown_tiny_family_is_refused_with_the_valid_names(tmp_path, capsys):
    code = train_main(["--config", os.path.join(CONFIG_DIR, "grpo.yaml"), "--model_name_or_path",
                       "tiny:nope", "--output_dir", str(tmp_path / "t"), *FAST_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tiny:qwen3_vl" in err[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_and_inspect_accept_the_family(family, tmp_path, capsys):
    """`visent eval` generates and scores, and `visent inspect` writes its heatmap, on every family."""
    from visent.eval.cli import main as eval_main
    from visent.viz.cli import main as inspect_main

    assert eval_main(["--model", f"tiny:{family}", "--data", "lab:counting:2", "--out", str(tmp_path / "e"),
                      "--max-new-tokens", "4", "--no-progress"]) == 0
    with open(tmp_path / "e" / "predictions.jsonl") as f:
        assert len(f.readlines()) == 2
    assert inspect_main(["--model", f"tiny:{family}", "--data", "lab:counting", "--n", "2", "--max-new-tokens", "4",
                         "--out", str(tmp_path / "t.html")]) == 0
    html = (tmp_path / "t.html").read_text()
    assert "jsd" in html.lower()


@pytest.fixture(scope="module")
def llava_without_adapter(tmp_path_factory):
    """A tiny plain-LLaVA checkpoint (``LlavaForConditionalGeneration``: an image-text-to-text model whose
    ``model_type`` visent has no adapter for), with its real processor class, saved to disk."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from visent.models.tiny.qwen import CHAT_TEMPLATE
    from visent.models.tokenizer import build_tokenizer

    tok = build_tokenizer(None, ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"), eos_token="<|im_end|>",
                          pad_token="<|endoftext|>", vocab_size=400)
    template = CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    # "full" features keep CLIP's class token: one more image token than patches.
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14, chat_template=template,
                               vision_feature_select_strategy="full", num_additional_image_tokens=1)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        text_config={"model_type": "qwen2", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "eos_token_id": eos, "pad_token_id": tok.pad_token_id},
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    path = tmp_path_factory.mktemp("llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def test_a_vlm_without_adapter_trains_grpo_and_evaluates_but_vepo_and_inspect_are_refused(
    llava_without_adapter, tmp_path, capsys
):
    """Where no token statistics are computed (grpo.yaml) TRL's own forward handles any image-text-to-text
    model; VEPO (the counterfactual pass) and `visent inspect` (perturbations) need an adapter: refused."""
    from transformers import LlavaForConditionalGeneration

    from visent.eval.cli import main as eval_main
    from visent.viz.cli import main as inspect_main

    rows = _train("grpo", llava_without_adapter, tmp_path / "grpo")
    assert all(r["entropy/mean"] > 0 for r in rows)
    before = LlavaForConditionalGeneration.from_pretrained(llava_without_adapter).state_dict()
    after = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "grpo")).state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and not any("vision_tower" in n or "multi_modal_projector" in n for n in changed)
    capsys.readouterr()

    code = train_main(["--config", os.path.join(CONFIG_DIR, "vepo.yaml"), "--model_name_or_path",
                       llava_without_adapter, "--output_dir", str(tmp_path / "vepo"), *FAST_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'llava' has no visent adapter" in err[0] and "qwen3_vl" in err[0]

    assert eval_main(["--model", llava_without_adapter, "--data", "lab:counting:2", "--out", str(tmp_path / "e"),
                      "--max-new-tokens", "3", "--no-progress"]) == 0
    capsys.readouterr()
    code = inspect_main(["--model", llava_without_adapter, "--data", "lab:counting", "--out", str(tmp_path / "i.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no visent adapter" in err[0]
