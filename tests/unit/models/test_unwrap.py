"""Seeing through wrappers: the decoder backbone and LM head under a DDP-like wrapper."""

from __future__ import annotations

import torch

from visent.models.unwrap import backbone_and_head


def test_backbone_and_head_on_a_wrapped_model():
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(2, 2)
            self.lm_head = torch.nn.Linear(2, 5)
            self.base_model_prefix = "model"

        @property
        def base_model(self):
            return self.model

        def get_output_embeddings(self):
            return self.lm_head

    class Wrapper(torch.nn.Module):  # DDP-like
        def __init__(self, module):
            super().__init__()
            self.module = module

    inner = Head()
    backbone, head = backbone_and_head(Wrapper(inner))
    assert backbone is inner.model and head is inner.lm_head
