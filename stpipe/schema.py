"""Canonical schemas: what every source adapter produces and what the tables hold."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def user_time_schema(windows_days: Sequence[int]) -> T.StructType:
    """Columns of ``user_time_features`` for the given windows."""
    windows = sorted({int(w) for w in windows_days})
    fields = [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("recency_days", T.DoubleType(), False),
        T.StructField("frequency", T.LongType(), False),
        T.StructField("monetary", T.DoubleType(), False),
        T.StructField("interval_mean_days", T.DoubleType(), True),
        T.StructField("interval_std_days", T.DoubleType(), True),
    ]
    fields += [T.StructField(window_name("orders", w), T.LongType(), False) for w in windows]
    fields += [T.StructField(window_name("spend", w), T.DoubleType(), False) for w in windows]
    fields += [
        T.StructField("pref_hour", T.IntegerType(), False),
        T.StructField("pref_weekday", T.IntegerType(), False),
        T.StructField("hour_sin", T.DoubleType(), False),
        T.StructField("hour_cos", T.DoubleType(), False),
        T.StructField("weekday_sin", T.DoubleType(), False),
        T.StructField("weekday_cos", T.DoubleType(), False),
        T.StructField("t_x_seconds", T.LongType(), False),
        T.StructField("t_mod", T.DoubleType(), False),
        T.StructField("t_frac", T.DoubleType(), False),
        T.StructField("t_log10", T.DoubleType(), False),
    ]
    return T.StructType(fields)


def item_time_schema(windows_days: Sequence[int]) -> T.StructType:
    """Columns of ``item_time_features`` for the given windows."""
    windows = sorted({int(w) for w in windows_days})
    fields = [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("category", T.StringType(), False),
    ]
    fields += [T.StructField(window_name("orders", w), T.LongType(), False) for w in windows]
    fields += [T.StructField(window_name("units", w), T.LongType(), False) for w in windows]
    fields += [
        T.StructField("popularity", T.DoubleType(), False),
        T.StructField("trend", T.DoubleType(), False),
        T.StructField("last_order_days", T.DoubleType(), False),
        # distinct users who bought the item in the history window; nullable: added in a later version
        T.StructField("buyers", T.LongType(), True),
        # of those, the users who bought it on two or more local days; nullable: added later still
        T.StructField("repeat_buyers", T.LongType(), True),
        T.StructField("hour_profile", T.ArrayType(T.DoubleType(), True), False),
        T.StructField("weekday_profile", T.ArrayType(T.DoubleType(), True), False),
    ]
    return T.StructType(fields)


REGION_ITEM_FEATURES = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("region", T.StringType(), False),
        T.StructField("level", T.StringType(), False),
        T.StructField("key", T.StringType(), False),
        T.StructField("orders", T.LongType(), False),
        T.StructField("region_orders", T.LongType(), False),
        T.StructField("region_share", T.DoubleType(), False),
        T.StructField("market_share", T.DoubleType(), False),
        T.StructField("lq", T.DoubleType(), False),
        T.StructField("lift", T.DoubleType(), False),
        T.StructField("rank_in_region", T.IntegerType(), False),
    ]
)


USER_SPACE_FEATURES = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("home_region", T.StringType(), False),
        T.StructField("regions", T.IntegerType(), False),
        T.StructField("located_orders", T.LongType(), False),
        T.StructField("lat", T.DoubleType(), True),
        T.StructField("lon", T.DoubleType(), True),
        T.StructField("geohash", T.StringType(), True),
        T.StructField("x_km", T.DoubleType(), True),
        T.StructField("y_km", T.DoubleType(), True),
        T.StructField("x_mod", T.DoubleType(), True),
        T.StructField("y_mod", T.DoubleType(), True),
    ]
)


SALES_SERIES = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("series_id", T.StringType(), False),
        T.StructField("kind", T.StringType(), False),
        T.StructField("region", T.StringType(), True),
        T.StructField("category", T.StringType(), False),
        T.StructField("date", T.DateType(), False),
        T.StructField("value", T.DoubleType(), False),
    ]
)


RECOMMENDATIONS = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("region", T.StringType(), True),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("bert_score", T.DoubleType(), False),
        T.StructField("time_score", T.DoubleType(), False),
        T.StructField("space_score", T.DoubleType(), False),
        T.StructField("causal_score", T.DoubleType(), False),
        T.StructField("history_score", T.DoubleType(), False),
        # added after the first release: null in the rows of older runs (see add_missing_columns)
        T.StructField("repeat_score", T.DoubleType(), True),
        T.StructField("recent_score", T.DoubleType(), True),
        T.StructField("reach_score", T.DoubleType(), True),
        T.StructField("rebuy_score", T.DoubleType(), True),
        T.StructField("cooc_score", T.DoubleType(), False),
        T.StructField("reasons", T.ArrayType(T.StringType()), False),
        T.StructField("is_cold_start", T.BooleanType(), False),
    ]
)


FUSION_WEIGHTS = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("feature", T.StringType(), False),
        T.StructField("weight", T.DoubleType(), False),
        T.StructField("components", T.StringType(), False),
        T.StructField("train_as_of", T.DateType(), False),
        T.StructField("train_rows", T.LongType(), False),
        T.StructField("train_positives", T.LongType(), False),
        T.StructField("log_loss", T.DoubleType(), True),
        T.StructField("status", T.StringType(), False),
    ]
)


EVAL_METRICS = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("model", T.StringType(), False),
        T.StructField("variant", T.StringType(), False),
        T.StructField("k", T.IntegerType(), False),
        T.StructField("metric", T.StringType(), False),
        T.StructField("value", T.DoubleType(), True),
        T.StructField("stderr", T.DoubleType(), True),
        T.StructField("users", T.LongType(), False),
        T.StructField("level", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("cutoff", T.DateType(), False),
        # paired rows (model = full, metric <m>_diff): the model compared and the sign-flip p-value;
        # null elsewhere. Added after the first release: the stage adds them to older tables.
        T.StructField("versus", T.StringType(), True),
        T.StructField("p_value", T.DoubleType(), True),
    ]
)

EVAL_LISTS = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("cutoff", T.DateType(), False),
        T.StructField("variant", T.StringType(), False),
        T.StructField("level", T.StringType(), False),
        T.StructField("model", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
    ]
)

EVAL_TRUTH = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("cutoff", T.DateType(), False),
        T.StructField("variant", T.StringType(), False),
        T.StructField("level", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
    ]
)


ERASURES = T.StructType(
    [
        T.StructField("erased_at", T.TimestampType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),  # the pseudonym, never the raw id
        T.StructField("deleted", T.StringType(), False),  # JSON: rows deleted per table
    ]
)

USER_ID_MAP = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("raw_user_id", T.StringType(), False),
    ]
)


# One row per input file of a folder source that ingest has read (committed after its lines).
INGEST_FILES = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("path", T.StringType(), False),
        T.StructField("size", T.LongType(), False),
        T.StructField("mtime_ns", T.LongType(), False),
        T.StructField("run_date", T.DateType(), False),
    ]
)


RUN_LOG = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("stage", T.StringType(), False),
        T.StructField("started", T.TimestampType(), False),
        T.StructField("finished", T.TimestampType(), False),
        T.StructField("rows_in", T.LongType(), True),
        T.StructField("rows_out", T.LongType(), True),
        T.StructField("status", T.StringType(), False),
        T.StructField("message", T.StringType(), True),
        T.StructField("tables", T.ArrayType(T.StringType()), True),
    ]
)


GRANGER_STATS = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("cause_series", T.StringType(), False),
        T.StructField("effect_series", T.StringType(), False),
        T.StructField("cause_region", T.StringType(), True),
        T.StructField("cause_category", T.StringType(), True),
        T.StructField("effect_region", T.StringType(), True),
        T.StructField("effect_category", T.StringType(), True),
        T.StructField("pair_kind", T.StringType(), False),
        T.StructField("lag", T.IntegerType(), False),
        T.StructField("transform", T.StringType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("n_obs", T.IntegerType(), True),
        T.StructField("df_num", T.IntegerType(), True),
        T.StructField("df_den", T.IntegerType(), True),
        T.StructField("f_stat", T.DoubleType(), True),
        T.StructField("p_value", T.DoubleType(), True),
        T.StructField("chi2_stat", T.DoubleType(), True),
        T.StructField("chi2_p_value", T.DoubleType(), True),
        T.StructField("q_value", T.DoubleType(), True),
        T.StructField("significant", T.BooleanType(), False),
        T.StructField("best_lag", T.BooleanType(), False),
    ]
)


ITEM_EMBEDDINGS = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("text", T.StringType(), False),
        T.StructField("embedding", T.ArrayType(T.FloatType()), False),
        T.StructField("model", T.StringType(), False),
    ]
)


USER_EMBEDDINGS = T.StructType(
    [
        T.StructField("run_date", T.DateType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("embedding", T.ArrayType(T.FloatType()), False),
        T.StructField("n_items", T.IntegerType(), False),
        T.StructField("model", T.StringType(), False),
    ]
)


def window_name(prefix: str, days: int) -> str:
    """Column name of a windowed feature, e.g. ``orders_7d``."""
    return f"{prefix}_{days}d"


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
