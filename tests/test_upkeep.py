"""Housekeeping does only what a table needs: the rules on hand-written Delta histories, then
on real tables (compaction of a many-file table, nothing for one-file tables, VACUUM of
removed files once they are past the retention)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from stpipe import catalogue
from stpipe.config import load_settings, replace
from stpipe.runlog import StageResult
from stpipe.stages import Stage, StageContext, orchestrate, run_stage
from stpipe.upkeep import largest_partition, removes_files, vacuum_due

NOW = dt.datetime(2024, 3, 1, 12, 0)


def _at(hours_ago: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=hours_ago)


def test_which_commits_remove_files():
    assert not removes_files(0, "WRITE", {"mode": "Overwrite"}, {"numFiles": "3"})  # a new table
    assert removes_files(4, "WRITE", {"mode": "Overwrite"}, {"numFiles": "3"})
    assert not removes_files(4, "WRITE", {"mode": "Append"}, {"numFiles": "1"})
    assert removes_files(4, "DELETE", {}, {"numRemovedFiles": "2"})
    assert not removes_files(4, "DELETE", {}, {"numRemovedFiles": "0"})
    assert removes_files(4, "MERGE", {}, {"numTargetFilesRemoved": "1"})
    assert removes_files(4, "OPTIMIZE", {}, {"numRemovedFiles": "8"})
    assert not removes_files(4, "VACUUM END", {}, {"numDeletedFiles": "5"})
    assert removes_files(4, "RESTORE", {}, {})  # unknown metrics: assume it did


def test_vacuum_is_due_only_when_it_could_delete_something_or_on_schedule():
    write = {"mode": "Overwrite"}
    fresh = [(0, _at(30), "WRITE", write, {}), (1, _at(20), "WRITE", write, {})]
    # removed 20 h ago, retention 168 h: VACUUM could delete nothing yet
    assert vacuum_due(fresh, now=NOW, retention_hours=168, every_days=7) is None
    assert vacuum_due(fresh, now=NOW, retention_hours=12, every_days=7)
    assert vacuum_due(fresh, now=NOW, retention_hours=0, every_days=7)
    # a VACUUM after the removal: nothing new to delete; its age is what the schedule counts
    vacuumed = fresh + [(2, _at(10), "VACUUM START", {}, {}), (3, _at(10), "VACUUM END", {}, {})]
    assert vacuum_due(vacuumed, now=NOW, retention_hours=0, every_days=7) is None
    assert vacuum_due(vacuumed, now=NOW + dt.timedelta(days=7), retention_hours=168,
                      every_days=7) == "no VACUUM for 7 days or more"
    assert vacuum_due(vacuumed, now=NOW + dt.timedelta(days=7), retention_hours=168,
                      every_days=0) is None
    appends = [(0, _at(900), "WRITE", write, {}), (1, _at(800), "WRITE", {"mode": "Append"}, {})]
    assert vacuum_due(appends, now=NOW, retention_hours=0, every_days=0) is None


def test_largest_partition_counts_files_per_folder():
    files = ["file:/w/t/d=1/a.parquet", "file:/w/t/d=1/b.parquet", "file:/w/t/d=2/c.parquet"]
    assert largest_partition(files) == 2
    assert largest_partition(["file:/w/t/a.parquet"]) == 1
    assert largest_partition([]) == 0


def _data_files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*.parquet") if "_delta_log" not in p.parts}


def test_housekeeping_compacts_and_vacuums_only_the_tables_that_need_it(spark, warehouse):
    many, one = catalogue.RUN_LOG, catalogue.USER_EMBEDDINGS
    settings = replace(load_settings(), **{
        "storage.warehouse": warehouse, "run_date": "2024-01-05", "storage.compact_min_files": 3,
        "storage.vacuum_retention_hours": 0, "storage.keep_days": 0,
    })

    def embed(ctx: StageContext):
        rows = [(ctx.run_date, "s", f"u{i}", [0.1 * i, 1.0], 2, "m") for i in range(5)]
        return StageResult(rows_out=ctx.write(one, ctx.spark.createDataFrame(rows, one.schema)))

    writer = Stage("embed", embed, outputs=(one,))
    for _ in range(3):  # run_log gains a row per run (appends); user_embeddings one file
        run_stage(spark, replace(settings, **{"storage.optimize": False}), writer)
    ctx = StageContext(spark, settings, Stage(orchestrate.HOUSEKEEPING, lambda c: None))
    # run_log: 3 appended rows in 3 files -> compacted; user_embeddings: its slice was
    # replaced twice (files removed, retention 0) -> vacuumed, and nothing to compact
    result = orchestrate.housekeep(ctx, [one.name, many.name])
    assert result.details["done"] == {one.name: ["vacuum"], many.name: ["optimize"]}
    assert len(_data_files(Path(warehouse) / one.name)) == 1
    # a second pass right after finds nothing to do
    again = orchestrate.housekeep(ctx, [one.name, many.name])
    assert again.details["done"] == {one.name: [], many.name: ["vacuum"]}
    third = orchestrate.housekeep(ctx, [one.name, many.name])
    assert third.details["done"] == {one.name: [], many.name: []}
