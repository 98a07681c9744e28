"""Recommend stage: fusion weights (``fusion_weights``) and top-K lists (``recommendations``).

Reads the orders, the item embeddings, the Granger statistics (when present) and the
feature tables the features stage wrote for the run date; the fusion is trained on the
features as of ``run_date - recommend.validation_days``, computed by the same function. The
order lines any of that can read (``lines_read``: the labels' days and the longest history window
before them) are kept in memory for the stage, which reads them about a dozen times.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe.catalogue import (
    FUSION_WEIGHTS,
    GRANGER_STATS,
    ITEM_EMBEDDINGS,
    ITEMS,
    ORDERS_CLEAN,
    RECOMMENDATIONS,
    Table,
)
from stpipe.features.build import RECOMMENDER_FEATURES
from stpipe.recommend import (
    RecommendOptions,
    lines_read,
    normalise_components,
    recommend,
    train_fusion,
)
from stpipe.recommend.fusion import FusionFit
from stpipe.runlog import StageResult
from stpipe.schema import select_schema
from stpipe.stages.base import Stage, StageContext
from udfs.score import ALL_COMPONENTS

log = logging.getLogger("stpipe.recommend")


def run(ctx: StageContext) -> StageResult:
    opts = RecommendOptions.from_settings(ctx.settings.recommend, ctx.settings.features)
    # the features as of the training date, both dates' histories and item models and the labels
    # all read these lines: keep them instead of rereading orders_clean a dozen times
    orders = lines_read(ctx.read(ORDERS_CLEAN), run_date=ctx.run_date, opts=opts)
    orders.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _run(ctx, orders, opts)
    finally:
        orders.unpersist()


def _run(ctx: StageContext, orders: DataFrame, opts: RecommendOptions) -> StageResult:
    spark, run_date = ctx.spark, ctx.run_date
    inputs = dict(
        orders=orders, items=ctx.read(ITEMS), item_embeddings=ctx.read(ITEM_EMBEDDINGS),
        granger_stats=ctx.read_if_exists(GRANGER_STATS),
    )
    features = features_on(run_date, {t: ctx.read(t) for t in RECOMMENDER_FEATURES})
    fit, as_of = train_fusion(spark, **inputs, run_date=run_date, components=ALL_COMPONENTS, opts=opts)
    weights = fusion_weights_frame(
        spark, fit, run_date=run_date, train_as_of=as_of, components=ALL_COMPONENTS
    )
    ctx.write(FUSION_WEIGHTS, weights)
    recs = recommend(
        spark, **inputs, features=features, run_date=run_date, weights=fit.weights, opts=opts
    )
    # a warehouse whose recommendations predate a component column (repeat_score) gains it
    ctx.add_missing_columns(RECOMMENDATIONS)
    n_recs = ctx.write(RECOMMENDATIONS, recs)
    log.info("recommend: %d rows; fusion %s %s", n_recs, fit.status, fit.weights)
    return StageResult(
        rows_in=None, rows_out=n_recs,
        details={"fusion": fit.status, "weights": fit.weights, "train_rows": fit.train_rows},
    )


def features_on(run_date: dt.date, frames: dict[Table, DataFrame]) -> dict[Table, DataFrame]:
    """The slices of feature tables (all run dates) that belong to ``run_date``."""
    return {t: df.where(F.col("run_date") == F.lit(run_date)) for t, df in frames.items()}


def fusion_weights_frame(
    spark: SparkSession, fit: FusionFit, *, run_date: dt.date, train_as_of: dt.date, components: Iterable[str]
) -> DataFrame:
    """The ``fusion_weights`` rows of one run: one per feature plus the intercept."""
    comps = ",".join(sorted(normalise_components(components)))
    rows = [
        (run_date, feature, float(weight), comps, train_as_of, fit.train_rows, fit.train_positives, fit.log_loss, fit.status)
        for feature, weight in fit.weights.items()
    ]
    return select_schema(spark.createDataFrame(rows, FUSION_WEIGHTS.schema), FUSION_WEIGHTS.schema)


RECOMMEND = Stage(
    "recommend", run,
    inputs=(ORDERS_CLEAN, ITEMS, ITEM_EMBEDDINGS, *RECOMMENDER_FEATURES),
    optional=(GRANGER_STATS,),
    outputs=(FUSION_WEIGHTS, RECOMMENDATIONS),
    config=("recommend", "features", "model"),
)
