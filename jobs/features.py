"""Temporal and spatial features for one run date, from ``orders_clean`` and ``items``.

Writes ``user_time_features``, ``item_time_features``, ``region_item_features`` and
``user_space_features``, each replaced by ``run_date``. Only order lines before the run
date's 00:00 in ``features.timezone`` are read (see ``stpipe/features/common.py``).

    python -m jobs.features --date 2024-06-29
    spark-submit jobs/features.py --date 2024-06-29 --set features.timezone=Europe/London
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from stpipe import tables
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.features import common, space, time
from stpipe.runlog import StageResult

log = logging.getLogger("stpipe.features")

ORDERS_CLEAN = "orders_clean"
ITEMS = "items"
USER_TIME = "user_time_features"
ITEM_TIME = "item_time_features"
REGION_ITEM = "region_item_features"
USER_SPACE = "user_space_features"

LINE_COLUMNS = [
    "order_id", "user_id", "item_id", "quantity", "unit_price", "ts", "region", "lat", "lon",
    "source", "order_date",
]


def history_lines(
    orders: DataFrame, items: DataFrame, *, run_date: dt.date, history_days: int, timezone: str
) -> DataFrame:
    """Order lines of the history window with local time columns and their category."""
    lines = common.history(
        orders.select(*[c for c in LINE_COLUMNS if c in orders.columns]),
        run_date=run_date, days=history_days, timezone=timezone,
    )
    return common.attach_category(lines, items)


def transform(
    lines: DataFrame,
    *,
    run_date: dt.date,
    timezone: str,
    windows_days: list[int],
    time_period_seconds: int,
    lift_prior: float,
    geohash_precision: int,
    map_extent_km: float,
) -> dict[str, DataFrame]:
    """The four feature tables from :func:`history_lines` (lazy; nothing is written)."""
    return {
        USER_TIME: time.user_time_features(
            lines, run_date=run_date, timezone=timezone, windows_days=windows_days,
            time_period_seconds=time_period_seconds,
        ),
        ITEM_TIME: time.item_time_features(
            lines, run_date=run_date, timezone=timezone, windows_days=windows_days
        ),
        REGION_ITEM: space.region_item_features(lines, run_date=run_date, lift_prior=lift_prior),
        USER_SPACE: space.user_space_features(
            lines, run_date=run_date, geohash_precision=geohash_precision,
            map_extent_km=map_extent_km,
        ),
    }


def run(spark: SparkSession, settings: Settings) -> StageResult:
    warehouse = settings.storage.warehouse
    run_date = settings.date
    cfg = settings.features
    lines = history_lines(
        tables.read(spark, warehouse, ORDERS_CLEAN),
        tables.read(spark, warehouse, ITEMS),
        run_date=run_date, history_days=cfg.history_days, timezone=cfg.timezone,
    )
    outputs = transform(
        lines, run_date=run_date, timezone=cfg.timezone, windows_days=cfg.windows_days,
        time_period_seconds=cfg.time_period_seconds, lift_prior=cfg.lift_prior,
        geohash_precision=cfg.geohash_precision, map_extent_km=cfg.map_extent_km,
    )
    # four aggregations read the history: keep it instead of rereading orders_clean
    lines.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows_in = lines.count()
        written = {
            name: tables.write(
                df, warehouse, name, replace={"run_date": run_date}, partition_by=["run_date"]
            )
            for name, df in outputs.items()
        }
    finally:
        lines.unpersist()
    log.info("features for %s: %d history lines, %s", run_date, rows_in, written)
    return StageResult(
        rows_in=rows_in, rows_out=sum(written.values()), tables=list(written),
        details={"rows": written},
    )


def main(argv: list[str] | None = None) -> int:
    return main_for("features", run, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
