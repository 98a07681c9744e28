"""Which tables need OPTIMIZE or VACUUM tonight, decided from their Delta log and file list.

Running both on every table every night costs a Spark job or two per table even when there is
nothing to do (on the embedded default: 36 s of a 196 s nightly for 14 tables of one file each).
A table is compacted when one of its partitions (or the table, unpartitioned) holds at least
``compact_min_files`` data files; it is vacuumed when a commit since its last VACUUM removed files
and the oldest such commit is past the retention (before that VACUUM could delete nothing), or
when its last VACUUM is older than ``vacuum_every_days`` (files a crashed writer left behind are
in no commit, so only a scheduled VACUUM finds them), or when a job took over the lease of a
dead one since the last housekeeping (:func:`stpipe.lease.crashed_since_housekeeping`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from stpipe.tables import exists, table_path

# Commits that never remove a data file.
_NO_REMOVALS = frozenset({"SET TBLPROPERTIES", "VACUUM START", "VACUUM END", "CREATE TABLE"})
# operationMetrics that count removed files (WRITE/DELETE/OPTIMIZE, MERGE/UPDATE).
_REMOVED_KEYS = ("numRemovedFiles", "numTargetFilesRemoved")


@dataclass(frozen=True)
class Upkeep:
    compact: bool
    vacuum: bool
    reason: str


def removes_files(version: int, operation: str, parameters: dict, metrics: dict) -> bool:
    """Whether a commit (one row of DESCRIBE HISTORY) may have removed data files."""
    if version == 0 or operation in _NO_REMOVALS:
        return False
    counted = [int(metrics[k]) for k in _REMOVED_KEYS if k in metrics]
    if counted:
        return sum(counted) > 0
    if operation == "WRITE" or operation.startswith("CREATE"):
        return parameters.get("mode") not in ("Append", "ErrorIfExists")
    return True  # an operation whose metrics we do not know: assume it did


def vacuum_due(
    history: list[tuple[int, dt.datetime, str, dict, dict]],
    *,
    now: dt.datetime,
    retention_hours: int,
    every_days: int,
) -> str | None:
    """Why the table should be vacuumed now (``None``: it need not be).

    ``history``: (version, timestamp, operation, parameters, metrics), any order.
    """
    rows = sorted(history, key=lambda r: r[0])
    vacuums = [r for r in rows if r[2] == "VACUUM END"]
    last = vacuums[-1] if vacuums else None
    since = [r for r in rows if last is None or r[0] > last[0]]
    removals = [r[1] for r in since if removes_files(r[0], r[2], r[3], r[4])]
    if removals and (retention_hours == 0 or min(removals) <= now - dt.timedelta(hours=retention_hours)):
        return "removed files past the retention"
    anchor = last[1] if last else rows[0][1]
    if every_days > 0 and anchor <= now - dt.timedelta(days=every_days):
        return f"no VACUUM for {every_days} days or more"
    return None


def largest_partition(files: list[str]) -> int:
    """The most data files in one folder (one partition, or the table when unpartitioned)."""
    counts = Counter(str(PurePosixPath(f).parent) for f in files)
    return max(counts.values(), default=0)


def plan(
    spark: SparkSession,
    path: str,
    *,
    now: dt.datetime,
    retention_hours: int,
    compact_min_files: int,
    vacuum_every_days: int,
    optimize: bool,
    vacuum: bool,
    after_crash: bool = False,
) -> Upkeep:
    """What housekeeping the Delta table at ``path`` needs, with the reason for the log."""
    reasons = []
    compact = False
    if optimize:
        most = largest_partition(spark.read.format("delta").load(path).inputFiles())
        compact = most >= compact_min_files
        reasons.append(f"{most} files in its largest partition")
    why = None
    if vacuum:
        history = [
            (int(r.version), r.timestamp, r.operation, dict(r.operationParameters or {}),
             dict(r.operationMetrics or {}))
            for r in DeltaTable.forPath(spark, path).history()
            .select("version", "timestamp", "operation", "operationParameters", "operationMetrics")
            .collect()
        ]
        why = "a writer died since the last housekeeping" if after_crash else vacuum_due(
            history, now=now, retention_hours=retention_hours, every_days=vacuum_every_days
        )
        reasons.append(why or "nothing to vacuum")
    return Upkeep(compact=compact, vacuum=why is not None, reason="; ".join(reasons))


def housekeeping(
    spark: SparkSession,
    warehouse: str,
    name: str,
    *,
    retention_hours: int,
    optimize: bool = True,
    vacuum: bool = True,
    max_file_mb: int | None = None,
) -> None:
    """OPTIMIZE (compact small files) and VACUUM old files of one table (when it exists)."""
    if not exists(spark, warehouse, name) or not (optimize or vacuum):
        return
    table = DeltaTable.forPath(spark, table_path(warehouse, name))
    if optimize:
        if max_file_mb:
            size = str(max_file_mb * 1024 * 1024)
            spark.conf.set("spark.databricks.delta.optimize.maxFileSize", size)
            spark.conf.set("spark.databricks.delta.optimize.minFileSize", size)
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
