"""Spark transforms that turn order history into the recommender's inputs, as of a date.

Everything is computed from ``orders_clean`` lines with ``ts`` before the as-of date
(00:00 in the features time zone, :func:`stpipe.features.common.cutoff_epoch`: the one
definition of the cutoff), so the same code serves the nightly run (as of the run date),
fusion training (as of run_date - validation_days) and offline evaluation (as of a
cutoff), without leaking later orders. Users are keyed by ``(source, user_id)``; their home
region comes from ``user_space_features`` (:mod:`stpipe.features.space`).
"""

from __future__ import annotations

import datetime as dt
import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe.catalogue import ITEMS, USER_SPACE_FEATURES
from stpipe.errors import ConfigError
from stpipe.features.common import cutoff_epoch, local_time, prune_order_dates
from stpipe.schema import require_columns, select_schema

ORDER_COLUMNS = ["order_id", "source", "user_id", "item_id", "ts"]

USER_HISTORY = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("region", T.StringType(), True),
        T.StructField("is_cold_start", T.BooleanType(), False),
        T.StructField("hist_item_ids", T.ArrayType(T.StringType()), False),
        T.StructField("hist_weights", T.ArrayType(T.DoubleType()), False),
        # per history item, the distinct calendar days (features time zone) it was bought on
        T.StructField("hist_days", T.ArrayType(T.IntegerType()), False),
        # per history item, its lines decayed with the short half-life (the recent component)
        T.StructField("hist_recent", T.ArrayType(T.DoubleType()), False),
    ]
)


def cutoff_ts(as_of: dt.date, timezone: str) -> Column:
    """00:00 of ``as_of`` in ``timezone`` (:func:`cutoff_epoch`) as a timestamp column."""
    return F.lit(cutoff_epoch(as_of, timezone)).cast("timestamp")


def history_before(
    orders: DataFrame, *, as_of: dt.date, timezone: str, days: int | None = None
) -> DataFrame:
    """Order lines strictly before the as-of date, with ``age_days`` at that moment.

    ``days``: only the lines of the ``days`` local days before it (from 00:00 of
    ``as_of - days``; ``recommend.history_days``), so a platform with years of orders does not
    read all of them each night. Reads are pruned to the ``order_date`` partitions that can
    hold such lines (:func:`stpipe.features.common.prune_order_dates`).
    """
    if days is not None and days < 1:
        raise ConfigError(f"recommend.history_days: must be 1 or more, got {days}")
    require_columns(orders, ORDER_COLUMNS, where="recommend input orders")
    cut = cutoff_ts(as_of, timezone)
    lines = orders.where(F.col("ts") < cut)
    if days is not None:
        lines = lines.where(F.col("ts") >= cutoff_ts(as_of - dt.timedelta(days=days), timezone))
    lines = prune_order_dates(lines, before=as_of, days=days)
    return lines.withColumn("age_days", (cut.cast("double") - F.col("ts").cast("double")) / 86400.0)


def decay(age_days: Column, half_life_days: float) -> Column:
    """Weight 2^(-age / half-life): 1 for a purchase at the cutoff, 1/2 one half-life earlier."""
    return F.exp(-math.log(2.0) * age_days / F.lit(float(half_life_days)))


def user_item_weights(
    lines: DataFrame, *, half_life_days: float, timezone: str | None = None,
    recent_half_life_days: float | None = None,
) -> DataFrame:
    """(source, user_id, item_id, weight, last_ts): recency-decayed count of lines per pair;
    with ``timezone``, also ``days``: the distinct calendar dates there the pair was bought on;
    with ``recent_half_life_days``, also ``recent``: the lines decayed with that half-life.

    Lines, not quantities: a wholesale order of 500 units says as much about taste as one of 5.
    Days, not lines, count re-purchases: several lines of one day are one shopping trip.
    """
    aggs = [
        F.sum(decay(F.col("age_days"), half_life_days)).alias("weight"),
        F.max("ts").alias("last_ts"),
    ]
    if timezone is not None:
        aggs.append(F.countDistinct(F.to_date(local_time("ts", timezone))).cast("int").alias("days"))
    if recent_half_life_days is not None:
        aggs.append(F.sum(decay(F.col("age_days"), recent_half_life_days)).alias("recent"))
    return lines.groupBy("source", "user_id", "item_id").agg(*aggs)


def user_histories(
    lines: DataFrame, *, half_life_days: float, timezone: str, user_space: DataFrame | None = None,
    recent_half_life_days: float = 14.0,
) -> DataFrame:
    """One row per (source, user) with history: items most recent first, with their weights,
    the number of distinct days (calendar dates in ``timezone``) each was bought on, and their
    weights with the shorter ``recent_half_life_days``.

    ``region`` is ``user_space_features.home_region`` (null for a user it does not know,
    e.g. one whose orders all lie before the features' history window; null without it).
    """
    pairs = user_item_weights(
        lines, half_life_days=half_life_days, timezone=timezone,
        recent_half_life_days=recent_half_life_days,
    )
    ordered = pairs.groupBy("source", "user_id").agg(
        F.sort_array(
            F.collect_list(
                F.struct(
                    (-F.col("last_ts").cast("double")).alias("neg_ts"),
                    F.col("item_id"),
                    F.col("weight"),
                    F.col("days"),
                    F.col("recent"),
                )
            )
        ).alias("h")
    )
    if user_space is not None:
        require_columns(user_space, ["source", "user_id", "home_region"], where=USER_SPACE_FEATURES.name)
        homes = user_space.select("source", "user_id", F.col("home_region").alias("region"))
        ordered = ordered.join(homes, ["source", "user_id"], "left")
    else:
        ordered = ordered.withColumn("region", F.lit(None).cast("string"))
    out = ordered.select(
        "source",
        "user_id",
        "region",
        F.lit(False).alias("is_cold_start"),
        F.col("h.item_id").alias("hist_item_ids"),
        F.col("h.weight").alias("hist_weights"),
        F.col("h.days").alias("hist_days"),
        F.col("h.recent").alias("hist_recent"),
    )
    return select_schema(out, USER_HISTORY)


def cold_start_templates(
    spark_df: DataFrame, sources: list[str], regions: list[str]
) -> DataFrame:
    """One pseudo-user ``'*'`` per source and region, with no history (is_cold_start = true)."""
    spark = spark_df.sparkSession
    rows = [(s, "*", r, True, [], [], [], []) for s in sorted(sources) for r in sorted(regions)]
    return spark.createDataFrame(rows, USER_HISTORY)


def item_texts(items: DataFrame, *, template: str) -> DataFrame:
    """(item_id, text): ``template`` filled from title, category, description (null -> "").

    One row per item_id (the first source by name when several sources share an id).
    """
    require_columns(items, ["item_id", "title", "category", "description"], where=ITEMS.name)
    fields = {name: F.coalesce(F.col(name).cast("string"), F.lit("")) for name in ("title", "category", "description")}
    parts: list[Column] = []
    rest = template
    while rest:
        start = rest.find("{")
        if start < 0:
            parts.append(F.lit(rest))
            break
        end = rest.find("}", start)
        name = rest[start + 1 : end] if end > 0 else ""
        if name not in fields:
            from stpipe.errors import ConfigError

            raise ConfigError(
                f"model.text_template: unknown field {{{name}}} (use title, category, description)"
            )
        parts.append(F.lit(rest[:start]))
        parts.append(fields[name])
        rest = rest[end + 1 :]
    text = F.trim(F.concat(*parts)) if parts else F.lit("")
    ranked = items.withColumn(
        "_r",
        F.row_number().over(
            Window.partitionBy("item_id").orderBy(
                *([F.asc("source")] if "source" in items.columns else [F.asc("title")])
            )
        ),
    )
    return ranked.where("_r = 1").select("item_id", text.alias("text"))


def causal_strengths(granger: DataFrame | None, *, run_date: dt.date) -> DataFrame | None:
    """(cause_category, effect_category, strength) from the latest granger run up to ``run_date``.

    Strength = 1 - q_value of significant category pairs (max over lags and regions).
    None when the table is absent or has no usable rows.
    """
    if granger is None:
        return None
    needed = ["cause_category", "effect_category", "q_value", "significant"]
    if any(c not in granger.columns for c in needed):
        return None
    g = granger
    if "run_date" in g.columns:
        latest = g.where(F.col("run_date") <= F.lit(run_date)).agg(F.max("run_date")).first()[0]
        if latest is None:
            return None
        g = g.where(F.col("run_date") == F.lit(latest))
    g = g.where(
        F.col("significant")
        & F.col("cause_category").isNotNull()
        & F.col("effect_category").isNotNull()
        & (F.col("cause_category") != F.col("effect_category"))
        & F.col("q_value").isNotNull()
    )
    return g.groupBy("cause_category", "effect_category").agg(
        F.max(F.lit(1.0) - F.col("q_value")).alias("strength")
    )


COOCCURRENCE = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("other_id", T.StringType(), False),
        T.StructField("similarity", T.DoubleType(), False),
    ]
)


def item_cooccurrence(lines: DataFrame, *, half_life_days: float, neighbours: int) -> DataFrame:
    """(item_id, other_id, similarity): items bought by the same users, SAR-style, sparse.

    Each user's tie to an item is d_ui = 2^(-age / half-life) of their last purchase of it
    (``lines`` come from :func:`history_before`, so nothing after the as-of date counts).
    Similarity is the weighted Jaccard index of the two items' buyer sets,
    sum_u min(d_ui, d_uj) / (sum_u d_ui + sum_u d_uj - sum_u min(d_ui, d_uj)), in [0, 1]; it is
    the plain Jaccard index of SAR when nothing decays. Only the ``neighbours`` most similar
    other items per item are kept (ties: other_id ascending); an item is never its own neighbour.
    """
    require_columns(lines, ["source", "user_id", "item_id", "age_days"], where="co-occurrence input")
    ties = lines.groupBy("source", "user_id", "item_id").agg(
        F.max(decay(F.col("age_days"), half_life_days)).alias("d")
    )
    mass = ties.groupBy("item_id").agg(F.sum("d").alias("mass"))
    a, b = ties.alias("a"), ties.alias("b")
    both = (
        a.join(
            b,
            (F.col("a.source") == F.col("b.source"))
            & (F.col("a.user_id") == F.col("b.user_id"))
            & (F.col("a.item_id") != F.col("b.item_id")),
        )
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("other_id"))
        .agg(F.sum(F.least(F.col("a.d"), F.col("b.d"))).alias("both"))
    )
    mass_other = mass.select(F.col("item_id").alias("other_id"), F.col("mass").alias("mass_other"))
    sim = (
        both.join(mass, "item_id")
        .join(mass_other, "other_id")
        .withColumn(
            "similarity",
            F.round(F.col("both") / (F.col("mass") + F.col("mass_other") - F.col("both")), 12),
        )
    )
    w = Window.partitionBy("item_id").orderBy(F.desc("similarity"), F.asc("other_id"))
    top = sim.withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= int(neighbours))
    return select_schema(top.where(F.col("similarity") > 0), COOCCURRENCE)
