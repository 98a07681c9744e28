"""Ingest and clean: source adapter -> ``orders_clean``, ``orders_quarantine``, ``items`` (``reviews``).

    python -m jobs.ingest --source olist --input ../shared/datasets/olist_brazilian_ecommerce
    python -m jobs.ingest --source online_retail --input ../shared/datasets/uci_online_retail_2011h1
    spark-submit jobs/ingest.py --source synthetic --rows 20000 --seed 42

Every row read ends in ``orders_clean`` or in ``orders_quarantine`` (with a reason code);
the job fails when rows read != clean + quarantined. Each table holds one slice per
source, replaced on every run, so re-ingesting the same input leaves the same tables.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe import clean, tables
from stpipe.adapters import read_source
from stpipe.adapters.base import RawInput
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.errors import ConfigError, InputError, ReconciliationError
from stpipe.runlog import StageResult
from stpipe.schema import REVIEWS, select_schema

log = logging.getLogger("stpipe.ingest")

ORDERS_CLEAN = "orders_clean"
ORDERS_QUARANTINE = "orders_quarantine"
ITEMS = "items"
REVIEWS_TABLE = "reviews"


def check_writable(warehouse: str) -> None:
    """Fail before reading anything when the warehouse folder cannot be written."""
    path = Path(warehouse).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"storage.warehouse: {warehouse} is not a writable folder")


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


def prepare(raw: RawInput, settings: Settings) -> Prepared:
    """Validate, mark duplicates, cache, count, and build the output frames (writes nothing).

    The caller unpersists ``checked`` when the frames are written.
    """
    ingest = settings.ingest
    checked = (
        clean.validate_orders(
            clean.cluster_by_order(raw.orders),
            run_date=settings.date,
            min_date=ingest.min_date,
            max_future_days=ingest.max_future_days,
            max_quantity=ingest.max_quantity,
            max_unit_price=ingest.max_unit_price,
            max_text_chars=ingest.max_text_chars,
            naive_timezone=raw.naive_timezone,
            unknown_regions=ingest.unknown_regions,
        )
        .transform(clean.mark_duplicates)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    # One pass fills the cache and gives rows read, reasons and region spellings.
    stats = checked.groupBy("region", "reason").count().collect()
    if not stats:
        checked.unpersist()
        where = ingest.input or raw.source
        raise InputError(f"{where}: header only, no data rows")
    spellings: dict[str, int] = {}
    for r in stats:
        if r["region"] is not None:
            spellings[r["region"]] = spellings.get(r["region"], 0) + r["count"]
    regions = clean.region_mapping(spellings, ingest.region_aliases)
    orders, quarantine = clean.clean_and_quarantine(
        clean.apply_region_mapping(checked, regions), source=raw.source
    )
    items = clean.clean_items(raw.items, source=raw.source, max_text_chars=ingest.max_text_chars)
    items = clean.add_missing_items(items, orders, source=raw.source)
    reviews = None
    if raw.reviews is not None:
        reviews = select_schema(raw.reviews.withColumn("source", F.lit(raw.source)), REVIEWS)
    return Prepared(
        source=raw.source,
        checked=checked,
        orders=orders,
        quarantine=quarantine,
        items=items,
        reviews=reviews,
        rows_read=sum(r["count"] for r in stats),
        reasons=clean.reason_counts((r["reason"], r["count"]) for r in stats),
        regions=regions,
    )


def run(spark: SparkSession, settings: Settings) -> StageResult:
    warehouse = settings.storage.warehouse
    check_writable(warehouse)
    p = prepare(read_source(spark, settings.ingest), settings)
    slice_ = {"source": p.source}
    try:
        n_clean = tables.write(
            p.orders, warehouse, ORDERS_CLEAN, replace=slice_, partition_by=["order_date"],
            max_records_per_file=settings.storage.max_records_per_file,
        )
        n_quarantine = tables.write(p.quarantine, warehouse, ORDERS_QUARANTINE, replace=slice_)
        n_items = tables.write(p.items, warehouse, ITEMS, replace=slice_)
        n_reviews = None
        if p.reviews is not None:
            n_reviews = tables.write(p.reviews, warehouse, REVIEWS_TABLE, replace=slice_)
    finally:
        p.checked.unpersist()

    log.info(
        "ingest %s: read %d, clean %d, quarantined %d %s, items %d, regions renamed %s",
        p.source, p.rows_read, n_clean, n_quarantine, p.reasons, n_items, p.regions,
    )
    if p.rows_read != n_clean + n_quarantine or n_quarantine != sum(p.reasons.values()):
        raise ReconciliationError(
            f"rows read {p.rows_read} != clean {n_clean} + quarantined {n_quarantine} "
            f"for source {p.source}"
        )
    details: dict[str, Any] = {"quarantined": n_quarantine, "reasons": p.reasons, "items": n_items}
    written = [ORDERS_CLEAN, ORDERS_QUARANTINE, ITEMS]
    if n_reviews is not None:
        details["reviews"] = n_reviews
        written.append(REVIEWS_TABLE)
    return StageResult(rows_in=p.rows_read, rows_out=n_clean, tables=written, details=details)


def counts_by_reason(spark: SparkSession, warehouse: str, source: str) -> dict[str, int]:
    """Quarantined rows per reason code of one source, read back from the table."""
    q = tables.read(spark, warehouse, ORDERS_QUARANTINE).where(F.col("source") == source)
    return {r["reason"]: r["count"] for r in q.groupBy("reason").count().orderBy("reason").collect()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="synthetic, olist, online_retail or canonical")
    parser.add_argument("--input", help="input file or folder (not for synthetic)")
    parser.add_argument("--rows", type=int, help="synthetic: number of order lines")
    parser.add_argument("--seed", type=int, help="synthetic: random seed")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ingest.source": args.source,
        "ingest.input": args.input,
        "ingest.rows": args.rows,
        "ingest.seed": args.seed,
    }


def main(argv: list[str] | None = None) -> int:
    return main_for(
        "ingest", run, argv, description=__doc__, add_arguments=add_arguments, overrides=overrides
    )


if __name__ == "__main__":
    raise SystemExit(main())
