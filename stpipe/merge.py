"""Upsert a batch into a slice of a Delta table on a key: the incremental ingest's write.

Built on :mod:`stpipe.tables` (paths, commit tokens, retries on concurrent commits); which rows
are new, changed or unchanged is :func:`stpipe.incremental.classify_changes`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stpipe.errors import PipelineError
from stpipe.incremental import CHANGE, INSERT, UNCHANGED, UPDATE, classify_changes
from stpipe.tables import (
    commit,
    exists,
    find_commit,
    for_partitioned_write,
    slice_condition,
    sql_literal,
    table_path,
    with_retries,
)


@dataclass(frozen=True)
class Merged:
    """What one merge committed: its version (None: nothing changed) and the batch's rows."""

    version: int | None
    rows: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


def upsert(
    df: DataFrame,
    warehouse: str,
    name: str,
    *,
    keys: list[str],
    scope: dict[str, object],
    compare: list[str] | None = None,
    partition_by: list[str] | None = None,
    max_records_per_file: int | None = None,
    small_batch: bool = False,
) -> Merged:
    """Upsert ``df`` into slice ``scope`` of table ``name`` on ``keys``, in at most one commit.

    New keys are inserted; rows whose ``compare`` columns differ are updated (see
    :func:`stpipe.incremental.classify_changes`; ``compare=[]``: insert only); identical rows
    change nothing. No change: no commit. Inserts only: one append (no file rewritten).
    Otherwise one Delta MERGE of the changed rows, whose own metrics must agree with the
    counts. Like :func:`stpipe.tables.commit`, the commit carries a token, so its version is found even when
    another writer commits right after. A missing table is created from ``df``.
    """
    path = table_path(warehouse, name)
    spark = df.sparkSession
    if not exists(spark, warehouse, name):
        done = commit(df, warehouse, name, replace=scope, partition_by=partition_by,
                      max_records_per_file=max_records_per_file)
        return Merged(done.version, done.rows, done.rows, 0)
    target = spark.read.format("delta").load(path).where(slice_condition(**scope))
    classified = classify_changes(df, target, keys, compare, small_batch=small_batch).persist()
    try:
        counts = {r[CHANGE]: r["count"] for r in classified.groupBy(CHANGE).count().collect()}
        inserted, updated = counts.get(INSERT, 0), counts.get(UPDATE, 0)
        rows = inserted + updated + counts.get(UNCHANGED, 0)
        if not inserted and not updated:
            return Merged(None, rows, 0, 0)
        changes = classified.where(F.col(CHANGE) != UNCHANGED).drop(CHANGE)
        token = json.dumps({"stpipe_write": uuid.uuid4().hex})
        if not updated:
            if partition_by:
                changes = for_partitioned_write(changes, partition_by, fixed=scope)
            writer = changes.write.format("delta").mode("append").option("userMetadata", token)
            if max_records_per_file:
                writer = writer.option("maxRecordsPerFile", max_records_per_file)
            with_retries(lambda: writer.save(path), what=f"appending to table {name}")
        else:
            on = " AND ".join([f"t.{k} <=> s.{k}" for k in keys]
                              + [f"t.{c} = {sql_literal(v)}" for c, v in sorted(scope.items())])

            def run_merge() -> None:
                (DeltaTable.forPath(spark, path).alias("t").merge(changes.alias("s"), on)
                 .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())

            spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", token)
            try:
                with_retries(run_merge, what=f"merging into table {name}")
            finally:
                spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
        version, operation, metrics = find_commit(spark, path, token)
        if operation == "MERGE":
            got = (int(metrics.get("numTargetRowsInserted", -1)),
                   int(metrics.get("numTargetRowsUpdated", -1)))
            if got != (inserted, updated):
                raise PipelineError(
                    f"merging into table {name}: Delta inserted {got[0]} and updated {got[1]} "
                    f"rows, expected {inserted} and {updated}"
                )
        return Merged(version, rows, inserted, updated)
    finally:
        classified.unpersist()
