"""Run stages in order for one date, skipping those whose outputs are already complete.

A stage is *complete* for a date when its latest run for that date (in ``run_log``)
succeeded, and nothing it depends on has changed since:

* the config sections it reads (a digest of their values),
* for the stage that reads the source: the synthetic parameters, or the input files'
  names, sizes and modification times,
* the Delta data versions of its declared input tables (``Stage.inputs`` and
  ``Stage.optional``; a test proves each stage reads exactly those),
* the Delta data versions of its own output tables (another run may have replaced them).

The fingerprint is stored as JSON in the ``message`` of the stage's ``ok`` row, which
``run_stage`` writes only after the stage's tables are committed: a run killed before
that leaves no ``ok`` row, and the next run redoes the stage. Every write is one Delta
commit (replaceWhere or MERGE), so a redo never leaves duplicate or partial rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from stpipe import catalogue, runlog, tables
from stpipe.config import IngestSettings, Settings
from stpipe.errors import ConfigError
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext, run_stage

log = logging.getLogger("stpipe.nightly")

HOUSEKEEPING = "housekeeping"
# Sections no stage's output depends on (where and how Spark runs, where tables live).
_NOT_STAGE_CONFIG = ("run_date", "spark", "storage")


def config_digest(settings: Settings, sections: Iterable[str] | None) -> str:
    """SHA-256 of the named config sections' values (all stage sections when None)."""
    data = dataclasses.asdict(settings)
    names = sorted(sections) if sections is not None else sorted(
        k for k in data if k not in _NOT_STAGE_CONFIG
    )
    unknown = [n for n in names if n not in data]
    if unknown:
        raise ConfigError(f"stage config section {unknown[0]!r} does not exist")
    return _digest({n: data[n] for n in names})


def source_digest(ingest: IngestSettings) -> str:
    """SHA-256 of what the source stage reads: generator parameters or file sizes and times."""
    if ingest.source == "synthetic" or not ingest.input:
        return _digest({"source": ingest.source, "input": None})
    root = Path(ingest.input).expanduser()
    files: list[tuple[str, int, int]] = []
    if root.is_file():
        st = root.stat()
        files.append((root.name, st.st_size, st.st_mtime_ns))
    elif root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            st = path.stat()
            files.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return _digest({"source": ingest.source, "input": str(root.resolve()), "files": files})


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def input_fingerprint(spark: SparkSession, settings: Settings, stage: Stage) -> dict[str, object]:
    """What the stage is about to read: config digest, source digest, declared input versions."""
    warehouse = settings.storage.warehouse
    declared = sorted(t.name for t in stage.inputs + stage.optional)
    return {
        "config": config_digest(settings, stage.config),
        "source": source_digest(settings.ingest) if stage.reads_source else None,
        "inputs": {name: tables.data_version(spark, warehouse, name) for name in declared},
    }


def completeness(
    spark: SparkSession, settings: Settings, stage: Stage, inputs: dict[str, object]
) -> tuple[runlog.Attempt | None, str]:
    """(the ok attempt, reason) when the stage is complete, else (None, why it must run)."""
    warehouse = settings.storage.warehouse
    attempt = runlog.latest_attempt(spark, warehouse, settings.date, stage.name)
    if attempt is None:
        return None, "no run for this date yet"
    if attempt.status != "ok":
        return None, "the last run failed"
    recorded = attempt.details.get("fingerprint")
    if not isinstance(recorded, dict):
        return None, "the last run recorded no fingerprint"
    for key in ("config", "source", "inputs"):
        if recorded.get(key) != inputs[key]:
            return None, f"its {key} changed since the last run"
    outputs = recorded.get("outputs") or {}
    for name, version in outputs.items():
        if tables.data_version(spark, warehouse, name) != version:
            return None, f"table {name} changed since the last run"
    return attempt, f"complete since {attempt.finished:%Y-%m-%d %H:%M:%S}"


def check_stage_names(stages: Sequence[Stage], names: Iterable[str]) -> None:
    known = [s.name for s in stages]
    for name in names:
        if name not in known:
            raise ConfigError(f"--force-stage {name}: unknown stage (known: {', '.join(known)})")


def run_pipeline(
    spark: SparkSession,
    settings: Settings,
    stages: Sequence[Stage],
    *,
    force: bool = False,
    force_stages: Iterable[str] = (),
    housekeeping: bool = True,
) -> StageResult:
    """Run ``stages`` in order for ``settings.date``; skip complete ones unless forced.

    A forced stage rewrites its tables, which changes the inputs of the stages after it,
    so they run again too. Housekeeping (OPTIMIZE, VACUUM) runs last.
    """
    force_stages = set(force_stages)
    check_stage_names(stages, force_stages)
    warehouse = settings.storage.warehouse
    upstream: list[str] = []
    outcome: dict[str, str] = {}
    specs = list(stages)
    for i, stage in enumerate(specs, 1):
        inputs = input_fingerprint(spark, settings, stage)
        if force or stage.name in force_stages:
            attempt, reason = None, "forced"
        else:
            attempt, reason = completeness(spark, settings, stage, inputs)
        if attempt is not None:
            log.info("[%d/%d] stage %s: skipped, %s", i, len(specs), stage.name, reason)
            now = dt.datetime.now(dt.timezone.utc)
            runlog.record(
                spark, warehouse, run_date=settings.date, stage=stage.name, started=now,
                finished=now, status="skipped", result=StageResult(tables=attempt.tables),
                message=reason,
            )
            upstream += [t for t in attempt.tables if t not in upstream]
            outcome[stage.name] = "skipped"
            continue
        log.info("[%d/%d] stage %s: running (%s)", i, len(specs), stage.name, reason)
        result = run_stage(spark, settings, stage, fingerprint=inputs)
        upstream += [t for t in result.tables if t not in upstream]
        outcome[stage.name] = "ran"
    if housekeeping and (settings.storage.optimize or settings.storage.vacuum):
        names = upstream + [catalogue.RUN_LOG.name]
        run_stage(spark, settings, Stage(HOUSEKEEPING, lambda ctx: housekeep(ctx, names)))
        outcome[HOUSEKEEPING] = "ran"
    return StageResult(tables=upstream, details={"stages": outcome})


def housekeep(ctx: StageContext, names: Sequence[str]) -> StageResult:
    """OPTIMIZE and VACUUM ``names`` as the storage section says; log files before and after."""
    spark, storage = ctx.spark, ctx.settings.storage
    warehouse = storage.warehouse
    present = [n for n in names if tables.exists(spark, warehouse, n)]
    before = {n: _file_count(warehouse, n) for n in present}
    t0 = time.perf_counter()
    tables.housekeeping(
        spark, warehouse, present, retention_hours=storage.vacuum_retention_hours,
        optimize=storage.optimize, vacuum=storage.vacuum, max_file_mb=storage.optimize_max_file_mb,
    )
    after = {n: _file_count(warehouse, n) for n in present}
    for name in present:
        log.info("housekeeping %s: %d -> %d data files on disk", name, before[name], after[name])
    log.info("housekeeping: %d tables in %.1fs", len(present), time.perf_counter() - t0)
    return StageResult(
        tables=present,
        details={"files_before": before, "files_after": after,
                 "retention_hours": storage.vacuum_retention_hours},
    )


def _file_count(warehouse: str, name: str) -> int:
    """Parquet files under the table's folder (referenced or not: what VACUUM would free)."""
    root = tables.table_path(warehouse, name)
    return sum(
        1 for folder, _, files in os.walk(root) for f in files
        if f.endswith(".parquet") and "_delta_log" not in folder
    )
