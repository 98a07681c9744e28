"""What a write reports: the version it committed and the rows its slice holds afterwards."""

from __future__ import annotations

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
