"""The frozen-layer cache of the fine-tuning (udfs/frozen_stack.py): the same vectors as the
whole model, gradients only in the trained layers, and the cases where it steps aside."""

from __future__ import annotations

import pytest
import torch

from udfs.embed import Embedder, default_model_dir
from udfs.finetune import set_trainable
from udfs.frozen_stack import FrozenStack

TEXTS = ["WHITE HANGING HEART T-LIGHT HOLDER", "JUMBO BAG RED RETROSPOT", "a",
         "SET OF 3 CAKE TINS PANTRY DESIGN", "PACK OF 72 RETROSPOT CAKE CASES", "mug"]


@pytest.fixture(scope="module")
def loaded():
    from transformers import AutoModel, AutoTokenizer

    folder = str(default_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    ids = tokenizer(TEXTS, truncation=True, max_length=64)["input_ids"]
    return model, tokenizer, ids


def test_cached_vectors_equal_the_embedding_core(loaded):
    model, tokenizer, ids = loaded
    stack = FrozenStack.build(model, tokenizer, ids, "2", "cpu")
    assert stack is not None and stack.first == 4
    model.eval()
    ours = stack.encode_all().numpy()
    reference = Embedder(device="cpu").encode(TEXTS)  # the whole model, another code path
    assert (ours * reference).sum(1).min() >= 0.99999


def test_gradients_reach_only_the_trained_layers(loaded):
    model, tokenizer, ids = loaded
    set_trainable(model, "2")
    stack = FrozenStack.build(model, tokenizer, ids, "2", "cpu")
    model.train()
    stack.pooled([0, 1, 2]).sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("encoder.layer.4.", "encoder.layer.5.")) for n in grads)
    model.zero_grad(set_to_none=True)
    model.eval()


def test_steps_aside_for_all_layers_another_layout_or_a_small_budget(loaded):
    model, tokenizer, ids = loaded
    assert FrozenStack.build(model, tokenizer, ids, "all", "cpu") is None
    assert FrozenStack.build(torch.nn.Linear(2, 2), tokenizer, ids, "2", "cpu") is None
    tokens = sum(len(x) for x in ids)
    small = tokens * model.config.hidden_size * 4 - 1
    assert FrozenStack.build(model, tokenizer, ids, "2", "cpu", budget_bytes=small) is None
    assert FrozenStack.build(model, tokenizer, ids, "2", "cpu", budget_bytes=small + 1) is not None


def test_a_cache_that_does_not_reproduce_the_model_is_refused(loaded, monkeypatch):
    model, tokenizer, ids = loaded
    real = FrozenStack.pooled
    monkeypatch.setattr(FrozenStack, "pooled", lambda self, items: real(self, items) * 0.99)
    assert FrozenStack.build(model, tokenizer, ids, "2", "cpu") is None
    assert not model.training  # build leaves the mode as it found it
