"""Granger stage: ``sales_series`` -> ``granger_stats`` (one slice per run date)."""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import functions as F

from stpipe.catalogue import GRANGER_STATS, SALES_SERIES
from stpipe.errors import InputError
from stpipe.granger import granger_stats
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext

log = logging.getLogger("stpipe.granger")


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.settings.granger
    run_date = ctx.run_date
    series = ctx.read(SALES_SERIES)
    if "run_date" in series.columns and series.where(F.col("run_date") == F.lit(run_date)).isEmpty():
        raise InputError(
            f"sales_series has no rows for run_date {run_date}; run the series stage, and check the "
            "date: the series count only order lines in features.history_days before it"
        )
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
    n_rows = ctx.write(GRANGER_STATS, stats)
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
        details={"pairs": pairs, "significant": flagged, "statuses": counts},
    )


GRANGER = Stage(
    "granger", run, inputs=(SALES_SERIES,), outputs=(GRANGER_STATS,), config=("granger",)
)
