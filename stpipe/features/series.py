"""``sales_series``: daily demand per (region, category) and per category, zero-filled.

Contract (read by the Granger stage and the notebooks):

    run_date  date    the run date; the table is partitioned and replaced by it
    series_id string  'region=<r>|category=<c>' or 'category=<c>'
    kind      string  'region_category' or 'category'
    region    string  null for kind = 'category'
    category  string  items.category joined on item_id and source ('unknown' if none)
    date      date    a day in features.timezone
    value     double  the measure on that day: orders (distinct order_id), units (sum of
                      quantity) or revenue (sum of quantity * unit_price)

Each series has exactly one row for every day of the ``series_days`` local days before
the run date (first day run_date - series_days, last day run_date - 1), with 0 on days
without sales. A series exists when its key sold at least once in that span. Only lines
with ``ts`` before the run date's local midnight are read: no leakage.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stpipe.errors import ConfigError
from stpipe.schema import SALES_SERIES, require_columns, select_schema

MEASURES = ("orders", "units", "revenue")


def sales_series(
    lines: DataFrame, *, run_date: dt.date, series_days: int, measure: str
) -> DataFrame:
    """Zero-filled daily series from history lines carrying ``category`` and ``local_date``.

    ``lines`` come from :func:`stpipe.features.common.history` over ``series_days`` days,
    joined with :func:`stpipe.features.common.attach_category`. One aggregation with
    grouping sets computes both kinds; a second, on the small daily totals, gathers each
    series' days, which are then laid out along the calendar with zeros where none sold.
    """
    if measure not in MEASURES:
        raise ConfigError(
            f"features.series_measure: expected one of {', '.join(MEASURES)}, got {measure!r}"
        )
    if series_days < 1:
        raise ConfigError(f"features.series_days: expected a positive integer, got {series_days}")
    require_columns(
        lines,
        ["order_id", "region", "category", "local_date", "quantity", "unit_price"],
        where="sales_series input",
    )
    first = run_date - dt.timedelta(days=series_days)
    last = run_date - dt.timedelta(days=1)
    # the input may be wider than the series span; keep exactly its days
    span = lines.where(
        (F.col("local_date") >= F.lit(first)) & (F.col("local_date") <= F.lit(last))
    )
    if measure == "orders":
        value = F.countDistinct("order_id")
    elif measure == "units":
        value = F.sum("quantity")
    else:
        value = F.sum(F.col("quantity") * F.col("unit_price"))
    series_id = F.when(
        F.col("kind") == "region_category",
        F.concat(F.lit("region="), F.col("region"), F.lit("|category="), F.col("category")),
    ).otherwise(F.concat(F.lit("category="), F.col("category")))
    daily = (
        # prefixes of (category, date, region): (c, d, r) and (c, d) are the two kinds
        span.rollup("category", "local_date", "region")
        .agg(value.cast("double").alias("value"), F.grouping_id().alias("_g"))
        # grouping_id bits (category, local_date, region): 0 = all kept, 1 = region rolled up
        .where(F.col("_g").isin(0, 1))
        .select(
            F.when(F.col("_g") == 0, F.lit("region_category"))
            .otherwise(F.lit("category"))
            .alias("kind"),
            F.when(F.col("_g") == 0, F.col("region")).alias("region"),
            "category",
            F.col("local_date").alias("date"),
            "value",
        )
        .withColumn("series_id", series_id)
    )
    # zero fill without a join: each series' days as a map, looked up along the calendar
    per_series = daily.groupBy("series_id", "kind", "region", "category").agg(
        F.map_from_entries(F.collect_list(F.struct("date", "value"))).alias("by_date")
    )
    calendar = F.sequence(F.lit(first), F.lit(last), F.expr("INTERVAL 1 DAY"))
    out = (
        per_series.withColumn("date", F.explode(calendar))
        .withColumn("value", F.coalesce(F.element_at("by_date", F.col("date")), F.lit(0.0)))
        .withColumn("run_date", F.lit(run_date))
    )
    return select_schema(out, SALES_SERIES)
