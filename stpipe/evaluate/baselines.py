"""Baseline recommenders for offline evaluation, all deterministic (ties broken by item id).

A model is a function ``(history, ctx) -> DataFrame(user_id, rank, item_id)``: ``history`` holds
the interactions (user_id, item_id, day, region) strictly before ``ctx.cutoff``; the result holds
at most ``ctx.n`` items for each user of ``ctx.users``, without the user's history items when
``ctx.exclude_seen``. Aggregations run in Spark; the item-item and factor scoring (``cooc``,
``als``) runs on the driver with scipy/numpy over the history, which is bounded by the evaluation
window (this is an offline job, not the nightly path).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe.evaluate.context import AlsGrid, EvalContext, Model, warn_at_edge  # noqa: F401  (callers import them from here)

log = logging.getLogger("stpipe.evaluate")

RECS = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
    ]
)


def decay_weight(cutoff: dt.date, decay_days: float) -> F.Column:
    """exp(-age_days / decay_days), age counted from the interaction day to the cutoff."""
    return F.exp(-F.datediff(F.lit(cutoff), F.col("day")).cast("double") / F.lit(decay_days))


def to_spark(spark: SparkSession, recs: pd.DataFrame) -> DataFrame:
    """pandas (user_id, rank, item_id) -> a Spark frame with the RECS schema."""
    rows = recs[["user_id", "rank", "item_id"]].astype({"user_id": str, "rank": int, "item_id": str})
    return spark.createDataFrame(list(rows.itertuples(index=False, name=None)), RECS)


def lists_from_ranking(
    ranking: Sequence[Any],
    users: Sequence[Any],
    *,
    n: int,
    seen: dict[Any, set[Any]] | None = None,
) -> pd.DataFrame:
    """The same ranked list for every user, skipping each user's ``seen`` items, cut to ``n``."""
    rows = []
    for user in users:
        skip = seen.get(user, set()) if seen else set()
        rank = 0
        for item in ranking:
            if item in skip:
                continue
            rank += 1
            rows.append((user, rank, item))
            if rank == n:
                break
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id"])


def global_ranking(history: DataFrame, *, cutoff: dt.date, window_days: int) -> list[Any]:
    """Items by distinct buyers in the last ``window_days`` before the cutoff, ties by item id."""
    start = cutoff - dt.timedelta(days=window_days)
    counts = (
        history.where(F.col("day") >= F.lit(start))
        .groupBy("item_id")
        .agg(F.countDistinct("user_id").alias("buyers"))
        .orderBy(F.col("buyers").desc(), F.col("item_id"))
    )
    return [r["item_id"] for r in counts.collect()]


def pop_global(history: DataFrame, ctx: EvalContext) -> DataFrame:
    ranking = ctx.cache.get("pop_global_ranking")
    if ranking is None:
        ranking = global_ranking(history, cutoff=ctx.cutoff, window_days=ctx.pop_window_days)
        ctx.cache["pop_global_ranking"] = ranking
    users = list(ctx.users.user_id)
    recs = lists_from_ranking(ranking, users, n=ctx.n, seen=ctx.seen if ctx.exclude_seen else None)
    return to_spark(ctx.spark, recs)


def pop_region(history: DataFrame, ctx: EvalContext) -> DataFrame:
    """Per region, purchases weighted by exp(-age_days / decay_days)."""
    scored = (
        history.withColumn("w", decay_weight(ctx.cutoff, ctx.decay_days))
        .groupBy("region", "item_id")
        .agg(F.sum("w").alias("score"))
        .toPandas()
        .sort_values(["region", "score", "item_id"], ascending=[True, False, True])
    )
    by_region = {region: list(g.item_id) for region, g in scored.groupby("region", sort=True)}
    parts = []
    for region, group in ctx.users.groupby("region", sort=True, dropna=False):
        ranking = by_region.get(region, [])
        parts.append(
            lists_from_ranking(
                ranking, list(group.user_id), n=ctx.n, seen=ctx.seen if ctx.exclude_seen else None
            )
        )
    recs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["user_id", "rank", "item_id"])
    return to_spark(ctx.spark, recs)


def own_history(history: DataFrame, ctx: EvalContext) -> DataFrame:
    """The user's own items, frequency weighted by exp(-age_days / decay_days)."""
    if ctx.exclude_seen:  # nothing left by construction
        return to_spark(ctx.spark, pd.DataFrame(columns=["user_id", "rank", "item_id"]))
    scored = (
        history.withColumn("w", decay_weight(ctx.cutoff, ctx.decay_days))
        .groupBy("user_id", "item_id")
        .agg(F.sum("w").alias("score"))
        .join(ctx.spark.createDataFrame(ctx.users[["user_id"]].astype(str)), "user_id")
        .toPandas()
    )
    return to_spark(ctx.spark, rank_scores(scored, ctx.n))


def rank_scores(scored: pd.DataFrame, n: int) -> pd.DataFrame:
    """(user_id, item_id, score) -> top ``n`` per user by score desc, ties by item id."""
    ordered = scored.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    ordered = ordered.assign(rank=ordered.groupby("user_id").cumcount() + 1)
    return ordered[ordered["rank"] <= n][["user_id", "rank", "item_id"]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# matrix models (driver side)


@dataclass
class Matrix:
    """Decayed user-item affinity over the history, rows and columns in sorted id order."""

    users: np.ndarray
    items: np.ndarray
    affinity: sp.csr_matrix  # sum of exp(-age/decay) per (user, item)
    counts: sp.csr_matrix  # interaction days per (user, item)


def affinity_matrix(history: DataFrame, *, cutoff: dt.date, decay_days: float) -> Matrix:
    pdf = (
        history.withColumn("w", decay_weight(cutoff, decay_days))
        .groupBy("user_id", "item_id")
        .agg(F.sum("w").alias("w"), F.count(F.lit(1)).alias("c"))
        .toPandas()
    )
    users = np.array(sorted(pdf.user_id.unique()), dtype=object)
    items = np.array(sorted(pdf.item_id.unique()), dtype=object)
    rows = np.searchsorted(users, pdf.user_id.to_numpy(dtype=object))
    cols = np.searchsorted(items, pdf.item_id.to_numpy(dtype=object))
    shape = (len(users), len(items))
    affinity = sp.csr_matrix((pdf.w.to_numpy(float), (rows, cols)), shape=shape)
    counts = sp.csr_matrix((pdf.c.to_numpy(float), (rows, cols)), shape=shape)
    return Matrix(users, items, affinity, counts)


def matrix_before(history: DataFrame, ctx: EvalContext, day: dt.date) -> Matrix:
    """:func:`affinity_matrix` of the interactions before ``day`` (``day`` <= the cutoff), computed
    once per evaluation (``ctx.shared``)."""
    key = ("matrix", day, ctx.decay_days)
    if key not in ctx.shared:
        before = history.where(F.col("day") < F.lit(day))
        ctx.shared[key] = affinity_matrix(before, cutoff=day, decay_days=ctx.decay_days)
    return ctx.shared[key]


def top_n_from_scores(
    scores: np.ndarray,
    *,
    n: int,
    mask: np.ndarray | None = None,
    min_score: float = 0.0,
) -> list[np.ndarray]:
    """Per row, column indices of the ``n`` best scores > ``min_score`` (ties: lower index first).

    Columns are items in sorted id order, so a stable sort on the negated score breaks ties by id.
    """
    scores = np.array(scores, dtype=float, copy=True)
    if mask is not None:
        scores[mask] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    kept = np.take_along_axis(scores, order, axis=1) > min_score
    return [row[keep] for row, keep in zip(order, kept, strict=True)]


def rank_users(
    matrix: Matrix,
    users: Sequence[Any],
    score_rows: Callable[[np.ndarray], np.ndarray],
    *,
    n: int,
    exclude_seen: bool,
    min_score: float,
    chunk: int = 1024,
) -> pd.DataFrame:
    index = {u: i for i, u in enumerate(matrix.users)}
    known = [u for u in users if u in index]
    out = []
    for start in range(0, len(known), chunk):
        batch = known[start : start + chunk]
        rows = np.array([index[u] for u in batch])
        scores = score_rows(rows)
        mask = matrix.counts[rows].toarray() > 0 if exclude_seen else None
        for user, cols in zip(batch, top_n_from_scores(scores, n=n, mask=mask, min_score=min_score), strict=True):
            out.extend((user, r + 1, matrix.items[c]) for r, c in enumerate(cols))
    return pd.DataFrame(out, columns=["user_id", "rank", "item_id"])


def jaccard_similarity(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Item-item Jaccard similarity of the sets of users who bought each item (SAR's default)."""
    binary = (counts > 0).astype(np.float64)
    cooc = (binary.T @ binary).tocoo()
    diag = np.asarray(binary.sum(axis=0)).ravel()
    union = diag[cooc.row] + diag[cooc.col] - cooc.data
    return sp.csr_matrix((cooc.data / union, (cooc.row, cooc.col)), shape=cooc.shape)


def cooc(history: DataFrame, ctx: EvalContext) -> DataFrame:
    """SAR-style: decayed user affinity times item-item Jaccard co-occurrence similarity."""
    matrix = matrix_before(history, ctx, ctx.cutoff)
    similarity = ctx.cache.get("jaccard")
    if similarity is None:
        similarity = jaccard_similarity(matrix.counts)
        ctx.cache["jaccard"] = similarity

    def score_rows(rows: np.ndarray) -> np.ndarray:
        return (matrix.affinity[rows] @ similarity).toarray()

    recs = rank_users(
        matrix, list(ctx.users.user_id), score_rows, n=ctx.n, exclude_seen=ctx.exclude_seen, min_score=0.0
    )
    return to_spark(ctx.spark, recs)


# ---------------------------------------------------------------------------------------------
# ALS


def _fit_als(
    spark: SparkSession, matrix: Matrix, *, rank: int, reg: float, alpha: float, max_iter: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Implicit-feedback ALS on interaction-day counts; returns (user factors, item factors)."""
    from pyspark.ml.recommendation import ALS

    coo = matrix.counts.tocoo()
    ratings = spark.createDataFrame(
        list(zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist(), strict=True)),
        "u int, i int, r float",
    ).repartition(2, "u")
    als = ALS(
        rank=rank, regParam=reg, alpha=alpha, maxIter=max_iter, seed=seed, implicitPrefs=True,
        userCol="u", itemCol="i", ratingCol="r", numUserBlocks=2, numItemBlocks=2,
    )
    model = als.fit(ratings)
    user_f = np.zeros((matrix.counts.shape[0], rank))
    item_f = np.zeros((matrix.counts.shape[1], rank))
    for row in model.userFactors.collect():
        user_f[row["id"]] = row["features"]
    for row in model.itemFactors.collect():
        item_f[row["id"]] = row["features"]
    return user_f, item_f


def _fit_als_before(
    history: DataFrame, ctx: EvalContext, day: dt.date, *, rank: int, reg: float, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """ALS on the interactions before ``day``, fitted once per evaluation (``ctx.shared``): the
    refit at one cutoff is a grid point of the next cutoff's tuning when they are a horizon apart."""
    key = ("als", day, rank, reg, alpha, ctx.als.max_iter, ctx.als.seed)
    if key not in ctx.shared:
        ctx.shared[key] = _fit_als(
            ctx.spark, matrix_before(history, ctx, day), rank=rank, reg=reg, alpha=alpha,
            max_iter=ctx.als.max_iter, seed=ctx.als.seed,
        )
    return ctx.shared[key]


def tune_als(history: DataFrame, ctx: EvalContext) -> tuple[int, float, float]:
    """Pick (rank, regParam, alpha) by NDCG@tune_k on the window just before the cutoff."""
    from stpipe.evaluate.metrics import ndcg_at

    val_start = ctx.cutoff - dt.timedelta(days=ctx.horizon_days)
    truth_pdf = (
        history.where(F.col("day") >= F.lit(val_start)).select("user_id", "item_id").distinct().toPandas()
    )
    matrix = matrix_before(history, ctx, val_start)
    truth = {u: set(g.item_id) for u, g in truth_pdf.groupby("user_id")}
    users = [u for u in matrix.users if u in truth]
    if not users:
        log.warning("als: no validation users before %s; using the first grid point", val_start)
        return ctx.als.ranks[0], ctx.als.reg_params[0], ctx.als.alphas[0]
    index = {u: i for i, u in enumerate(matrix.users)}
    rows = np.array([index[u] for u in users])
    best: tuple[float, tuple[int, float, float]] | None = None
    for rank in ctx.als.ranks:
        for reg in ctx.als.reg_params:
            for alpha in ctx.als.alphas:
                user_f, item_f = _fit_als_before(history, ctx, val_start, rank=rank, reg=reg, alpha=alpha)
                tops = top_n_from_scores(user_f[rows] @ item_f.T, n=ctx.tune_k, min_score=-math.inf)
                score = float(
                    np.mean([ndcg_at(list(matrix.items[c]), truth[u], ctx.tune_k) for u, c in zip(users, tops, strict=True)])
                )
                log.info("als grid rank=%d reg=%g alpha=%g: ndcg@%d %.4f", rank, reg, alpha, ctx.tune_k, score)
                if best is None or score > best[0] + 1e-12:
                    best = (score, (rank, reg, alpha))
    assert best is not None
    return best[1]


def als(history: DataFrame, ctx: EvalContext) -> DataFrame:
    """Spark MLlib ALS (implicit), grid tuned on the window before the cutoff, refit on all history."""
    fitted = ctx.cache.get("als_factors")
    matrix = matrix_before(history, ctx, ctx.cutoff)
    if fitted is None:
        rank, reg, alpha = tune_als(history, ctx)
        log.info("als: chose rank=%d regParam=%g alpha=%g", rank, reg, alpha)
        for setting, grid, value in (("evaluate.als_ranks", ctx.als.ranks, rank),
                                     ("evaluate.als_reg_params", ctx.als.reg_params, reg),
                                     ("evaluate.als_alphas", ctx.als.alphas, alpha)):
            warn_at_edge(setting, grid, value)
        ctx.cache["als_params"] = {"rank": rank, "reg_param": reg, "alpha": alpha}
        fitted = _fit_als_before(history, ctx, ctx.cutoff, rank=rank, reg=reg, alpha=alpha)
        ctx.cache["als_factors"] = fitted
    user_f, item_f = fitted

    def score_rows(rows: np.ndarray) -> np.ndarray:
        return user_f[rows] @ item_f.T

    recs = rank_users(
        matrix, list(ctx.users.user_id), score_rows, n=ctx.n, exclude_seen=ctx.exclude_seen,
        min_score=-math.inf,
    )
    return to_spark(ctx.spark, recs)
