"""Features stage: ``orders_clean`` + ``items`` -> the four time and space feature tables.

Each table is replaced by ``run_date``. Only order lines before the run date's 00:00 in
``features.timezone`` are read (see ``stpipe/features/common.py``); the frames come from
:func:`stpipe.features.build.feature_frames`, which the recommender also uses.
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import functions as F

from stpipe.catalogue import ITEMS, ORDERS_CLEAN
from stpipe.features.build import FEATURE_TABLES, feature_frames, history_lines
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext

log = logging.getLogger("stpipe.features")


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.settings.features
    lines = history_lines(
        ctx.read(ORDERS_CLEAN), ctx.read(ITEMS),
        run_date=ctx.run_date, history_days=cfg.history_days, timezone=cfg.timezone,
    )
    outputs = feature_frames(lines, run_date=ctx.run_date, params=cfg)
    # four aggregations read the history: keep it instead of rereading orders_clean
    lines.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows_in = lines.count()
        for table, df in outputs.items():  # a table written before a column was added gains it
            ctx.add_missing_columns(table, df.schema)
        written = {table.name: ctx.write(table, df) for table, df in outputs.items()}
    finally:
        lines.unpersist()
    log.info("features for %s: %d history lines, %s", ctx.run_date, rows_in, written)
    if rows_in == 0:
        span = ctx.read(ORDERS_CLEAN).agg(F.to_date(F.min("ts")), F.to_date(F.max("ts"))).first()
        log.warning(
            "features for %s: no order line in the %d days before it (orders_clean runs from %s "
            "to %s); is --date right?", ctx.run_date, cfg.history_days, span[0], span[1],
        )
    return StageResult(rows_in=rows_in, rows_out=sum(written.values()), details={"rows": written})


FEATURES = Stage(
    "features", run, inputs=(ORDERS_CLEAN, ITEMS), outputs=FEATURE_TABLES, config=("features",)
)
