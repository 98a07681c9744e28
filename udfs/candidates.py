"""The recommender's components (user x item feature matrices) and candidate sources (masks).

Each function works on one chunk of users (:class:`Chunk`: their histories as catalogue
indices) and the broadcast :class:`~udfs.score.Catalog`; :func:`udfs.score.score_users`
composes them. Components, each a (users, items) array:

* bert: how close the item's text is to the user's items: with ``kernel_power`` p > 0 the
  history-weighted mean of max(0, cos(h, item))^p over the user's items h (an item-to-item
  kernel: a user of two interests is near items of either, where the mean of their vectors lies
  between them); with p = 0 the cosine of the user vector (:mod:`udfs.vectors`) and the item;
* time: the item's time-decayed market popularity; space: the same within the user's region;
* reach: how many distinct users bought the item (log-scaled): breadth of appeal, which
  order-weighted popularity misses when a few buyers re-order an item often;
* causal: how strongly the user's categories lead the item's (category shares x strengths);
* history: the user's own recency weight of the item (max 1);
* recent: the same with a shorter half-life (two weeks): what the user stocks now, next to
  the slower history;
* repeat: how habitually the user re-buys the item, 1 - 1/n for an item bought on n distinct
  days (0 for one bought once or never; :func:`repeat_transform`);
* rebuy: for items in the user's history, how often the item's buyers come back for it (the
  share of its buyers who bought it on two or more days, shrunk towards the market's share);
  0 for other items. Some goods are re-stocked (bags, candles), others bought once (a clock);
* cooc: history weights times the item x item co-occurrence matrix, max 1 per user.

Candidate sources, each a boolean (users, items) mask: popular in the region, neighbours of
recent items, categories led by the user's, bought together, the user's history, and the
market's most popular allowed items to fill short lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from udfs.vectors import kernel_scores, user_vectors

if TYPE_CHECKING:
    from udfs.score import Catalog


@dataclass(frozen=True)
class Chunk:
    """A chunk of users: histories as catalogue indices, most recent first."""

    hist_idx: list[np.ndarray]  # per user, item indices (unknown items dropped)
    hist_w: list[np.ndarray]  # per user, their recency weights
    hist_days: list[np.ndarray]  # per user, the distinct days each item was bought on
    region_row: np.ndarray  # per user, index into catalog.regions (-1: unknown region)
    bought: np.ndarray  # (users, items) bool
    history: np.ndarray  # (users, items) weight / the user's largest weight
    recent: np.ndarray  # (users, items) short half-life weight / the user's largest one

    @property
    def shape(self) -> tuple[int, int]:
        return self.bought.shape


def chunk_of(users: pd.DataFrame, catalog: Catalog) -> Chunk:
    """Parse ``hist_item_ids``/``hist_weights``/``hist_days``/``hist_recent`` and ``region`` of
    ``users`` against the catalog."""
    index = catalog.index()
    hist_idx, hist_w, hist_days, hist_recent = [], [], [], []
    columns = (users["hist_item_ids"], users["hist_weights"], users["hist_days"], users["hist_recent"])
    for ids, weights, days, recent in zip(*columns, strict=True):
        ids, weights, days, recent = ([] if a is None else list(a) for a in (ids, weights, days, recent))
        keep = [
            (index[i], float(w), int(n), float(r))
            for i, w, n, r in zip(ids, weights, days, recent, strict=True) if i in index
        ]
        hist_idx.append(np.array([k[0] for k in keep], dtype=np.int64))
        hist_w.append(np.array([k[1] for k in keep], dtype=np.float64))
        hist_days.append(np.array([k[2] for k in keep], dtype=np.int64))
        hist_recent.append(np.array([k[3] for k in keep], dtype=np.float64))
    region_pos = {r: i for i, r in enumerate(catalog.regions)}
    region_row = np.array([region_pos.get(r, -1) for r in users["region"]], dtype=np.int64)
    shape = (len(users), len(catalog.item_ids))
    history = np.zeros(shape, dtype=np.float64)
    recent = np.zeros(shape, dtype=np.float64)
    bought = np.zeros(shape, dtype=bool)
    for row, (idx, w, r) in enumerate(zip(hist_idx, hist_w, hist_recent, strict=True)):
        if len(idx):
            np.maximum.at(history[row], idx, w / w.max())
            if r.max() > 0:
                np.maximum.at(recent[row], idx, r / r.max())
            bought[row, idx] = True
    return Chunk(hist_idx, hist_w, hist_days, region_row, bought, history, recent)


# ----- components ------------------------------------------------------------------------


def bert_similarity(chunk: Chunk, catalog: Catalog) -> np.ndarray:
    """Cosine of each user's vector with every item (0 for users without history)."""
    u_vec = user_vectors(chunk.hist_idx, chunk.hist_w, catalog.embeddings)
    return (u_vec @ catalog.embeddings.T).astype(np.float64)  # both sides unit length


def bert_kernel(chunk: Chunk, catalog: Catalog, power: int, block: int = 1024) -> np.ndarray:
    """Per user x item: sum over the user's items h of w_h x max(0, cos(h, item))^power, divided
    by the sum of w_h (in [0, 1]; 0 for users without history); :func:`udfs.vectors.kernel_scores`."""
    rows = np.repeat(np.arange(chunk.shape[0]), [len(idx) for idx in chunk.hist_idx])
    idx = np.concatenate([*chunk.hist_idx, np.zeros(0, dtype=np.int64)])
    w = np.concatenate([*chunk.hist_w, np.zeros(0)])
    weights = sp.csr_matrix((w, (rows, idx)), shape=chunk.shape)  # a repeated item: weights add
    score = kernel_scores(weights, catalog.embeddings, power, block)
    totals = np.asarray(weights.sum(axis=1))
    np.divide(score, totals, out=score, where=totals > 0)
    return np.clip(score, 0.0, 1.0)


def time_scores(chunk: Chunk, catalog: Catalog) -> np.ndarray:
    """The market popularity of each item, the same for every user."""
    return np.broadcast_to(catalog.time_score, chunk.shape)


def reach_scores(chunk: Chunk, catalog: Catalog) -> np.ndarray:
    """How many distinct users bought each item (log-scaled), the same for every user."""
    if catalog.reach_score is None:
        return np.zeros(chunk.shape, dtype=np.float64)
    return np.broadcast_to(catalog.reach_score, chunk.shape)


def space_scores(chunk: Chunk, catalog: Catalog) -> np.ndarray:
    """The popularity of each item in the user's region (0 where the region is unknown)."""
    space = np.zeros(chunk.shape, dtype=np.float64)
    known = chunk.region_row >= 0
    space[known] = catalog.space_score[chunk.region_row[known]]
    return space


def repeat_transform(days: np.ndarray) -> np.ndarray:
    """1 - 1/n for an item bought on n >= 1 distinct days: 0 once, 1/2 twice, towards 1.

    Bounded like the other components, and most of its change lies between one and a few
    days, where a wholesale buyer's habit shows; 0 for n <= 0 (not bought).
    """
    days = np.asarray(days, dtype=np.float64)
    return np.where(days > 0, 1.0 - 1.0 / np.maximum(days, 1.0), 0.0)


def repeat_scores(chunk: Chunk) -> np.ndarray:
    """(users, items): :func:`repeat_transform` of the days each history item was bought on,
    0 for items not in the history."""
    score = np.zeros(chunk.shape, dtype=np.float64)
    for row, (idx, days) in enumerate(zip(chunk.hist_idx, chunk.hist_days, strict=True)):
        if len(idx):
            np.maximum.at(score[row], idx, repeat_transform(days))
    return score


def rebuy_scores(chunk: Chunk, catalog: Catalog) -> np.ndarray:
    """(users, items): the item's re-buy rate where the user bought it before, else 0."""
    if catalog.rebuy_rate is None:
        return np.zeros(chunk.shape, dtype=np.float64)
    return np.where(chunk.bought, catalog.rebuy_rate, 0.0)


def category_shares(chunk: Chunk, catalog: Catalog) -> np.ndarray:
    """(users, categories): each user's recency-weighted share of each category."""
    shares = np.zeros((chunk.shape[0], len(catalog.categories)), dtype=np.float64)
    for row, (idx, w) in enumerate(zip(chunk.hist_idx, chunk.hist_w, strict=True)):
        if len(idx):
            np.add.at(shares[row], catalog.category_codes[idx], w)
            shares[row] /= shares[row].sum()
    return shares


def led_categories(shares: np.ndarray, catalog: Catalog) -> np.ndarray:
    """(users, effect categories): sum over the user's categories of share x lead strength."""
    if not len(catalog.categories):
        return np.zeros((shares.shape[0], 0))
    return shares @ catalog.causal


def causal_scores(led: np.ndarray, chunk: Chunk, catalog: Catalog) -> np.ndarray:
    """How strongly the user's categories lead each item's category."""
    if not len(catalog.categories):
        return np.zeros(chunk.shape)
    return led[:, catalog.category_codes]


def cooc_scores(
    hist_idx: list[np.ndarray], history: np.ndarray, cooc: sp.csr_matrix | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per user x item: sum over the user's items i of history[i] x cooc[i, item], divided by the
    user's largest sum (so max 1), and the item i contributing most (-1 where nothing does;
    ties: lower item index)."""
    n_users, n_items = history.shape
    score = np.zeros((n_users, n_items), dtype=np.float64)
    source = np.full((n_users, n_items), -1, dtype=np.int64)
    if cooc is None or cooc.nnz == 0:
        return score, source
    for row, idx in enumerate(hist_idx):
        if not len(idx):
            continue
        idx = np.unique(idx)
        part = cooc[idx].tocoo()
        if part.nnz == 0:
            continue
        src = idx[part.row]
        vals = part.data * history[row, src]
        np.add.at(score[row], part.col, vals)
        order = np.lexsort((src, -vals, part.col))  # per column: largest contribution, then lower id
        cols = part.col[order]
        first = np.r_[True, cols[1:] != cols[:-1]]
        source[row, cols[first]] = src[order][first]
        top = score[row].max()
        if top > 0:
            score[row] = np.round(score[row] / top, 12)
    return score, source


# ----- candidate sources -----------------------------------------------------------------


def top_indices(values: np.ndarray, n: int) -> list[np.ndarray]:
    """Per row, the column indices of the ``n`` largest finite values (ties: lower index)."""
    out = []
    for row in values:
        finite = np.flatnonzero(np.isfinite(row))
        out.append(finite[np.lexsort((finite, -row[finite]))][:n])
    return out


def _mask(shape: tuple[int, int], columns: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for row, cols in enumerate(columns):
        mask[row, cols] = True
    return mask


def popular_candidates(chunk: Chunk, catalog: Catalog, n: int) -> np.ndarray:
    """The ``n`` most popular items of the user's region (of the market when it is unknown)."""
    orders = [
        catalog.region_order[r] if r >= 0 else catalog.popular_order for r in chunk.region_row
    ]
    return _mask(chunk.shape, [order[:n] for order in orders])


def neighbour_candidates(
    chunk: Chunk, catalog: Catalog, n: int, recent: int, kernel: np.ndarray | None = None
) -> np.ndarray:
    """The ``n`` new items nearest to the user's items: of largest ``kernel`` score when given
    (:func:`bert_kernel`), else nearest (max cosine) to any of the user's ``recent`` latest items."""
    if kernel is not None:
        fresh = np.where(chunk.bought | (kernel <= 0), -np.inf, kernel)
        return _mask(chunk.shape, top_indices(fresh, n))
    seeds = [idx[:recent] for idx in chunk.hist_idx]
    if not any(len(s) for s in seeds):
        return np.zeros(chunk.shape, dtype=bool)
    emb = catalog.embeddings
    sims = emb[np.concatenate([s for s in seeds if len(s)])] @ emb.T  # one product per chunk
    nearest = np.full(chunk.shape, -np.inf, dtype=np.float32)
    pos = 0
    for row, s in enumerate(seeds):
        if len(s):
            nearest[row] = sims[pos : pos + len(s)].max(axis=0)
            pos += len(s)
    nearest[chunk.bought] = -np.inf  # neighbours are new items; bought ones come via history
    return _mask(chunk.shape, top_indices(nearest, n))


def causal_candidates(led: np.ndarray, chunk: Chunk, catalog: Catalog, n: int) -> np.ndarray:
    """Up to ``n`` popular items of the categories most led by the user's, strongest first."""
    mask = np.zeros(chunk.shape, dtype=bool)
    if not catalog.causal.any():
        return mask
    by_cat = catalog.by_category()
    n_cat = len(catalog.categories)
    for row in range(chunk.shape[0]):
        taken = 0
        for cat in np.lexsort((np.arange(n_cat), -led[row])):
            if led[row, cat] <= 0 or taken >= n:
                break
            items = by_cat[cat][: n - taken]
            mask[row, items] = True
            taken += len(items)
    return mask


def cooc_candidates(chunk: Chunk, cooc: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` new items the user's history is most often bought together with."""
    fresh = np.where(chunk.bought | (cooc <= 0), -np.inf, cooc)
    return _mask(chunk.shape, top_indices(fresh, n))


def history_candidates(chunk: Chunk, n: int) -> np.ndarray:
    """The user's ``n`` items of largest weight (ties: lower index)."""
    tops = [idx[np.lexsort((idx, -w))][:n] for idx, w in zip(chunk.hist_idx, chunk.hist_w, strict=True)]
    return _mask(chunk.shape, tops)


def filler_candidates(
    taken: np.ndarray, allowed: np.ndarray, catalog: Catalog, k: int | None
) -> np.ndarray:
    """The market's most popular allowed items not yet taken, up to ``k`` candidates per user."""
    mask = np.zeros(taken.shape, dtype=bool)
    order = catalog.popular_order
    for row in range(taken.shape[0]):
        missing = (k or 0) - int(taken[row].sum())
        if missing > 0:
            mask[row, order[allowed[row, order] & ~taken[row, order]][:missing]] = True
    return mask
