"""Embed stage: ``items`` -> ``item_embeddings``; purchase histories -> ``user_embeddings``.

    python -m jobs.embed --date 2024-06-29
    spark-submit jobs/embed.py --date 2024-06-29 --set model.device=cuda
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from stpipe import tables
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.recommend.embeddings import item_embeddings, user_embeddings
from stpipe.runlog import StageResult
from udfs.embed import make_embed_udf, model_label

log = logging.getLogger("stpipe.embed")

ITEMS = "items"
ORDERS_CLEAN = "orders_clean"
ITEM_EMBEDDINGS = "item_embeddings"
USER_EMBEDDINGS = "user_embeddings"
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


def run(spark: SparkSession, settings: Settings) -> StageResult:
    model, warehouse = settings.model, settings.storage.warehouse
    items = tables.read(spark, warehouse, ITEMS)
    orders = tables.read(spark, warehouse, ORDERS_CLEAN)
    name = model_label(model.model_dir)
    embed = make_embed_udf(
        model.model_dir, model.batch_size, token_budget=model.token_budget,
        max_length=model.max_length, device=model.device,
    )
    previous = (
        tables.read(spark, warehouse, ITEM_EMBEDDINGS)
        if tables.exists(spark, warehouse, ITEM_EMBEDDINGS)
        else None
    )
    old_batch = spark.conf.get(ARROW_BATCH)
    spark.conf.set(ARROW_BATCH, str(model.arrow_batch_rows))
    try:
        vectors = item_embeddings(
            items, template=model.text_template, embed=embed, model=name, previous=previous
        ).persist(StorageLevel.MEMORY_AND_DISK)
        n_items = vectors.count()  # embeds once, before the table it may reuse is replaced
        n_items = tables.write(vectors, warehouse, ITEM_EMBEDDINGS)
    finally:
        spark.conf.set(ARROW_BATCH, old_batch)
    vectors.unpersist()
    users = user_embeddings(
        orders,
        tables.read(spark, warehouse, ITEM_EMBEDDINGS),
        run_date=settings.date,
        half_life_days=settings.recommend.recency_half_life_days,
        timezone=settings.features.timezone,
        model=name,
    )
    n_users = tables.write(
        users, warehouse, USER_EMBEDDINGS, replace={"run_date": settings.date}, partition_by=["run_date"]
    )
    log.info("embed: %d items, %d users with model %s", n_items, n_users, name)
    return StageResult(
        rows_in=None, rows_out=n_items + n_users, tables=[ITEM_EMBEDDINGS, USER_EMBEDDINGS],
        details={"items": n_items, "users": n_users, "model": name},
    )


def main(argv: list[str] | None = None) -> int:
    return main_for("embed", run, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
