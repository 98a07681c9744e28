"""How a user's items score an item by text: the user vector and the item-to-item kernel.

A user's vector (the one definition the scorer and the ``user_embeddings`` table share) is the
recency-weighted sum of the embeddings of the items they bought, re-normalised to unit length
(zeros when nothing is left). It stays in the item space: its cosine with an item is a weighted
mean of the item's cosines with the user's items. The kernel keeps the items apart instead:
sum over the user's items h of w_h x max(0, cos(h, item))^p, so a user with two interests is
near items of either (:func:`kernel_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp


def weighted_unit_sums(weights: np.ndarray, vectors: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per segment of rows (segment i = rows ``starts[i]`` up to the next start): the sum of
    ``weights[r] * vectors[r]`` in float64, in row order, scaled to unit length; float32.

    ``weights`` (m,), ``vectors`` (m, d), ``starts`` ascending, the first 0 (no empty segments).
    """
    weights = np.asarray(weights, dtype=np.float64)
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(starts) == 0:
        return np.zeros((0, vectors.shape[1]), dtype=np.float32)
    sums = np.add.reduceat(weights[:, None] * vectors, np.asarray(starts), axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0).astype(np.float32)


def user_vectors(hist_idx: list[np.ndarray], hist_w: list[np.ndarray], emb: np.ndarray) -> np.ndarray:
    """Each user's vector from their item indices into ``emb`` and weights (zeros without history)."""
    out = np.zeros((len(hist_idx), emb.shape[1]), dtype=np.float32)
    have = [row for row, idx in enumerate(hist_idx) if len(idx)]
    if have:
        idx = np.concatenate([hist_idx[row] for row in have])
        w = np.concatenate([hist_w[row] for row in have])
        starts = np.cumsum([0] + [len(hist_idx[row]) for row in have[:-1]])
        out[have] = weighted_unit_sums(w, emb[idx], starts)
    return out


def kernel_scores(weights: sp.spmatrix, emb: np.ndarray, power: int, block: int = 1024) -> np.ndarray:
    """(users, items): ``weights`` (users x items, sparse) times max(0, emb @ emb.T)^power.

    Only the items some user has a weight on are compared with the catalogue, ``block`` of them
    at a time (memory: block x items); ``emb`` rows are unit length. float64.
    """
    weights = sp.csc_matrix(weights)
    out = np.zeros(weights.shape, dtype=np.float64)
    seeds = np.flatnonzero(np.diff(weights.indptr))
    for start in range(0, len(seeds), block):
        part = seeds[start : start + block]
        sims = np.maximum(emb[part] @ emb.T, 0.0).astype(np.float64)
        out += weights[:, part] @ (sims**power)
    return out


def vectors_in_order(vectors: pd.DataFrame, items: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The rows of ``vectors`` (item_id, embedding) in the order of ``items``, float32, zeros for an
    item without a vector; and the ids of those items."""
    by_item = dict(zip(vectors["item_id"], vectors["embedding"], strict=True))
    dim = len(next(iter(by_item.values()))) if by_item else 1
    out = np.zeros((len(items), dim), dtype=np.float32)
    missing = []
    for row, item in enumerate(items):
        if item in by_item:
            out[row] = np.asarray(by_item[item], dtype=np.float32)
        else:
            missing.append(item)
    return out, missing
