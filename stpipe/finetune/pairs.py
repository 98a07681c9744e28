"""Training pairs for the encoder, mined from purchases: pure DataFrame transforms.

A pair is two different items a customer's behaviour ties together:

* ``order``: bought in one order;
* ``user_day``: bought by one user on one local day (several orders a day count as one basket);
* ``next``: an item and an item of the user's next purchase moment (the next later ``ts``)
  when it comes within ``next_within_days``; a repurchase of the same item is no pair;
* ``lift``: each item with its ``lift_neighbours`` partners of highest lift among the items it
  shares ``lift_min_baskets`` or more orders with (lift = n_ab x N / (n_a x n_b) over the N orders
  before the validation window): the clean co-purchase signal, one pair per strong tie rather than
  every pair of a large basket. Training pairs only; the validation pairs then come from the other
  kinds chosen, or from ``order`` when ``lift`` is the only one.

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


def lift_pairs(lines: DataFrame, *, neighbours: int, min_baskets: int) -> DataFrame:
    """(item_a, item_b, t, kind='lift'): per item, its ``neighbours`` partners of highest lift
    (ties: lower item id) among those sharing ``min_baskets`` or more orders of ``lines``, as
    unordered pairs, dated by their last shared order."""
    orders = lines.groupBy("source", "order_id", "item_id").agg(F.max("t").alias("t"))
    shared = (
        basket_pairs(orders, keys=["source", "order_id"], kind="lift")  # one row per shared order
        .groupBy("item_a", "item_b")
        .agg(F.count(F.lit(1)).alias("n_ab"), F.max("t").alias("t"))
        .where(F.col("n_ab") >= F.lit(int(min_baskets)))
    )
    counts = orders.groupBy("item_id").agg(F.count(F.lit(1)).alias("n"))
    total = orders.select("source", "order_id").distinct().agg(F.count(F.lit(1)).alias("n_orders"))
    scored = (
        shared.join(counts.select(F.col("item_id").alias("item_a"), F.col("n").alias("n_a")), "item_a")
        .join(counts.select(F.col("item_id").alias("item_b"), F.col("n").alias("n_b")), "item_b")
        .crossJoin(total)
        .withColumn("lift", F.col("n_ab") * F.col("n_orders") / (F.col("n_a") * F.col("n_b")))
    )
    def direction(item: str, other: str) -> DataFrame:
        return scored.select(F.col(item).alias("item"), F.col(other).alias("other"), "lift", "t")

    directed = direction("item_a", "item_b").unionByName(direction("item_b", "item_a"))
    rank = Window.partitionBy("item").orderBy(F.desc("lift"), F.asc("other"))
    top = directed.withColumn("_r", F.row_number().over(rank)).where(F.col("_r") <= int(neighbours))
    return (
        top.select(F.least("item", "other").alias("item_a"), F.greatest("item", "other").alias("item_b"), "t")
        .groupBy("item_a", "item_b").agg(F.max("t").alias("t"))
        .withColumn("kind", F.lit("lift"))
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
    lift_neighbours: int = 5,
    lift_min_baskets: int = 5,
) -> DataFrame:
    """(split, item_a, item_b, kind): sampled training and validation pairs as of ``as_of``."""
    if validation_days < 1:
        raise ConfigError(f"model.finetune.validation_days: expected 1 or more, got {validation_days}")
    if not kinds:
        raise ConfigError("model.finetune.kinds: no pair kind chosen")
    lines = lines_before(orders, as_of=as_of, timezone=timezone)
    boundary = cutoff_epoch(as_of - dt.timedelta(days=int(validation_days)), timezone)

    def dated(chosen: Sequence[str]) -> DataFrame:
        parts = []
        if "order" in chosen:
            parts.append(basket_pairs(lines, keys=["source", "order_id"], kind="order"))
        if "user_day" in chosen:
            parts.append(basket_pairs(lines, keys=["source", "user_id", "day"], kind="user_day"))
        if "next" in chosen:
            parts.append(next_pairs(lines, within_days=next_within_days))
        pairs = parts[0]
        for part in parts[1:]:
            pairs = pairs.unionByName(part)
        return pairs

    basket_kinds = [k for k in kinds if k != "lift"]
    basket = dated(basket_kinds or ["order"])  # validation pairs always; training unless lift only
    train_pairs = basket.where(F.col("t") < F.lit(boundary)) if basket_kinds else None
    if "lift" in kinds:  # lift is measured on the orders before the validation window only
        lifted = lift_pairs(lines.where(F.col("t") < F.lit(boundary)), neighbours=lift_neighbours,
                            min_baskets=lift_min_baskets)
        train_pairs = lifted if train_pairs is None else train_pairs.unionByName(lifted)
    train = sample_pairs(train_pairs, cap=max_pairs, seed=seed)
    valid = sample_pairs(
        basket.where(F.col("t") >= F.lit(boundary)),
        cap=max_validation_pairs, seed=seed,
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
