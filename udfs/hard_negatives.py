"""Mined hard negatives for the contrastive fine-tuning: items the model puts near an item's text
although they are not its partner.

In-batch negatives are random catalogue items, mostly easy to tell apart from the partner; a
hard negative for item a is drawn from a's ``pool`` nearest catalogue items by the model's
current vectors, leaving out a itself and every training partner of a (pairs are unordered).
The neighbours are recomputed from each validation's vectors (the trainer computes them anyway),
so the negatives follow the model as it learns. Draws come from a seeded generator: on CPU the
same seed gives the same negatives.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np


class HardNegatives:
    """Per item, its ``pool`` nearest non-partner items; :meth:`draw` picks one per item."""

    def __init__(self, train_pairs: np.ndarray, pool: int, seed: int) -> None:
        if pool < 1:
            raise ValueError(f"hard negatives need a pool of 1 or more items, got {pool}")
        self.pool = pool
        self.partners: dict[int, set[int]] = defaultdict(set)
        for a, b in train_pairs.tolist():
            self.partners[a].add(b)
            self.partners[b].add(a)
        self.rng = np.random.default_rng(seed)
        self.nearest: np.ndarray | None = None

    def refresh(self, vectors: Any, chunk: int = 2048) -> None:
        """Nearest items by cosine of unit ``vectors`` (n, d), a torch tensor, for every item
        (``chunk`` rows of the similarity matrix at a time, so a large catalogue fits)."""
        import torch

        n = vectors.shape[0]
        widest = max((len(p) for p in self.partners.values()), default=0)
        k = min(n, self.pool + widest + 1)
        with torch.inference_mode():
            self.nearest = np.concatenate([
                (vectors[i:i + chunk] @ vectors.T).topk(k, dim=1).indices.cpu().numpy()
                for i in range(0, n, chunk)
            ])

    def is_partner(self, a: int, b: int) -> bool:
        """Whether b is no negative for a: a itself or one of its training partners."""
        return a == b or b in self.partners.get(a, ())

    def draw(self, items: np.ndarray) -> np.ndarray:
        """One hard negative per item of ``items`` (item numbers). An item whose neighbours are
        all partners gets a random non-partner item, or itself (which :meth:`mask` masks) when
        every other item is its partner."""
        if self.nearest is None:
            raise RuntimeError("HardNegatives.refresh must run before draw")
        n = self.nearest.shape[0]
        out = np.empty(len(items), dtype=np.int64)
        for i, a in enumerate(items.tolist()):
            choices = [x for x in self.nearest[a].tolist() if not self.is_partner(a, x)][: self.pool]
            if not choices and len(self.partners.get(a, ())) + 1 < n:
                choices = [x for x in self.rng.permutation(n).tolist() if not self.is_partner(a, x)][:1]
            out[i] = choices[self.rng.integers(len(choices))] if choices else a
        return out

    def mask(self, anchors: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        """Boolean (len(anchors), len(negatives)): negative j is no negative for anchor i."""
        return np.array([[self.is_partner(a, x) for x in negatives.tolist()] for a in anchors.tolist()],
                        dtype=bool).reshape(len(anchors), len(negatives))
