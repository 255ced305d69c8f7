"""`to_trl_dataset` + the tiny model go through TRL 1.16's real `GRPOTrainer` (one CPU step)."""

from __future__ import annotations

import torch

from visent.data.synthetic import make_examples, to_trl_dataset
from visent.models import build_tiny


def test_grpo_trainer_consumes_lab_dataset(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    model, processor = build_tiny("qwen2_5_vl", hidden_size=64, num_layers=1, seed=0)
    exs = make_examples("counting", 2, seed=0) + make_examples("grounding", 2, seed=0)
    ds = to_trl_dataset(exs)
    seen: dict = {}

    def reward(completions, answer, **columns):
        seen.setdefault("completions", []).extend(completions)
        seen.setdefault("answer", []).extend(answer)
        seen.update({k: v for k, v in columns.items() if k in ("images", "task", "id", "clean_answer")})
        # Varies within a group so the advantage (and hence the update) is non-zero.
        return [float(len(c[0]["content"]) % 3) for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        logging_steps=1,
        dataloader_num_workers=0,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GRPOTrainer(
        model=model, processing_class=processor, reward_funcs=[reward], args=args, train_dataset=ds
    )
    trainer.train()
    # The reward saw conversational completions, the label column and the images the prompts carried.
    assert seen["completions"][0][0]["role"] == "assistant"
    assert set(seen["answer"]) <= {e.answer for e in exs}
    assert all(len(imgs) == 1 for imgs in seen["images"])
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert any("visual" in n for n in changed) and any("lm_head" in n for n in changed)
