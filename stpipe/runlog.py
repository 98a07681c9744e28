"""The ``run_log`` table: one row per stage run (start, end, rows in and out, status).

``status`` is ``ok``, ``failed`` or ``skipped`` (the nightly found the stage complete);
``message`` is the one-line error of a failed run, or the stage's details as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from stpipe import catalogue, tables

RUN_LOG = catalogue.RUN_LOG.name


@dataclass
class StageResult:
    """What a stage reports back to the runner."""

    rows_in: int | None = None
    rows_out: int | None = None
    tables: list[str] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)


def record(
    spark: SparkSession,
    warehouse: str,
    *,
    run_date: dt.date,
    stage: str,
    started: dt.datetime,
    finished: dt.datetime,
    status: str,
    result: StageResult | None = None,
    message: str | None = None,
) -> None:
    result = result or StageResult()
    if message is None and result.details:
        # A successful row keeps the stage's details (for the nightly: the fingerprint of
        # the inputs it read and the outputs it committed) as JSON.
        message = json.dumps(result.details, sort_keys=True, default=str)
    row = (
        run_date,
        stage,
        started.replace(tzinfo=None),
        finished.replace(tzinfo=None),
        result.rows_in,
        result.rows_out,
        status,
        message,
        list(result.tables),
    )
    row_df = spark.createDataFrame([row], catalogue.RUN_LOG.schema).coalesce(1)  # one file, no empty one
    tables.append(row_df, warehouse, RUN_LOG)


def completed(spark: SparkSession, warehouse: str, run_date: dt.date, stage: str) -> bool:
    """Whether ``stage`` has a successful run_log row for ``run_date``."""
    if not tables.exists(spark, warehouse, RUN_LOG):
        return False
    log = tables.read(spark, warehouse, RUN_LOG)
    return (
        log.where((log.run_date == run_date) & (log.stage == stage) & (log.status == "ok"))
        .limit(1)
        .count()
        > 0
    )


@dataclass(frozen=True)
class Attempt:
    """The latest run of a stage for a date that did work (skips do not count)."""

    status: str
    finished: dt.datetime
    tables: list[str]
    details: dict[str, object]


def latest_attempts(spark: SparkSession, warehouse: str, run_date: dt.date) -> dict[str, Attempt]:
    """Per stage, its latest ``ok`` or ``failed`` row for ``run_date`` (one read of the log:
    the nightly asks once for all its stages)."""
    if not tables.exists(spark, warehouse, RUN_LOG):
        return {}
    log = tables.read(spark, warehouse, RUN_LOG)
    rows = (
        log.where((log.run_date == run_date) & log.status.isin("ok", "failed"))
        .select("stage", "status", "finished", "tables", "message")
        .collect()
    )
    latest: dict[str, Attempt] = {}
    # the latest per stage; a tie counts as failed
    for row in sorted(rows, key=lambda r: (r["finished"], r["status"] == "failed")):
        latest[row["stage"]] = _attempt(row)
    return latest


def _attempt(row) -> Attempt:
    details: dict[str, object] = {}
    if row["status"] == "ok" and row["message"]:
        try:
            parsed = json.loads(row["message"])
            details = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            details = {}
    return Attempt(row["status"], row["finished"], list(row["tables"] or []), details)
