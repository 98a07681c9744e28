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


def build_catalog(
    embeddings: pd.DataFrame,
    categories: pd.DataFrame,
    item_pop: pd.DataFrame,
    region_pop: pd.DataFrame,
    causal: pd.DataFrame | None,
    cooc: pd.DataFrame | None = None,
    *,
    trend_ratio: float = 1.5,
    min_trend_lines: int = 2,
    max_region_candidates: int = 500,
) -> Catalog:
    """Align every per-item signal on the sorted item ids of ``embeddings``.

    embeddings: item_id, embedding; categories: item_id, category; item_pop: item_id, pop,
    n_7d, n_30d; region_pop: region, item_id, pop; causal: cause_category, effect_category,
    strength (or None); cooc: item_id, other_id, similarity (or None: no co-occurrence).
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

    pop_df = item_pop.set_index("item_id").reindex(item_ids)
    pop = pop_df["pop"].fillna(0.0).to_numpy(dtype=np.float64)
    n7 = pop_df["n_7d"].fillna(0).to_numpy(dtype=np.float64)
    n30 = pop_df["n_30d"].fillna(0).to_numpy(dtype=np.float64)
    trending = (n7 >= min_trend_lines) & (n7 / 7.0 >= trend_ratio * n30 / 30.0)
    popular_order = np.lexsort((np.arange(n), -pop))

    regions = sorted(region_pop["region"].dropna().astype(str).unique().tolist())
    space = np.zeros((len(regions), n), dtype=np.float64)
    region_order: list[np.ndarray] = []
    for r, region in enumerate(regions):
        part = region_pop[(region_pop["region"] == region) & region_pop["item_id"].isin(pos.index)]
        raw = np.zeros(n, dtype=np.float64)
        raw[pos[part["item_id"].astype(str)].to_numpy()] = part["pop"].to_numpy(dtype=np.float64)
        space[r] = log_scaled(raw)
        # Items sold in the region, most popular there first (ties: market, then item id).
        order = np.lexsort((np.arange(n), -pop, -raw))
        region_order.append(order[raw[order] > 0][:max_region_candidates])

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
        trending=trending,
        regions=regions,
        space_score=space,
        popular_order=popular_order,
        region_order=region_order,
        causal=strength,
        cooc=cooc_matrix,
    )
