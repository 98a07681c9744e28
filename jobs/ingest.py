"""Ingest and clean: source adapter -> ``orders_clean``, ``orders_quarantine``, ``items``.

    python -m jobs.ingest --source olist --input ../shared/datasets/olist_brazilian_ecommerce
    spark-submit jobs/ingest.py --source synthetic --rows 20000 --seed 42
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from stpipe import clean, tables
from stpipe.adapters import read_source
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.errors import ReconciliationError
from stpipe.runlog import StageResult

log = logging.getLogger("stpipe.ingest")

ORDERS_CLEAN = "orders_clean"
ORDERS_QUARANTINE = "orders_quarantine"
ITEMS = "items"


def run(spark: SparkSession, settings: Settings) -> StageResult:
    ingest = settings.ingest
    warehouse = settings.storage.warehouse
    raw = read_source(spark, ingest)
    checked = clean.validate_orders(
        raw.orders,
        run_date=settings.date,
        min_date=ingest.min_date,
        max_future_days=ingest.max_future_days,
        max_quantity=ingest.max_quantity,
        max_unit_price=ingest.max_unit_price,
        max_text_chars=ingest.max_text_chars,
        naive_timezone=raw.naive_timezone,
        region_aliases=ingest.region_aliases,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    rows_read = checked.count()
    orders, quarantine = clean.clean_and_quarantine(checked, source=raw.source)
    items = clean.clean_items(raw.items, source=raw.source, max_text_chars=ingest.max_text_chars)
    items = clean.add_missing_items(items, orders, source=raw.source)

    slice_ = {"source": raw.source}
    n_clean = tables.write(
        orders, warehouse, ORDERS_CLEAN, replace=slice_, partition_by=["order_date"],
        max_records_per_file=settings.storage.max_records_per_file,
    )
    n_quarantine = tables.write(quarantine, warehouse, ORDERS_QUARANTINE, replace=slice_)
    n_items = tables.write(items, warehouse, ITEMS, replace=slice_)
    checked.unpersist()
    reasons = counts_by_reason(spark, warehouse, raw.source)
    log.info(
        "ingest %s: read %d, clean %d, quarantined %d %s, items %d",
        raw.source, rows_read, n_clean, n_quarantine, reasons, n_items,
    )
    if rows_read != n_clean + n_quarantine:
        raise ReconciliationError(
            f"rows read {rows_read} != clean {n_clean} + quarantined {n_quarantine} "
            f"for source {raw.source}"
        )
    return StageResult(
        rows_in=rows_read,
        rows_out=n_clean,
        tables=[ORDERS_CLEAN, ORDERS_QUARANTINE, ITEMS],
        details={"quarantined": n_quarantine, "reasons": reasons, "items": n_items},
    )


def counts_by_reason(spark: SparkSession, warehouse: str, source: str) -> dict[str, int]:
    q = tables.read(spark, warehouse, ORDERS_QUARANTINE).where(f"source = '{source}'")
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
