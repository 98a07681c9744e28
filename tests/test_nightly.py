"""The nightly runner: stages in order, run_log, skip when complete, force, housekeeping.

Tables are read back with the independent ``deltalake`` reader, not with the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import deltalake
import pandas as pd
import pytest
from helpers import nightly_settings, read_sorted

from stpipe import catalogue, stages, tables, upkeep
from stpipe.catalogue import Table
from stpipe.config import replace
from stpipe.errors import ConfigError, PipelineError
from stpipe.runlog import StageResult
from stpipe.stages import NIGHTLY, Stage, orchestrate, run_nightly, run_stage

_settings = nightly_settings


_table = read_sorted


def _data_tables(warehouse: str) -> list[str]:
    return sorted(
        p.name for p in Path(warehouse).iterdir()
        if (p / "_delta_log").is_dir() and p.name != catalogue.RUN_LOG.name
    )


def _version(warehouse: str, name: str) -> int:
    return deltalake.DeltaTable(str(Path(warehouse) / name)).version()


def _committed(table_dir: Path) -> set[str]:
    """Data files the table's latest version references, relative to its folder."""
    uris = deltalake.DeltaTable(str(table_dir)).file_uris()
    return {str(Path(u.removeprefix("file://")).relative_to(table_dir)) for u in uris}


def _run_log(warehouse: str) -> pd.DataFrame:
    return deltalake.DeltaTable(str(Path(warehouse) / catalogue.RUN_LOG.name)).to_pandas()


def test_rerun_skips_complete_stages_and_force_rewrites_identical_tables(
    spark, completed_nightly, nightly_warehouse
):
    # the first nightly is the shared one: its result, and a copy of its warehouse
    warehouse = nightly_warehouse
    settings = _settings(warehouse)
    first = completed_nightly.result
    names = _data_tables(warehouse)
    # every declared output, and nothing else (synthetic: no reviews; user_id_map only when asked;
    # ingest_files only for folder sources)
    written = {t.name for stage in NIGHTLY for t in stage.outputs} - {
        catalogue.REVIEWS.name, catalogue.USER_ID_MAP.name, catalogue.INGEST_FILES.name
    }
    assert set(names) == written
    stage_names = [s.name for s in NIGHTLY]
    assert first.details["stages"] == {name: "ran" for name in stage_names}
    before = {n: _table(warehouse, n) for n in names}
    versions = {n: _version(warehouse, n) for n in names}

    log = _run_log(warehouse)
    ok = log[log.status == "ok"]
    assert sorted(ok.stage) == sorted(stage_names)
    assert (ok.finished >= ok.started).all()
    ingest_row = ok[ok.stage == "ingest"].iloc[0]
    assert ingest_row.rows_out == len(before[catalogue.ORDERS_CLEAN.name])
    _assert_reads_are_declared(ok)

    second = run_nightly(spark, settings)
    assert second.details["stages"] == {name: "skipped" for name in stage_names}
    assert {n: _version(warehouse, n) for n in names} == versions  # nothing was rewritten
    log = _run_log(warehouse)
    assert sorted(log[log.status == "skipped"].stage) == sorted(stage_names)

    third = run_nightly(spark, settings, force=True)
    assert third.details["stages"] == {name: "ran" for name in stage_names}
    ingested = {t.name for stage in NIGHTLY if stage.name == "ingest" for t in stage.outputs}
    for name in names:
        # Delta commits nothing for an empty slice replaced by nothing, and an incremental ingest
        # of unchanged input commits nothing (tests/test_ingest_synthetic.py checks that)
        if len(before[name]) and name not in ingested:
            assert _version(warehouse, name) > versions[name], name
        pd.testing.assert_frame_equal(_table(warehouse, name), before[name], obj=name)


def test_a_completed_warehouse_names_no_folder_of_its_own(completed_nightly):
    """Tests get copies of the shared nightly's warehouse (conftest: nightly_warehouse): no file
    in it (Delta log, run log, data, keys) may hold its absolute path, or a copy would use it."""
    folder = completed_nightly.folder
    assert completed_nightly.stamp  # the nightly wrote files there
    needle = folder.parent.name.encode()  # the unique temporary folder, in any path spelling
    holding = [rel for rel in completed_nightly.stamp if needle in (folder / rel).read_bytes()]
    assert holding == []


def _assert_reads_are_declared(ok: pd.DataFrame) -> None:
    """Each stage opened exactly its declared inputs (optional ones and reuses: when present)."""
    for stage in NIGHTLY:
        row = ok[ok.stage == stage.name].iloc[-1]
        opened = set(json.loads(row.message)["reads"])
        required = {t.name for t in stage.inputs}
        allowed = required | {t.name for t in stage.optional + stage.reuses}
        assert required <= opened <= allowed, (stage.name, opened, allowed)


def test_changed_source_parameters_rerun_ingest(completed_nightly, refreshed_nightly):
    # refreshed_nightly: a copy of the completed nightly, then the same date with seed 43 re-read
    # whole (conftest); the kill test checks its tables equal a clean seed-43 run
    assert refreshed_nightly.result.details["stages"]["ingest"] == "ran"
    first = _table(completed_nightly.folder, catalogue.ORDERS_CLEAN.name)
    second = _table(refreshed_nightly.folder, catalogue.ORDERS_CLEAN.name)
    assert not first.equals(second)
    assert set(second.source) == {"synthetic"}  # the slice was replaced, not appended to
    assert len(second) == second[["order_id", "line_no"]].drop_duplicates().shape[0]
    ran = refreshed_nightly.result.details["stages"]
    assert all(ran[s.name] == "ran" for s in NIGHTLY if s.name != "finetune"), ran  # all read orders


def _table_decl(name: str) -> Table:
    return Table(name, None, "a test table", readers="tests")


def _fake_stage(name: str, out: Table, source: Table | None, factor: int, config=()) -> Stage:
    """A stage that writes ``out`` = (``source``'s x) * factor, or 1..5."""

    def run(ctx):
        if source is None:
            df = ctx.spark.range(1, 6).selectExpr("id AS x")
        else:
            df = ctx.read(source).selectExpr(f"x * {factor} AS x")
        return StageResult(rows_in=5, rows_out=ctx.write(out, df))

    return Stage(name, run, inputs=(source,) if source else (), outputs=(out,), config=config)


def test_forcing_a_stage_reruns_the_stages_that_read_its_tables(spark, warehouse):
    ta, tb, tc, td = (_table_decl(n) for n in ("ta", "tb", "tc", "td"))
    graph = [
        _fake_stage("a", ta, None, 1, config=("ingest",)),
        _fake_stage("b", tb, ta, 10, config=("granger",)),
        _fake_stage("c", tc, None, 1),
        _fake_stage("d", td, tb, 2),
    ]
    settings = _settings(warehouse)
    run = orchestrate.run_pipeline
    ran = run(spark, settings, graph).details["stages"]
    assert ran == {"a": "ran", "b": "ran", "c": "ran", "d": "ran"}
    assert sorted(_table(warehouse, "td").x) == [20, 40, 60, 80, 100]

    # b rewrites tb: d (reads tb) reruns, c (reads nothing) does not
    outcome = run(spark, settings, graph, force_stages=["b"]).details["stages"]
    assert outcome == {"a": "skipped", "b": "ran", "c": "skipped", "d": "ran"}

    # a rewrites ta: b reads it, and d reads what b rewrites
    outcome = run(spark, settings, graph, force_stages=["a"]).details["stages"]
    assert outcome == {"a": "ran", "b": "ran", "c": "skipped", "d": "ran"}

    # a changed granger key concerns b (config=("granger",)) and so d; not a or c
    changed = replace(settings, **{"granger.max_lag": settings.granger.max_lag + 1})
    outcome = run(spark, changed, graph).details["stages"]
    assert outcome == {"a": "skipped", "b": "ran", "c": "skipped", "d": "ran"}

    # a table rewritten behind the runner's back makes its writer incomplete
    tables.write(spark.range(1, 3).selectExpr("id AS x"), warehouse, "tc")
    outcome = run(spark, changed, graph).details["stages"]
    assert outcome == {"a": "skipped", "b": "skipped", "c": "ran", "d": "skipped"}


def test_a_stage_cannot_read_or_write_an_undeclared_table(spark, warehouse):
    ta, tb = _table_decl("ta"), _table_decl("tb")
    settings = _settings(warehouse)
    run_stage(spark, settings, _fake_stage("a", ta, None, 1))
    sneaky = Stage("s", lambda ctx: StageResult(rows_out=ctx.read(ta).count()), outputs=(tb,))
    with pytest.raises(PipelineError, match="stage s reads table ta, which it does not declare"):
        run_stage(spark, settings, sneaky)
    writer = Stage("w", lambda ctx: StageResult(rows_out=ctx.write(ta, ctx.spark.range(1))))
    with pytest.raises(PipelineError, match="stage w writes table ta, which it does not declare"):
        run_stage(spark, settings, writer)


def test_a_failed_stage_is_recorded_and_rerun(spark, warehouse):
    calls = []
    tf = _table_decl("tf")

    def flaky(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return StageResult(rows_out=ctx.write(tf, ctx.spark.range(3).selectExpr("id AS x")))

    graph = [Stage("f", flaky, outputs=(tf,))]
    settings = _settings(warehouse)
    with pytest.raises(RuntimeError, match="boom"):
        orchestrate.run_pipeline(spark, settings, graph)
    log = _run_log(warehouse)
    assert list(log.status) == ["failed"] and log.message.iloc[0] == "boom"
    assert orchestrate.run_pipeline(spark, settings, graph).details["stages"] == {"f": "ran"}
    assert orchestrate.run_pipeline(spark, settings, graph).details["stages"] == {"f": "skipped"}


def test_unknown_forced_stage_is_a_config_error():
    with pytest.raises(ConfigError, match="--force-stage nope: unknown stage"):
        orchestrate.check_stage_names(NIGHTLY, ["ingest", "nope"])


def _ctx(spark, settings) -> stages.StageContext:
    return stages.StageContext(spark, settings, Stage(orchestrate.HOUSEKEEPING, lambda ctx: None))


def test_housekeeping_compacts_small_files_and_vacuums_old_ones(spark, warehouse):
    name = "many_files"
    for i in range(3):  # 3 commits of 6 small files each, the last replaces the first two
        df = spark.range(i * 60, i * 60 + 60).selectExpr("id", "id % 7 AS k").repartition(6)
        tables.write(df, warehouse, name)
    path = Path(warehouse) / name
    expected = sorted(range(120, 180))
    assert len(list(path.glob("*.parquet"))) == 18
    before_version = _version(warehouse, name)

    settings = _settings(
        warehouse, **{"storage.optimize": True, "storage.vacuum": True,
                      "storage.vacuum_retention_hours": 0, "storage.compact_min_files": 6}
    )
    result = orchestrate.housekeep(_ctx(spark, settings), [name, "not_a_table"])
    assert result.tables == [name]

    table = deltalake.DeltaTable(str(path))
    assert len(_committed(path)) == 1  # compacted
    on_disk = {p.name for p in path.glob("*.parquet")}
    assert on_disk == _committed(path)  # everything else vacuumed
    assert sorted(table.to_pandas().id) == expected
    operations = [h["operation"] for h in table.history()]
    assert "OPTIMIZE" in operations and "VACUUM END" in operations
    # OPTIMIZE and VACUUM do not change the rows: the data version stays where it was
    assert tables.data_version(spark, warehouse, name) == before_version


def test_vacuum_keeps_removed_files_for_the_configured_retention(spark, warehouse):
    name = "retained"
    for i in range(2):  # the second write removes the first one's files (from the table)
        tables.write(spark.range(i * 10, i * 10 + 10).repartition(2), warehouse, name)
    path = Path(warehouse) / name
    assert len(list(path.glob("*.parquet"))) == 4
    before_version = _version(warehouse, name)
    settings = _settings(
        warehouse, **{"storage.optimize": False, "storage.vacuum": True,
                      "storage.vacuum_retention_hours": 200}
    )
    for _ in range(2):  # the removal is younger than the retention: no VACUUM is planned
        result = orchestrate.housekeep(_ctx(spark, settings), [name])
        assert result.details["done"][name] == []
    for _ in range(2):  # a VACUUM that runs keeps removed files the configured 200 hours
        upkeep.housekeeping(spark, warehouse, name, retention_hours=200, optimize=False, vacuum=True)
    table = deltalake.DeltaTable(str(path))
    assert table.metadata().configuration["delta.deletedFileRetentionDuration"] == "interval 200 hours"
    operations = [h["operation"] for h in table.history()]
    assert operations.count("SET TBLPROPERTIES") == 1  # set once, not on every run
    assert len(list(path.glob("*.parquet"))) == 4  # removed a moment ago: kept 200 hours
    assert tables.data_version(spark, warehouse, name) == before_version
