"""Ingest stage: source adapter -> ``orders_clean``, ``orders_quarantine``, ``items`` (``reviews``).

Every row read ends in ``orders_clean`` or in ``orders_quarantine`` (with a reason code), or
is dropped as an erased person's; the job fails when rows read != clean + quarantined + erased.

Incremental nights (``ingest.incremental``, the default, once the source has lines) read only
what is new (:mod:`stpipe.incremental`) and merge it: order lines on (source, order_id,
line_no) (a changed line is updated, an identical one left alone, a new one inserted), items
on (source, item_id), quarantine records on (source, reason, raw_record) and the id map on
(source, user_id) (insert only). Reviews, read whole, replace their slice. ``orders_clean``
is committed after the other tables (it tells a file source where to start next time) and
``ingest_files`` last, so a night killed midway reads the same input again and the merges
make the rerun change nothing twice. A full refresh (``ingest.incremental: false``) replaces
every slice of the source, as the first night does.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe import clean, incremental, privacy, tables
from stpipe.adapters import read_source
from stpipe.adapters.base import RawInput, existing_path
from stpipe.catalogue import (
    ERASURES,
    INGEST_FILES,
    ITEMS,
    ORDERS_CLEAN,
    ORDERS_QUARANTINE,
    REVIEWS,
    USER_ID_MAP,
)
from stpipe.config import IngestSettings, Settings
from stpipe.errors import ConfigError, InputError, ReconciliationError
from stpipe.merge import Merged
from stpipe.runlog import StageResult
from stpipe.schema import select_schema
from stpipe.stages.base import Stage, StageContext

log = logging.getLogger("stpipe.ingest")


def check_writable(warehouse: str) -> None:
    """Fail before reading anything when the warehouse folder cannot be written."""
    path = tables.local_folder(warehouse)
    if path is None:  # an object store: Spark reports what it cannot write
        return
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"storage.warehouse: {warehouse} is not a writable folder")


def check_input(settings: Settings) -> None:
    """Fail before Spark starts when a file source's input is missing (the command line's
    pre-flight; the adapters check it again when they read)."""
    if settings.ingest.source != "synthetic":
        existing_path(settings.ingest.input or "", "input")


@dataclass
class Prepared:
    """The tables of one ingest as frames (``checked`` is cached), with the counts of one pass."""

    source: str
    checked: DataFrame
    orders: DataFrame
    quarantine: DataFrame
    items: DataFrame
    reviews: DataFrame | None
    rows_read: int
    reasons: dict[str, int]
    regions: dict[str, str]
    erased: int = 0  # lines of users erased by jobs.forget (dropped, counted)
    unknown_fields: list[str] = field(default_factory=list)  # input columns not kept anywhere


def prepare(
    raw: RawInput,
    *,
    run_date: dt.date,
    ingest: IngestSettings,
    protect: privacy.Protection | None = None,
    since: dt.date | None = None,
    allow_empty: bool = False,
) -> Prepared:
    """Validate, mark duplicates, protect, cache, count, and build the output frames (writes nothing).

    ``ingest`` is the plain-valued ingest section (bounds, aliases, unknown regions);
    ``protect`` pseudonymises, coarsens and drops erased users (None: raw values); ``since``
    keeps only lines dated after it (and those whose time cannot be parsed); ``allow_empty``:
    no line is not an error (an incremental night with nothing new). The caller unpersists
    ``checked`` when the frames are written.
    """
    orders = raw.orders
    if since is not None:
        ts = clean.parse_timestamp(F.col("ts"), raw.naive_timezone)
        orders = orders.where(incremental.after_date(ts, since))
    validated = (
        clean.validate_orders(
            clean.cluster_by_order(orders),
            run_date=run_date,
            min_date=ingest.min_date,
            max_future_days=ingest.max_future_days,
            max_quantity=ingest.max_quantity,
            max_unit_price=ingest.max_unit_price,
            max_text_chars=ingest.max_text_chars,
            naive_timezone=raw.naive_timezone,
            unknown_regions=ingest.unknown_regions,
        )
        .transform(clean.mark_duplicates)
    )
    if protect is None:
        validated = validated.withColumn(privacy.ERASED, F.lit(False))
    else:
        validated = privacy.protect_lines(validated, raw, protect)
    checked = validated.persist(StorageLevel.MEMORY_AND_DISK)
    # One pass fills the cache and gives rows read, reasons, erased lines and region spellings.
    stats = checked.groupBy("region", "reason", privacy.ERASED).count().collect()
    if not stats and not allow_empty:
        checked.unpersist()
        where = ingest.input or raw.source
        raise InputError(f"{where}: header only, no data rows")
    spellings: dict[str, int] = {}
    for r in stats:
        if r["region"] is not None and not r[privacy.ERASED]:
            spellings[r["region"]] = spellings.get(r["region"], 0) + r["count"]
    regions = clean.region_mapping(spellings, ingest.region_aliases)
    orders, quarantine = clean.clean_and_quarantine(
        clean.apply_region_mapping(checked.where(~F.col(privacy.ERASED)), regions), source=raw.source
    )
    items = clean.clean_items(raw.items, source=raw.source, max_text_chars=ingest.max_text_chars)
    items = clean.add_missing_items(items, orders, source=raw.source)
    reviews = None
    if raw.reviews is not None:
        reviews = raw.reviews.withColumn("source", F.lit(raw.source))
        if protect is not None:
            reviews = privacy.protect_reviews(reviews, protect)
        reviews = select_schema(reviews, REVIEWS.schema)
    return Prepared(
        source=raw.source,
        checked=checked,
        orders=orders,
        quarantine=quarantine,
        items=items,
        reviews=reviews,
        rows_read=sum(r["count"] for r in stats),
        reasons=clean.reason_counts(
            (r["reason"], r["count"]) for r in stats if not r[privacy.ERASED]
        ),
        regions=regions,
        erased=sum(r["count"] for r in stats if r[privacy.ERASED]),
        unknown_fields=list(raw.unknown_fields),
    )


def check_one_source(ctx: StageContext, source: str, *, mixed_sources: bool) -> None:
    """Stop before writing when the warehouse already holds another source, unless asked.

    One warehouse, one source is the rule a user expects (the embedded default generates
    synthetic data: it must never land beside a real shop's orders); two shops in one
    warehouse is possible with ``ingest.mixed_sources`` (users stay apart: (source, user_id)).
    """
    if mixed_sources or not ctx.exists(ITEMS):
        return
    held = sorted(
        r["source"] for r in ctx.read(ITEMS).select("source").distinct().collect()
        if r["source"] != source
    )
    if held:
        raise ConfigError(
            f"warehouse {ctx.warehouse} holds source {', '.join(held)}; ingesting {source} would "
            f"mix them: name it (--source {held[0]} --input PATH), run the stages on what is "
            "there (--no-ingest), use another --warehouse, or --set ingest.mixed_sources=true"
        )


def erased_pseudonyms(ctx: StageContext, source: str) -> tuple[str, ...]:
    """The pseudonyms jobs.forget erased from ``source`` (their lines are kept out)."""
    erasures = ctx.read_if_exists(ERASURES)
    if erasures is None:
        return ()
    rows = erasures.where(F.col("source") == source).select("user_id").distinct().collect()
    return tuple(sorted(r["user_id"] for r in rows))


def last_order_date(ctx: StageContext, source: str) -> dt.date | None:
    """The latest order date of ``source`` in ``orders_clean`` (None: no line yet)."""
    orders = ctx.read_if_exists(ORDERS_CLEAN)
    if orders is None:
        return None
    return orders.where(F.col("source") == source).agg(F.max("order_date")).first()[0]


def ingested_files(ctx: StageContext, source: str) -> set[incremental.FileStamp]:
    """The stamps of the files of ``source`` that ``ingest_files`` lists as ingested."""
    files = ctx.read_if_exists(INGEST_FILES)
    if files is None:
        return set()
    rows = files.where(F.col("source") == source).select("path", "size", "mtime_ns").collect()
    return {incremental.FileStamp(r["path"], r["size"], r["mtime_ns"]) for r in rows}


# Above this many new lines the merge shuffles the table instead of broadcasting the night's keys.
BROADCAST_MAX_LINES = 500_000


def write_full(ctx: StageContext, p: Prepared) -> tuple[int, int, int]:
    """Replace the source's slices (the first night, a full refresh): (clean, quarantined, items).

    ``orders_clean`` last: a first night killed before it is a first night again."""
    n_quarantine = ctx.write(ORDERS_QUARANTINE, p.quarantine, source=p.source)
    n_items = ctx.write(ITEMS, p.items, source=p.source)
    return ctx.write(ORDERS_CLEAN, p.orders, source=p.source), n_quarantine, n_items


def merge_new(ctx: StageContext, p: Prepared, merged: dict[str, dict[str, int]]) -> tuple[int, int, int]:
    """Merge the night's frames (orders_clean last); fill ``merged`` with what each merge did."""
    small = p.rows_read - p.erased - sum(p.reasons.values()) <= BROADCAST_MAX_LINES
    q = Merged(None, 0, 0, 0)  # the night's count found no bad row: nothing to merge
    if p.reasons:
        q = ctx.merge(ORDERS_QUARANTINE, p.quarantine, keys=["source", "reason", "raw_record"],
                      compare=[], small_batch=small, source=p.source)
    i = ctx.merge(ITEMS, p.items, keys=["source", "item_id"], small_batch=True, source=p.source)
    o = ctx.merge(ORDERS_CLEAN, p.orders, keys=["source", "order_id", "line_no"],
                  small_batch=small, source=p.source)
    for table, done in ((ORDERS_QUARANTINE, q), (ITEMS, i), (ORDERS_CLEAN, o)):
        merged[table.name] = {"inserted": done.inserted, "updated": done.updated,
                              "unchanged": done.unchanged}
    return o.rows, q.rows, i.rows


def run(ctx: StageContext) -> StageResult:
    check_writable(ctx.warehouse)
    settings = ctx.settings
    check_one_source(ctx, settings.ingest.source, mixed_sources=settings.ingest.mixed_sources)
    source = settings.ingest.source
    incremental_ = settings.ingest.incremental
    # a folder source whose files are listed has been ingested (the list is committed after
    # its lines), so its last order date, a scan of every line, is not needed
    listed = ingested_files(ctx, source) if incremental_ and ctx.exists(ORDERS_CLEAN) else set()
    last_date = last_order_date(ctx, source) if incremental_ and not listed else None
    # a first, full ingest when nothing of the source is there yet, or when the id map is
    # asked for and missing (it needs every raw id, which only the whole input holds)
    privacy_ = settings.privacy
    map_missing = privacy_.keep_id_map and privacy_.pseudonymize and not ctx.exists(USER_ID_MAP)
    merging = (bool(listed) or last_date is not None) and not map_missing
    raw = read_source(ctx.spark, settings.ingest, skip=listed if merging else None)
    if raw.tracks_files:
        since = None  # the new files are what is new, whatever their dates
    else:  # a file source: the lines dated after the last one ingested (less late_days);
        # looked up here when a file list (left by a folder source of this name) skipped it above
        if merging and last_date is None:
            last_date = last_order_date(ctx, source)
        since = incremental.since_date(last_date, settings.ingest.late_days)
    protect = privacy.protection(
        settings.privacy, ctx.warehouse, erased=erased_pseudonyms(ctx, raw.source)
    )
    p = prepare(raw, run_date=ctx.run_date, ingest=settings.ingest, protect=protect, since=since,
                allow_empty=merging)
    merged: dict[str, dict[str, int]] = {}
    try:
        # before orders_clean: its last order date is where a file source starts next time
        n_reviews = None
        if p.reviews is not None:  # read whole every night: replaced
            n_reviews = ctx.write(REVIEWS, p.reviews, source=p.source)
        if settings.privacy.keep_id_map and settings.privacy.pseudonymize:
            ids = p.checked.where(~F.col(privacy.ERASED) & F.col("reason").isNull()).select(
                F.lit(p.source).alias("source"), "user_id", F.col(privacy.RAW_USER_ID).alias("raw_user_id")
            ).distinct()
            if merging:
                ctx.merge(USER_ID_MAP, ids, keys=["source", "user_id"], compare=[], source=p.source)
            else:
                ctx.write(USER_ID_MAP, ids, source=p.source)
        if merging:
            n_clean, n_quarantine, n_items = merge_new(ctx, p, merged)
        else:
            n_clean, n_quarantine, n_items = write_full(ctx, p)
    finally:
        p.checked.unpersist()

    log.info(
        "ingest %s (%s): read %d, clean %d, quarantined %d %s, erased %d, items %d, regions renamed %s",
        p.source, f"since {since}" if since else f"{len(raw.files)} files" if merging else "full",
        p.rows_read, n_clean, n_quarantine, p.reasons, p.erased, n_items, p.regions,
    )
    if p.unknown_fields:
        log.warning(
            "ingest %s: %d input columns not known to the adapter dropped (not kept in any "
            "table, quarantine included): %s", p.source, len(p.unknown_fields), p.unknown_fields,
        )
    if p.rows_read != n_clean + n_quarantine + p.erased or n_quarantine != sum(p.reasons.values()):
        raise ReconciliationError(
            f"rows read {p.rows_read} != clean {n_clean} + quarantined {n_quarantine} "
            f"+ erased {p.erased} for source {p.source}"
        )
    if raw.tracks_files:  # after the lines: a night killed before this reads its files again
        record_files(ctx, raw, merging=merging, listed={f.path for f in listed})
    details: dict[str, Any] = {
        "quarantined": n_quarantine, "reasons": p.reasons, ITEMS.name: n_items,
        "erased": p.erased, "dropped_columns": p.unknown_fields,
        "mode": "incremental" if merging else "full",
        "since": since.isoformat() if since else None,
    }
    if raw.tracks_files:
        details["files_read"] = len(raw.files)
    if merging:
        details["merged"] = merged
        details.update(merged[ORDERS_CLEAN.name])  # inserted, updated, unchanged order lines
    if n_reviews is not None:
        details[REVIEWS.name] = n_reviews
    return StageResult(rows_in=p.rows_read, rows_out=n_clean, details=details)


def record_files(ctx: StageContext, raw: RawInput, *, merging: bool, listed: set[str]) -> None:
    """List the files read in ``ingest_files`` (a full ingest: replaces the source's list);
    ``listed``: the paths listed before."""
    if merging and not raw.files:
        return  # nothing new was read: nothing to list (and no empty commit)
    rows = [(raw.source, f.path, f.size, f.mtime_ns, ctx.run_date) for f in raw.files]
    df = ctx.spark.createDataFrame(rows, INGEST_FILES.schema).coalesce(1)
    if merging and not listed & {f.path for f in raw.files}:
        ctx.append(INGEST_FILES, df)  # only files never seen: no need to join with the list
    elif merging:  # a listed file that changed: its row is updated
        ctx.merge(INGEST_FILES, df, keys=["source", "path"], compare=["size", "mtime_ns"],
                  small_batch=True, source=raw.source)
    else:
        ctx.write(INGEST_FILES, df, source=raw.source)


def counts_by_reason(spark: SparkSession, warehouse: str, source: str) -> dict[str, int]:
    """Quarantined rows per reason code of one source, read back from the table."""
    q = tables.read(spark, warehouse, ORDERS_QUARANTINE.name).where(F.col("source") == source)
    return {r["reason"]: r["count"] for r in q.groupBy("reason").count().orderBy("reason").collect()}


INGEST = Stage(
    "ingest", run,
    outputs=(ORDERS_CLEAN, ORDERS_QUARANTINE, ITEMS, REVIEWS, USER_ID_MAP, INGEST_FILES),
    optional=(ERASURES,), reuses=(ITEMS, ORDERS_CLEAN, INGEST_FILES), config=("ingest", "privacy"),
    reads_source=True,
)
