"""Series stage: ``orders_clean`` + ``items`` -> ``sales_series`` for one run date.

One row per series and day for the ``features.series_days`` days before the run date
(days in ``features.timezone``), zero-filled, measure ``features.series_measure``;
replaced by ``run_date``. See ``stpipe/features/series.py`` for the contract.
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame

from stpipe.catalogue import ITEMS, ORDERS_CLEAN, SALES_SERIES
from stpipe.features import common
from stpipe.features.series import sales_series
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext

log = logging.getLogger("stpipe.series")

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


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.settings.features
    out = transform(
        ctx.read(ORDERS_CLEAN), ctx.read(ITEMS), run_date=ctx.run_date,
        series_days=cfg.series_days, measure=cfg.series_measure, timezone=cfg.timezone,
    )
    n = ctx.write(SALES_SERIES, out)
    log.info("sales_series for %s: %d rows (%s)", ctx.run_date, n, cfg.series_measure)
    return StageResult(rows_out=n, details={"measure": cfg.series_measure})


SERIES = Stage(
    "series", run, inputs=(ORDERS_CLEAN, ITEMS), outputs=(SALES_SERIES,), config=("features",)
)
