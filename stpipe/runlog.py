"""The ``run_log`` table: one row per stage run (start, end, rows in and out, status)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from stpipe import tables

RUN_LOG = "run_log"

RUN_LOG_SCHEMA = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("stage", T.StringType(), False),
        T.StructField("started", T.TimestampType(), False),
        T.StructField("finished", T.TimestampType(), False),
        T.StructField("rows_in", T.LongType(), True),
        T.StructField("rows_out", T.LongType(), True),
        T.StructField("status", T.StringType(), False),
        T.StructField("message", T.StringType(), True),
        T.StructField("tables", T.ArrayType(T.StringType()), True),
    ]
)


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
    tables.append(spark.createDataFrame([row], RUN_LOG_SCHEMA), warehouse, RUN_LOG)


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
