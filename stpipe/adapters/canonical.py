"""Order logs already in the canonical columns: Parquet or CSV, a file or a folder.

``ingest.input`` is one of

* a folder holding ``orders.*`` and optionally ``items.*`` (each a file such as
  ``orders.csv``, ``orders.csv.gz``, ``orders.parquet``, or a folder of part files);
* a single orders file, or a folder of orders part files; items are then derived from
  the item ids (title = item id, category ``unknown``).

Orders as a folder of part files are a *folder source*: an incremental night reads only the
part files not ingested before (``skip``: the stamps ``ingest_files`` holds); items are
read whole every night (a catalogue, merged on item id).

Orders need :data:`~stpipe.schema.REQUIRED_ORDER_COLUMNS`; ``line_no``, ``city``, ``lat``
and ``lon`` are optional (a missing ``line_no`` becomes the position of the line within
its order, in file order). Unknown extra columns are dropped (ingest names them; raw_record keeps known columns only).
CSV orders are read line by line (a record broken over several lines, an unbalanced
quote or a wrong field count makes each of its lines a ``malformed_row``, so no line
vanishes); CSV items may hold quoted line breaks. Timestamps without an offset are in
``ingest.canonical_timezone``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from stpipe.adapters.base import (
    RawInput,
    data_files,
    empty_raw_orders,
    existing_path,
    finish_raw_orders,
    raw_record,
    read_csv_strings,
)
from stpipe.config import IngestSettings
from stpipe.errors import InputError
from stpipe.incremental import FileStamp, new_files, stamp
from stpipe.schema import RAW_ORDER_COLUMNS, REQUIRED_ORDER_COLUMNS, require_columns

SOURCE = "canonical"
ITEM_COLUMNS = ["item_id", "title", "category", "description"]


def _find(folder: Path, stem: str) -> Path | None:
    hits = sorted(p for p in folder.iterdir() if p.name == stem or p.name.startswith(stem + "."))
    return hits[0] if hits else None


def locate(path: Path) -> tuple[Path, Path | None]:
    """(orders path, items path or None) for an input file or folder."""
    if path.is_file():
        return path, None
    orders = _find(path, "orders")
    if orders is not None:
        return orders, _find(path, "items")
    return path, None


def _is_parquet(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".parquet"
    return any(p.suffix == ".parquet" for p in path.rglob("*") if p.is_file())


def read_table(
    spark: SparkSession, path: Path, required: list[str], *, delimiter: str, multi_line: bool,
    files: Sequence[Path] | None = None,
) -> tuple[DataFrame, list[str]]:
    """Parquet or CSV as string columns with ``source_file``, ``source_row`` and ``parse_error``
    (``files``: only these files of the folder ``path``)."""
    if not _is_parquet(path):
        return read_csv_strings(
            spark, path, required, delimiter=delimiter, multi_line=multi_line, files=files
        )
    try:
        df = spark.read.parquet(*[str(f) for f in files]) if files else spark.read.parquet(str(path))
    except Exception as exc:  # unreadable footer, not Parquet at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"{path}: cannot read as Parquet ({first[:200]})") from None
    require_columns(df, required, where=str(path))
    names = df.columns
    df = df.select(
        *[F.col(f"`{c}`").cast("string").alias(c) for c in names],
        F.input_file_name().alias("source_file"),
        F.monotonically_increasing_id().alias("source_row"),
        F.lit(None).cast("string").alias("parse_error"),
    )
    return df, names


def to_raw_orders(df: DataFrame, names: list[str]) -> DataFrame:
    """Canonical string columns and bookkeeping from a frame read by :func:`read_table`."""
    out = df.withColumn("raw_record", raw_record(names))
    if "line_no" not in names:
        order = Window.partitionBy(F.trim("order_id")).orderBy("source_file", "source_row")
        out = out.withColumn("line_no", F.row_number().over(order).cast("string"))
    for c in RAW_ORDER_COLUMNS:
        if c not in out.columns:
            out = out.withColumn(c, F.lit(None).cast("string"))
    out = out.withColumn("reject_reason", F.col("parse_error")).withColumn(
        "reject_detail", F.lit(None).cast("string")
    )
    return finish_raw_orders(out)


def read_source(
    spark: SparkSession, ingest: IngestSettings, *, skip: Collection[FileStamp] | None = None
) -> RawInput:
    """Read canonical orders (and items) from ``ingest.input``; of a folder of order files,
    only those whose stamp is not in ``skip`` (None: all)."""
    path = existing_path(ingest.input or "", "input")
    orders_path, items_path = locate(path)
    by_files = orders_path.is_dir()
    files = data_files(orders_path) if by_files else None
    if files and skip:
        files = new_files(files, skip)
    if files == [] and skip:  # nothing new in the folder
        raw_orders, names = empty_raw_orders(spark), []
    else:
        orders, names = read_table(
            spark, orders_path, REQUIRED_ORDER_COLUMNS, delimiter=ingest.csv_delimiter,
            multi_line=False, files=files,
        )
        raw_orders = to_raw_orders(orders, names)
    if items_path is not None:
        items_df, item_names = read_table(
            spark, items_path, ["item_id"], delimiter=ingest.csv_delimiter, multi_line=True
        )
        items = items_df.where(F.col("parse_error").isNull())
        for c in ITEM_COLUMNS:
            if c not in item_names:
                items = items.withColumn(c, F.lit(None).cast("string"))
        items = items.select(*ITEM_COLUMNS)
    else:
        items = raw_orders.where(F.col("reject_reason").isNull()).select(
            "item_id",
            F.lit(None).cast("string").alias("title"),
            F.lit(None).cast("string").alias("category"),
            F.lit(None).cast("string").alias("description"),
        )
    return RawInput(
        source=SOURCE, orders=raw_orders, items=items, naive_timezone=ingest.canonical_timezone,
        unknown_fields=tuple(n for n in names if n not in RAW_ORDER_COLUMNS),
        tracks_files=by_files, files=tuple(stamp(f) for f in files or ()),
    )
