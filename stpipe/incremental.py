"""What is new in a night's input: pure DataFrame transforms and plain values (no Delta here).

Incremental nights (``ingest.incremental``) read only what is new and merge it:

* a folder source (canonical orders as a folder of part files) reads the files whose
  (path, size, modification time) the ``ingest_files`` table does not list;
* a file source (one file, the Olist tables, the generator) keeps the lines whose order date
  is after the last order date already ingested minus ``ingest.late_days``, so late
  corrections of recent days are read again; lines whose time cannot be parsed are always kept
  (they are quarantined, keyed, so never twice).

:func:`classify_changes` sorts a batch against a table's rows on a key into inserts, updates
and unchanged rows; ``stpipe.merge.upsert`` writes only the first two.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

CHANGE = "_change"  # insert, update or unchanged
INSERT, UPDATE, UNCHANGED = "insert", "update", "unchanged"


@dataclass(frozen=True)
class FileStamp:
    """An input file as ingest records it: absolute path, size in bytes, mtime in ns."""

    path: str
    size: int
    mtime_ns: int


def stamp(path: Path) -> FileStamp:
    """The stamp of one file now (a changed size or time makes the file new again)."""
    st = path.stat()
    return FileStamp(str(path.resolve()), st.st_size, st.st_mtime_ns)


def new_files(files: Iterable[Path], ingested: Iterable[FileStamp]) -> list[Path]:
    """The files whose stamp is not among ``ingested`` (in the given order)."""
    seen = set(ingested)
    return [f for f in files if stamp(f) not in seen]


def since_date(last_date: dt.date | None, late_days: int) -> dt.date | None:
    """Order dates after this one are read again (None: read everything, nothing ingested yet)."""
    if last_date is None:
        return None
    return last_date - dt.timedelta(days=late_days)


def after_date(ts: Column, since: dt.date) -> Column:
    """Lines to keep: order date (of the parsed UTC time) after ``since``, or an unparsable time."""
    return ts.isNull() | (F.to_date(ts) > F.lit(since))


def classify_changes(
    batch: DataFrame,
    target: DataFrame,
    keys: Sequence[str],
    compare: Sequence[str] | None = None,
    *,
    small_batch: bool = False,
) -> DataFrame:
    """``batch`` with :data:`CHANGE`: ``insert`` (key not in ``target``), ``update`` (a column
    of ``compare`` differs, null-safe; default: every non-key column) or ``unchanged``.

    With ``compare=()`` a key already in ``target`` is unchanged whatever the other columns
    hold, and ``target`` may hold a key several times. Otherwise ``target`` holds each key at
    most once (a merge keeps it so). ``small_batch``: the batch's keys fit in memory, so they
    are broadcast to pick the target's rows without shuffling the whole table.
    """
    others = [c for c in batch.columns if c not in keys] if compare is None else list(compare)
    right = target.select(
        *[F.col(k).alias(f"_t_{k}") for k in keys],
        *[F.col(c).alias(f"_t_{c}") for c in others],
        F.lit(True).alias("_t_found"),
    )
    if small_batch:
        wanted = batch.select(*[F.col(k).alias(f"_b_{k}") for k in keys]).distinct()
        picked = [F.col(f"_t_{k}").eqNullSafe(F.col(f"_b_{k}")) for k in keys]
        right = right.join(F.broadcast(wanted), picked, "left_semi")
    if not others:
        right = right.dropDuplicates([f"_t_{k}" for k in keys])
    if small_batch:
        right = F.broadcast(right)
    on = [F.col(k).eqNullSafe(F.col(f"_t_{k}")) for k in keys]
    joined = batch.join(right, on, "left")
    same = F.lit(True)
    for c in others:
        same = same & F.col(c).eqNullSafe(F.col(f"_t_{c}"))
    change = (
        F.when(F.col("_t_found").isNull(), F.lit(INSERT))
        .when(same, F.lit(UNCHANGED))
        .otherwise(F.lit(UPDATE))
    )
    return joined.select(*[F.col(c) for c in batch.columns], change.alias(CHANGE))
