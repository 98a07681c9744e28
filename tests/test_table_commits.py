"""What a write reports: the version it committed and the rows its slice holds afterwards."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from delta.tables import DeltaTable

from stpipe import tables

SCHEMA = "run_date string, n int"


def test_a_replaced_slice_counts_only_its_own_rows_when_its_file_held_other_slices(spark, warehouse):
    # one file holds both slices, so replacing "b" rewrites the file and copies a's 3 rows
    first = spark.createDataFrame([("a", i) for i in range(3)] + [("b", i) for i in range(2)], SCHEMA)
    made = tables.commit(first.coalesce(1), warehouse, "t")
    assert (made.version, made.rows) == (0, 5)
    new_b = spark.createDataFrame([("b", 10 + i) for i in range(4)], SCHEMA)
    replaced = tables.commit(new_b, warehouse, "t", replace={"run_date": "b"})
    assert (replaced.version, replaced.rows) == (1, 4)
    emptied = tables.commit(spark.createDataFrame([], SCHEMA), warehouse, "t", replace={"run_date": "a"})
    assert emptied.rows == 0
    assert tables.read(spark, warehouse, "t").count() == 4


def test_a_partitioned_slice_and_a_whole_table_write_count_what_they_wrote(spark, warehouse):
    rows = [("a", i) for i in range(3)] + [("b", i) for i in range(2)]
    made = tables.commit(spark.createDataFrame(rows, SCHEMA), warehouse, "p", partition_by=["run_date"])
    assert made.rows == 5
    new_a = spark.createDataFrame([("a", 7)], SCHEMA)
    assert tables.commit(new_a, warehouse, "p", replace={"run_date": "a"}, partition_by=["run_date"]).rows == 1
    whole = spark.createDataFrame([("c", i) for i in range(6)], SCHEMA)
    assert tables.commit(whole, warehouse, "p", partition_by=["run_date"]).rows == 6


def test_a_write_across_partitions_keeps_one_file_per_value_and_all_its_shuffle_tasks(spark, warehouse):
    days = [f"2024-01-{d:02d}" for d in range(1, 21)]
    df = spark.createDataFrame([(d, i) for d in days for i in range(5)], SCHEMA)
    # spanning many values, the shuffle keeps its tasks (adaptive execution would fold 100 rows
    # into one task that writes every partition in turn), and each value is in one task only
    spread = tables.for_partitioned_write(df, ["run_date"])
    assert spread.rdd.getNumPartitions() == int(spark.conf.get("spark.sql.shuffle.partitions"))
    tasks = [{row.run_date for row in part} for part in spread.rdd.glom().collect()]
    assert sorted(d for part in tasks for d in part) == days
    made = tables.commit(df, warehouse, "days", partition_by=["run_date"])
    assert made.rows == 100
    root = Path(warehouse) / "days"
    per_day = {p.name: len(list(p.glob("*.parquet"))) for p in root.glob("run_date=*")}
    assert per_day == {f"run_date={d}": 1 for d in days}


def test_retention_deletes_older_slices_only_and_commits_nothing_when_none_is_older(spark, warehouse):
    rows = [(f"2024-01-0{d}", i) for d in (1, 2, 3) for i in range(d)]  # 1, 2 and 3 rows
    df = spark.createDataFrame([(dt.date.fromisoformat(r), n) for r, n in rows], "run_date date, n int")
    tables.commit(df, warehouse, "kept", partition_by=["run_date"])
    history = DeltaTable.forPath(spark, tables.table_path(warehouse, "kept")).history
    assert tables.delete_before(spark, warehouse, "kept", column="run_date", before=dt.date(2024, 1, 1)) == 0
    assert history().count() == 1  # nothing committed
    assert tables.delete_before(spark, warehouse, "kept", column="run_date", before=dt.date(2024, 1, 3)) == 3
    left = sorted((r.run_date, r.n) for r in tables.read(spark, warehouse, "kept").collect())
    assert left == [(dt.date(2024, 1, 3), n) for n in range(3)]
