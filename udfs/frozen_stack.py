"""Train the top layers only, compute the frozen ones once: per-item hidden states cached.

When fine-tuning updates only the top ``n`` transformer layers, everything below them is a
fixed function of the item's text. :class:`FrozenStack` runs the frozen part once per
catalogue item (eval mode: no dropout there) and keeps, per item, the hidden states that enter
the first trained layer. A training step then runs only the ``n`` trained layers on the cached
states of its batch's items, and validation runs them over the catalogue. For a 6-layer model
trained on its top 2 layers, a step does a third of the forward work and the backward pass is
unchanged (it never reached the frozen layers).

It applies to BERT-style encoders (``model.encoder.layer``, transformers' bidirectional mask);
:meth:`FrozenStack.build` checks on real items that the cached path reproduces the whole model
and returns None (the caller runs the whole model each step) when it does not, when the model
has another layout, or when the cache would exceed its memory budget.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from udfs.embed import length_batches, mean_pool

log = logging.getLogger("stpipe.finetune")

# Largest cache kept (bytes of float32 hidden states): above it, the whole model runs per step.
CACHE_BUDGET_BYTES = 2 * 1024**3
# The cached path must reproduce the whole model's pooled vectors to this (max abs difference).
SELF_CHECK_TOLERANCE = 1e-4


def _layer_output(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out


class FrozenStack:
    """Cached inputs of the trained layers, one (tokens, hidden) tensor per catalogue item."""

    def __init__(self, model: Any, states: list[Any], first: int, device: str) -> None:
        self.model, self.states, self.first, self.device = model, states, first, device

    @classmethod
    def build(cls, model: Any, tokenizer: Any, ids: Sequence[Sequence[int]], train_layers: str,
              device: str, *, budget_bytes: int = CACHE_BUDGET_BYTES) -> FrozenStack | None:
        """The cache for ``ids`` (tokenised catalogue texts), or None where it does not apply."""
        import torch

        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if train_layers == "all" or layers is None:
            return None
        first = len(layers) - int(train_layers)
        size = sum(len(x) for x in ids) * model.config.hidden_size * 4
        if size > budget_bytes:
            log.info("finetune: the frozen-layer cache would take %.1f GB; running the whole model "
                     "each step", size / 1e9)
            return None
        try:
            from transformers.masking_utils import create_bidirectional_mask  # noqa: F401
        except ImportError:
            return None
        was_training = model.training
        model.eval()
        states: list[Any] = [None] * len(ids)
        with torch.inference_mode():
            for idx in length_batches([len(x) for x in ids], batch_size=128, token_budget=8192):
                batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                hidden = model(**batch, output_hidden_states=True).hidden_states[first]
                for row, i in enumerate(idx.tolist()):
                    states[i] = hidden[row, : int(batch["attention_mask"][row].sum())].clone()
        stack = cls(model, states, first, device)
        ok = stack._reproduces(tokenizer, ids)
        model.train(was_training)
        if not ok:
            log.info("finetune: cached frozen layers do not reproduce this model; running the "
                     "whole model each step")
            return None
        return stack

    def pooled(self, items: Sequence[int]) -> Any:
        """Unit vectors of catalogue ``items`` through the trained layers (the model's mode:
        dropout in training), with gradients when enabled."""
        import torch
        from torch.nn.utils.rnn import pad_sequence
        from transformers.masking_utils import create_bidirectional_mask

        rows = [self.states[i] for i in items]
        hidden = pad_sequence(rows, batch_first=True)
        mask = torch.zeros(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        for r, row in enumerate(rows):
            mask[r, : row.shape[0]] = 1
        extended = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden,
                                             attention_mask=mask)
        for layer in self.model.encoder.layer[self.first:]:
            hidden = _layer_output(layer(hidden, extended))
        return mean_pool(hidden, mask)

    def encode_all(self, batch_size: int = 256) -> Any:
        """Unit vectors (float32, CPU) of every catalogue item, no grad (call in eval mode)."""
        import torch

        out = torch.zeros((len(self.states), self.model.config.hidden_size))
        lengths = [s.shape[0] for s in self.states]
        with torch.inference_mode():
            for idx in length_batches(lengths, batch_size=batch_size, token_budget=16384):
                out[torch.as_tensor(idx)] = self.pooled(idx.tolist()).float().cpu()
        return out

    def _reproduces(self, tokenizer: Any, ids: Sequence[Sequence[int]], n: int = 16) -> bool:
        """The cached path equals the whole model (eval mode) on the ``n`` longest items."""
        import torch

        pick = sorted(range(len(ids)), key=lambda i: -len(ids[i]))[:n]
        batch = tokenizer.pad({"input_ids": [ids[i] for i in pick]}, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            whole = mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
            cached = self.pooled(pick)
        return float((whole - cached).abs().max()) <= SELF_CHECK_TOLERANCE
