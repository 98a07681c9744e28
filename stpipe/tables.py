"""Delta tables under one warehouse folder: the only module that reads or writes them
(with :mod:`stpipe.merge`, the upsert of incremental nights, built on this one).

Every write is a single Delta commit, so a reader sees either the previous version
or the new one, never a partial write (a job killed mid-write leaves the table on
its previous version). Writes that belong to one run date or one source replace
exactly that slice (``replaceWhere``), which makes reruns idempotent.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from stpipe.errors import PipelineError, TableMissingError

log = logging.getLogger("stpipe.tables")
T = TypeVar("T")


def local_folder(warehouse: str) -> Path | None:
    """The warehouse as a local folder (a path or a ``file:`` URI), or None for a remote URI."""
    if warehouse.startswith("file:"):
        return Path(urlparse(warehouse).path)
    if "://" in warehouse:
        return None
    return Path(warehouse).expanduser()


def table_path(warehouse: str, name: str) -> str:
    """Where table ``name`` lives (one folder per table under the warehouse).

    Local paths are made absolute; URIs (``file:``, ``s3a:``, ``abfss:``, ``gs:``, ...) are kept
    as strings, so Spark and Delta see the file system the user named.
    """
    if "://" in warehouse or warehouse.startswith("file:"):
        return warehouse.rstrip("/") + "/" + name
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


def add_missing_columns(spark: SparkSession, warehouse: str, name: str, schema: StructType) -> list[str]:
    """Add the columns of ``schema`` that existing table ``name`` lacks (written by older code),
    as nullable columns (their old rows read null), in one ALTER TABLE; return their names.

    A replaceWhere overwrite does not evolve a schema by itself, and letting every write merge
    schemas would hide a column renamed by mistake. Nothing happens when the table is absent.
    """
    if not exists(spark, warehouse, name):
        return []
    path = table_path(warehouse, name)
    have = set(spark.read.format("delta").load(path).columns)  # not :func:`read`: no input read
    missing = [f for f in schema.fields if f.name not in have]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
        log.info("table %s: added columns %s", name, [f.name for f in missing])
    return [f.name for f in missing]


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


@dataclass(frozen=True)
class Commit:
    """What one write committed: the table version it made and the rows of its slice there."""

    version: int | None
    rows: int


def write(
    df: DataFrame,
    warehouse: str,
    name: str,
    *,
    replace: dict[str, object] | None = None,
    partition_by: list[str] | None = None,
    max_records_per_file: int | None = None,
) -> int:
    """Write ``df`` as table ``name`` in one commit and return its row count (see :func:`commit`)."""
    return commit(
        df, warehouse, name, replace=replace, partition_by=partition_by,
        max_records_per_file=max_records_per_file,
    ).rows


def for_partitioned_write(
    df: DataFrame, partition_by: Sequence[str], *, fixed: Iterable[str] = ()
) -> DataFrame:
    """``df`` hash-partitioned by ``partition_by`` for a partitioned write: one writer task per
    partition value, so no partition gets a swarm of tiny files.

    When the write spans several partition values (some of ``partition_by`` are not ``fixed``
    by the slice it replaces, as the order dates of ``orders_clean``), the shuffle keeps all its
    ``spark.sql.shuffle.partitions`` tasks: adaptive execution would otherwise fold a small
    frame into one task that writes every partition in turn (180 order dates of the embedded
    default: 3.8-4.3 s on two cores instead of 3.0-3.2).
    """
    if set(partition_by) <= set(fixed):
        return df.repartition(*partition_by)
    tasks = int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return df.repartition(tasks, *partition_by)


def commit(
    df: DataFrame,
    warehouse: str,
    name: str,
    *,
    replace: dict[str, object] | None = None,
    partition_by: list[str] | None = None,
    max_records_per_file: int | None = None,
) -> Commit:
    """Write ``df`` as table ``name`` in one commit; return that commit's version and rows.

    ``replace={"run_date": d}`` replaces only that slice (the frame must hold only
    rows of the slice); ``replace=None`` overwrites the whole table. The commit carries a
    token of its own in Delta's ``userMetadata``, so its version and row count are read from
    that commit even when another writer committed to the table right after it.
    """
    path = table_path(warehouse, name)
    token = json.dumps({"stpipe_write": uuid.uuid4().hex})
    if partition_by:
        df = for_partitioned_write(df, partition_by, fixed=replace or {})
    writer = df.write.format("delta").mode("overwrite").option("userMetadata", token)
    if replace:
        writer = writer.option("replaceWhere", slice_condition(**replace))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if max_records_per_file:
        writer = writer.option("maxRecordsPerFile", max_records_per_file)
    try:
        with_retries(lambda: writer.save(path), what=f"writing table {name}")
    except PipelineError:
        raise
    except Exception as exc:  # Delta's AnalysisException carries a readable message
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise PipelineError(f"writing table {name} at {path} failed: {message}") from exc
    return _committed(df.sparkSession, path, token, replace)


# Delta's optimistic concurrency: another writer committed first (the write did not commit)
CONCURRENT_ERRORS = (
    "ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException", "MetadataChangedException", "ProtocolChangedException",
    "DELTA_CONCURRENT_",
)


def with_retries(
    action: Callable[[], T], *, what: str, attempts: int = 5, first_wait_s: float = 0.5
) -> T:
    """Run ``action``; when Delta refuses its commit because another writer committed first,
    wait (0.5 s, 1 s, 2 s, ... with jitter) and run it again, up to ``attempts`` times.

    Safe for every write here: a refused commit wrote nothing, and each write either replaces
    its own slice or appends one run_log row. After the last attempt the error is raised,
    with a one-line message that says so.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            text = f"{exc.__class__.__name__}: {exc}"
            if not any(name in text for name in CONCURRENT_ERRORS):
                raise
            if attempt == attempts:
                raise PipelineError(
                    f"{what}: another writer kept committing first ({attempts} attempts); "
                    "run one job per warehouse (the lease) or retry"
                ) from exc
            wait = first_wait_s * 2 ** (attempt - 1) * (1 + random.random() / 2)
            log.warning("%s: concurrent commit (attempt %d of %d), retrying in %.1fs",
                        what, attempt, attempts, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# How many of a table's latest commits are read first when looking for one (see below).
RECENT_COMMITS = 8


def _commits(table: DeltaTable, columns: list[str]) -> Iterator[list]:
    """The table's commits, newest first: its last ``RECENT_COMMITS``, then, only when there are
    older ones, the whole history (the commit looked for is nearly always a recent one)."""
    recent = table.history(RECENT_COMMITS).select(*columns).orderBy(F.desc("version")).collect()
    yield recent
    if recent and recent[-1]["version"] > 0:
        yield table.history().select(*columns).orderBy(F.desc("version")).collect()


def find_commit(spark: SparkSession, path: str, token: str) -> tuple[int | None, str, dict]:
    """(version, operation, metrics) of the commit carrying ``token`` (None: no such commit)."""
    columns = ["version", "operation", "operationMetrics", "userMetadata"]
    for rows in _commits(DeltaTable.forPath(spark, path), columns):
        mine = [r for r in rows if r["userMetadata"] == token]
        if mine:
            return int(mine[0]["version"]), mine[0]["operation"], dict(mine[0]["operationMetrics"] or {})
    return None, "", {}


def _committed(
    spark: SparkSession, path: str, token: str, replace: dict[str, object] | None
) -> Commit:
    """The version our write made (found by its token) and the rows of its slice there."""
    # version None: Delta commits nothing when an empty slice is replaced by nothing
    version, operation, metrics = find_commit(spark, path, token)
    # The commit's own metrics: a whole-table write's output rows; a replaced slice's output
    # rows less those copied from files that also held other slices. Counting the slice again
    # from the table costs a log replay and a scan per write (a tenth of a small nightly).
    if version is not None and operation == "WRITE":
        rows = _slice_rows(metrics, replace)
        if rows is not None:
            return Commit(version, rows)
    df = spark.read.format("delta")
    if version is not None:
        df = df.option("versionAsOf", version)
    table = df.load(path)
    return Commit(version, table.where(slice_condition(**replace)).count() if replace else table.count())


def _slice_rows(metrics: dict, replace: dict[str, object] | None) -> int | None:
    """Rows a WRITE commit left in its slice, from its metrics (None: they do not say)."""
    if "numOutputRows" not in metrics:
        # Delta records no row metrics when the write added no file (an empty frame)
        return 0 if metrics.get("numFiles") == "0" else None
    if not replace:
        return int(metrics["numOutputRows"])
    if "numCopiedRows" not in metrics:
        return None
    return int(metrics["numOutputRows"]) - int(metrics["numCopiedRows"])


def version(spark: SparkSession, warehouse: str, name: str) -> int | None:
    if not exists(spark, warehouse, name):
        return None
    return int(DeltaTable.forPath(spark, table_path(warehouse, name)).history(1).collect()[0]["version"])


def append(df: DataFrame, warehouse: str, name: str) -> None:
    path = table_path(warehouse, name)
    with_retries(lambda: df.write.format("delta").mode("append").save(path), what=f"appending to {name}")


RETENTION_METADATA = json.dumps({"stpipe_retention": True})


def delete_before(
    spark: SparkSession, warehouse: str, name: str, *, column: str, before: dt.date
) -> int:
    """Delete the rows with ``column < before`` (retention) in one commit; return how many.

    The commit is marked as retention in its metadata, so :func:`data_version` does not count
    it: a stage for a later date that read the table is still up to date. Nothing is
    committed when no row is that old.
    """
    return delete_rows(
        spark, warehouse, name, F.col(column) < F.lit(before), metadata=RETENTION_METADATA,
        what="retention",
    )


def delete_rows(
    spark: SparkSession, warehouse: str, name: str, condition: Column, *,
    metadata: str | None = None, what: str = "delete",
) -> int:
    """Delete the rows matching ``condition`` in one commit (none when no row matches);
    return how many. ``metadata`` goes into the commit's userMetadata."""
    matching = read(spark, warehouse, name).where(condition)
    # Delta lists the files that may hold a match from its log alone (partition values and
    # file statistics): none, and there is nothing to count (most nights' retention check)
    rows = matching.count() if matching.inputFiles() else 0
    if rows:
        if metadata is not None:
            spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", metadata)
        try:
            with_retries(
                lambda: DeltaTable.forPath(spark, table_path(warehouse, name)).delete(condition),
                what=f"{what} on {name}",
            )
        finally:
            if metadata is not None:
                spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
    return rows


# Commits that rewrite or delete files, or set housekeeping properties, without changing rows.
HOUSEKEEPING_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})


def data_version(spark: SparkSession, warehouse: str, name: str) -> int | None:
    """The latest version that changed the table's rows (OPTIMIZE, VACUUM and the retention
    DELETE of old slices do not count).

    A stage that read version v of an input is still up to date after housekeeping
    compacted that input; it is not after any other commit.
    """
    if not exists(spark, warehouse, name):
        return None
    rows: list = []
    table = DeltaTable.forPath(spark, table_path(warehouse, name))
    for rows in _commits(table, ["version", "operation", "userMetadata"]):
        for row in rows:
            retention = row["operation"] == "DELETE" and row["userMetadata"] == RETENTION_METADATA
            if row["operation"] not in HOUSEKEEPING_OPERATIONS and not retention:
                return int(row["version"])
    return int(rows[-1]["version"]) if rows else None


def list_tables(warehouse: str) -> list[str]:
    """Names of the Delta tables in the warehouse folder, sorted."""
    root = local_folder(warehouse)
    if root is None or not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir())
