"""A stage as a declared unit: the tables it reads and writes, the config it depends on, a run.

A stage's ``run(ctx)`` reads its inputs through ``ctx.read`` (only declared tables: an
undeclared read is an error), turns the settings into the plain values its pure
transforms take, and writes its outputs through ``ctx.write`` (only declared tables, the
slice the catalogue names). :func:`run_stage` runs one stage, records the tables it opened
and committed, and appends its ``run_log`` row.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.types import StructType

from stpipe import catalogue, runlog, tables
from stpipe.catalogue import Table
from stpipe.config import Settings
from stpipe.errors import PipelineError
from stpipe.merge import Merged, upsert
from stpipe.runlog import StageResult

log = logging.getLogger("stpipe")


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline (see the module docstring)."""

    name: str
    run: Callable[[StageContext], StageResult]
    inputs: tuple[Table, ...] = ()
    outputs: tuple[Table, ...] = ()
    # Inputs read only when present (part of the fingerprint like ``inputs``).
    optional: tuple[Table, ...] = ()
    # Its own earlier outputs, read back to reuse work (not part of the fingerprint).
    reuses: tuple[Table, ...] = ()
    # Config sections the outputs depend on.
    config: tuple[str, ...] = ()
    # Whether it reads the raw input (the input files' sizes and times are part of its inputs).
    reads_source: bool = False

    @property
    def readable(self) -> tuple[Table, ...]:
        return self.inputs + self.optional + self.reuses


@dataclass
class StageContext:
    """What a running stage sees: the session, the settings, and guarded table access."""

    spark: SparkSession
    settings: Settings
    stage: Stage
    written: list[str] = field(default_factory=list)
    # table -> the version its last write in this stage committed (None: nothing to commit)
    commits: dict[str, int | None] = field(default_factory=dict)

    @property
    def warehouse(self) -> str:
        return self.settings.storage.warehouse

    @property
    def run_date(self) -> dt.date:
        return self.settings.date

    def _check(self, table: Table, declared: tuple[Table, ...], verb: str) -> None:
        if table not in declared:
            raise PipelineError(
                f"stage {self.stage.name} {verb} table {table.name}, which it does not declare"
            )

    def exists(self, table: Table) -> bool:
        return tables.exists(self.spark, self.warehouse, table.name)

    def read(self, table: Table) -> DataFrame:
        """A declared input (a clear error naming the stage to run when it is missing)."""
        self._check(table, self.stage.readable, "reads")
        return tables.read(self.spark, self.warehouse, table.name)

    def read_if_exists(self, table: Table) -> DataFrame | None:
        """A declared optional input, or None when the table does not exist yet."""
        self._check(table, self.stage.readable, "reads")
        return self.read(table) if self.exists(table) else None

    def write(self, table: Table, df: DataFrame, **slice_values: object) -> int:
        """Replace the table's slice (``run_date`` defaults to the run date) in one commit."""
        self._check(table, self.stage.outputs, "writes")
        if "run_date" in table.slice_by:
            slice_values.setdefault("run_date", self.run_date)
        if set(slice_values) != set(table.slice_by):
            raise PipelineError(
                f"table {table.name} is replaced by slice {list(table.slice_by)}, "
                f"got {sorted(slice_values)}"
            )
        done = tables.commit(
            df, self.warehouse, table.name, replace=slice_values or None,
            partition_by=list(table.partition_by) or None,
            max_records_per_file=self.settings.storage.max_records_per_file,
        )
        if table.name not in self.written:
            self.written.append(table.name)
        self.commits[table.name] = done.version
        return done.rows

    def add_missing_columns(self, table: Table, schema: StructType | None = None) -> list[str]:
        """Give a declared output written by older code the (nullable) columns its schema has
        gained since (:func:`stpipe.tables.add_missing_columns`); return their names.
        ``schema``: the columns to have (default: the table's; windowed tables pass theirs)."""
        self._check(table, self.stage.outputs, "writes")
        return tables.add_missing_columns(
            self.spark, self.warehouse, table.name, schema if schema is not None else table.schema
        )

    def merge(
        self, table: Table, df: DataFrame, *, keys: list[str], compare: list[str] | None = None,
        small_batch: bool = False, **slice_values: object,
    ) -> Merged:
        """Merge ``df`` into the table's slice on ``keys`` (see :func:`stpipe.merge.upsert`);
        a merge that changed nothing commits nothing and is not counted as a write."""
        self._check(table, self.stage.outputs, "writes")
        if set(slice_values) != set(table.slice_by):
            raise PipelineError(
                f"table {table.name} is merged within slice {list(table.slice_by)}, "
                f"got {sorted(slice_values)}"
            )
        done = upsert(
            df, self.warehouse, table.name, keys=keys, scope=slice_values, compare=compare,
            partition_by=list(table.partition_by) or None,
            max_records_per_file=self.settings.storage.max_records_per_file,
            small_batch=small_batch,
        )
        if done.version is not None:
            if table.name not in self.written:
                self.written.append(table.name)
            self.commits[table.name] = done.version
        return done

    def delete(self, table: Table, condition: Column) -> int:
        """Delete a declared output's rows matching ``condition`` (one commit); return how many."""
        self._check(table, self.stage.outputs, "writes")
        rows = tables.delete_rows(self.spark, self.warehouse, table.name, condition, what="erasure")
        if rows and table.name not in self.written:
            self.written.append(table.name)
        return rows

    def append(self, table: Table, df: DataFrame) -> None:
        """Append rows to a declared output (an audit table)."""
        self._check(table, self.stage.outputs, "writes")
        tables.append(df, self.warehouse, table.name)
        if table.name not in self.written:
            self.written.append(table.name)


def run_stage(
    spark: SparkSession,
    settings: Settings,
    stage: Stage,
    *,
    fingerprint: dict[str, object] | None = None,
) -> StageResult:
    """Run ``stage`` for ``settings.date``, log rows and seconds, append its ``run_log`` row.

    The result's ``tables`` are the tables the stage committed and its details hold
    ``reads`` (the tables it opened) and, when given, the ``fingerprint`` of its inputs
    completed with the data versions of its outputs.
    """
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    log.info("stage %s: started for %s", stage.name, settings.date)
    ctx = StageContext(spark, settings, stage)

    def record(status: str, result: StageResult | None = None, message: str | None = None) -> None:
        runlog.record(
            spark, settings.storage.warehouse, run_date=settings.date, stage=stage.name,
            started=started, finished=dt.datetime.now(dt.timezone.utc), status=status,
            result=result, message=message,
        )

    try:
        with tables.recording_reads() as reads:
            result = stage.run(ctx)
    except Exception as exc:
        try:
            record("failed", message=one_line(exc))
        except Exception:  # the log must not hide the original failure
            log.warning("could not record the failure of %s in run_log", stage.name)
        raise
    # what it committed through ctx.write (housekeeping compacts tables it does not write)
    result.tables = list(ctx.written) if ctx.written else list(result.tables)
    # run_log is the runner's bookkeeping (skip-if-complete), not an input of the stage
    opened = sorted(set(reads) - {catalogue.RUN_LOG.name})
    details: dict[str, object] = {**result.details, "reads": opened, "commits": ctx.commits}
    if fingerprint is not None:
        # the versions this stage committed, not whatever the tables hold now: another
        # writer's later commit makes the stage incomplete instead of being vouched for
        warehouse = settings.storage.warehouse
        outputs = {
            name: ctx.commits[name] if ctx.commits.get(name) is not None
            else tables.data_version(spark, warehouse, name)
            for name in result.tables
        }
        details["fingerprint"] = {**fingerprint, "outputs": outputs}
    result.details = details
    record("ok", result=result)
    log.info(
        "stage %s: done in %.1fs, rows in %s, rows out %s, tables %s",
        stage.name, time.perf_counter() - t0, result.rows_in, result.rows_out,
        ", ".join(result.tables) or "-",
    )
    return result


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
