"""`content_base` and `content_tuned`: the text model alone, with the base and the tuned encoder.

A user's score for an item is the item-to-item kernel of :func:`udfs.vectors.kernel_scores` over
their decayed history (the affinity the matrix baselines use, ``exp(-age / decay_days)`` per
interaction day), with the recommender's power (``recommend.bert_kernel_power``; 0: the cosine
with the user's mean vector). No popularity, no co-purchase: what the encoder alone knows. Items
without a vector score 0; lists shorter than K are filled like every model's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from stpipe.evaluate.baselines import EvalContext, Model, matrix_before, rank_users, to_spark
from udfs.vectors import kernel_scores, vectors_in_order

# () -> the encoder's item vectors (item_id, embedding); raises ModelUnavailable when it has none
Vectors = Callable[[], pd.DataFrame]


def aligned(vectors: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    """(items, d) float32 in the order of ``items``; zeros for an item without a vector."""
    return vectors_in_order(vectors, items.tolist())[0]


def content_model(name: str, vectors: Vectors, *, power: int) -> Model:
    """A model that ranks items by the text kernel of the user's history (see the module)."""

    def model(history: DataFrame, ctx: EvalContext) -> DataFrame:
        given = vectors()  # first: raises ModelUnavailable without that encoder
        matrix = matrix_before(history, ctx, ctx.cutoff)
        key = ("content", name, ctx.cutoff)
        if key not in ctx.cache:
            ctx.cache[key] = aligned(given, matrix.items)
        emb = ctx.cache[key]

        def score_rows(rows: np.ndarray) -> np.ndarray:
            weights = matrix.affinity[rows]
            if power > 0:
                return kernel_scores(weights, emb, power)
            users = np.asarray(weights @ emb, dtype=np.float64)
            norms = np.linalg.norm(users, axis=1, keepdims=True)
            users = np.divide(users, norms, out=np.zeros_like(users), where=norms > 0)
            return users @ emb.T.astype(np.float64)

        recs = rank_users(
            matrix, list(ctx.users.user_id), score_rows, n=ctx.n, exclude_seen=ctx.exclude_seen,
            min_score=0.0,
        )
        return to_spark(ctx.spark, recs)

    model.__name__ = name
    return model
