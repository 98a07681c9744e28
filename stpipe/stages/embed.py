"""Embed stage: ``items`` -> ``item_embeddings``; purchase histories -> ``user_embeddings``.

Item vectors of the previous ``item_embeddings`` are reused when text and model match.
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel

from stpipe.catalogue import ITEM_EMBEDDINGS, ITEMS, ORDERS_CLEAN, USER_EMBEDDINGS
from stpipe.recommend.embeddings import item_embeddings, user_embeddings
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext
from stpipe.stages.orchestrate import encoder_dir
from udfs.embed import make_embed_udf, model_label

log = logging.getLogger("stpipe.embed")

ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


def run(ctx: StageContext) -> StageResult:
    spark, settings = ctx.spark, ctx.settings
    model = settings.model
    items = ctx.read(ITEMS)
    orders = ctx.read(ORDERS_CLEAN)
    folder = encoder_dir(settings)
    name = model_label(folder)
    embed = make_embed_udf(
        folder, model.batch_size, token_budget=model.token_budget,
        max_length=model.max_length, device=model.device,
    )
    previous = ctx.read_if_exists(ITEM_EMBEDDINGS)
    old_batch = spark.conf.get(ARROW_BATCH)
    spark.conf.set(ARROW_BATCH, str(model.arrow_batch_rows))
    try:
        vectors = item_embeddings(
            items, template=model.text_template, embed=embed, model=name, previous=previous,
            rows_per_task=model.embed_rows_per_task,
        ).persist(StorageLevel.MEMORY_AND_DISK)
        n_items = vectors.count()  # embeds once, before the table it may reuse is replaced
        n_items = ctx.write(ITEM_EMBEDDINGS, vectors)
    finally:
        spark.conf.set(ARROW_BATCH, old_batch)
    vectors.unpersist()
    users = user_embeddings(
        orders,
        ctx.read(ITEM_EMBEDDINGS),
        run_date=settings.date,
        half_life_days=settings.recommend.recency_half_life_days,
        timezone=settings.features.timezone,
        model=name,
        history_days=settings.recommend.history_days,
    )
    n_users = ctx.write(USER_EMBEDDINGS, users)
    log.info("embed: %d items, %d users with model %s", n_items, n_users, name)
    return StageResult(
        rows_in=None, rows_out=n_items + n_users,
        details={ITEM_EMBEDDINGS.name: n_items, USER_EMBEDDINGS.name: n_users, "model": name},
    )


EMBED = Stage(
    "embed", run, inputs=(ORDERS_CLEAN, ITEMS), outputs=(ITEM_EMBEDDINGS, USER_EMBEDDINGS),
    reuses=(ITEM_EMBEDDINGS,), config=("model", "features", "recommend"),
)
