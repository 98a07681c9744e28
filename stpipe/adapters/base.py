"""What a source adapter hands to the cleaner."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stpipe.schema import RAW_META_COLUMNS, RAW_ORDER_COLUMNS


@dataclass
class RawInput:
    """Raw rows of one source, before validation.

    ``orders`` has :data:`RAW_ORDER_COLUMNS` as strings plus :data:`RAW_META_COLUMNS`.
    ``items`` has item_id, title, category, description as strings.
    ``naive_timezone`` is the zone of timestamps written without an offset.
    """

    source: str
    orders: DataFrame
    items: DataFrame
    naive_timezone: str = "UTC"
    reviews: DataFrame | None = None


def raw_record(columns: list[str]) -> Column:
    """The original values of a row as JSON (nulls kept), for quarantine."""
    return F.to_json(F.struct(*[F.col(c) for c in columns]), {"ignoreNullFields": "false"})


def finish_raw_orders(df: DataFrame) -> DataFrame:
    """Cast canonical columns to string and order columns as the cleaner expects."""
    return df.select(
        *[F.col(c).cast("string").alias(c) for c in RAW_ORDER_COLUMNS],
        F.col("source_file").cast("string"),
        F.col("source_row").cast("long"),
        F.col("raw_record").cast("string"),
        F.col("reject_reason").cast("string"),
        F.col("reject_detail").cast("string"),
    ).select(*RAW_ORDER_COLUMNS, *RAW_META_COLUMNS)
