"""Training pairs for the encoder, mined from purchases: pure DataFrame transforms.

A pair is two different items a customer's behaviour ties together:

* ``order``: bought in one order;
* ``user_day``: bought by one user on one local day (several orders a day count as one basket);
* ``next``: an item and an item of the user's next purchase moment (the next later ``ts``)
  when it comes within ``next_within_days``; a repurchase of the same item is no pair.

Only order lines with ``ts`` before the as-of cutoff (``cutoff_epoch``) are read. A pair is dated
by its later line; pairs dated in the last ``validation_days`` before the as-of date are the
validation pairs, the earlier ones the training pairs, so training never sees the validation
window. Pairs are unordered (``item_a < item_b``), distinct within a split, and sampled
deterministically: the ``cap`` pairs of lowest ``xxhash64(item_a, item_b, seed)`` are kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from stpipe.catalogue import ORDERS_CLEAN
from stpipe.errors import ConfigError
from stpipe.features.common import cutoff_epoch, local_time
from stpipe.schema import require_columns

PAIR_COLUMNS = ["split", "item_a", "item_b", "kind"]
_LINE_COLUMNS = ["source", "user_id", "order_id", "item_id", "ts"]


def lines_before(orders: DataFrame, *, as_of: dt.date, timezone: str) -> DataFrame:
    """(source, user_id, order_id, item_id, t, day): distinct lines with ts before the cutoff;
    ``t`` in epoch seconds, ``day`` the local date."""
    require_columns(orders, _LINE_COLUMNS, where=ORDERS_CLEAN.name)
    cut = cutoff_epoch(as_of, timezone)
    t = F.col("ts").cast("long")
    return (
        orders.where(t < F.lit(cut))
        .select(
            "source", "user_id", "order_id", "item_id", t.alias("t"),
            F.to_date(local_time("ts", timezone)).alias("day"),
        )
        .distinct()
    )


def basket_pairs(lines: DataFrame, *, keys: Sequence[str], kind: str) -> DataFrame:
    """(item_a, item_b, t, kind): two different items sharing the ``keys``, dated by the later."""
    a = lines.select(*keys, F.col("item_id").alias("item_a"), F.col("t").alias("t_a"))
    b = lines.select(*keys, F.col("item_id").alias("item_b"), F.col("t").alias("t_b"))
    return (
        a.join(b, list(keys))
        .where(F.col("item_a") < F.col("item_b"))
        .select("item_a", "item_b", F.greatest("t_a", "t_b").alias("t"), F.lit(kind).alias("kind"))
    )


def next_pairs(lines: DataFrame, *, within_days: int) -> DataFrame:
    """(item_a, item_b, t, kind='next'): items of a user's consecutive purchase moments within
    ``within_days``, dated by the later moment, as unordered pairs of different items."""
    moments = lines.select("source", "user_id", "t").distinct()
    user = Window.partitionBy("source", "user_id").orderBy("t")
    steps = moments.withColumn("t_next", F.lead("t").over(user)).where(
        F.col("t_next").isNotNull()
        & (F.col("t_next") - F.col("t") <= F.lit(int(within_days) * 86_400))
    )
    here = lines.select("source", "user_id", "t", F.col("item_id").alias("x"))
    later = lines.select(
        "source", "user_id", F.col("t").alias("t_next"), F.col("item_id").alias("y")
    )
    joined = steps.join(here, ["source", "user_id", "t"]).join(later, ["source", "user_id", "t_next"])
    return joined.where(F.col("x") != F.col("y")).select(
        F.least("x", "y").alias("item_a"), F.greatest("x", "y").alias("item_b"),
        F.col("t_next").alias("t"), F.lit("next").alias("kind"),
    )


def sample_pairs(pairs: DataFrame, *, cap: int, seed: int) -> DataFrame:
    """The ``cap`` distinct (item_a, item_b) of lowest hash(item_a, item_b, seed), one kind each
    (the first by name), in hash order: the same pairs for the same data and seed."""
    distinct = pairs.groupBy("item_a", "item_b").agg(F.min("kind").alias("kind"))
    score = F.xxhash64("item_a", "item_b", F.lit(int(seed)))
    return (
        distinct.withColumn("h", score)
        .orderBy("h", "item_a", "item_b")
        .limit(int(cap))
        .drop("h")
    )


def mine_pairs(
    orders: DataFrame,
    *,
    as_of: dt.date,
    timezone: str,
    validation_days: int,
    next_within_days: int,
    kinds: Sequence[str],
    max_pairs: int,
    max_validation_pairs: int,
    seed: int,
) -> DataFrame:
    """(split, item_a, item_b, kind): sampled training and validation pairs as of ``as_of``."""
    if validation_days < 1:
        raise ConfigError(f"model.finetune.validation_days: expected 1 or more, got {validation_days}")
    lines = lines_before(orders, as_of=as_of, timezone=timezone)
    parts = []
    if "order" in kinds:
        parts.append(basket_pairs(lines, keys=["source", "order_id"], kind="order"))
    if "user_day" in kinds:
        parts.append(basket_pairs(lines, keys=["source", "user_id", "day"], kind="user_day"))
    if "next" in kinds:
        parts.append(next_pairs(lines, within_days=next_within_days))
    if not parts:
        raise ConfigError("model.finetune.kinds: no pair kind chosen")
    pairs = parts[0]
    for part in parts[1:]:
        pairs = pairs.unionByName(part)
    boundary = cutoff_epoch(as_of - dt.timedelta(days=int(validation_days)), timezone)
    train = sample_pairs(pairs.where(F.col("t") < F.lit(boundary)), cap=max_pairs, seed=seed)
    valid = sample_pairs(
        pairs.where(F.col("t") >= F.lit(boundary)), cap=max_validation_pairs, seed=seed
    )
    return train.withColumn("split", F.lit("train")).unionByName(
        valid.withColumn("split", F.lit("validation"))
    ).select(*PAIR_COLUMNS)


def orders_fingerprint(orders: DataFrame, *, as_of: dt.date, timezone: str) -> str:
    """Digest of the order lines before ``as_of`` (count and sum of per-line hashes): it changes
    when history a training saw is rewritten (a re-ingest, an erasure), not when days are added."""
    require_columns(orders, _LINE_COLUMNS, where=ORDERS_CLEAN.name)
    cut = cutoff_epoch(as_of, timezone)
    line = F.xxhash64("source", "order_id", "user_id", "item_id", F.col("ts").cast("long"))
    row = (
        orders.where(F.col("ts").cast("long") < F.lit(cut))
        # sum of hashes as decimal: a long sum would overflow
        .agg(F.count(F.lit(1)).alias("n"), F.sum(line.cast("decimal(38,0)")).alias("s"))
        .first()
    )
    return f"{row['n']}:{row['s'] or 0}"
