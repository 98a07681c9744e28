"""Daily sales series for one run date: ``orders_clean`` + ``items`` -> ``sales_series``.

One row per series and day for the ``features.series_days`` days before the run date
(days in ``features.timezone``), zero-filled, measure ``features.series_measure``;
replaced by ``run_date``. See ``stpipe/features/series.py`` for the contract.

    python -m jobs.series --date 2024-06-29 --set features.series_measure=orders
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame, SparkSession

from stpipe import tables
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.features import common
from stpipe.features.series import sales_series
from stpipe.runlog import StageResult

log = logging.getLogger("stpipe.series")

ORDERS_CLEAN = "orders_clean"
ITEMS = "items"
SALES_SERIES = "sales_series"

LINE_COLUMNS = ["order_id", "item_id", "quantity", "unit_price", "ts", "region", "source",
                "order_date"]


def transform(
    orders: DataFrame,
    items: DataFrame,
    *,
    run_date: dt.date,
    series_days: int,
    measure: str,
    timezone: str,
) -> DataFrame:
    """``sales_series`` from order lines and items (lazy)."""
    lines = common.history(
        orders.select(*[c for c in LINE_COLUMNS if c in orders.columns]),
        run_date=run_date, days=series_days, timezone=timezone,
    )
    lines = common.attach_category(lines, items)
    return sales_series(lines, run_date=run_date, series_days=series_days, measure=measure)


def run(spark: SparkSession, settings: Settings) -> StageResult:
    warehouse = settings.storage.warehouse
    cfg = settings.features
    out = transform(
        tables.read(spark, warehouse, ORDERS_CLEAN),
        tables.read(spark, warehouse, ITEMS),
        run_date=settings.date,
        series_days=cfg.series_days,
        measure=cfg.series_measure,
        timezone=cfg.timezone,
    )
    n = tables.write(out, warehouse, SALES_SERIES, replace={"run_date": settings.date},
                     partition_by=["run_date"])
    log.info("sales_series for %s: %d rows (%s)", settings.date, n, cfg.series_measure)
    return StageResult(rows_out=n, tables=[SALES_SERIES], details={"measure": cfg.series_measure})


def main(argv: list[str] | None = None) -> int:
    return main_for("series", run, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
