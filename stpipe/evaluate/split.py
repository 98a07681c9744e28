"""Temporal split for offline evaluation.

One interaction is a distinct (user, item, day). History holds the interactions strictly before
the cutoff; the truth of a user is the set of distinct items bought in [cutoff, cutoff + horizon).
Days are counted in the Spark session time zone (UTC in this project).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe.schema import require_columns, select_schema

INTERACTIONS = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("day", T.DateType(), False),
        T.StructField("region", T.StringType(), True),
    ]
)
TRUTH = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
    ]
)
USER_REGIONS = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("region", T.StringType(), True),
    ]
)


@dataclass
class Split:
    """History interactions (Spark) and the truth per user (Spark and dict form)."""

    history: DataFrame
    truth: DataFrame
    # user -> region: last region in history, else (cold users) the first region in the window
    user_regions: DataFrame


def to_interactions(orders: DataFrame) -> DataFrame:
    """Order lines -> distinct (user, item, day); region = the smallest region of that day."""
    require_columns(orders, ["user_id", "item_id", "ts", "region"], where="evaluate split")
    out = (
        orders.withColumn("day", F.to_date("ts"))
        .groupBy("user_id", "item_id", "day")
        .agg(F.min("region").alias("region"))
    )
    return select_schema(out, INTERACTIONS)


def temporal_split(interactions: DataFrame, *, cutoff: dt.date, horizon_days: int) -> Split:
    """History = day < cutoff; truth = distinct (user, item) with cutoff <= day < cutoff + horizon."""
    require_columns(interactions, ["user_id", "item_id", "day", "region"], where="evaluate split")
    end = cutoff + dt.timedelta(days=horizon_days)
    history = interactions.where(F.col("day") < F.lit(cutoff))
    window = interactions.where((F.col("day") >= F.lit(cutoff)) & (F.col("day") < F.lit(end)))
    truth = window.select("user_id", "item_id").distinct()
    last_seen = Window.partitionBy("user_id").orderBy(F.col("day").desc(), F.col("region"))
    first_seen = Window.partitionBy("user_id").orderBy(F.col("day"), F.col("region"))
    hist_region = (
        history.withColumn("_r", F.row_number().over(last_seen)).where("_r = 1").select("user_id", "region")
    )
    window_region = (
        window.withColumn("_r", F.row_number().over(first_seen))
        .where("_r = 1")
        .select("user_id", "region")
        .join(hist_region.select("user_id"), "user_id", "left_anti")
    )
    return Split(history=history, truth=truth, user_regions=hist_region.unionByName(window_region))


def truth_sets(truth: pd.DataFrame, *, key: str = "item_id") -> dict[object, set[object]]:
    """pandas (user_id, key) rows -> {user: set of keys}."""
    return {user: set(group[key]) for user, group in truth.groupby("user_id", sort=True)}


def drop_seen(
    truth: dict[object, set[object]], seen: dict[object, set[object]]
) -> dict[object, set[object]]:
    """The `novel` truth: history items removed; users left with nothing dropped."""
    out = {}
    for user, items in truth.items():
        novel = items - seen.get(user, set())
        if novel:
            out[user] = novel
    return out
