"""Build the scoring :class:`~udfs.score.Catalog` on the driver from small pandas frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from udfs.score import Catalog


def log_scaled(values: np.ndarray) -> np.ndarray:
    """log1p(x) / log1p(max x): popularity in [0, 1], heavy tails compressed."""
    top = float(values.max()) if len(values) else 0.0
    return np.log1p(values) / np.log1p(top) if top > 0 else np.zeros_like(values, dtype=np.float64)


def rebuy_rates(item_time: pd.DataFrame, item_ids: np.ndarray, *, prior_buyers: float) -> np.ndarray | None:
    """Per item of ``item_ids``: the share of its buyers who bought it on two or more days,
    shrunk towards the market's share with the weight of ``prior_buyers`` buyers:
    (repeat_buyers + a m) / (buyers + a), m = sum of repeat_buyers / sum of buyers.

    An item with few buyers says little about itself (2 of 3 is not a habit), so it reads
    close to the market's share until it has many more than ``a`` buyers. Items without
    counts (not sold in the window, or rows of older code where the columns are null) get
    m; None when no item has counts (absent columns: the component is 0).
    """
    if "repeat_buyers" not in item_time or "buyers" not in item_time:
        return None
    counts = item_time[["item_id", "buyers", "repeat_buyers"]].apply(
        lambda col: col if col.name == "item_id" else pd.to_numeric(col, errors="coerce")
    ).dropna()
    counts = counts[counts["buyers"] > 0]
    if counts.empty:
        return None
    per_item = counts.groupby("item_id")[["buyers", "repeat_buyers"]].sum()  # sources add up
    market = float(per_item["repeat_buyers"].sum() / per_item["buyers"].sum())
    rate = (per_item["repeat_buyers"] + prior_buyers * market) / (per_item["buyers"] + prior_buyers)
    return rate.reindex(item_ids).fillna(market).to_numpy(dtype=np.float64)


def build_catalog(
    embeddings: pd.DataFrame,
    categories: pd.DataFrame,
    item_time: pd.DataFrame,
    region_item: pd.DataFrame,
    causal: pd.DataFrame | None,
    cooc: pd.DataFrame | None = None,
    *,
    trend_ratio: float = 1.5,
    min_trend_orders: int = 2,
    max_region_candidates: int = 500,
    rebuy_prior_buyers: float = 10.0,
) -> Catalog:
    """Align every per-item signal on the sorted item ids of ``embeddings``.

    embeddings: item_id, embedding; categories: item_id, category; item_time (from
    ``item_time_features``): item_id, popularity, trend, recent_orders (orders in the shortest
    window), buyers and repeat_buyers (optional; null or absent: 0); region_item
    (``region_item_features`` at the item level): region, item_id, lift; causal:
    cause_category, effect_category, strength (or None); cooc: item_id, other_id, similarity
    (or None: no co-occurrence).

    time score = popularity, log-scaled; reach score = distinct buyers, log-scaled; rebuy rate:
    :func:`rebuy_rates` with ``rebuy_prior_buyers``. Space score
    in region r = popularity x lift in r (the market's demand for the item times how much more
    r buys it than the market, smoothed by ``features.lift_prior``), log-scaled per region, for
    the items sold in r (0 for the others). Trending: trend >= ``trend_ratio`` with
    ``min_trend_orders`` recent orders.
    """
    emb = embeddings.sort_values("item_id", kind="stable").drop_duplicates("item_id")
    item_ids = emb["item_id"].astype(str).to_numpy()
    n = len(item_ids)
    vectors = (
        np.stack([np.asarray(v, dtype=np.float32) for v in emb["embedding"]])
        if n
        else np.zeros((0, 1), dtype=np.float32)
    )
    pos = pd.Series(np.arange(n), index=item_ids)

    cat_of = categories.drop_duplicates("item_id").set_index("item_id")["category"]
    cat_names = cat_of.reindex(item_ids).fillna("unknown").astype(str).to_numpy()
    category_list = sorted(set(cat_names.tolist()))
    cat_code = {c: i for i, c in enumerate(category_list)}
    codes = np.array([cat_code[c] for c in cat_names], dtype=np.int64)

    rebuy = rebuy_rates(item_time, item_ids, prior_buyers=rebuy_prior_buyers)
    # buyers: absent or null in a table of older code (reach 0)
    buyers = pd.to_numeric(item_time["buyers"], errors="coerce") if "buyers" in item_time else 0.0
    item_time = item_time.assign(buyers=buyers)
    # an item id sold by two sources counts once, with the demand of both
    per_item = item_time.groupby("item_id").agg(
        popularity=("popularity", "sum"), trend=("trend", "max"), recent_orders=("recent_orders", "sum"),
        buyers=("buyers", "sum"),
    ).reindex(item_ids)
    pop = per_item["popularity"].fillna(0.0).to_numpy(dtype=np.float64)
    recent = per_item["recent_orders"].fillna(0).to_numpy(dtype=np.float64)
    trend = per_item["trend"].fillna(0.0).to_numpy(dtype=np.float64)
    buyers = per_item["buyers"].fillna(0.0).to_numpy(dtype=np.float64)
    trending = (recent >= min_trend_orders) & (trend >= trend_ratio)
    popular_order = np.lexsort((np.arange(n), -pop))

    regions = sorted(region_item["region"].dropna().astype(str).unique().tolist())
    space = np.zeros((len(regions), n), dtype=np.float64)
    region_order: list[np.ndarray] = []
    for r, region in enumerate(regions):
        part = region_item[(region_item["region"] == region) & region_item["item_id"].isin(pos.index)]
        idx = pos[part["item_id"].astype(str)].to_numpy()
        raw = np.zeros(n, dtype=np.float64)
        raw[idx] = pop[idx] * part["lift"].to_numpy(dtype=np.float64)
        space[r] = log_scaled(raw)
        # Items sold in the region, most popular there first (ties: market, then item id).
        sold = np.zeros(n, dtype=bool)
        sold[idx] = True
        order = np.lexsort((np.arange(n), -pop, -raw))
        region_order.append(order[sold[order]][:max_region_candidates])

    strength = np.zeros((len(category_list), len(category_list)), dtype=np.float64)
    if causal is not None:
        for row in causal.itertuples(index=False):
            c, e = cat_code.get(row.cause_category), cat_code.get(row.effect_category)
            if c is not None and e is not None:
                strength[c, e] = max(strength[c, e], float(row.strength))

    cooc_matrix = None
    if cooc is not None:
        known = cooc[cooc["item_id"].isin(pos.index) & cooc["other_id"].isin(pos.index)]
        cooc_matrix = sp.csr_matrix(
            (
                known["similarity"].to_numpy(dtype=np.float64),
                (pos[known["item_id"].astype(str)].to_numpy(), pos[known["other_id"].astype(str)].to_numpy()),
            ),
            shape=(n, n),
        )

    return Catalog(
        item_ids=item_ids,
        embeddings=vectors,
        category_codes=codes,
        categories=category_list,
        time_score=log_scaled(pop),
        reach_score=log_scaled(buyers),
        rebuy_rate=rebuy,
        trending=trending,
        regions=regions,
        space_score=space,
        popular_order=popular_order,
        region_order=region_order,
        causal=strength,
        cooc=cooc_matrix,
    )
