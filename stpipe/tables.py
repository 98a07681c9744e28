"""Delta tables under one warehouse folder: the only module that reads or writes them.

Every write is a single Delta commit, so a reader sees either the previous version
or the new one, never a partial write (a job killed mid-write leaves the table on
its previous version). Writes that belong to one run date or one source replace
exactly that slice (``replaceWhere``), which makes reruns idempotent.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from stpipe.errors import PipelineError, TableMissingError


def table_path(warehouse: str, name: str) -> str:
    """Absolute path of table ``name`` (one folder per table under the warehouse)."""
    return str(Path(warehouse).expanduser().resolve() / name)


def exists(spark: SparkSession, warehouse: str, name: str) -> bool:
    return DeltaTable.isDeltaTable(spark, table_path(warehouse, name))


# The names of the tables read inside recording_reads() (None: nobody is recording).
_reads: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("reads", default=None)


@contextlib.contextmanager
def recording_reads() -> Iterator[list[str]]:
    """Collect the names of the tables :func:`read` opens inside the block, in order."""
    names: list[str] = []
    token = _reads.set(names)
    try:
        yield names
    finally:
        _reads.reset(token)


def read(spark: SparkSession, warehouse: str, name: str) -> DataFrame:
    """Read a table, with a message naming the stage to run when it is missing."""
    path = table_path(warehouse, name)
    reads = _reads.get()
    if reads is not None:
        reads.append(name)
    if not exists(spark, warehouse, name):
        raise TableMissingError(
            f"table {name} not found at {path}; run the stage that writes it first "
            "(python -m jobs.nightly runs them in order)"
        )
    return spark.read.format("delta").load(path)


def sql_literal(value: object) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        # Spark's SQL lexer reads a backslash as an escape (doubling a quote is not one)
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def slice_condition(**equals: object) -> str:
    """``col = literal AND ...`` for replaceWhere."""
    return " AND ".join(f"{col} = {sql_literal(val)}" for col, val in sorted(equals.items()))


def write(
    df: DataFrame,
    warehouse: str,
    name: str,
    *,
    replace: dict[str, object] | None = None,
    partition_by: list[str] | None = None,
    max_records_per_file: int | None = None,
) -> int:
    """Write ``df`` as table ``name`` in one commit and return its row count.

    ``replace={"run_date": d}`` replaces only that slice (the frame must hold only
    rows of the slice); ``replace=None`` overwrites the whole table.
    """
    path = table_path(warehouse, name)
    if partition_by:  # one writer task per partition value: no swarm of tiny files
        df = df.repartition(*partition_by)
    writer = df.write.format("delta").mode("overwrite")
    if replace:
        writer = writer.option("replaceWhere", slice_condition(**replace))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if max_records_per_file:
        writer = writer.option("maxRecordsPerFile", max_records_per_file)
    try:
        writer.save(path)
    except Exception as exc:  # Delta's AnalysisException carries a readable message
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise PipelineError(f"writing table {name} at {path} failed: {message}") from exc
    return committed_rows(df.sparkSession, warehouse, name, replace)


def committed_rows(
    spark: SparkSession, warehouse: str, name: str, replace: dict[str, object] | None = None
) -> int:
    """Rows of the written slice in the table's latest version (read back, not trusted)."""
    history = DeltaTable.forPath(spark, table_path(warehouse, name)).history(1).collect()
    metrics = history[0]["operationMetrics"] or {}
    if "numOutputRows" in metrics and history[0]["operation"] == "WRITE":
        return int(metrics["numOutputRows"])
    df = spark.read.format("delta").option("versionAsOf", history[0]["version"]).load(
        table_path(warehouse, name)
    )
    return df.where(slice_condition(**replace)).count() if replace else df.count()


def version(spark: SparkSession, warehouse: str, name: str) -> int | None:
    if not exists(spark, warehouse, name):
        return None
    return int(DeltaTable.forPath(spark, table_path(warehouse, name)).history(1).collect()[0]["version"])


def append(df: DataFrame, warehouse: str, name: str) -> None:
    df.write.format("delta").mode("append").save(table_path(warehouse, name))


def housekeeping(
    spark: SparkSession,
    warehouse: str,
    names: list[str],
    *,
    retention_hours: int,
    optimize: bool = True,
    vacuum: bool = True,
    max_file_mb: int | None = None,
) -> None:
    """OPTIMIZE (compact small files) and VACUUM old files of the given tables."""
    if max_file_mb:
        size = str(max_file_mb * 1024 * 1024)
        spark.conf.set("spark.databricks.delta.optimize.maxFileSize", size)
        spark.conf.set("spark.databricks.delta.optimize.minFileSize", size)
    for name in names:
        if not exists(spark, warehouse, name):
            continue
        table = DeltaTable.forPath(spark, table_path(warehouse, name))
        if optimize:
            table.optimize().executeCompaction()
        if vacuum:
            if retention_hours < DEFAULT_RETENTION_HOURS:
                spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
            if retention_hours == 0:
                table.vacuum(0)
            else:
                # Delta ignores any other VACUUM RETAIN value (with a warning) and keeps what
                # the table's delta.deletedFileRetentionDuration says: set it from the config.
                _set_file_retention(spark, table, warehouse, name, retention_hours)
                table.vacuum()


DEFAULT_RETENTION_HOURS = 168  # Delta's default delta.deletedFileRetentionDuration (1 week)
RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"


def _set_file_retention(
    spark: SparkSession, table: DeltaTable, warehouse: str, name: str, hours: int
) -> None:
    """Make the table keep removed files ``hours`` hours (one commit, only when it changes)."""
    current = table.detail().select("properties").first()["properties"].get(RETENTION_PROPERTY)
    wanted = f"interval {hours} hours"
    if current == wanted or (current is None and hours == DEFAULT_RETENTION_HOURS):
        return
    spark.sql(
        f"ALTER TABLE delta.`{table_path(warehouse, name)}` "
        f"SET TBLPROPERTIES ('{RETENTION_PROPERTY}' = '{wanted}')"
    )


# Commits that rewrite or delete files, or set housekeeping properties, without changing rows.
HOUSEKEEPING_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})


def data_version(spark: SparkSession, warehouse: str, name: str) -> int | None:
    """The latest version that changed the table's rows (OPTIMIZE and VACUUM do not count).

    A stage that read version v of an input is still up to date after housekeeping
    compacted that input; it is not after any other commit.
    """
    if not exists(spark, warehouse, name):
        return None
    history = DeltaTable.forPath(spark, table_path(warehouse, name)).history()
    rows = history.select("version", "operation").orderBy(history.version.desc()).collect()
    for row in rows:
        if row["operation"] not in HOUSEKEEPING_OPERATIONS:
            return int(row["version"])
    return int(rows[-1]["version"]) if rows else None


def list_tables(warehouse: str) -> list[str]:
    """Names of the Delta tables in the warehouse folder, sorted."""
    root = Path(warehouse).expanduser().resolve()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir())
