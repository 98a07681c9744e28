"""The `ease` baseline: EASE (Steck 2019) on the binary user x item matrix of the history.

``X[u, i] = 1`` when user u bought item i on any day before the cutoff. The Gram matrix ``XᵀX``
(distinct buyers of each item pair) is computed in Spark and collected as a dense items x items
array; :func:`udfs.ease.ease_weights` inverts it on the driver, so catalogues above
``ctx.ease.max_items`` make the model unavailable. A user's scores are ``x_u B``.

Variant `novel`: the history items are masked and λ is chosen by NDCG@tune_k on the window of
``horizon_days`` before the cutoff (fit on the history before that window, truth = the window's
items the user had not bought before, as in the test). Variant `all`: the score is
``scaled(x_u B) + w * scaled(h_u)`` with ``h_u`` the user's own decayed history
(``exp(-age/decay_days)`` summed per item) and ``scaled`` dividing each user's row by its maximum;
λ and w are chosen together on the same window (truth = all the window's items). The chosen
values are refit on the whole history. All choices are cached per split in ``ctx.cache``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stpipe.evaluate.baselines import Matrix, matrix_before, rank_users, to_spark
from stpipe.evaluate.context import EvalContext, warn_at_edge
from stpipe.evaluate.metrics import ndcg_at
from stpipe.evaluate.runner import ModelUnavailable
from stpipe.recommend.item_model import gram_matrix
from udfs.ease import ease_weights

log = logging.getLogger("stpipe.evaluate")


def gram_before(history: DataFrame, ctx: EvalContext, day: dt.date, items: Sequence[Any]) -> np.ndarray:
    """:func:`gram_matrix` of the interactions before ``day``. Only the last one is kept in
    ``ctx.shared`` (it is items² floats): with cutoffs a horizon apart, one cutoff's Gram is the
    next cutoff's validation Gram."""
    last = ctx.shared.get("ease_gram")
    if last is not None and last[0] == day and list(last[1]) == list(items):
        return last[2]
    gram = gram_matrix(history.where(F.col("day") < F.lit(day)), items, users=("user_id",))
    ctx.shared["ease_gram"] = (day, list(items), gram)
    return gram


def scale_rows(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its maximum where that maximum is > 0 (other rows as they are)."""
    top = scores.max(axis=1, keepdims=True) if scores.shape[1] else np.ones((scores.shape[0], 1))
    return np.divide(scores, top, out=scores.astype(float, copy=True), where=top > 0)


def blend(ease_scores: np.ndarray, own: np.ndarray, weight: float) -> np.ndarray:
    """Variant `all`: per-user scaled EASE scores plus ``weight`` x the scaled own history."""
    return scale_rows(ease_scores) + weight * scale_rows(own)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column indices of the ``k`` largest scores, best first (ties: lower index)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, order, axis=1)


@dataclass(frozen=True)
class EaseChoice:
    l2: float
    weight: float  # the own-history weight (variant `all`; 0 in `novel`)
    ndcg: float  # on the validation window


def _check_size(n_items: int, ctx: EvalContext) -> None:
    if n_items > ctx.ease.max_items:
        raise ModelUnavailable(
            f"{n_items} items in the history, above evaluate.ease_max_items={ctx.ease.max_items} "
            "(the items x items inverse runs on the driver)"
        )


def _mean_ndcg(tops: np.ndarray, items: np.ndarray, truths: list[set[Any]], k: int) -> float:
    return float(np.mean([ndcg_at(list(items[c]), t, k) for c, t in zip(tops, truths, strict=True)]))


def tune_ease(history: DataFrame, ctx: EvalContext) -> dict[str, EaseChoice]:
    """Per variant, the (λ, w) with the best NDCG@tune_k on the window before the cutoff
    (first grid point on ties)."""
    val_start = ctx.cutoff - dt.timedelta(days=ctx.horizon_days)
    matrix = matrix_before(history, ctx, val_start)
    grid = ctx.ease
    fallback = {"all": EaseChoice(grid.l2s[0], grid.history_weights[0], float("nan")),
                "novel": EaseChoice(grid.l2s[0], 0.0, float("nan"))}
    truth_pdf = history.where(F.col("day") >= F.lit(val_start)).select("user_id", "item_id").distinct().toPandas()
    truth = {u: set(g.item_id) for u, g in truth_pdf.groupby("user_id")}
    index = {u: i for i, u in enumerate(matrix.users)}
    users = [u for u in matrix.users if u in truth]
    if not users or not len(matrix.items):
        log.warning("ease: no validation users before %s; using the first grid point", val_start)
        return fallback
    _check_size(len(matrix.items), ctx)
    gram = gram_before(history, ctx, val_start, matrix.items)
    rows = np.array([index[u] for u in users])
    binary = (matrix.counts[rows] > 0).astype(float).toarray()
    own = matrix.affinity[rows].toarray()
    seen = binary > 0
    novel_truth = [truth[u] - set(matrix.items[seen[r]]) for r, u in enumerate(users)]
    novel_rows = np.array([r for r, t in enumerate(novel_truth) if t], dtype=int)
    k = ctx.tune_k
    best: dict[str, EaseChoice] = {}
    for l2 in grid.l2s:
        scores = binary @ ease_weights(gram, l2)
        for weight in grid.history_weights:
            tops = top_k(blend(scores, own, weight), k)
            score = _mean_ndcg(tops, matrix.items, [truth[u] for u in users], k)
            log.info("ease grid all l2=%g w=%g: ndcg@%d %.4f", l2, weight, k, score)
            if "all" not in best or score > best["all"].ndcg + 1e-12:
                best["all"] = EaseChoice(l2, weight, score)
        if len(novel_rows):
            masked = np.where(seen[novel_rows], -np.inf, scores[novel_rows])
            score = _mean_ndcg(top_k(masked, k), matrix.items, [novel_truth[r] for r in novel_rows], k)
            log.info("ease grid novel l2=%g: ndcg@%d %.4f", l2, k, score)
            if "novel" not in best or score > best["novel"].ndcg + 1e-12:
                best["novel"] = EaseChoice(l2, 0.0, score)
    return {**fallback, **best}


def _fitted(history: DataFrame, ctx: EvalContext) -> tuple[Matrix, dict[str, EaseChoice], dict[float, np.ndarray]]:
    matrix = matrix_before(history, ctx, ctx.cutoff)
    _check_size(len(matrix.items), ctx)
    if "ease_choice" not in ctx.cache:
        choice = tune_ease(history, ctx)
        log.info("ease: chose %s", choice)
        for variant, chosen in choice.items():
            if not np.isnan(chosen.ndcg):  # nan: no validation users, the first grid point
                warn_at_edge(f"evaluate.ease_l2s ({variant})", ctx.ease.l2s, chosen.l2)
        if not np.isnan(choice["all"].ndcg):
            warn_at_edge("evaluate.ease_history_weights", ctx.ease.history_weights, choice["all"].weight)
        ctx.cache["ease_choice"] = choice
        ctx.cache["ease_params"] = {v: {"l2": c.l2, "history_weight": c.weight} for v, c in choice.items()}
        ctx.cache["ease_gram"] = gram_before(history, ctx, ctx.cutoff, matrix.items)
        ctx.cache["ease_weights"] = {}
    weights: dict[float, np.ndarray] = ctx.cache["ease_weights"]
    return matrix, ctx.cache["ease_choice"], weights


def ease(history: DataFrame, ctx: EvalContext) -> DataFrame:
    """EASE, λ (and in `all` the own-history weight) tuned before the cutoff, refit on all history."""
    matrix, choice, weights = _fitted(history, ctx)
    chosen = choice["novel" if ctx.exclude_seen else "all"]
    if chosen.l2 not in weights:
        weights[chosen.l2] = ease_weights(ctx.cache["ease_gram"], chosen.l2)
    b = weights[chosen.l2]

    def score_rows(rows: np.ndarray) -> np.ndarray:
        scores = (matrix.counts[rows] > 0).astype(float) @ b
        if ctx.exclude_seen:
            return np.asarray(scores)
        return blend(np.asarray(scores), matrix.affinity[rows].toarray(), chosen.weight)

    recs = rank_users(
        matrix, list(ctx.users.user_id), score_rows, n=ctx.n, exclude_seen=ctx.exclude_seen,
        min_score=-np.inf,
    )
    return to_spark(ctx.spark, recs)
