"""Recommend stage: fusion weights (``fusion_weights``) and top-K lists (``recommendations``).

    python -m jobs.recommend --date 2024-06-29 --set recommend.allow_repeat=false

For ablations and offline evaluation call :func:`recommend` (re-exported here) directly.
"""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from stpipe import tables
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.recommend import RecommendOptions, fusion_weights_frame, recommend, train_fusion
from stpipe.runlog import StageResult
from udfs.score import ALL_COMPONENTS

__all__ = ["recommend", "run", "main"]

log = logging.getLogger("stpipe.recommend")

ORDERS_CLEAN = "orders_clean"
ITEMS = "items"
ITEM_EMBEDDINGS = "item_embeddings"
GRANGER_STATS = "granger_stats"
FUSION_WEIGHTS = "fusion_weights"
RECOMMENDATIONS = "recommendations"


def run(spark: SparkSession, settings: Settings) -> StageResult:
    warehouse, run_date = settings.storage.warehouse, settings.date
    orders = tables.read(spark, warehouse, ORDERS_CLEAN)
    items = tables.read(spark, warehouse, ITEMS)
    vectors = tables.read(spark, warehouse, ITEM_EMBEDDINGS)
    granger = (
        tables.read(spark, warehouse, GRANGER_STATS)
        if tables.exists(spark, warehouse, GRANGER_STATS)
        else None
    )
    opts = RecommendOptions.from_settings(settings.recommend, settings.features.timezone)
    inputs = dict(orders=orders, items=items, item_embeddings=vectors, granger_stats=granger)
    fit, as_of = train_fusion(spark, **inputs, run_date=run_date, components=ALL_COMPONENTS, opts=opts)
    weights = fusion_weights_frame(
        spark, fit, run_date=run_date, train_as_of=as_of, components=ALL_COMPONENTS
    )
    tables.write(weights, warehouse, FUSION_WEIGHTS, replace={"run_date": run_date})
    recs = recommend(spark, **inputs, run_date=run_date, weights=fit.weights, opts=opts)
    n_recs = tables.write(
        recs, warehouse, RECOMMENDATIONS, replace={"run_date": run_date}, partition_by=["run_date"]
    )
    log.info("recommend: %d rows; fusion %s %s", n_recs, fit.status, fit.weights)
    return StageResult(
        rows_in=None, rows_out=n_recs, tables=[FUSION_WEIGHTS, RECOMMENDATIONS],
        details={"fusion": fit.status, "weights": fit.weights, "train_rows": fit.train_rows},
    )


def main(argv: list[str] | None = None) -> int:
    return main_for("recommend", run, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
