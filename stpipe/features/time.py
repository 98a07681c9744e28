"""Temporal features: ``user_time_features`` and ``item_time_features``.

Both are computed from :func:`stpipe.features.common.history` (the ``history_days``
local days before the run date; nothing at or after the run date's local midnight).
An *order* is one ``order_id``; its time is the earliest ``ts`` of its lines, its
spend the sum of ``quantity * unit_price``. Window ``w`` holds orders whose local
date is one of the ``w`` days before the run date (``1 <= days_ago <= w``).

user_time_features (one row per source, user_id):
    recency_days       (cutoff - last order time) / 86400, cutoff = run date 00:00 local
    frequency          orders in the history
    monetary           total spend in the history
    interval_mean_days mean gap between consecutive orders, days (null with one order)
    interval_std_days  sample standard deviation (ddof 1) of those gaps (null below 3 orders)
    orders_<w>d        orders in window w (each of features.windows_days)
    spend_<w>d         spend in window w
    pref_hour          most frequent local hour of the user's orders (ties: lowest hour)
    pref_weekday       most frequent local weekday, 0 = Monday (ties: lowest)
    hour_sin/cos       sin/cos(2 pi pref_hour / 24)
    weekday_sin/cos    sin/cos(2 pi pref_weekday / 7)
    t_x_seconds        x: epoch seconds (UTC, i.e. seconds since 1970-01-01T00:00Z) of
                       the user's last order before the cutoff
    t_mod              (x / T) mod 1                   T = features.time_period_seconds
    t_frac             x / T - floor(x / T)            (identical to t_mod since x >= 0;
                                                        both are kept as the design asks)
    t_log10            log10(x / T)

item_time_features (one row per source, item_id):
    category           items.category joined on item_id and source ('unknown' if none)
    orders_<w>d        orders containing the item in window w
    units_<w>d         units (sum of quantity) in window w
    popularity         sum over the item's orders of 2^(-age / h), age = (cutoff - order
                       time) in days, h = features.popularity_half_life_days: an order
                       at the cutoff counts 1, one half-life earlier 1/2 (the
                       recommender's time score)
    trend              (orders_<s>d / s + 1) / (orders_<l>d / l + 1) with s, l the two
                       shortest windows (7 and 30 by default): > 1 when demand rises
    last_order_days    (cutoff - last order time with the item) / 86400
    buyers             distinct users who bought the item in the history window (its reach:
                       the recommender's reach score; a few wholesalers re-ordering an item
                       make it popular, not widely bought)
    repeat_buyers      of those, the users who bought it on two or more local days: how often
                       its buyers come back for it (the recommender's rebuy score)
    hour_profile       24 shares of the item's orders by local hour (sum 1)
    weekday_profile    7 shares by local weekday, Monday first (sum 1)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stpipe.errors import ConfigError
from stpipe.features.common import (
    SECONDS_PER_DAY,
    check_windows,
    cutoff_epoch,
)
from stpipe.schema import (
    item_time_schema,
    require_columns,
    select_schema,
    user_time_schema,
    window_name,
)

HISTORY_COLUMNS = [
    "order_id", "user_id", "item_id", "quantity", "unit_price", "source",
    "epoch", "days_ago", "hour", "weekday",
]


def _orders_of(lines: DataFrame, keys: list[str]) -> DataFrame:
    """One row per ``keys + order_id``: earliest line's time and the order's totals."""
    first = F.min(F.struct("epoch", "days_ago", "hour", "weekday")).alias("first")
    return lines.groupBy(*keys, "order_id").agg(
        first,
        F.sum(F.col("quantity") * F.col("unit_price")).alias("spend"),
        F.sum("quantity").cast("long").alias("units"),
    ).select(
        *keys, "order_id", "first.epoch", "first.days_ago", "first.hour", "first.weekday",
        "spend", "units",
    )


def _buyers(orders: DataFrame) -> DataFrame:
    """Per (source, item_id): distinct buyers, and those who bought it on two or more local days."""
    per_user = orders.groupBy("source", "item_id", "user_id").agg(
        F.countDistinct("days_ago").alias("_days")
    )
    return per_user.groupBy("source", "item_id").agg(
        F.count("*").alias("buyers"),
        F.count(F.when(F.col("_days") >= 2, 1)).alias("repeat_buyers"),
    )


def _mode(values: Column, n: int) -> Column:
    """Most frequent value in 0..n-1 of an array column; ties go to the lowest value."""
    def equals(k: int):  # one-argument lambda: F.filter reads two arguments as (value, index)
        return lambda v: v == k

    counts = [F.size(F.filter(values, equals(k))) for k in range(n)]
    best = F.greatest(*counts) if n > 1 else counts[0]
    return F.array_position(F.array(*counts), best).cast("int") - 1


def _cyclic(value: Column, period: int) -> tuple[Column, Column]:
    angle = value.cast("double") * F.lit(2 * math.pi / period)
    return F.sin(angle), F.cos(angle)


def user_time_features(
    lines: DataFrame,
    *,
    run_date: dt.date,
    timezone: str,
    windows_days: Sequence[int],
    time_period_seconds: int,
) -> DataFrame:
    """``user_time_features`` from history lines (see :func:`common.history`).

    Two aggregations: lines -> orders, orders -> users. Interval statistics come from the
    sorted order times collected per user (no window function, no extra shuffle).
    """
    require_columns(lines, HISTORY_COLUMNS, where="user_time_features input")
    windows = check_windows(windows_days)
    if time_period_seconds <= 0:
        raise ConfigError(
            f"features.time_period_seconds: expected a positive number, got {time_period_seconds}"
        )
    cutoff = cutoff_epoch(run_date, timezone)
    orders = _orders_of(lines, ["source", "user_id"])
    windowed = []
    for w in windows:
        inside = F.col("days_ago") <= w
        windowed.append(F.count(F.when(inside, 1)).alias(window_name("orders", w)))
        windowed.append(
            F.coalesce(F.sum(F.when(inside, F.col("spend"))), F.lit(0.0)).alias(
                window_name("spend", w)
            )
        )
    users = orders.groupBy("source", "user_id").agg(
        F.count("*").alias("frequency"),
        F.sum("spend").alias("monetary"),
        F.max("epoch").alias("last_epoch"),
        F.array_sort(F.collect_list("epoch")).alias("times"),
        F.collect_list("hour").alias("hours"),
        F.collect_list("weekday").alias("weekdays"),
        *windowed,
    )
    n = F.col("frequency")
    gaps = F.transform(
        F.slice("times", 2, F.greatest(n - 1, F.lit(1)).cast("int")),
        lambda t, i: (t - F.col("times")[i]).cast("double") / F.lit(SECONDS_PER_DAY),
    )
    gap_mean = F.when(n >= 2, F.aggregate(gaps, F.lit(0.0), lambda a, g: a + g) / (n - 1))
    # sample variance of the gaps, two-pass (numerically stable); null below two gaps
    gap_var = F.when(
        n >= 3,
        F.aggregate(gaps, F.lit(0.0), lambda a, g: a + (g - F.col("interval_mean_days")) ** 2)
        / (n - 2),
    )
    x = F.col("last_epoch").cast("double") / F.lit(float(time_period_seconds))
    hour_sin, hour_cos = _cyclic(F.col("pref_hour"), 24)
    wd_sin, wd_cos = _cyclic(F.col("pref_weekday"), 7)
    out = (
        users.withColumn("interval_mean_days", gap_mean)
        .withColumn("interval_std_days", F.sqrt(gap_var))
        .withColumn("recency_days", (F.lit(cutoff) - F.col("last_epoch")) / F.lit(SECONDS_PER_DAY))
        .withColumn("pref_hour", _mode(F.col("hours"), 24))
        .withColumn("pref_weekday", _mode(F.col("weekdays"), 7))
        .withColumn("hour_sin", hour_sin)
        .withColumn("hour_cos", hour_cos)
        .withColumn("weekday_sin", wd_sin)
        .withColumn("weekday_cos", wd_cos)
        .withColumn("t_x_seconds", F.col("last_epoch"))
        .withColumn("t_mod", F.pmod(x, F.lit(1.0)))
        .withColumn("t_frac", x - F.floor(x))
        .withColumn("t_log10", F.log10(x))
        .withColumn("run_date", F.lit(run_date))
    )
    return select_schema(out, user_time_schema(windows))


def item_time_features(
    lines: DataFrame,
    *,
    run_date: dt.date,
    timezone: str,
    windows_days: Sequence[int],
    popularity_half_life_days: float = 14.0,
) -> DataFrame:
    """``item_time_features`` from history lines that carry ``category``."""
    if popularity_half_life_days <= 0:
        raise ConfigError(
            f"features.popularity_half_life_days: expected > 0, got {popularity_half_life_days}"
        )
    require_columns(lines, HISTORY_COLUMNS + ["category"], where="item_time_features input")
    windows = check_windows(windows_days)
    cutoff = cutoff_epoch(run_date, timezone)
    # an order has one user: keeping user_id changes no row and lets buyers be counted
    orders = _orders_of(lines, ["source", "item_id", "category", "user_id"])
    aggs = []
    for w in windows:
        inside = F.col("days_ago") <= w
        aggs.append(F.count(F.when(inside, 1)).alias(window_name("orders", w)))
        aggs.append(
            F.coalesce(F.sum(F.when(inside, F.col("units"))), F.lit(0)).alias(
                window_name("units", w)
            )
        )
    aggs += [F.count(F.when(F.col("hour") == h, 1)).alias(f"_h{h}") for h in range(24)]
    aggs += [F.count(F.when(F.col("weekday") == d, 1)).alias(f"_d{d}") for d in range(7)]
    age_days = (F.lit(cutoff) - F.col("epoch")) / F.lit(SECONDS_PER_DAY)
    decayed = F.exp(F.lit(-math.log(2.0) / popularity_half_life_days) * age_days)
    items = orders.groupBy("source", "item_id", "category").agg(
        F.count("*").alias("_n"), F.max("epoch").alias("last_epoch"),
        F.sum(decayed).alias("popularity"), *aggs
    ).join(_buyers(orders), ["source", "item_id"])
    total = F.col("_n").cast("double")
    short, long_ = (windows[0], windows[1]) if len(windows) > 1 else (windows[0], windows[0])
    trend = (F.col(window_name("orders", short)) / F.lit(float(short)) + 1) / (
        F.col(window_name("orders", long_)) / F.lit(float(long_)) + 1
    )
    out = (
        items.withColumn("trend", trend)
        .withColumn(
            "last_order_days", (F.lit(cutoff) - F.col("last_epoch")) / F.lit(SECONDS_PER_DAY)
        )
        .withColumn("hour_profile", F.array(*[F.col(f"_h{h}") / total for h in range(24)]))
        .withColumn("weekday_profile", F.array(*[F.col(f"_d{d}") / total for d in range(7)]))
        .withColumn("run_date", F.lit(run_date))
    )
    return select_schema(out, item_time_schema(windows))
