"""What every feature table shares: the run date's boundary, the history window, local time.

Boundary (no leakage): a feature for run date ``d`` uses only order lines with
``ts < cutoff``, where ``cutoff`` is ``d 00:00`` in ``features.timezone`` (``ts`` is
stored in UTC). Days, hours and weekdays are counted on the wall clock of that time
zone. ``days_ago`` of a line is ``d - local_date``: 1 for the day before the run date,
so a window of ``w`` days holds the lines with ``1 <= days_ago <= w`` (the ``w`` local
calendar days before ``d``, midnight to midnight).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stpipe.catalogue import ITEMS
from stpipe.errors import ConfigError, InputError
from stpipe.schema import require_columns

SECONDS_PER_DAY = 86_400.0


def check_timezone(timezone: str) -> ZoneInfo:
    """The IANA zone named ``timezone``, or ConfigError."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"features.timezone: unknown time zone {timezone!r}") from None


def cutoff_epoch(run_date: dt.date, timezone: str) -> int:
    """Epoch seconds (UTC) of ``run_date`` 00:00 in ``timezone``: the exclusive upper bound."""
    zone = check_timezone(timezone)
    return int(dt.datetime.combine(run_date, dt.time.min, tzinfo=zone).timestamp())


def check_windows(windows_days: Sequence[int]) -> list[int]:
    """Sorted distinct positive windows, or ConfigError."""
    if not windows_days or any(int(w) < 1 for w in windows_days):
        raise ConfigError(f"features.windows_days: expected positive integers, got {windows_days!r}")
    return sorted({int(w) for w in windows_days})


def local_time(ts: str | Column, timezone: str) -> Column:
    """Wall-clock time of UTC ``ts`` in ``timezone`` (a timestamp read in a UTC session)."""
    column = F.col(ts) if isinstance(ts, str) else ts
    return F.from_utc_timestamp(column, timezone)


def prune_order_dates(orders: DataFrame, *, before: dt.date, days: int | None) -> DataFrame:
    """``orders`` cut to the ``order_date`` partitions that can hold lines of the ``days`` local
    days before ``before`` (None: every day before it): order dates are UTC dates, so the range
    is padded by a day each side for any time zone. Without an ``order_date`` column: as given.
    """
    if "order_date" not in orders.columns:
        return orders
    kept = orders.where(F.col("order_date") <= F.lit(before + dt.timedelta(days=1)))
    if days is None:
        return kept
    return kept.where(F.col("order_date") >= F.lit(before - dt.timedelta(days=days + 1)))


def history(
    orders: DataFrame,
    *,
    run_date: dt.date,
    days: int,
    timezone: str,
    ts_col: str = "ts",
) -> DataFrame:
    """Order lines of the ``days`` local days before ``run_date``, with local time columns.

    Adds ``epoch`` (seconds, UTC), ``local_date``, ``days_ago`` (1 = the day before
    ``run_date``), ``hour`` (0-23) and ``weekday`` (0 = Monday ... 6 = Sunday), all in
    ``timezone``. Lines at or after ``run_date`` 00:00 local are dropped: no leakage.
    """
    if days < 1:
        raise ConfigError(f"features: the history must cover at least one day, got {days}")
    require_columns(orders, [ts_col], where="feature history")
    end = cutoff_epoch(run_date, timezone)
    start = cutoff_epoch(run_date - dt.timedelta(days=days), timezone)
    df = prune_order_dates(orders, before=run_date, days=days)
    epoch = F.unix_seconds(F.col(ts_col))
    local = local_time(ts_col, timezone)
    return (
        df.withColumn("epoch", epoch)
        .where((F.col("epoch") >= F.lit(start)) & (F.col("epoch") < F.lit(end)))
        .withColumn("local_date", F.to_date(local))
        .withColumn("days_ago", F.datediff(F.lit(run_date), F.col("local_date")))
        .withColumn("hour", F.hour(local))
        .withColumn("weekday", F.weekday(local))
    )


def attach_category(
    lines: DataFrame, items: DataFrame, *, unknown: str = "unknown"
) -> DataFrame:
    """Add ``category`` from ``items`` joined on ``item_id`` and ``source`` (``unknown`` if none).

    The items table is small (one row per product), so it is broadcast: no shuffle.
    """
    require_columns(items, ["item_id", "category", "source"], where=ITEMS.name)
    require_columns(lines, ["item_id", "source"], where="order lines")
    if "category" in lines.columns:
        raise InputError("order lines already have a category column; drop it before the join")
    # min(): deterministic even if the items table ever held two rows for one product
    cats = items.groupBy("item_id", "source").agg(F.min("category").alias("category"))
    return lines.join(F.broadcast(cats), on=["item_id", "source"], how="left").withColumn(
        "category", F.coalesce(F.col("category"), F.lit(unknown))
    )

