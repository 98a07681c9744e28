"""Validation and cleaning of raw order lines: every row ends clean or quarantined.

Each raw row gets at most one reason code: the adapter's own (``reject_reason``, see
:data:`ADAPTER_REASONS`) or else the first rule of :data:`REASONS` it breaks; rows with
none are clean. Nothing is dropped: callers check that rows read = clean + quarantined.

Everything here is narrow (row-wise) except :func:`mark_duplicates`, which needs one
shuffle by order id; region spellings are resolved on the driver from a small count
(:func:`region_mapping`), so an ingest costs one pass over the input plus the writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from stpipe.schema import (
    ITEMS,
    ORDERS_CLEAN,
    ORDERS_QUARANTINE,
    RAW_ORDER_COLUMNS,
    REQUIRED_ORDER_COLUMNS,
    select_schema,
)

# Reason codes of the cleaner, in the order rules are applied; documented in the README.
REASONS: dict[str, str] = {
    "header_row": "a repeated header line inside the data",
    "malformed_row": "the CSV parser could not split the line into the expected fields "
    "(wrong number of fields, unbalanced quotes, a line break inside an id or number)",
    "invalid_encoding": "bytes that are not valid UTF-8 (decoded to U+FFFD)",
    "field_too_long": "a field longer than ingest.max_text_chars",
    "missing_order_id": "order id null or empty",
    "missing_user_id": "user id null or empty (for example a guest checkout)",
    "missing_item_id": "item id null or empty",
    "missing_quantity": "quantity null or empty",
    "missing_unit_price": "unit price null or empty",
    "missing_ts": "timestamp null or empty",
    "missing_region": "region null, empty or a placeholder listed in ingest.unknown_regions",
    "bad_line_no": "line number not a positive integer",
    "bad_timestamp": "timestamp not parseable",
    "ts_before_min_date": "timestamp before ingest.min_date",
    "ts_in_future": "timestamp after the run date + ingest.max_future_days",
    "bad_quantity": "quantity not an integer",
    "non_positive_quantity": "quantity zero or negative (returns are handled by the adapter)",
    "absurd_quantity": "quantity above ingest.max_quantity",
    "bad_unit_price": "unit price not a number",
    "non_positive_price": "unit price zero or negative",
    "absurd_price": "unit price above ingest.max_unit_price",
    "bad_coordinates": "lat/lon not numbers, out of range, or only one of them given",
    "duplicate_row": "an exact duplicate of an earlier line of the same order (the first is kept)",
    "conflicting_duplicate": "same order_id and line_no as another line with different values "
    "(every version is quarantined: none can be trusted)",
    "superseded": "a folder source's later file (by name) delivers the same order_id and line_no "
    "with other values: the later version is kept, as an incremental night would apply it",
}
# Adapter-specific reason codes (set before cleaning), also documented in the README.
ADAPTER_REASONS: dict[str, str] = {
    "cancellation": "a cancelled invoice or order (Online Retail C invoices, Olist status canceled)",
    "return_or_adjustment": "negative quantity without a cancellation marker (return, stock fix)",
    "bad_debt_adjustment": "an accounting entry, not a sale (Online Retail A invoices)",
    "non_product_code": "postage, fees, discounts and other codes that are not products",
    "order_without_items": "an order with no item lines (Olist)",
    "order_not_fulfilled": "an order the shop could not fulfil (Olist status unavailable)",
    "unknown_item": "an item id absent from the catalogue",
}

_ZONE_SUFFIX = r"(Z|[+-]\d{2}:?\d{2})$"
_FLOAT_ID = r"^(\d+)\.0+$"
# Ids, numbers and timestamps never hold a line break or a quote; when they do, the CSV
# parser has swallowed a neighbour line (unbalanced quote) or split a record.
_BROKEN_FIELD_COLUMNS = ["order_id", "line_no", "user_id", "item_id", "quantity", "unit_price", "ts", "lat", "lon"]


def normalise_text(col: Column) -> Column:
    """Trim, collapse inner whitespace; empty strings become null."""
    text = F.regexp_replace(F.trim(col), r"\s+", " ")
    return F.when(text == "", None).otherwise(text)


def normalise_id(col: Column) -> Column:
    """Ids: text normalisation, and ``17850.0`` (a float-formatted integer) -> ``17850``."""
    text = normalise_text(col)
    return F.when(text.rlike(_FLOAT_ID), F.regexp_extract(text, _FLOAT_ID, 1)).otherwise(text)


def parse_timestamp(col: Column, naive_timezone: str) -> Column:
    """UTC timestamp from ISO-like text; text without an offset is in ``naive_timezone``."""
    text = F.regexp_replace(normalise_text(col), "T", " ")
    has_zone = text.rlike(_ZONE_SUFFIX)
    zoned = F.try_to_timestamp(
        F.regexp_replace(F.regexp_replace(text, r"(\d)Z$", "$1+00:00"), r"([+-]\d{2})(\d{2})$", "$1:$2"),
        F.lit("yyyy-MM-dd HH:mm[:ss][.SSSSSS][.SSS]XXX"),
    )
    zoned = F.coalesce(zoned, F.try_to_timestamp(F.regexp_replace(text, r" ?([+-]\d{2}:\d{2})$", "$1"), F.lit("yyyy-MM-dd HH:mm[:ss][.SSSSSS][.SSS]XXX")))
    naive = F.coalesce(
        F.try_to_timestamp(text, F.lit("yyyy-MM-dd HH:mm[:ss][.SSSSSS][.SSS]")),
        F.try_to_timestamp(text, F.lit("yyyy-MM-dd")),
    )
    return F.when(has_zone, zoned).otherwise(F.to_utc_timestamp(naive, naive_timezone))


def region_mapping(counts: Mapping[str, int], aliases: Mapping[str, str]) -> dict[str, str]:
    """Map every region spelling seen to one canonical name (pure Python, driver side).

    A spelling is first looked up in ``aliases`` (keys compared case-folded, so ``EIRE``
    and ``eire`` both become ``Ireland``); spellings that then differ only in case fold to
    the most frequent spelling (ties: a capitalised spelling such as ``North`` before
    ``NORTH`` or ``north``, then the alphabetically first), so ``"united kingdom"`` joins
    ``"United Kingdom"``. Only spellings that change appear in the result.
    """
    folded_aliases = {k.casefold(): v for k, v in aliases.items()}
    renamed = {s: folded_aliases.get(s.casefold(), s) for s in counts}
    totals: dict[str, int] = {}
    for spelling, n in counts.items():
        totals[renamed[spelling]] = totals.get(renamed[spelling], 0) + n
    best: dict[str, tuple[int, bool, str]] = {}
    for name, n in totals.items():
        rank = (-n, name != name.title() and name in (name.upper(), name.lower()), name)
        key = name.casefold()
        if key not in best or rank < best[key]:
            best[key] = rank
    result = {s: best[r.casefold()][2] for s, r in renamed.items()}
    return {s: c for s, c in sorted(result.items()) if s != c}


def apply_region_mapping(df: DataFrame, mapping: Mapping[str, str]) -> DataFrame:
    """Replace region spellings by their canonical name (a literal map: no join)."""
    if not mapping:
        return df
    m = F.create_map(*[F.lit(x) for kv in sorted(mapping.items()) for x in kv])
    return df.withColumn("region", F.coalesce(F.element_at(m, F.col("region")), F.col("region")))


def _first_reason(rules: list[tuple[str, Column]]) -> Column:
    expr = F.lit(None).cast("string")
    for code, cond in reversed(rules):
        expr = F.when(F.coalesce(cond, F.lit(False)), F.lit(code)).otherwise(expr)
    return expr


def validate_orders(
    raw: DataFrame,
    *,
    run_date: dt.date,
    min_date: str = "1990-01-01",
    max_future_days: int = 1,
    max_quantity: int = 10_000,
    max_unit_price: float = 100_000.0,
    max_text_chars: int = 2_000,
    naive_timezone: str = "UTC",
    unknown_regions: Iterable[str] = (),
) -> DataFrame:
    """Parse and check raw rows (row-wise only); add ``reason``/``detail`` and typed ``_`` columns.

    ``reason`` is null for rows that pass; duplicates are marked later by :func:`mark_duplicates`.
    """
    df = raw
    too_long = F.greatest(*[F.coalesce(F.length(c), F.lit(0)) for c in RAW_ORDER_COLUMNS]) > max_text_chars
    bad_bytes = F.coalesce(F.col("raw_record").contains("\ufffd"), F.lit(False))
    for c in RAW_ORDER_COLUMNS:
        bad_bytes = bad_bytes | F.coalesce(F.col(c).contains("\ufffd"), F.lit(False))
    broken = F.lit(False)
    for c in _BROKEN_FIELD_COLUMNS:
        broken = broken | F.coalesce(F.col(c).rlike("[\r\n\"]"), F.lit(False))
    df = df.withColumn("_too_long", too_long).withColumn("_bad_bytes", bad_bytes).withColumn("_broken", broken)

    placeholders = sorted({r.casefold() for r in unknown_regions})
    for c in ["region", "city"]:
        df = df.withColumn(c, normalise_text(F.col(c)))
    if placeholders:
        df = df.withColumn(
            "region", F.when(F.lower("region").isin(placeholders), None).otherwise(F.col("region"))
        )
    for c in ["order_id", "user_id", "item_id"]:
        df = df.withColumn(c, normalise_id(F.col(c)))
    for c in ["line_no", "quantity", "unit_price", "lat", "lon"]:
        df = df.withColumn(c, normalise_text(F.col(c)))

    df = (
        df.withColumn("_line_no", F.col("line_no").try_cast("double"))
        .withColumn("_qty", F.col("quantity").try_cast("double"))
        .withColumn("_price", F.col("unit_price").try_cast("double"))
        .withColumn("_ts", parse_timestamp(F.col("ts"), naive_timezone))
        .withColumn("ts", normalise_text(F.col("ts")))
        .withColumn("_lat", F.col("lat").try_cast("double"))
        .withColumn("_lon", F.col("lon").try_cast("double"))
    )
    min_ts = F.lit(dt.datetime.fromisoformat(str(min_date)))
    max_ts = F.lit(dt.datetime.combine(run_date + dt.timedelta(days=max_future_days + 1), dt.time()))
    lat_given, lon_given = F.col("lat").isNotNull(), F.col("lon").isNotNull()
    coords_bad = (lat_given != lon_given) | (
        lat_given
        & (
            F.col("_lat").isNull()
            | F.col("_lon").isNull()
            | F.isnan("_lat")
            | F.isnan("_lon")
            | ~F.col("_lat").between(-90, 90)
            | ~F.col("_lon").between(-180, 180)
        )
    )
    rules: list[tuple[str, Column]] = [
        ("header_row", F.lower(F.col("order_id")) == "order_id"),
        ("malformed_row", F.col("_broken")),
        ("invalid_encoding", F.col("_bad_bytes")),
        ("field_too_long", F.col("_too_long")),
        *[(f"missing_{c}", F.col(c).isNull()) for c in REQUIRED_ORDER_COLUMNS],
        (
            "bad_line_no",
            F.col("line_no").isNotNull()
            & (
                F.col("_line_no").isNull()
                | F.isnan("_line_no")
                | (F.col("_line_no") < 1)
                | (F.col("_line_no") > 2_000_000_000)
                | (F.col("_line_no") != F.floor("_line_no"))
            ),
        ),
        ("bad_timestamp", F.col("_ts").isNull()),
        ("ts_before_min_date", F.col("_ts") < min_ts),
        ("ts_in_future", F.col("_ts") >= max_ts),
        ("bad_quantity", F.col("_qty").isNull() | F.isnan("_qty") | (F.col("_qty") != F.floor("_qty"))),
        ("non_positive_quantity", F.col("_qty") <= 0),
        ("absurd_quantity", F.col("_qty") > max_quantity),
        ("bad_unit_price", F.col("_price").isNull() | F.isnan("_price")),
        ("non_positive_price", F.col("_price") <= 0),
        ("absurd_price", F.col("_price") > max_unit_price),
        ("bad_coordinates", coords_bad),
    ]
    return df.withColumn("reason", F.coalesce(F.col("reject_reason"), _first_reason(rules))).withColumn(
        "detail", F.when(F.col("reject_reason").isNotNull(), F.col("reject_detail"))
    )


ORDER_KEY = "_order_key"


def cluster_by_order(raw: DataFrame) -> DataFrame:
    """Add the normalised order id as ``_order_key`` and hash-partition the rows by it.

    Done before validation: the one shuffle of an ingest. It also keeps Spark from
    folding the validation into an in-memory source (``createDataFrame``) and running it
    row by row, uncompiled, on the driver.
    """
    return raw.withColumn(ORDER_KEY, normalise_id(F.col("order_id"))).repartition(ORDER_KEY)


def mark_duplicates(df: DataFrame) -> DataFrame:
    """Mark exact duplicates (all but the first, in input order) and conflicting versions.

    Within one order: lines with the same line number and the same values, or with the
    very same original record (``raw_record``; sources whose line number is the position
    in the file), are duplicates; lines sharing a line number with different values are
    conflicting, except that of several files the last one's versions win (an earlier file's
    other version is ``superseded``). Every window below refines the clustering by ``_order_key`` made by
    :func:`cluster_by_order`, so they need no shuffle of their own.
    """
    if ORDER_KEY not in df.columns:
        df = df.withColumn(ORDER_KEY, F.col("order_id")).repartition(ORDER_KEY)
    ok = F.col("reason").isNull()
    values = F.xxhash64(
        "user_id", "item_id", "_qty", "_price", "_ts", F.lower("region"), "city", "_lat", "_lon"
    )
    df = (
        # a line without a number is line 1 in orders_clean: the same key as a line numbered 1
        df.withColumn("_line_key", F.coalesce(F.col("_line_no").cast("long"), F.lit(1)))
        .withColumn("_vhash", F.when(ok, values))
        .withColumn("_ok", ok)
    )
    order = [F.col("source_file").asc_nulls_first(), F.col("source_row").asc_nulls_first()]
    by_line = Window.partitionBy(ORDER_KEY, "_line_key").orderBy("_vhash").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    same_values = Window.partitionBy(ORDER_KEY, "_line_key", "_vhash").orderBy(*order)
    same_record = Window.partitionBy(ORDER_KEY, "_ok", "raw_record").orderBy(*order)
    # Several files (a folder source): the versions of a line in the last file (by name, the
    # delivery order) win; an earlier file's different version is superseded, as an incremental
    # night that merges the later file updates it. Conflicts count within the last file.
    last_file = F.max(F.when(ok, F.col("source_file"))).over(by_line)
    in_last = F.coalesce(F.col("source_file") == last_file, F.lit(True))
    last_hashes = F.collect_set(F.when(ok & in_last, F.col("_vhash"))).over(by_line)
    in_last_versions = F.coalesce(F.array_contains(last_hashes, F.col("_vhash")), F.lit(False))
    last_vhash = F.when(ok & in_last, F.col("_vhash"))
    df = (
        df.withColumn("_superseded", ~in_last & ~in_last_versions)
        .withColumn("_conflict", F.min(last_vhash).over(by_line) != F.max(last_vhash).over(by_line))
        .withColumn("_copy", F.row_number().over(same_values))
        .withColumn("_raw_copy", F.row_number().over(same_record))
    )
    return df.withColumn(
        "reason",
        F.when(ok & (F.col("_copy") > 1), F.lit("duplicate_row"))
        .when(ok & (F.col("_raw_copy") > 1), F.lit("duplicate_row"))
        .when(ok & F.col("_superseded"), F.lit("superseded"))
        .when(ok & F.col("_conflict"), F.lit("conflicting_duplicate"))
        .otherwise(F.col("reason")),
    )


def clean_and_quarantine(checked: DataFrame, *, source: str) -> tuple[DataFrame, DataFrame]:
    """Split checked rows (after :func:`mark_duplicates`) into ``orders_clean`` and ``orders_quarantine``."""
    clean = (
        checked.where(F.col("reason").isNull())
        .withColumn("line_no", F.coalesce(F.col("_line_no").cast("int"), F.lit(1)))
        .withColumn("quantity", F.col("_qty").cast("int"))
        .withColumn("unit_price", F.col("_price"))
        .withColumn("ts", F.col("_ts"))
        .withColumn("lat", F.col("_lat"))
        .withColumn("lon", F.col("_lon"))
        .withColumn("source", F.lit(source))
        .withColumn("order_date", F.to_date("_ts"))
    )
    quarantine = (
        checked.where(F.col("reason").isNotNull())
        .withColumn("source", F.lit(source))
        .withColumn("detail", F.coalesce(F.col("detail"), F.element_at(_reason_texts(), F.col("reason"))))
    )
    return select_schema(clean, ORDERS_CLEAN), select_schema(quarantine, ORDERS_QUARANTINE)


def _reason_texts() -> Column:
    texts = {**REASONS, **ADAPTER_REASONS}
    return F.create_map(*[F.lit(x) for kv in sorted(texts.items()) for x in kv])


def clean_items(items: DataFrame, *, source: str, max_text_chars: int = 2_000) -> DataFrame:
    """One row per item id: normalised text, the most frequent (title, category, description)."""
    df = items.select(
        normalise_id(F.col("item_id")).alias("item_id"),
        F.substring(normalise_text(F.col("title")), 1, max_text_chars).alias("title"),
        F.coalesce(normalise_text(F.col("category")), F.lit("unknown")).alias("category"),
        F.substring(normalise_text(F.col("description")), 1, max_text_chars).alias("description"),
    ).where(F.col("item_id").isNotNull())
    w = Window.partitionBy("item_id").orderBy(
        F.col("title").isNull(),
        F.desc("n"), F.col("title").asc_nulls_last(), "category", F.col("description").asc_nulls_last()
    )
    ranked = (
        df.groupBy("item_id", "title", "category", "description")
        .agg(F.count(F.lit(1)).alias("n"))
        .withColumn("_rank", F.row_number().over(w))
        .where("_rank = 1")
        .withColumn("title", F.coalesce("title", "item_id"))
        .withColumn("source", F.lit(source))
    )
    return select_schema(ranked, ITEMS)


def add_missing_items(items: DataFrame, clean_orders: DataFrame, *, source: str) -> DataFrame:
    """Items referenced by orders but absent from the catalogue get a placeholder row."""
    missing = clean_orders.select("item_id").distinct().join(items.select("item_id"), "item_id", "left_anti")
    placeholder = missing.select(
        "item_id",
        F.col("item_id").alias("title"),
        F.lit("unknown").alias("category"),
        F.lit(None).cast("string").alias("description"),
        F.lit(source).alias("source"),
    )
    return select_schema(items.unionByName(placeholder), ITEMS)


def reason_counts(rows: Iterable[tuple[str | None, int]]) -> dict[str, int]:
    """``{reason: n}`` (sorted) from (reason, n) pairs; the clean rows (None) are left out."""
    out: dict[str, int] = {}
    for reason, n in rows:
        if reason is not None:
            out[reason] = out.get(reason, 0) + n
    return dict(sorted(out.items()))

