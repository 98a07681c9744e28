"""Run stages in order for one date, skipping those whose outputs are already complete.

A stage is *complete* for a date when its latest run for that date (in ``run_log``)
succeeded, and nothing it depends on has changed since:

* the config sections it reads (a digest of their values),
* for the stage that reads the source: the synthetic parameters, or the input files'
  names, sizes and modification times,
* the Delta data versions of its declared input tables (``Stage.inputs`` and
  ``Stage.optional``; a test proves each stage reads exactly those),
* the Delta data versions of its own output tables: the versions the stage itself committed
  (found by a token in each commit's metadata), so another writer's commit is noticed,
* the code: the package version and a digest of the library's source (a deploy reruns),
* for the stages that use the model (finetune, embed, recommend), a digest of the weights'
  bytes (of the encoder ``model.encoder`` chooses: a new registered version re-embeds).

The fingerprint is stored as JSON in the ``message`` of the stage's ``ok`` row, which
``run_stage`` writes only after the stage's tables are committed: a run killed before
that leaves no ``ok`` row, and the next run redoes the stage. Every write is one Delta
commit (replaceWhere or MERGE), so a redo never leaves duplicate or partial rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from stpipe import catalogue, runlog, tables, upkeep
from stpipe.config import IngestSettings, Settings
from stpipe.errors import ConfigError
from stpipe.lease import crashed_since_housekeeping
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext, run_stage
from udfs.embed import resolve_model_dir

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
    """What the stage is about to read: config and source digests, declared input versions, the
    code (package version and a digest of its source) and, for stages that use the model, the
    model's weights."""
    warehouse = settings.storage.warehouse
    declared = sorted(t.name for t in stage.inputs + stage.optional)
    uses_model = "model" in stage.config
    return {
        "config": config_digest(settings, stage.config),
        "source": source_digest(settings.ingest) if stage.reads_source else None,
        "inputs": {name: tables.data_version(spark, warehouse, name) for name in declared},
        "code": {"version": package_version(), "digest": code_digest()},
        "weights": weights_digest(encoder_dir(settings)) if uses_model else None,
    }


def package_version() -> str:
    try:
        return importlib.metadata.version("stpipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the library's source (stpipe/ and udfs/): a deploy makes every stage rerun."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(p for d in ("stpipe", "udfs") for p in (root / d).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def encoder_dir(settings: Settings) -> str | None:
    """The model folder embed uses (``model.encoder``: base, latest or a registered version)."""
    model = settings.model
    if model.encoder == "base":
        return model.model_dir
    from stpipe.finetune.registry import resolve_encoder  # imports MLflow: only when asked

    return resolve_encoder(
        settings.storage.warehouse, encoder=model.encoder, model_dir=model.model_dir,
        name=model.finetune.registered_name, run_date=settings.date,
    )


def weights_digest(model_dir: str | None) -> str:
    """SHA-256 of every file of the model folder (names and bytes): weights replaced in place
    count as a new model."""
    folder = resolve_model_dir(model_dir)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return _weights_digest(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=8)
def _weights_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def completeness(
    spark: SparkSession, settings: Settings, stage: Stage, inputs: dict[str, object],
    attempt: runlog.Attempt | None,
) -> tuple[runlog.Attempt | None, str]:
    """(the ok attempt, reason) when the stage is complete, else (None, why it must run).

    ``attempt``: the stage's latest ok or failed attempt for the date (None: none)."""
    warehouse = settings.storage.warehouse
    if attempt is None:
        return None, "no run for this date yet"
    if attempt.status != "ok":
        return None, "the last run failed"
    recorded = attempt.details.get("fingerprint")
    if not isinstance(recorded, dict):
        return None, "the last run recorded no fingerprint"
    for key in ("config", "source", "inputs", "code", "weights"):
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
    # Read once: the attempts this run records are of other stages, or of this one once done.
    attempts = runlog.latest_attempts(spark, warehouse, settings.date)
    for i, stage in enumerate(specs, 1):
        inputs = input_fingerprint(spark, settings, stage)
        if force or stage.name in force_stages:
            attempt, reason = None, "forced"
        else:
            attempt, reason = completeness(spark, settings, stage, inputs, attempts.get(stage.name))
        if attempt is not None:
            log.info("[%d/%d] stage %s: skipped, %s", i, len(specs), stage.name, reason)
            record_skipped(spark, settings, stage.name, reason, tables=attempt.tables)
            upstream += [t for t in attempt.tables if t not in upstream]
            outcome[stage.name] = "skipped"
            continue
        log.info("[%d/%d] stage %s: running (%s)", i, len(specs), stage.name, reason)
        result = run_stage(spark, settings, stage, fingerprint=inputs)
        upstream += [t for t in result.tables if t not in upstream]
        outcome[stage.name] = "ran"
    if housekeeping and (settings.storage.optimize or settings.storage.vacuum):
        names = upstream + [catalogue.RUN_LOG.name]
        why = housekeeping_needed(settings, attempts.get(HOUSEKEEPING), ran="ran" in outcome.values())
        if why is None:
            log.info("housekeeping: skipped, done for this date with these storage settings and "
                     "nothing written since")
            record_skipped(spark, settings, HOUSEKEEPING, "nothing written since")
            outcome[HOUSEKEEPING] = "skipped"
        else:
            log.info("housekeeping: running (%s)", why)
            run_stage(spark, settings, Stage(HOUSEKEEPING, lambda ctx: housekeep(ctx, names)))
            outcome[HOUSEKEEPING] = "ran"
    return StageResult(tables=upstream, details={"stages": outcome})


def record_skipped(spark: SparkSession, settings: Settings, stage: str, reason: str, *,
                   tables: Sequence[str] = ()) -> None:
    """The ``run_log`` row of a step skipped for ``settings.date`` (``tables``: those its last
    successful run committed)."""
    now = dt.datetime.now(dt.timezone.utc)
    runlog.record(
        spark, settings.storage.warehouse, run_date=settings.date, stage=stage, started=now,
        finished=now, status="skipped", result=StageResult(tables=list(tables)), message=reason,
    )


def housekeeping_needed(settings: Settings, last: runlog.Attempt | None, *, ran: bool) -> str | None:
    """Why housekeeping must run now, or None when it need not: a rerun of a date that wrote
    nothing (every stage complete) after housekeeping succeeded for that date with the same
    ``storage`` settings, and no writer died since (its files would wait for a VACUUM)."""
    if ran:
        return "stages ran"
    if last is None or last.status != "ok":
        return "not done for this date yet"
    if last.details.get("storage") != config_digest(settings, ["storage"]):
        return "the storage settings changed"
    if crashed_since_housekeeping(settings.storage.warehouse):
        return "a writer died since"
    return None


def housekeep(ctx: StageContext, names: Sequence[str]) -> StageResult:
    """OPTIMIZE and VACUUM the tables of ``names`` that need it (stpipe/upkeep.py) as the
    storage section says; log files before and after, and why each table was or was not done."""
    spark, storage = ctx.spark, ctx.settings.storage
    warehouse = storage.warehouse
    present = [n for n in names if tables.exists(spark, warehouse, n)]
    before = {n: _file_count(warehouse, n) for n in present}
    t0 = time.perf_counter()
    expired = expire_old_slices(ctx, present)
    now = dt.datetime.now()  # DESCRIBE HISTORY's timestamps are local, like this
    after_crash = crashed_since_housekeeping(warehouse)
    done: dict[str, list[str]] = {}
    for name in present:
        todo = upkeep.plan(
            spark, tables.table_path(warehouse, name), now=now,
            retention_hours=storage.vacuum_retention_hours,
            compact_min_files=storage.compact_min_files,
            vacuum_every_days=storage.vacuum_every_days,
            optimize=storage.optimize, vacuum=storage.vacuum, after_crash=after_crash,
        )
        upkeep.housekeeping(
            spark, warehouse, name, retention_hours=storage.vacuum_retention_hours,
            optimize=todo.compact, vacuum=todo.vacuum, max_file_mb=storage.optimize_max_file_mb,
        )
        done[name] = [op for op, yes in (("optimize", todo.compact), ("vacuum", todo.vacuum)) if yes]
        log.info("housekeeping %s: %s (%s)", name, ", ".join(done[name]) or "nothing", todo.reason)
    if after_crash and storage.vacuum:
        crashed_since_housekeeping(warehouse, clear=True)
    after = {n: _file_count(warehouse, n) for n in present}
    for name in present:
        log.info("housekeeping %s: %d -> %d data files on disk", name, before[name], after[name])
    log.info("housekeeping: %d tables in %.1fs", len(present), time.perf_counter() - t0)
    return StageResult(
        tables=present,
        details={"files_before": before, "files_after": after, "expired_rows": expired,
                 "done": done, "retention_hours": storage.vacuum_retention_hours,
                 "storage": config_digest(ctx.settings, ["storage"])},
    )


def expire_old_slices(ctx: StageContext, names: Sequence[str]) -> dict[str, int]:
    """Delete the run_date slices older than ``storage.keep_days`` (per table:
    ``storage.keep_days_by_table``; 0 keeps everything) of the dated tables in ``names``."""
    storage = ctx.settings.storage
    expired: dict[str, int] = {}
    for name in names:
        table = catalogue.BY_NAME.get(name)
        if table is None or "run_date" not in table.slice_by:
            continue
        keep = storage.keep_days_by_table.get(name, storage.keep_days)
        if keep > 0:
            before = ctx.run_date - dt.timedelta(days=keep)
            rows = tables.delete_before(ctx.spark, ctx.warehouse, name, column="run_date", before=before)
            if rows:
                log.info("retention %s: %d rows of run dates before %s deleted", name, rows, before)
                expired[name] = rows
    return expired


def _file_count(warehouse: str, name: str) -> int:
    """Parquet files under the table's folder (referenced or not: what VACUUM would free)."""
    base = tables.local_folder(warehouse)
    if base is None:
        return -1  # an object store: not counted here
    root = base.expanduser().resolve() / name
    return sum(
        1 for folder, _, files in os.walk(root) for f in files
        if f.endswith(".parquet") and "_delta_log" not in folder
    )
