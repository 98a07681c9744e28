"""UCI Online Retail (InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
CustomerID, Country) into canonical order lines.

Mapping: InvoiceNo -> order_id; line_no = position of the line within its invoice in
file order; CustomerID -> user_id (``17850.0`` -> ``17850``, by the cleaner); StockCode
upper-cased -> item_id; Description -> item title; Country -> region (aliases such as
EIRE -> Ireland come from ``ingest.region_aliases``); InvoiceDate is UK local time
(Europe/London) and becomes UTC. No city or coordinates.

Adapter reason codes, first match wins: ``header_row``/``malformed_row`` (a repeated
header or an unparsable CSV line), ``cancellation`` (``C`` invoices), ``bad_debt_adjustment`` (``A``
invoices), ``non_product_code`` (postage, fees, manual entries, gift vouchers...),
``return_or_adjustment`` (negative quantity on an ordinary invoice). Rows read = the
data lines of the file(s).
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from stpipe.adapters.base import (
    RawInput,
    existing_path,
    finish_raw_orders,
    raw_record,
    read_csv_strings,
    reject_first,
)
from stpipe.config import IngestSettings

SOURCE = "online_retail"
NAIVE_TIMEZONE = "Europe/London"
COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
# Stock codes that are not products (compared upper-cased and trimmed).
NON_PRODUCT_CODES = r"^(POST|DOT|M|D|S|B|C2|CRUK|PADS|BANK CHARGES|AMAZONFEE|DCGS.*|GIFT_0001_.*)$"


def _input_file(path: Path) -> Path:
    """The CSV file: the input itself, or the single ``*.csv*`` file of a folder."""
    if path.is_dir():
        hits = sorted(p for p in path.iterdir() if ".csv" in p.name)
        if len(hits) == 1:
            return hits[0]
    return path


def stock_code(col: Column) -> Column:
    return F.upper(F.regexp_replace(F.trim(col), r"\s+", " "))


def to_raw_orders(df: DataFrame, names: list[str]) -> DataFrame:
    """Canonical raw order lines from the file's string columns (see the module doc)."""
    invoice = F.upper(F.trim("InvoiceNo"))
    qty = F.trim("Quantity").try_cast("double")
    reason = F.coalesce("parse_error", reject_first(
        [
            ("cancellation", invoice.startswith("C")),
            ("bad_debt_adjustment", invoice.startswith("A")),
            ("non_product_code", stock_code(F.col("StockCode")).rlike(NON_PRODUCT_CODES)),
            ("return_or_adjustment", qty < 0),
        ]
    ))
    position = Window.partitionBy(invoice).orderBy("source_file", "source_row")
    return finish_raw_orders(
        df.select(
            F.col("InvoiceNo").alias("order_id"),
            F.row_number().over(position).cast("string").alias("line_no"),
            F.col("CustomerID").alias("user_id"),
            stock_code(F.col("StockCode")).alias("item_id"),
            F.col("Quantity").alias("quantity"),
            F.col("UnitPrice").alias("unit_price"),
            F.col("InvoiceDate").alias("ts"),
            F.col("Country").alias("region"),
            F.lit(None).cast("string").alias("city"),
            F.lit(None).cast("string").alias("lat"),
            F.lit(None).cast("string").alias("lon"),
            "source_file",
            "source_row",
            raw_record(names).alias("raw_record"),
            reason.alias("reject_reason"),
            F.lit(None).cast("string").alias("reject_detail"),
        )
    )


def to_items(df: DataFrame) -> DataFrame:
    """Product codes with their descriptions (the cleaner keeps the most frequent one)."""
    return df.where(F.col("parse_error").isNull() & ~stock_code(F.col("StockCode")).rlike(NON_PRODUCT_CODES)).select(
        stock_code(F.col("StockCode")).alias("item_id"),
        F.col("Description").alias("title"),
        F.lit(None).cast("string").alias("category"),
        F.lit(None).cast("string").alias("description"),
    )


def read_source(spark: SparkSession, ingest: IngestSettings) -> RawInput:
    """Read the Online Retail CSV (``ingest.input``: the file, or a folder holding it)."""
    path = _input_file(existing_path(ingest.input or "", "input"))
    df, names = read_csv_strings(spark, path, COLUMNS, delimiter=ingest.csv_delimiter, multi_line=False)
    return RawInput(
        source=SOURCE, orders=to_raw_orders(df, names), items=to_items(df), naive_timezone=NAIVE_TIMEZONE,
        known_fields=tuple(COLUMNS), id_fields=("CustomerID",),
        unknown_fields=tuple(n for n in names if n not in COLUMNS),
    )
