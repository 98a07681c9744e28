"""The recommender's learned item x item model: EASE weights from the purchase history.

The "bought together" component scores a candidate by the user's history items times an item x
item matrix (:func:`udfs.candidates.cooc_scores`). With ``recommend.item_model: ease`` (the
default) that matrix is EASE's (Steck 2019, :mod:`udfs.ease`): a ridge regression of each item's
buyers on every other item's, learned from who bought what before the as-of date, which corrects
for popular items that plain co-occurrence over-counts. ``jaccard`` keeps the weighted Jaccard
co-occurrence of :func:`stpipe.recommend.signals.item_cooccurrence`.

The Gram matrix (distinct buyers of each item pair) is computed in Spark; the inverse of the
items x items matrix happens on the driver, so a catalogue above ``ease_max_items`` falls back to
Jaccard with a warning. λ scales with the data: ``ease_l2_scale`` x the mean number of buyers per
item, so a shop with ten times the buyers gets ten times the regularisation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stpipe.recommend import signals
from stpipe.schema import require_columns
from udfs.ease import ease_memory_bytes, ease_weights, gram_triples

log = logging.getLogger("stpipe.recommend")

# weights ranked per block of this many rows (bounds the ranking's memory beside the weights)
ROW_BLOCK = 1024


def gram_matrix(
    lines: DataFrame, items: Sequence[str], users: Sequence[str] = ("source", "user_id")
) -> np.ndarray:
    """``XᵀX`` of the binary user x ``items`` matrix, rows and columns in ``items`` order: the
    number of distinct users (``users`` columns) who bought both items, diagonal included.

    Counted in Spark: the users are partitioned, each task multiplies its users' sparse rows
    (:func:`udfs.ease.gram_triples`, one half of the symmetric matrix) and the tasks' counts
    are summed per item pair; items not in ``items`` and lines without a user are ignored. (A
    self-join of the bought items on the user gave the same counts through one row per user
    and item pair: 6.4 million on Online Retail H1 before 2011-06-01, where the tasks now send
    2.8 million partial counts of 2.0 million pairs.)"""
    require_columns(lines, [*users, "item_id"], where="item model input")
    spark = lines.sparkSession
    n_items, keys = len(items), list(users)
    index = spark.createDataFrame([(str(i), n) for n, i in enumerate(items)], "item_id string, idx int")
    bought = (
        lines.select(*keys, "item_id").dropna(subset=keys).distinct()
        .join(F.broadcast(index), "item_id")
        .select(*keys, "idx")
    )

    def count(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = list(frames)  # a task's users whole: their rows may span Arrow batches
        if frames:
            yield from gram_triples(pd.concat(frames, ignore_index=True), keys, n_items)

    pairs = (
        bought.repartition(spark.sparkContext.defaultParallelism, *keys)
        .mapInPandas(count, "i int, j int, n long")
        .groupBy("i", "j").agg(F.sum("n").alias("n"))
        .toPandas()
    )
    gram = np.zeros((n_items, n_items))
    i, j, n = pairs.i.to_numpy(int), pairs.j.to_numpy(int), pairs.n.to_numpy(float)
    gram[i, j] = n
    gram[j, i] = n
    return gram


def ease_neighbours(
    gram: np.ndarray, items: Sequence[str], *, l2_scale: float, neighbours: int
) -> pd.DataFrame:
    """EASE weights as sparse rows: per history item, its ``neighbours`` largest positive weights.

    ``gram`` is :func:`gram_matrix` of ``items``. Returns (item_id, other_id, similarity) in the
    layout of :data:`stpipe.recommend.signals.COOCCURRENCE`: row ``item_id`` is the item a user
    bought, ``other_id`` the item it points at (ties: the earlier item of ``items``).
    """
    items = np.asarray(items, dtype=object)
    if len(items) == 0:
        return pd.DataFrame({"item_id": [], "other_id": [], "similarity": []})
    l2 = float(l2_scale) * float(np.diag(gram).mean())
    weights = ease_weights(gram, max(l2, 1e-9))
    keep = min(int(neighbours), len(items) - 1)
    out_rows, out_cols, out_vals = np.array([], int), np.array([], int), np.array([])
    if keep > 0:
        parts = [top_positive(weights[start:start + ROW_BLOCK], keep, first_row=start)
                 for start in range(0, len(items), ROW_BLOCK)]
        out_rows, out_cols, out_vals = (np.concatenate(p) for p in zip(*parts, strict=True))
    log.info("ease item model: %d items, l2 %.1f, %d weights kept", len(items), l2, len(out_vals))
    return pd.DataFrame(
        {"item_id": items[out_rows], "other_id": items[out_cols], "similarity": out_vals}
    )


def top_positive(rows: np.ndarray, keep: int, *, first_row: int = 0) -> tuple[np.ndarray, ...]:
    """(row, column, weight) of each row's ``keep`` largest weights that are positive, rounded
    to 12 digits first so that equal weights tie by column and not by float noise: the lower
    column first, as a stable sort of the whole row would. Rows in order, each best first;
    ``first_row`` is added to the row numbers. Linear in the row length (a partition, not a
    sort)."""
    rounded = np.round(rows, 12)
    # the keep-th largest value of each row: every larger one is kept, and of the values equal
    # to it the lowest columns, as many as there are places left
    edge = -np.partition(-rounded, keep - 1, axis=1)[:, keep - 1:keep]
    above = rounded > edge
    tied = rounded == edge
    places = keep - above.sum(axis=1, keepdims=True)
    chosen = (above | (tied & (np.cumsum(tied, axis=1) <= places))) & (rounded > 0)
    r, c = np.nonzero(chosen)
    v = rounded[r, c]
    order = np.lexsort((c, -v, r))
    return r[order] + first_row, c[order], v[order]


def ease_fits(n_items: int, max_items: int) -> bool:
    """Whether the driver inverts an ``n_items`` catalogue (else the caller falls back)."""
    if n_items <= max_items:
        return True
    log.warning(
        "recommend.item_model ease: %d items exceed recommend.ease_max_items (%d, about %.1f GB "
        "on the driver); using the jaccard co-occurrence instead",
        n_items, max_items, ease_memory_bytes(n_items) / 1e9,
    )
    return False


def item_neighbours(
    lines: DataFrame,
    *,
    model: str,
    half_life_days: float,
    cooc_neighbours: int,
    l2_scale: float,
    ease_neighbours_kept: int,
    max_items: int,
) -> pd.DataFrame:
    """The sparse item x item rows of the "bought together" component, by ``model``.

    ``lines`` are the order lines before the as-of date (:func:`signals.history_before`).
    """
    if model == "ease":
        items = sorted(r.item_id for r in lines.select("item_id").distinct().collect())
        if ease_fits(len(items), max_items):
            return ease_neighbours(
                gram_matrix(lines, items), items, l2_scale=l2_scale, neighbours=ease_neighbours_kept
            )
    return signals.item_cooccurrence(
        lines, half_life_days=half_life_days, neighbours=cooc_neighbours
    ).toPandas()
