"""Transforms of the ``embed`` stage: ``item_embeddings`` and ``user_embeddings``.

User embedding: the exponentially decayed weighted mean of the embeddings of the items the
user bought, re-normalised. Each order line before the run date weighs 2^(-age/half-life),
so a purchase one half-life ago counts half as much as one today, a user's taste drifts with
them, and items bought often count more. A mean of unit vectors keeps the result in the same
space as items (cosine with an item = weighted mean of cosines, up to the norm), which a
learned pooling or an RNN over the sequence would not without training data and labels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stpipe.catalogue import ITEM_EMBEDDINGS, USER_EMBEDDINGS
from stpipe.recommend import signals
from stpipe.schema import require_columns, select_schema
from udfs.vectors import weighted_unit_sums


def item_embeddings(
    items: DataFrame,
    *,
    template: str,
    embed: Callable[[Column], Column],
    model: str,
    previous: DataFrame | None = None,
    rows_per_task: int | None = None,
) -> DataFrame:
    """Embed each item's text; vectors of ``previous`` are reused when text and model match.

    Each distinct text is embedded once (Olist titles, for example, are category names).
    ``rows_per_task``: spread the texts to embed over tasks (:func:`spread_over_tasks`; counts
    them, one job); None leaves them in the partitions their de-duplication made.
    """
    texts = signals.item_texts(items, template=template)
    reused = None
    if previous is not None:
        require_columns(previous, ["item_id", "text", "embedding", "model"], where=ITEM_EMBEDDINGS.name)
        reused = texts.join(
            previous.where(F.col("model") == model).select("item_id", "text", "embedding"),
            ["item_id", "text"],
        )
        texts = texts.join(reused.select("item_id"), "item_id", "left_anti")
    distinct = texts.select("text").distinct()
    if rows_per_task is not None:
        distinct = spread_over_tasks(distinct, rows_per_task)
    vectors = distinct.select("text", embed(F.col("text")).alias("embedding"))
    fresh = texts.join(vectors, "text")
    out = fresh if reused is None else fresh.unionByName(reused)
    return select_schema(out.withColumn("model", F.lit(model)), ITEM_EMBEDDINGS.schema)


def spread_over_tasks(texts: DataFrame, rows_per_task: int) -> DataFrame:
    """``texts`` in ceil(rows / ``rows_per_task``) partitions, at most one per core of the
    application, each sorted by text (the UDF's batches are the same from run to run).

    Without it, adaptive execution folds a catalogue's de-duplicated texts (a few megabytes
    even for a large one) into one partition, and a single task embeds them all on one core.
    """
    cores = texts.sparkSession.sparkContext.defaultParallelism
    tasks = max(1, min(cores, -(-texts.count() // rows_per_task)))
    return texts.repartition(tasks, "text").sortWithinPartitions("text")


def user_embeddings(
    orders: DataFrame,
    item_vectors: DataFrame,
    *,
    run_date: dt.date,
    half_life_days: float,
    timezone: str,
    model: str,
    history_days: int | None = None,
) -> DataFrame:
    """One row per (source, user) with history before ``run_date`` (its ``history_days``
    before it when given) and an embedded item."""
    lines = signals.history_before(orders, as_of=run_date, timezone=timezone, days=history_days)
    pairs = signals.user_item_weights(lines, half_life_days=half_life_days)
    joined = pairs.join(item_vectors.select("item_id", "embedding"), "item_id")

    pooled = (
        joined.select("source", "user_id", "item_id", "weight", "embedding")
        .repartition("source", "user_id")
        .sortWithinPartitions("source", "user_id", "item_id")  # fixed summation order per user
        .mapInPandas(
            pool_sorted, "source string, user_id string, embedding array<float>, n_items int"
        )
    )
    out = pooled.withColumn("run_date", F.lit(run_date)).withColumn("model", F.lit(model))
    return select_schema(out, USER_EMBEDDINGS.schema)


def pool_sorted(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Weighted mean embedding per user over batches sorted by (source, user_id, item_id).

    Vectorised over all users of a batch (one Python call per Arrow batch, not per user);
    a user whose rows go on into the next batch is carried over, so every user is pooled
    once, from all of their rows, in item order, the same sums as
    :func:`udfs.vectors.weighted_unit_sums`, the scorer's user vector.
    """
    carry: pd.DataFrame | None = None
    for batch in batches:
        if carry is not None:
            batch = pd.concat([carry, batch], ignore_index=True)
        if batch.empty:
            continue
        tail = ((batch["source"] == batch["source"].iloc[-1])
                & (batch["user_id"] == batch["user_id"].iloc[-1])).to_numpy()
        carry = batch[tail]
        done = batch[~tail]
        if len(done):
            yield _pool(done)
    if carry is not None and len(carry):
        yield _pool(carry)


def _pool(rows: pd.DataFrame) -> pd.DataFrame:
    users, sources = rows["user_id"].to_numpy(), rows["source"].to_numpy()
    new_user = (users[1:] != users[:-1]) | (sources[1:] != sources[:-1])
    starts = np.flatnonzero(np.r_[True, new_user])
    vectors = np.stack(rows["embedding"].to_numpy())
    unit = weighted_unit_sums(rows["weight"].to_numpy(), vectors, starts)
    counts = np.diff(np.r_[starts, len(users)])
    return pd.DataFrame(
        {"source": sources[starts], "user_id": users[starts], "embedding": list(unit), "n_items": counts.astype(np.int32)}
    )
