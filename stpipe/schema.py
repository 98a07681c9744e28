"""Canonical schemas: what every source adapter produces and what the tables hold."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from stpipe.errors import InputError

# Columns an adapter hands to the cleaner, all as strings (parsed and checked there).
RAW_ORDER_COLUMNS = [
    "order_id",
    "line_no",
    "user_id",
    "item_id",
    "quantity",
    "unit_price",
    "ts",
    "region",
    "city",
    "lat",
    "lon",
]
# Bookkeeping columns every adapter adds to each raw row.
RAW_META_COLUMNS = [
    "source_file",  # file the row came from
    "source_row",  # row number within the input (stable for the same files)
    "raw_record",  # the original values, as JSON
    "reject_reason",  # set by the adapter for source-specific rejections, else null
    "reject_detail",
]
REQUIRED_ORDER_COLUMNS = ["order_id", "user_id", "item_id", "quantity", "unit_price", "ts", "region"]

ORDERS_CLEAN = T.StructType(
    [
        T.StructField("order_id", T.StringType(), False),
        T.StructField("line_no", T.IntegerType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("quantity", T.IntegerType(), False),
        T.StructField("unit_price", T.DoubleType(), False),
        T.StructField("ts", T.TimestampType(), False),
        T.StructField("region", T.StringType(), False),
        T.StructField("city", T.StringType(), True),
        T.StructField("lat", T.DoubleType(), True),
        T.StructField("lon", T.DoubleType(), True),
        T.StructField("source", T.StringType(), False),
        T.StructField("order_date", T.DateType(), False),
    ]
)

ORDERS_QUARANTINE = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("source_file", T.StringType(), True),
        T.StructField("source_row", T.LongType(), True),
        T.StructField("reason", T.StringType(), False),
        T.StructField("detail", T.StringType(), True),
        T.StructField("raw_record", T.StringType(), True),
    ]
)

ITEMS = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("title", T.StringType(), False),
        T.StructField("category", T.StringType(), False),
        T.StructField("description", T.StringType(), True),
        T.StructField("source", T.StringType(), False),
    ]
)

REVIEWS = T.StructType(
    [
        T.StructField("order_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), True),
        T.StructField("user_id", T.StringType(), True),
        T.StructField("score", T.IntegerType(), True),
        T.StructField("text", T.StringType(), True),
        T.StructField("ts", T.TimestampType(), True),
        T.StructField("source", T.StringType(), False),
    ]
)


def require_columns(df: DataFrame, columns: Iterable[str], *, where: str) -> None:
    """Raise InputError naming the first missing column and where it was expected."""
    present = set(df.columns)
    missing = [c for c in columns if c not in present]
    if missing:
        raise InputError(
            f"{where}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (found: {', '.join(df.columns) or 'none'})"
        )


def select_schema(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Cast and order ``df`` to ``schema``: the explicit final select of every table."""
    from pyspark.sql import functions as F

    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
