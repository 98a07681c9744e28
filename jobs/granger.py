"""Granger causality between sales series: ``sales_series`` -> ``granger_stats``.

    python -m jobs.granger --date 2024-06-29 --set granger.max_lag=5
    spark-submit jobs/granger.py --date 2024-06-29
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from stpipe import tables
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.errors import InputError
from stpipe.granger import granger_stats
from stpipe.runlog import StageResult

log = logging.getLogger("stpipe.granger")

SALES_SERIES = "sales_series"
GRANGER_STATS = "granger_stats"


def run(spark: SparkSession, settings: Settings) -> StageResult:
    cfg = settings.granger
    warehouse = settings.storage.warehouse
    run_date = settings.date
    series = tables.read(spark, warehouse, SALES_SERIES)
    if "run_date" in series.columns and series.where(F.col("run_date") == F.lit(run_date)).isEmpty():
        raise InputError(f"sales_series has no rows for run_date {run_date}; run the series stage")
    stats = granger_stats(
        series,
        run_date=run_date,
        max_lag=cfg.max_lag,
        top_categories=cfg.top_categories,
        top_regions=cfg.top_regions,
        alpha=cfg.alpha,
        transform=cfg.transform,
        min_nonzero_days=cfg.min_nonzero_days,
        pair_kinds=cfg.pair_kinds,
        udf_buckets=cfg.udf_buckets,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    n_rows = tables.write(stats, warehouse, GRANGER_STATS, replace={"run_date": run_date})
    summary = stats.groupBy("status").agg(
        F.count(F.lit(1)).alias("rows"), F.sum(F.col("significant").cast("int")).alias("flagged")
    ).orderBy("status").collect()
    stats.unpersist()
    counts = {r["status"]: r["rows"] for r in summary}
    flagged = sum(r["flagged"] for r in summary)
    pairs = n_rows // cfg.max_lag  # every pair has one row per lag
    log.info("granger: %d pairs, %d rows, %d significant, statuses %s", pairs, n_rows, flagged, counts)
    return StageResult(
        rows_in=None,
        rows_out=n_rows,
        tables=[GRANGER_STATS],
        details={"pairs": pairs, "significant": flagged, "statuses": counts},
    )


def main(argv: list[str] | None = None) -> int:
    return main_for("granger", run, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
