"""Candidate generation, fused scoring and top-K selection for a batch of users (numpy).

Everything here works on a :class:`Catalog` (item embeddings and per-item signals as
dense arrays, built once on the driver and broadcast) and a pandas frame of users
(:data:`USER_COLUMNS`: a user is ``(source, user_id)``; ``hist_item_ids, hist_weights,
hist_days, hist_recent`` are the items they bought, most recent first, with their recency
weights, the number of distinct days each was bought on, and their weights with a shorter
half-life). For a sub-batch of users
it computes user x item similarities and the candidate mask with matrix products, then scores
only the candidates and keeps the top K per user; only ids, scores and reasons leave the function,
never all user x item pairs.

The components (feature matrices) and candidate sources are small functions in
:mod:`udfs.candidates`; the user vector is :mod:`udfs.vectors`. Every signal is in [0, 1]
except bert with ``bert_kernel_power`` 0 (a cosine in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from udfs.candidates import (
    Chunk,
    bert_kernel,
    bert_similarity,
    category_shares,
    causal_candidates,
    causal_scores,
    chunk_of,
    cooc_candidates,
    cooc_scores,
    filler_candidates,
    history_candidates,
    led_categories,
    neighbour_candidates,
    popular_candidates,
    reach_scores,
    rebuy_scores,
    repeat_scores,
    space_scores,
    time_scores,
)

FEATURES = ("bert", "time", "space", "causal", "history", "recent", "repeat", "reach", "rebuy", "cooc")
ALL_COMPONENTS = frozenset(FEATURES)

USER_COLUMNS = (
    "source", "user_id", "region", "is_cold_start", "hist_item_ids", "hist_weights", "hist_days",
    "hist_recent",
)

# Candidate sources and reasons (bit flags per user x item).
POPULAR, NEIGHBOUR, CAUSAL, HISTORY, FILLER, COOC = 1, 2, 4, 8, 16, 32

# Which components switch each candidate source on (FILLER is always on when a K is asked for).
SOURCE_COMPONENTS = {
    POPULAR: {"time", "space"}, NEIGHBOUR: {"bert"}, CAUSAL: {"causal"}, COOC: {"cooc"},
    HISTORY: {"history"},
}


def candidate_sources(components: frozenset[str], allow_repeat: bool) -> frozenset[int]:
    """The candidate sources (bit flags) that ``components`` switch on; the user's own history
    only when repeats are allowed."""
    on = {bit for bit, names in SOURCE_COMPONENTS.items() if names & components}
    return frozenset(on if allow_repeat else on - {HISTORY})


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
    reach_score: np.ndarray | None = None  # (n,) float; None: no buyer counts (reach 0)
    rebuy_rate: np.ndarray | None = None  # (n,) share of buyers who re-buy; None: rebuy 0
    _index: dict[str, int] | None = field(default=None, repr=False)
    _by_category: list[np.ndarray] | None = field(default=None, repr=False)

    def index(self) -> dict[str, int]:
        """Item id -> its position in ``item_ids`` (built once per catalog)."""
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
    # the components whose candidate sources are on (None: ``components``); fusion training scores
    # every component on those candidates (the evaluation's shared training turns every source on
    # and each ablation keeps the rows its own sources proposed, ``proposed_by``)
    sources_of: frozenset[str] | None = None
    allow_repeat: bool = True
    recent_items: int = 5
    history_items: int = 50
    # bert: the item-to-item kernel's power (0: cosine with the user's mean vector)
    bert_kernel_power: int = 4
    candidates_popular: int = 50
    candidates_neighbours: int = 50
    candidates_causal: int = 30
    candidates_cooc: int = 50
    batch_users: int = 128


def score_users(users: pd.DataFrame, catalog: Catalog, params: ScoreParams) -> pd.DataFrame:
    """Candidates, fused scores and the top K items (or all candidates) for each user.

    ``users`` has :data:`USER_COLUMNS`. Returns one row per (user, item) kept, in
    :data:`RESULT_COLUMNS`: source, user_id, region, is_cold_start, rank, item_id, score, the
    component scores (one per :data:`FEATURES`), reasons (list of str), n_candidates and
    proposed_by (the bit flags of the candidate sources that proposed the item).
    """
    missing = [c for c in USER_COLUMNS if c not in users.columns]
    if missing:
        raise ValueError(
            f"score_users: missing user column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f" (found: {', '.join(map(str, users.columns)) or 'none'})"
        )
    frames = [
        _score_chunk(users.iloc[start : start + params.batch_users], catalog, params)
        for start in range(0, len(users), params.batch_users)
    ]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _empty_result()


RESULT_COLUMNS = [
    "source", "user_id", "region", "is_cold_start", "rank", "item_id", "score",
    *[f"{f}_score" for f in FEATURES], "reasons", "n_candidates", "proposed_by",
]


def _empty_result() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in RESULT_COLUMNS})


def _candidate_flags(
    chunk: Chunk, catalog: Catalog, p: ScoreParams, led: np.ndarray, cooc: np.ndarray,
    kernel: np.ndarray | None, on: frozenset[int],
) -> np.ndarray:
    """Bit flags per user x item: which candidate sources of ``on`` propose the item."""
    sources = [
        (POPULAR, lambda: popular_candidates(chunk, catalog, p.candidates_popular)),
        (NEIGHBOUR, lambda: neighbour_candidates(chunk, catalog, p.candidates_neighbours, p.recent_items, kernel)),
        (CAUSAL, lambda: causal_candidates(led, chunk, catalog, p.candidates_causal)),
        (COOC, lambda: cooc_candidates(chunk, cooc, p.candidates_cooc)),
        (HISTORY, lambda: history_candidates(chunk, p.history_items)),
    ]
    flags = np.zeros(chunk.shape, dtype=np.int16)
    for bit, propose in sources:
        if bit in on:
            flags[propose()] |= bit
    return flags


def _score_chunk(users: pd.DataFrame, catalog: Catalog, p: ScoreParams) -> pd.DataFrame:
    if len(users) == 0 or len(catalog.item_ids) == 0:
        return _empty_result()
    chunk = chunk_of(users, catalog)
    shares = category_shares(chunk, catalog)
    led = led_categories(shares, catalog)
    cooc, cooc_source = cooc_scores(chunk.hist_idx, chunk.history, catalog.cooc)
    sources = candidate_sources(p.components if p.sources_of is None else p.sources_of, p.allow_repeat)
    kernel = None  # only when a score or the neighbour candidates read it (not for an ablation without)
    if p.bert_kernel_power > 0 and ("bert" in p.components or NEIGHBOUR in sources):
        kernel = bert_kernel(chunk, catalog, p.bert_kernel_power)
    bert = None  # a component that is off is never read (_select)
    if "bert" in p.components:
        bert = kernel if p.bert_kernel_power > 0 else bert_similarity(chunk, catalog)
    features = {
        "bert": bert,
        "time": time_scores(chunk, catalog),
        "space": space_scores(chunk, catalog),
        "causal": causal_scores(led, chunk, catalog),
        "history": chunk.history,
        "recent": chunk.recent,  # like history, non-zero only on bought items
        # like history, non-zero only on bought items: 0 in every list when allow_repeat is off
        "repeat": repeat_scores(chunk),
        "reach": reach_scores(chunk, catalog),
        "rebuy": rebuy_scores(chunk, catalog),  # non-zero only on bought items, like repeat
        "cooc": cooc,
    }
    flags = _candidate_flags(chunk, catalog, p, led, cooc, kernel, sources)
    allowed = np.ones(chunk.shape, dtype=bool) if p.allow_repeat else ~chunk.bought
    flags[~allowed] = 0
    flags[filler_candidates(flags > 0, allowed, catalog, p.k)] |= FILLER
    why = ReasonContext(catalog, shares, p.components, chunk.history, cooc_source)
    return _select(users, catalog, p, flags, features, allowed, why)


def _select(
    users: pd.DataFrame,
    catalog: Catalog,
    p: ScoreParams,
    flags: np.ndarray,
    features: dict[str, np.ndarray],
    allowed: np.ndarray,
    why: ReasonContext,
) -> pd.DataFrame:
    """Fuse the candidates' features, keep the top K per user, with their reasons."""
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
    sources = users["source"].tolist()
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
                reasons(why, flag=int(flags[row, item]), row=row, item=item, short=short)
            )
            out["n_candidates"].append(int(hi - lo))
            out["proposed_by"].append(int(flags[row, item]))
    return pd.DataFrame(out)


@dataclass(frozen=True)
class ReasonContext:
    """What the reason codes of a chunk's items are read from."""

    catalog: Catalog
    category_shares: np.ndarray  # (users, categories)
    components: frozenset[str]
    history: np.ndarray  # (users, items)
    cooc_source: np.ndarray  # (users, items): the history item behind the cooc score, or -1


def reasons(why: ReasonContext, *, flag: int, row: int, item: int, short: bool) -> list[str]:
    """The reason codes of ``item`` in the list of user ``row`` (see the README)."""
    catalog = why.catalog
    out = []
    if flag & NEIGHBOUR:
        out.append("similar_to_recent")
    if flag & POPULAR:
        out.append("popular_in_region")
    if flag & (POPULAR | FILLER) and catalog.trending[item] and "time" in why.components:
        out.append("trending")
    if flag & CAUSAL:
        effect = catalog.category_codes[item]
        cause = int(np.argmax(why.category_shares[row] * catalog.causal[:, effect]))
        out.append(f"led_by:{catalog.categories[cause]}")
    if flag & COOC:
        out.append(f"bought_with:{catalog.item_ids[why.cooc_source[row, item]]}")
    if why.history[row, item] > 0:
        out.append("bought_before")
    if flag & FILLER:
        out.append("popular_overall")
    if short:
        out.append("catalogue_exhausted")
    return out


def score_batches(
    batches: Iterable[pd.DataFrame], catalog: Catalog, params: ScoreParams
) -> Iterator[pd.DataFrame]:
    """The body of the Spark ``mapInPandas`` UDF: one result frame per Arrow batch."""
    for users in batches:
        yield score_users(users.reset_index(drop=True), catalog, params)
