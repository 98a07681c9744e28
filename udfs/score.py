"""Candidate generation, fused scoring and top-K selection for a batch of users (numpy).

Everything here works on a :class:`Catalog` (item embeddings and per-item signals as
dense arrays, built once on the driver and broadcast) and a pandas frame of users
(``user_id, region, is_cold_start, hist_item_ids, hist_weights``: the items a user bought,
most recent first, with their recency weights). For a sub-batch of users it computes
user x item similarities and the candidate mask with matrix products, then scores only the
candidates and keeps the top K per user; only ids, scores and reasons leave the function,
never all user x item pairs.

Signals (features of the fusion model), each in [0, 1] except bert (a cosine in [-1, 1]):

* ``bert``: cosine of the user's embedding (recency-weighted mean of bought items,
  re-normalised) and the item's embedding;
* ``time``: time-decayed market popularity of the item (log-scaled, max 1);
* ``space``: the same popularity within the user's region;
* ``causal``: how strongly the user's recent categories lead the item's category in
  ``granger_stats`` (sum over categories of the user's category share x strength);
* ``history``: the user's own recency weight of the item (max 1 over their items);
* ``cooc``: "bought together": the user's history weights (as in ``history``) times the
  item x item co-occurrence matrix of the catalog (SAR-style, the top neighbours per item),
  divided by the user's largest such score (max 1; 0 without co-occurring items).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

FEATURES = ("bert", "time", "space", "causal", "history", "cooc")
ALL_COMPONENTS = frozenset(FEATURES)

# Candidate sources and reasons (bit flags per user x item).
POPULAR, NEIGHBOUR, CAUSAL, HISTORY, FILLER, COOC = 1, 2, 4, 8, 16, 32


@dataclass
class Catalog:
    """Items and their signals as arrays aligned on ``item_ids`` (sorted ascending)."""

    item_ids: np.ndarray  # (n,) str, sorted: index order is the tie-break order
    embeddings: np.ndarray  # (n, d) float32, L2-normalised
    category_codes: np.ndarray  # (n,) int, index into categories
    categories: list[str]
    time_score: np.ndarray  # (n,) float
    trending: np.ndarray  # (n,) bool
    regions: list[str]
    space_score: np.ndarray  # (n_regions, n) float
    popular_order: np.ndarray  # item indices, most popular first (market)
    region_order: list[np.ndarray]  # per region, items sold there, most popular there first
    causal: np.ndarray  # (n_cat, n_cat) strength that cause category leads effect category
    # (n, n) sparse: row item's most co-bought items and their similarity (None: no signal)
    cooc: sp.csr_matrix | None = None
    _index: dict[str, int] | None = field(default=None, repr=False)
    _by_category: list[np.ndarray] | None = field(default=None, repr=False)

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {item: i for i, item in enumerate(self.item_ids.tolist())}
        return self._index

    def by_category(self) -> list[np.ndarray]:
        """Per category, its items most popular first."""
        if self._by_category is None:
            codes = self.category_codes[self.popular_order]
            self._by_category = [self.popular_order[codes == c] for c in range(len(self.categories))]
        return self._by_category


@dataclass(frozen=True)
class ScoreParams:
    weights: dict[str, float]  # fusion weights per feature, plus "intercept"
    k: int | None = 10  # None: every candidate with its features (fusion training)
    components: frozenset[str] = ALL_COMPONENTS
    allow_repeat: bool = True
    recent_items: int = 5
    history_items: int = 50
    candidates_popular: int = 50
    candidates_neighbours: int = 50
    candidates_causal: int = 30
    candidates_cooc: int = 50
    batch_users: int = 128


def weighted_mean_embedding(weights: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """sum(w_i v_i) re-normalised to unit length (zeros when nothing is left)."""
    v = (np.asarray(weights, dtype=np.float64)[:, None] * np.asarray(vectors, dtype=np.float64)).sum(axis=0)
    norm = np.linalg.norm(v)
    return (v / norm if norm > 0 else np.zeros_like(v)).astype(np.float32)


def user_vectors(hist_idx: list[np.ndarray], hist_w: list[np.ndarray], emb: np.ndarray) -> np.ndarray:
    """Recency-weighted mean of each user's item embeddings, re-normalised (0 if none)."""
    out = np.zeros((len(hist_idx), emb.shape[1]), dtype=np.float32)
    for row, (idx, w) in enumerate(zip(hist_idx, hist_w, strict=True)):
        if len(idx):
            out[row] = weighted_mean_embedding(w, emb[idx])
    return out


def _parse_history(users: pd.DataFrame, catalog: Catalog) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Item indices and weights per user (unknown items dropped), most recent first."""
    index = catalog.index()
    idx_rows, w_rows = [], []
    for ids, weights in zip(users["hist_item_ids"], users["hist_weights"], strict=True):
        ids = [] if ids is None else list(ids)
        weights = [] if weights is None else list(weights)
        keep = [(index[i], float(w)) for i, w in zip(ids, weights, strict=True) if i in index]
        idx_rows.append(np.array([k for k, _ in keep], dtype=np.int64))
        w_rows.append(np.array([w for _, w in keep], dtype=np.float64))
    return idx_rows, w_rows


def _top_indices(values: np.ndarray, n: int) -> np.ndarray:
    """Per row, the column indices of the ``n`` largest finite values (ties: lower index)."""
    out = []
    for row in values:
        finite = np.flatnonzero(np.isfinite(row))
        order = finite[np.lexsort((finite, -row[finite]))][:n]
        out.append(order)
    return out


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


def score_users(users: pd.DataFrame, catalog: Catalog, params: ScoreParams) -> pd.DataFrame:
    """Candidates, fused scores and the top K items (or all candidates) for each user.

    Returns one row per (user, item) kept: user_id, region, is_cold_start, rank, item_id,
    score, the six component scores, reasons (list of str) and n_candidates.
    """
    frames = [
        _score_chunk(users.iloc[start : start + params.batch_users], catalog, params)
        for start in range(0, len(users), params.batch_users)
    ]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _empty_result()


RESULT_COLUMNS = [
    "source", "user_id", "region", "is_cold_start", "rank", "item_id", "score",
    "bert_score", "time_score", "space_score", "causal_score", "history_score", "cooc_score", "reasons",
    "n_candidates",
]


def _empty_result() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in RESULT_COLUMNS})


def _score_chunk(users: pd.DataFrame, catalog: Catalog, p: ScoreParams) -> pd.DataFrame:
    n_users, n_items = len(users), len(catalog.item_ids)
    if n_users == 0 or n_items == 0:
        return _empty_result()
    on = p.components
    emb = catalog.embeddings
    hist_idx, hist_w = _parse_history(users, catalog)
    region_pos = {r: i for i, r in enumerate(catalog.regions)}
    region_row = np.array([region_pos.get(r, -1) for r in users["region"]], dtype=np.int64)

    # Dense user x item matrices for the chunk: similarity, history weight, flags.
    u_vec = user_vectors(hist_idx, hist_w, emb)
    bert = u_vec @ emb.T  # cosine: both sides unit length (0 for users without history)
    history = np.zeros((n_users, n_items), dtype=np.float64)
    bought = np.zeros((n_users, n_items), dtype=bool)
    for row, (idx, w) in enumerate(zip(hist_idx, hist_w, strict=True)):
        if len(idx):
            np.maximum.at(history[row], idx, w / w.max())
            bought[row, idx] = True
    flags = np.zeros((n_users, n_items), dtype=np.int16)

    space = np.zeros((n_users, n_items), dtype=np.float64)
    known = region_row >= 0
    space[known] = catalog.space_score[region_row[known]]

    if "time" in on or "space" in on:
        for row in range(n_users):
            order = catalog.region_order[region_row[row]] if region_row[row] >= 0 else catalog.popular_order
            flags[row, order[: p.candidates_popular]] |= POPULAR

    if "bert" in on:
        seeds = [idx[: p.recent_items] for idx in hist_idx]
        if any(len(s) for s in seeds):
            flat = np.concatenate([s for s in seeds if len(s)])
            sims = emb[flat] @ emb.T  # (seeds, n): one matrix product for the chunk
            nearest = np.full((n_users, n_items), -np.inf, dtype=np.float32)
            pos = 0
            for row, s in enumerate(seeds):
                if len(s):
                    nearest[row] = sims[pos : pos + len(s)].max(axis=0)
                    pos += len(s)
            nearest[bought] = -np.inf  # neighbours are new items; bought ones come via history
            for row, cols in enumerate(_top_indices(nearest, p.candidates_neighbours)):
                flags[row, cols] |= NEIGHBOUR

    # Causal: the user's recency-weighted category shares times lead strengths.
    n_cat = len(catalog.categories)
    cat_share = np.zeros((n_users, n_cat), dtype=np.float64)
    for row, (idx, w) in enumerate(zip(hist_idx, hist_w, strict=True)):
        if len(idx):
            np.add.at(cat_share[row], catalog.category_codes[idx], w)
            cat_share[row] /= cat_share[row].sum()
    led = cat_share @ catalog.causal if n_cat else np.zeros((n_users, 0))  # (users, effect cat)
    causal = led[:, catalog.category_codes] if n_cat else np.zeros((n_users, n_items))
    if "causal" in on and catalog.causal.any():
        by_cat = catalog.by_category()
        for row in range(n_users):
            taken = 0
            for cat in np.lexsort((np.arange(n_cat), -led[row])):
                if led[row, cat] <= 0 or taken >= p.candidates_causal:
                    break
                items = by_cat[cat][: p.candidates_causal - taken]
                flags[row, items] |= CAUSAL
                taken += len(items)

    cooc, cooc_source = cooc_scores(hist_idx, history, catalog.cooc)
    if "cooc" in on:
        fresh = np.where(bought | (cooc <= 0), -np.inf, cooc)  # new items the history points to
        for row, cols in enumerate(_top_indices(fresh, p.candidates_cooc)):
            flags[row, cols] |= COOC

    if "history" in on and p.allow_repeat:
        for row, (idx, w) in enumerate(zip(hist_idx, hist_w, strict=True)):
            if len(idx):
                top = idx[np.lexsort((idx, -w))][: p.history_items]
                flags[row, top] |= HISTORY

    allowed = np.ones((n_users, n_items), dtype=bool) if p.allow_repeat else ~bought
    flags[~allowed] = 0
    # Fill short lists with the market's most popular allowed items.
    for row in range(n_users):
        missing = (p.k or 0) - int((flags[row] > 0).sum())
        if missing > 0:
            order = catalog.popular_order
            spare = order[allowed[row, order] & (flags[row, order] == 0)][:missing]
            flags[row, spare] |= FILLER

    features = {
        "bert": bert.astype(np.float64),
        "time": np.broadcast_to(catalog.time_score, (n_users, n_items)),
        "space": space,
        "causal": causal,
        "history": history,
        "cooc": cooc,
    }
    return _select(users, catalog, p, flags, features, cat_share, allowed, cooc_source)


def _select(
    users: pd.DataFrame,
    catalog: Catalog,
    p: ScoreParams,
    flags: np.ndarray,
    features: dict[str, np.ndarray],
    cat_share: np.ndarray,
    allowed: np.ndarray,
    cooc_source: np.ndarray,
) -> pd.DataFrame:
    rows, cols = np.nonzero(flags)  # only candidates from here on
    values = {
        f: (features[f][rows, cols] if f in p.components else np.zeros(len(rows)))
        for f in FEATURES
    }
    logit = np.full(len(rows), float(p.weights.get("intercept", 0.0)))
    for f in FEATURES:
        logit += float(p.weights.get(f, 0.0)) * values[f]
    logit = np.round(logit, 9)  # ties resolved by item id, not by float noise

    out: dict[str, list] = {c: [] for c in RESULT_COLUMNS}
    starts = np.searchsorted(rows, np.arange(len(users) + 1))
    user_ids, regions = users["user_id"].tolist(), users["region"].tolist()
    sources = users["source"].tolist() if "source" in users else [None] * len(users)
    cold = users["is_cold_start"].tolist()
    for row in range(len(users)):
        lo, hi = starts[row], starts[row + 1]
        if hi == lo:
            continue
        order = np.lexsort((cols[lo:hi], -logit[lo:hi])) + lo  # score desc, item id asc
        if p.k is not None:
            order = order[: p.k]
        short = p.k is not None and len(order) < p.k and len(order) == int(allowed[row].sum())
        for rank, j in enumerate(order, start=1):
            item = cols[j]
            out["source"].append(sources[row])
            out["user_id"].append(user_ids[row])
            out["region"].append(regions[row])
            out["is_cold_start"].append(bool(cold[row]))
            out["rank"].append(rank)
            out["item_id"].append(catalog.item_ids[item])
            out["score"].append(float(1.0 / (1.0 + np.exp(-logit[j]))))
            for f in FEATURES:
                out[f"{f}_score"].append(float(values[f][j]))
            out["reasons"].append(
                _reasons(flags[row, item], item, row, catalog, cat_share, p, short, features, cooc_source)
            )
            out["n_candidates"].append(int(hi - lo))
    return pd.DataFrame(out)


def _reasons(
    flag: int,
    item: int,
    row: int,
    catalog: Catalog,
    cat_share: np.ndarray,
    p: ScoreParams,
    short: bool,
    features: dict[str, np.ndarray],
    cooc_source: np.ndarray,
) -> list[str]:
    reasons = []
    if flag & NEIGHBOUR:
        reasons.append("similar_to_recent")
    if flag & POPULAR:
        reasons.append("popular_in_region")
    if flag & (POPULAR | FILLER) and catalog.trending[item] and "time" in p.components:
        reasons.append("trending")
    if flag & CAUSAL:
        effect = catalog.category_codes[item]
        cause = int(np.argmax(cat_share[row] * catalog.causal[:, effect]))
        reasons.append(f"led_by:{catalog.categories[cause]}")
    if flag & COOC:
        reasons.append(f"bought_with:{catalog.item_ids[cooc_source[row, item]]}")
    if features["history"][row, item] > 0:
        reasons.append("bought_before")
    if flag & FILLER:
        reasons.append("popular_overall")
    if short:
        reasons.append("catalogue_exhausted")
    return reasons


def score_batches(
    batches: Iterable[pd.DataFrame], catalog: Catalog, params: ScoreParams
) -> Iterator[pd.DataFrame]:
    """The body of the Spark ``mapInPandas`` UDF: one result frame per Arrow batch."""
    for users in batches:
        yield score_users(users.reset_index(drop=True), catalog, params)
