"""Skip-if-complete trusts only what a stage itself committed, and notices code and weights."""

from __future__ import annotations

import json
from pathlib import Path

import deltalake

from stpipe import tables
from stpipe.catalogue import Table
from stpipe.config import load_settings, replace
from stpipe.runlog import StageResult
from stpipe.stages import Stage, orchestrate


def _settings(warehouse: str, **extra):
    return replace(load_settings(), **{
        "storage.warehouse": warehouse, "run_date": "2024-02-10", "storage.optimize": False,
        "storage.vacuum": False, **extra,
    })


def test_a_commit_reports_its_own_version_and_rows(spark, warehouse):
    df = spark.createDataFrame([("a", 1), ("a", 2), ("b", 3)], "s string, n int")
    first = tables.commit(df, warehouse, "t")
    second = tables.commit(df.where("s = 'a'").selectExpr("s", "n * 10 AS n"), warehouse, "t",
                           replace={"s": "a"})
    assert (first.version, first.rows) == (0, 3)
    assert (second.version, second.rows) == (1, 2)
    history = {h["version"]: h for h in deltalake.DeltaTable(str(Path(warehouse) / "t")).history()}
    tokens = {json.loads(history[v]["userMetadata"])["stpipe_write"] for v in (0, 1)}
    assert len(tokens) == 2  # each commit carries its own token


def _stage(table: Table) -> Stage:
    def run(ctx):
        return StageResult(rows_out=ctx.write(table, ctx.spark.range(3).selectExpr("id AS x")))

    return Stage("w", run, outputs=(table,), config=("model",))


def test_the_run_log_records_the_committed_versions(spark, warehouse):
    table = Table("tw", None, "test", readers="tests")
    orchestrate.run_pipeline(spark, _settings(warehouse), [_stage(table)], housekeeping=False)
    log = deltalake.DeltaTable(str(Path(warehouse) / "run_log")).to_pandas()
    details = json.loads(log[log.status == "ok"].message.iloc[0])
    assert details["commits"] == {"tw": 0}
    assert details["fingerprint"]["outputs"] == {"tw": 0}
    assert details["fingerprint"]["code"]["digest"] == orchestrate.code_digest()


def test_new_code_or_new_weights_make_a_complete_stage_rerun(spark, warehouse, monkeypatch, tmp_path):
    table = Table("tc", None, "test", readers="tests")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    settings = _settings(warehouse, **{"model.model_dir": str(model)})
    graph = [_stage(table)]

    def outcome():
        return orchestrate.run_pipeline(spark, settings, graph, housekeeping=False).details["stages"]

    assert outcome() == {"w": "ran"}
    assert outcome() == {"w": "skipped"}
    (model / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 63)  # same name and size
    assert outcome() == {"w": "ran"}
    assert outcome() == {"w": "skipped"}
    monkeypatch.setattr(orchestrate, "code_digest", lambda: "a deploy")
    assert outcome() == {"w": "ran"}
    monkeypatch.setattr(orchestrate, "package_version", lambda: "9.9.9")
    assert outcome() == {"w": "ran"}
    assert outcome() == {"w": "skipped"}


def test_a_commit_refused_for_a_concurrent_writer_is_retried_then_reported(monkeypatch):
    import pytest

    from stpipe.errors import PipelineError

    monkeypatch.setattr(tables.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added")
        return "committed"

    assert tables.with_retries(flaky, what="writing table t") == "committed"
    assert len(calls) == 3

    def always():
        raise RuntimeError("[DELTA_CONCURRENT_APPEND] ConcurrentAppendException: again")

    with pytest.raises(PipelineError, match="writing table t: another writer kept committing first"):
        tables.with_retries(always, what="writing table t", attempts=2)

    def other():
        raise ValueError("a real error")

    with pytest.raises(ValueError, match="a real error"):  # not retried
        tables.with_retries(other, what="writing table t")


def test_housekeeping_is_skipped_on_a_rerun_that_wrote_nothing(spark, warehouse, monkeypatch):
    table = Table("th", None, "test", readers="tests")
    graph = [_stage(table)]
    settings = _settings(warehouse, **{"storage.optimize": True, "storage.compact_min_files": 4})

    def outcome(s=settings):
        return orchestrate.run_pipeline(spark, s, graph).details["stages"]

    assert outcome() == {"w": "ran", "housekeeping": "ran"}
    # the date is complete and was tidied with these settings: nothing new to compact or expire
    assert outcome() == {"w": "skipped", "housekeeping": "skipped"}
    changed = replace(settings, **{"storage.compact_min_files": 3})
    assert outcome(changed) == {"w": "skipped", "housekeeping": "ran"}
    assert outcome(changed) == {"w": "skipped", "housekeeping": "skipped"}
    # a writer that died since may have left files outside any commit: VACUUM must see them
    monkeypatch.setattr(orchestrate, "crashed_since_housekeeping", lambda warehouse, clear=False: True)
    assert outcome(changed)["housekeeping"] == "ran"
    monkeypatch.undo()
    # each run left its housekeeping row in run_log: three that ran, two skips
    log = deltalake.DeltaTable(str(Path(warehouse) / "run_log")).to_pandas()
    kept = log[log.stage == orchestrate.HOUSEKEEPING]
    assert sorted(kept.status) == ["ok", "ok", "ok", "skipped", "skipped"]
