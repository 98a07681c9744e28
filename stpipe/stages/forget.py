"""Forget stage: erase people from every table, record it, keep them out of later ingests.

``forget_stage(ids, source)`` deletes (Delta DELETE, one commit per table) every row of those
users from each table with a ``user_id`` (``catalogue.PERSONAL``) and the quarantined lines
whose record names them, then VACUUMs what it touched by ``storage.vacuum_retention_hours``
(until then Delta's older versions still hold the files: 0 frees them at once). Each person
gets a row in ``erasures`` with their pseudonym, never the raw id; ingest drops the lines of
every pseudonym there, so the next nightly from the same input keeps them out. A second
request for the same people deletes nothing and records nothing.

Shared signals that person fed (co-occurrence, popularity, fusion weights, Granger series,
item embeddings) are aggregates without ids: they are recomputed without them by the next
nightly, not edited here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

from stpipe import privacy, upkeep
from stpipe.catalogue import ERASURES, ORDERS_QUARANTINE, PERSONAL
from stpipe.clean import normalise_id
from stpipe.errors import ConfigError
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext

log = logging.getLogger("stpipe.forget")


def forget_stage(user_ids: Sequence[str], source: str) -> Stage:
    """The stage erasing ``user_ids`` (raw ids, as the source spells them) of ``source``."""
    ids = sorted({u.strip() for u in user_ids if u and u.strip()})

    def run(ctx: StageContext) -> StageResult:
        if not ids:
            raise ConfigError("no user id given (--user ID or --users-file FILE)")
        settings = ctx.settings
        key = privacy.load_key(settings.privacy, ctx.warehouse)
        people = ctx.spark.createDataFrame([(u,) for u in ids], "user_id string").select(
            normalise_id(F.col("user_id")).alias("raw")
        ).select("raw", privacy.pseudonym_col(key, source, F.col("raw")).alias("code")).collect()
        codes = sorted({r["code"] for r in people})
        stored = codes if settings.privacy.pseudonymize else sorted({r["raw"] for r in people})
        deleted: dict[str, int] = {}
        for table in PERSONAL:
            if ctx.exists(table):
                condition = (F.col("source") == source) & F.col("user_id").isin(stored)
                deleted[table.name] = ctx.delete(table, condition)
        if ctx.exists(ORDERS_QUARANTINE):
            deleted[ORDERS_QUARANTINE.name] = ctx.delete(
                ORDERS_QUARANTINE, (F.col("source") == source) & _names_any(stored)
            )
        recorded = set()
        if ctx.exists(ERASURES):
            recorded = {
                r["user_id"] for r in ctx.read(ERASURES).where(F.col("source") == source)
                .where(F.col("user_id").isin(codes)).select("user_id").distinct().collect()
            }
        total = sum(deleted.values())
        new = [c for c in codes if c not in recorded]
        if new or total:
            now = dt.datetime.now(dt.timezone.utc)
            summary = json.dumps(dict(sorted(deleted.items())))
            rows = [(now, source, c, summary) for c in (codes if total else new)]
            ctx.append(ERASURES, ctx.spark.createDataFrame(rows, ERASURES.schema))
        touched = [name for name, n in deleted.items() if n]
        if touched:
            for name in touched:
                upkeep.housekeeping(
                    ctx.spark, ctx.warehouse, name, optimize=False, vacuum=True,
                    retention_hours=settings.storage.vacuum_retention_hours,
                )
        log.info(
            "forget %s: %d people (%d already erased), rows deleted %s", source, len(codes),
            len(recorded), deleted,
        )
        return StageResult(
            rows_in=len(codes), rows_out=total,
            details={"people": len(codes), "already_erased": len(recorded), "deleted": deleted},
        )

    return Stage(
        "forget", run, outputs=(*PERSONAL, ORDERS_QUARANTINE, ERASURES),
        optional=(ERASURES,), config=("privacy",),
    )


def _names_any(values: Sequence[str]) -> Column:
    """A quarantined record holding one of ``values`` as a whole JSON string value."""
    condition = F.lit(False)
    for v in values:
        condition = condition | F.col("raw_record").contains(json.dumps(v))
    return condition


# The stage's declaration, for the job's shell (it binds the ids from its arguments).
FORGET = forget_stage((), "")
