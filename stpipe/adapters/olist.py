"""Olist Brazilian e-commerce tables into canonical order lines, items and reviews.

Mapping: one raw row per order item line (``order_items`` full-outer-joined to ``orders``
and joined to ``customers``): user_id = customer_unique_id (the person), region =
customer_state, city = customer_city, lat/lon = the mean of the geolocation points of
the customer's zip prefix that lie inside Brazil's bounding box (null when none),
item_id = product_id, line_no = order_item_id, quantity = 1 (the table has one row per
unit), unit_price = price, ts = order_purchase_timestamp (America/Sao_Paulo local -> UTC).

Rows read = order item rows + orders without items (+ item rows whose order is
unknown, none in the real data). Adapter reason codes: ``header_row``/``malformed_row``,
``order_without_items`` (one row per order with no item line, so no order vanishes),
``cancellation`` (status canceled), ``order_not_fulfilled`` (status unavailable).

Items: title and category = the English category name, else the Portuguese slug, else
``unknown``. Reviews: one row per review row; text = title and message joined by a line
break (null when both are empty); ts = review_creation_date (Sao Paulo -> UTC).
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe.adapters.base import (
    RawInput,
    existing_path,
    finish_raw_orders,
    read_csv_strings,
    reject_first,
)
from stpipe.clean import normalise_text, parse_timestamp
from stpipe.config import IngestSettings
from stpipe.errors import InputError

SOURCE = "olist"
NAIVE_TIMEZONE = "America/Sao_Paulo"
# Brazil's bounding box, with a small margin (islands included).
BRAZIL_LAT = (-34.0, 5.5)
BRAZIL_LON = (-74.5, -28.5)

FILES: dict[str, tuple[str, list[str]]] = {
    "orders": ("olist_orders_dataset", ["order_id", "customer_id", "order_status", "order_purchase_timestamp"]),
    "customers": (
        "olist_customers_dataset",
        ["customer_id", "customer_unique_id", "customer_zip_code_prefix", "customer_city", "customer_state"],
    ),
    "items": ("olist_order_items_dataset", ["order_id", "order_item_id", "product_id", "price"]),
    "products": ("olist_products_dataset", ["product_id", "product_category_name"]),
    "translation": ("product_category_name_translation", ["product_category_name", "product_category_name_english"]),
    "geolocation": ("olist_geolocation_dataset", ["geolocation_zip_code_prefix", "geolocation_lat", "geolocation_lng"]),
    "reviews": (
        "olist_order_reviews_dataset",
        ["review_id", "order_id", "review_score", "review_comment_title", "review_comment_message", "review_creation_date"],
    ),
}
OPTIONAL = {"reviews", "geolocation", "translation"}


def find_file(folder: Path, stem: str) -> Path | None:
    """``<stem>.csv`` or ``<stem>.csv.gz`` (or any ``<stem>.*``) in ``folder``."""
    hits = sorted(p for p in folder.iterdir() if p.name.startswith(stem + "."))
    return hits[0] if hits else None


def read_tables(spark: SparkSession, folder: Path, delimiter: str = ",") -> dict[str, DataFrame]:
    """Every Olist table the adapter needs, as string columns (optional ones may be absent)."""
    if not folder.is_dir():
        raise InputError(f"olist input must be the folder of the Olist CSV files: {folder}")
    out: dict[str, DataFrame] = {}
    for key, (stem, required) in FILES.items():
        path = find_file(folder, stem)
        if path is None:
            if key in OPTIONAL:
                continue
            raise InputError(f"{folder}: missing file {stem}.csv.gz")
        df, _ = read_csv_strings(spark, path, required, delimiter=delimiter, multi_line=True)
        out[key] = df
    return out


def zip_coordinates(geolocation: DataFrame) -> DataFrame:
    """Mean lat/lon per zip prefix over the points inside Brazil's bounding box."""
    lat = F.trim("geolocation_lat").try_cast("double")
    lon = F.trim("geolocation_lng").try_cast("double")
    inside = lat.between(*BRAZIL_LAT) & lon.between(*BRAZIL_LON)
    return (
        geolocation.where(F.col("parse_error").isNull() & inside)
        .groupBy(F.trim("geolocation_zip_code_prefix").alias("zip"))
        .agg(F.round(F.avg(lat), 6).alias("lat"), F.round(F.avg(lon), 6).alias("lon"))
    )


# The fields of an order line's raw_record (one line of orders joined with its order).
RECORD_FIELDS = (
    "order_id", "customer_id", "order_status", "order_purchase_timestamp", "customer_unique_id",
    "customer_zip_code_prefix", "customer_city", "customer_state", "order_item_id", "product_id", "price",
)


def to_raw_orders(t: dict[str, DataFrame]) -> DataFrame:
    """One raw row per item line, plus one per order without items (see the module doc)."""
    o = t["orders"].select(
        F.col("order_id").alias("o_order_id"), "customer_id", "order_status", "order_purchase_timestamp",
        F.col("source_file").alias("o_file"), F.col("source_row").alias("o_row"), F.col("parse_error").alias("o_bad"),
    )
    i = t["items"].select(
        F.col("order_id").alias("i_order_id"), "order_item_id", "product_id", "price",
        F.col("source_file").alias("i_file"), F.col("source_row").alias("i_row"), F.col("parse_error").alias("i_bad"),
    )
    c = t["customers"].where(F.col("parse_error").isNull()).select(
        "customer_id", "customer_unique_id", "customer_zip_code_prefix", "customer_city", "customer_state"
    ).dropDuplicates(["customer_id"])
    rows = o.join(i, F.col("o_order_id") == F.col("i_order_id"), "full_outer").join(c, "customer_id", "left")
    if "geolocation" in t:
        rows = rows.join(
            F.broadcast(zip_coordinates(t["geolocation"])), F.trim("customer_zip_code_prefix") == F.col("zip"), "left"
        )
    else:
        rows = rows.withColumn("lat", F.lit(None).cast("double")).withColumn("lon", F.lit(None).cast("double"))
    status = F.lower(F.trim("order_status"))
    has_item = F.col("i_file").isNotNull()
    reason = F.coalesce("i_bad", "o_bad", reject_first(
        [
            ("order_without_items", ~has_item),
            ("cancellation", status == "canceled"),
            ("order_not_fulfilled", status == "unavailable"),
        ]
    ))
    record = F.to_json(
        F.struct(
            F.coalesce("o_order_id", "i_order_id").alias("order_id"),
            *[F.col(c) for c in RECORD_FIELDS[1:]],
        ),
        {"ignoreNullFields": "false"},
    )
    return finish_raw_orders(
        rows.select(
            F.coalesce("o_order_id", "i_order_id").alias("order_id"),
            F.col("order_item_id").alias("line_no"),
            F.col("customer_unique_id").alias("user_id"),
            F.col("product_id").alias("item_id"),
            F.when(has_item, F.lit("1")).alias("quantity"),
            F.when(has_item, F.col("price")).otherwise(F.lit("0")).alias("unit_price"),
            F.col("order_purchase_timestamp").alias("ts"),
            F.col("customer_state").alias("region"),
            F.col("customer_city").alias("city"),
            F.col("lat").cast("string").alias("lat"),
            F.col("lon").cast("string").alias("lon"),
            F.when(has_item, F.col("i_file")).otherwise(F.col("o_file")).alias("source_file"),
            F.when(has_item, F.col("i_row")).otherwise(F.col("o_row")).alias("source_row"),
            record.alias("raw_record"),
            reason.alias("reject_reason"),
            F.when(~has_item, F.concat(F.lit("order status "), F.coalesce(status, F.lit("?")))).alias("reject_detail"),
        )
    )


def to_items(t: dict[str, DataFrame]) -> DataFrame:
    """Products with the English category name as title and category."""
    products = t["products"].where(F.col("parse_error").isNull()).select(
        "product_id", normalise_text(F.col("product_category_name")).alias("slug")
    )
    if "translation" in t:
        tr = t["translation"].where(F.col("parse_error").isNull()).select(
            normalise_text(F.col("product_category_name")).alias("slug"),
            normalise_text(F.col("product_category_name_english")).alias("english"),
        ).dropDuplicates(["slug"])
        products = products.join(F.broadcast(tr), "slug", "left")
    else:
        products = products.withColumn("english", F.lit(None).cast("string"))
    name = F.coalesce("english", "slug", F.lit("unknown"))
    return products.select(
        F.col("product_id").alias("item_id"),
        name.alias("title"),
        name.alias("category"),
        F.lit(None).cast("string").alias("description"),
    )


def to_reviews(t: dict[str, DataFrame]) -> DataFrame | None:
    """Review rows: order, person, score 1-5, Portuguese text, creation time in UTC."""
    if "reviews" not in t:
        return None
    users = (
        t["orders"].where(F.col("parse_error").isNull()).select("order_id", "customer_id")
        .join(t["customers"].where(F.col("parse_error").isNull()).select("customer_id", "customer_unique_id"), "customer_id", "left")
        .dropDuplicates(["order_id"])
    )
    r = t["reviews"].where(F.col("parse_error").isNull() & normalise_text(F.col("order_id")).isNotNull())
    title = normalise_text(F.col("review_comment_title"))
    # keep the message's inner line breaks; strip any Unicode white space around it
    message = F.regexp_replace(F.col("review_comment_message"), r"(?U)^\s+|\s+$", "")
    message = F.when(message == "", None).otherwise(message)
    score = F.trim("review_score").try_cast("int")
    return r.join(users, "order_id", "left").select(
        F.trim("order_id").alias("order_id"),
        F.lit(None).cast("string").alias("item_id"),
        F.col("customer_unique_id").alias("user_id"),
        F.when(score.between(1, 5), score).alias("score"),
        F.concat_ws("\n", title, message).alias("_text"),
        parse_timestamp(F.col("review_creation_date"), NAIVE_TIMEZONE).alias("ts"),
    ).withColumn("text", F.when(F.col("_text") != "", F.col("_text"))).drop("_text")


def read_source(spark: SparkSession, ingest: IngestSettings) -> RawInput:
    """Read the Olist folder named by ``ingest.input``."""
    folder = existing_path(ingest.input or "", "input")
    t = read_tables(spark, folder, ingest.csv_delimiter)
    return RawInput(
        source=SOURCE,
        orders=to_raw_orders(t),
        items=to_items(t),
        naive_timezone=NAIVE_TIMEZONE,
        reviews=to_reviews(t),
        known_fields=RECORD_FIELDS,
        id_fields=("customer_id", "customer_unique_id"),
    )
