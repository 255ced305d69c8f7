"""The adapter table itself: names and model types are unique, lookups resolve through wrappers, and
docs/models.md names every family with its real transformers classes."""

from __future__ import annotations

import os

import pytest
import transformers

from visent.models import UnsupportedModel, adapter_for, all_adapters, require_adapter, tiny_names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_names_and_model_types_are_unique_and_resolve():
    adapters = all_adapters()
    assert len({a.name for a in adapters}) == len(adapters)
    types = [t for a in adapters for t in a.model_types]
    assert len(set(types)) == len(types)
    for a in adapters:
        for t in a.model_types:
            assert adapter_for(t) is a
    assert tiny_names() == [f"tiny:{a.name}" for a in adapters]


def test_class_names_are_real_transformers_classes_and_documented():
    with open(os.path.join(ROOT, "docs", "models.md"), encoding="utf-8") as f:
        doc = f.read()
    for a in all_adapters():
        for cls in (a.model_class, a.processor_class):
            assert hasattr(transformers, cls), f"{a.name}: transformers has no {cls}"
            assert f"`{cls}`" in doc, f"docs/models.md does not name {cls} ({a.name})"
        assert f"`{a.name}`" in doc


def test_unknown_model_type_is_refused_in_one_line_naming_the_families():
    assert adapter_for("llama") is None
    with pytest.raises(UnsupportedModel) as info:
        require_adapter("llama", what="m")
    message = str(info.value)
    assert "\n" not in message and "'llama'" in message
    assert all(a.name in message for a in all_adapters())


def test_a_hub_id_without_adapter_is_refused_from_its_config_before_any_weight_loads(monkeypatch):
    from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2Config

    from visent.models import load_model_and_processor

    seen = []
    monkeypatch.setattr(AutoConfig, "from_pretrained", lambda name, **kw: seen.append((name, kw)) or Qwen2Config())

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded for an unsupported model")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", no_weights)
    with pytest.raises(UnsupportedModel, match="'qwen2'"):
        load_model_and_processor("someone/text-only-llm", revision="main", dtype="bfloat16")
    assert seen == [("someone/text-only-llm", {"revision": "main"})]  # dtype is a weight option, not passed


def test_visent_models_does_not_import_the_lab_but_tiny_tokenizers_learn_its_texts():
    import subprocess
    import sys

    code = "import sys, visent.models; assert 'visent.lab' not in sys.modules, 'visent.models imported the lab'"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0

    from visent.data.synthetic import task_texts
    from visent.models.tiny.qwen import build_qwen_tokenizer

    text = task_texts()[0]
    with_lab = build_qwen_tokenizer()
    without = build_qwen_tokenizer(["unrelated words only"] * 5, with_lab_texts=False)
    assert len(with_lab.encode(text)) < len(without.encode(text)) / 2  # the lab's words are whole tokens
