"""The nightly runner: stages in order, run_log, skip when complete, force, housekeeping.

Tables are read back with the independent ``deltalake`` reader, not with the code under test.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import deltalake
import pandas as pd
import pytest
from helpers import read_sorted

from jobs import nightly
from stpipe import orchestrate, tables
from stpipe.config import load_settings, replace
from stpipe.errors import ConfigError
from stpipe.runlog import StageResult

RUN_DATE = "2024-02-10"  # the day after 40 synthetic days from 2024-01-01


def _settings(warehouse: str, **overrides):
    base = {
        "storage.warehouse": warehouse,
        "run_date": RUN_DATE,
        "ingest.rows": 2000,
        "ingest.seed": 42,
        "ingest.synthetic_start": "2024-01-01",
        "ingest.synthetic_days": 40,
        # housekeeping has its own test below; it is slow on a busy machine
        "storage.optimize": False,
        "storage.vacuum": False,
    }
    base.update(overrides)
    return replace(load_settings(), **base)


_table = read_sorted


def _data_tables(warehouse: str) -> list[str]:
    return sorted(
        p.name for p in Path(warehouse).iterdir()
        if (p / "_delta_log").is_dir() and p.name != "run_log"
    )


def _version(warehouse: str, name: str) -> int:
    return deltalake.DeltaTable(str(Path(warehouse) / name)).version()


def _committed(table_dir: Path) -> set[str]:
    """Data files the table's latest version references, relative to its folder."""
    uris = deltalake.DeltaTable(str(table_dir)).file_uris()
    return {str(Path(u.removeprefix("file://")).relative_to(table_dir)) for u in uris}


def _run_log(warehouse: str) -> pd.DataFrame:
    return deltalake.DeltaTable(str(Path(warehouse) / "run_log")).to_pandas()


def test_rerun_skips_complete_stages_and_force_rewrites_identical_tables(spark, warehouse):
    settings = _settings(warehouse)
    first = nightly.run(spark, settings)
    names = _data_tables(warehouse)
    assert {"orders_clean", "orders_quarantine", "items"} <= set(names)
    stage_names = [orchestrate.as_stage(s).name for s in nightly.STAGES]
    assert first.details["stages"] == {name: "ran" for name in stage_names}
    before = {n: _table(warehouse, n) for n in names}
    versions = {n: _version(warehouse, n) for n in names}

    log = _run_log(warehouse)
    ok = log[log.status == "ok"]
    assert sorted(ok.stage) == sorted(stage_names)
    assert (ok.finished >= ok.started).all()
    ingest_row = ok[ok.stage == "ingest"].iloc[0]
    assert ingest_row.rows_out == len(before["orders_clean"])

    second = nightly.run(spark, settings)
    assert second.details["stages"] == {name: "skipped" for name in stage_names}
    assert {n: _version(warehouse, n) for n in names} == versions  # nothing was rewritten
    log = _run_log(warehouse)
    assert sorted(log[log.status == "skipped"].stage) == sorted(stage_names)

    third = nightly.run(spark, settings, force=True)
    assert third.details["stages"] == {name: "ran" for name in stage_names}
    for name in names:
        if len(before[name]):  # Delta commits nothing for an empty slice replaced by nothing
            assert _version(warehouse, name) > versions[name], name
        pd.testing.assert_frame_equal(_table(warehouse, name), before[name], obj=name)


def test_changed_source_parameters_rerun_ingest(spark, warehouse):
    nightly.run(spark, _settings(warehouse))
    first = _table(warehouse, "orders_clean")
    result = nightly.run(spark, _settings(warehouse, **{"ingest.seed": 43}))
    assert result.details["stages"]["ingest"] == "ran"
    second = _table(warehouse, "orders_clean")
    assert not first.equals(second)
    assert set(second.source) == {"synthetic"}  # the slice was replaced, not appended to
    assert len(second) == second[["order_id", "line_no"]].drop_duplicates().shape[0]


def _fake_stage(monkeypatch, module_name: str, table: str, source: str | None, factor: int):
    """A module whose run() writes ``table`` = (source table's x) * factor, or 1..5."""

    def run(spark, settings):
        wh = settings.storage.warehouse
        if source is None:
            df = spark.range(1, 6).selectExpr("id AS x")
        else:
            df = tables.read(spark, wh, source).selectExpr(f"x * {factor} AS x")
        n = tables.write(df, wh, table)
        return StageResult(rows_in=5, rows_out=n, tables=[table])

    module = types.ModuleType(module_name)
    module.run = run
    monkeypatch.setitem(sys.modules, module_name, module)


def test_forcing_a_stage_reruns_the_stages_that_read_its_tables(spark, warehouse, monkeypatch):
    _fake_stage(monkeypatch, "fake_a", "ta", None, 1)
    _fake_stage(monkeypatch, "fake_b", "tb", "ta", 10)
    _fake_stage(monkeypatch, "fake_c", "tc", None, 1)
    _fake_stage(monkeypatch, "fake_d", "td", "tb", 2)
    stages = [
        orchestrate.Stage("a", "fake_a", config=("ingest",)),
        ("b", "fake_b"),
        orchestrate.Stage("c", "fake_c", config=("granger",), inputs=()),
        ("d", "fake_d"),  # reads, by default, every table written before it
    ]
    settings = _settings(warehouse)
    run = orchestrate.run_pipeline
    ran = run(spark, settings, stages).details["stages"]
    assert ran == {"a": "ran", "b": "ran", "c": "ran", "d": "ran"}
    assert sorted(_table(warehouse, "td").x) == [20, 40, 60, 80, 100]

    # b rewrites tb: d (which reads every earlier table) reruns, c (reads none) does not
    outcome = run(spark, settings, stages, force_stages=["b"]).details["stages"]
    assert outcome == {"a": "skipped", "b": "ran", "c": "skipped", "d": "ran"}

    # a rewrites ta: b and d read it
    outcome = run(spark, settings, stages, force_stages=["a"]).details["stages"]
    assert outcome == {"a": "ran", "b": "ran", "c": "skipped", "d": "ran"}

    # a changed granger key concerns c (config=("granger",)), b and d (all sections)
    changed = replace(settings, **{"granger.max_lag": settings.granger.max_lag + 1})
    outcome = run(spark, changed, stages).details["stages"]
    assert outcome == {"a": "skipped", "b": "ran", "c": "ran", "d": "ran"}

    # a table rewritten behind the runner's back makes its writer incomplete (and d)
    tables.write(spark.range(1, 3).selectExpr("id AS x"), warehouse, "tc")
    outcome = run(spark, changed, stages).details["stages"]
    assert outcome == {"a": "skipped", "b": "skipped", "c": "ran", "d": "ran"}


def test_a_failed_stage_is_recorded_and_rerun(spark, warehouse, monkeypatch):
    calls = []

    def flaky(spark, settings):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        n = tables.write(spark.range(3).selectExpr("id AS x"), settings.storage.warehouse, "tf")
        return StageResult(rows_out=n, tables=["tf"])

    module = types.ModuleType("fake_flaky")
    module.run = flaky
    monkeypatch.setitem(sys.modules, "fake_flaky", module)
    stages = [orchestrate.Stage("f", "fake_flaky")]
    settings = _settings(warehouse)
    with pytest.raises(RuntimeError, match="boom"):
        orchestrate.run_pipeline(spark, settings, stages)
    log = _run_log(warehouse)
    assert list(log.status) == ["failed"] and log.message.iloc[0] == "boom"
    assert orchestrate.run_pipeline(spark, settings, stages).details["stages"] == {"f": "ran"}
    assert orchestrate.run_pipeline(spark, settings, stages).details["stages"] == {"f": "skipped"}


def test_unknown_forced_stage_is_a_config_error():
    with pytest.raises(ConfigError, match="--force-stage nope: unknown stage"):
        orchestrate.check_stage_names(nightly.STAGES, ["ingest", "nope"])


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
                      "storage.vacuum_retention_hours": 0}
    )
    result = orchestrate.housekeep(spark, settings, [name, "not_a_table"])
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
    for _ in range(2):
        orchestrate.housekeep(spark, settings, [name])
    table = deltalake.DeltaTable(str(path))
    assert table.metadata().configuration["delta.deletedFileRetentionDuration"] == "interval 200 hours"
    operations = [h["operation"] for h in table.history()]
    assert operations.count("SET TBLPROPERTIES") == 1  # set once, not on every run
    assert len(list(path.glob("*.parquet"))) == 4  # removed a moment ago: kept 200 hours
    assert tables.data_version(spark, warehouse, name) == before_version
