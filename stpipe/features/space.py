"""Spatial features: ``region_item_features`` and ``user_space_features``.

Inputs are history lines (:func:`stpipe.features.common.history`), so only orders before
the run date's local midnight count. An order is one ``order_id`` in one region (an
order whose lines named two regions would count once in each).

region_item_features (one row per region, level, key):
    level, key     'item' with key = item_id, or 'category' with key = category
    orders         n_rk: orders in region r containing key k
    region_share   n_rk / N_r, N_r = orders in region r
    market_share   n_k / N, n_k = orders anywhere containing k, N = all orders
    lq             raw location quotient region_share / market_share
    lift           smoothed location quotient (n_rk + a) / (N_r * n_k / N + a),
                   a = features.lift_prior: observed over expected count, both padded by
                   a pseudo-orders, so a region with few orders gets a lift near 1 and a
                   large region gets its raw lq
    rank_in_region 1 = most orders in the region at that level, ties by key ascending
    Regions without orders before the run date have no rows.

user_space_features (one row per source, user_id):
    home_region    the region of most of the user's orders; ties: the region of the
                   later last order, then the smallest name
    lat, lon       the centre of the geohash cell (features.geohash_precision) of the
                   mean of the user's located orders (an order's position is the mean of
                   its lines' lat/lon, coarse from ingest); null when none has coordinates, e.g. Online
                   Retail, which only knows countries: there every spatial column below
                   is null and home_region is the user's feature
    geohash        geohash of (lat, lon), features.geohash_precision characters
    x_km, y_km     equirectangular projection on a sphere (R = 6371.0088 km) from (0, 0):
                   x = R * radians(lon) (east), y = R * radians(lat) (north)
    x_mod, y_mod   x_km / L mod 1, y_km / L mod 1 (floored, in [0, 1)),
                   L = features.map_extent_km
    located_orders number of orders with coordinates
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from stpipe.errors import ConfigError
from stpipe.features import geo
from stpipe.schema import REGION_ITEM_FEATURES, USER_SPACE_FEATURES, require_columns, select_schema

_ALL = "__all__"  # pseudo-level of region_item_features' internal order totals


def region_item_features(
    lines: DataFrame, *, run_date: dt.date, lift_prior: float
) -> DataFrame:
    """Regional popularity of items and categories and their smoothed lift (see module doc)."""
    require_columns(
        lines, ["order_id", "item_id", "category", "region"], where="region_item_features input"
    )
    if lift_prior < 0:
        raise ConfigError(f"features.lift_prior: expected >= 0, got {lift_prior}")
    # Each line stands for its order under three keys: its item, its category, and a
    # pseudo-key "all orders" whose count per region is N_r. One pass over the lines and one
    # big shuffle; everything after works on the small per-(region, key) counts.
    keyed = lines.select(
        "order_id",
        "region",
        F.explode(
            F.array(
                F.struct(F.lit("item").alias("level"), F.col("item_id").alias("key")),
                F.struct(F.lit("category").alias("level"), F.col("category").alias("key")),
                F.struct(F.lit(_ALL).alias("level"), F.lit(_ALL).alias("key")),
            )
        ).alias("k"),
    ).select("order_id", "region", "k.level", "k.key")
    # one row per (region, level, key, order): the counts below are distinct orders
    pairs = keyed.groupBy("region", "level", "key", "order_id").count()
    counts = pairs.groupBy("region", "level", "key").agg(F.count("*").alias("orders"))
    is_all = F.col("level") == _ALL
    # N_r and N as windows over the small counts: reusing `counts` in a join would make
    # Spark plan (and run) the big aggregation twice
    everything = Window.partitionBy(F.lit(0))
    counts = (
        counts.withColumn(
            "region_orders",
            F.max(F.when(is_all, F.col("orders"))).over(Window.partitionBy("region")),
        )
        .withColumn("market_orders", F.sum(F.when(is_all, F.col("orders"))).over(everything))
        .where(~is_all)
    )
    # n_k = sum of n_rk over regions: a small window over the aggregated counts, no join
    market = F.sum("orders").over(Window.partitionBy("level", "key"))
    a = F.lit(float(lift_prior))
    n_rk = F.col("orders").cast("double")
    expected = F.col("region_orders") * F.col("market_key_orders") / F.col("market_orders")
    rank = Window.partitionBy("region", "level").orderBy(F.desc("orders"), F.asc("key"))
    out = (
        counts.withColumn("market_key_orders", market)
        .withColumn("region_share", n_rk / F.col("region_orders"))
        .withColumn("market_share", F.col("market_key_orders") / F.col("market_orders"))
        .withColumn("lq", F.col("region_share") / F.col("market_share"))
        .withColumn("lift", (n_rk + a) / (expected + a))
        .withColumn("rank_in_region", F.row_number().over(rank))
        .withColumn("run_date", F.lit(run_date))
    )
    return select_schema(out, REGION_ITEM_FEATURES)


def user_space_features(
    lines: DataFrame,
    *,
    run_date: dt.date,
    geohash_precision: int,
    map_extent_km: float,
) -> DataFrame:
    """Home region, mean position, geohash and the design's space encodings per user."""
    require_columns(
        lines, ["order_id", "user_id", "source", "region", "lat", "lon", "epoch"],
        where="user_space_features input",
    )
    located = F.col("lat").isNotNull() & F.col("lon").isNotNull()
    orders = lines.groupBy("source", "user_id", "order_id").agg(
        F.min("region").alias("region"),
        F.min("epoch").alias("epoch"),
        F.avg(F.when(located, F.col("lat"))).alias("lat"),
        F.avg(F.when(located, F.col("lon"))).alias("lon"),
    )
    per_region = orders.groupBy("source", "user_id", "region").agg(
        F.count("*").alias("n"),
        F.max("epoch").alias("last_epoch"),
        F.count("lat").alias("n_located"),
        F.sum("lat").alias("sum_lat"),
        F.sum("lon").alias("sum_lon"),
    )
    # best (count, last order) by max(); among regions tied on both, the smallest name
    users = per_region.groupBy("source", "user_id").agg(
        F.max(F.struct("n", "last_epoch")).alias("best"),
        F.collect_list(F.struct("n", "last_epoch", "region")).alias("cands"),
        F.count("*").alias("regions"),
        F.sum("n_located").alias("located_orders"),
        F.sum("sum_lat").alias("sum_lat"),
        F.sum("sum_lon").alias("sum_lon"),
    )
    home = F.array_min(
        F.transform(
            F.filter(
                "cands",
                lambda c: (c["n"] == F.col("best")["n"])
                & (c["last_epoch"] == F.col("best")["last_epoch"]),
            ),
            lambda c: c["region"],
        )
    )
    lat = F.when(F.col("located_orders") > 0, F.col("sum_lat") / F.col("located_orders"))
    lon = F.when(F.col("located_orders") > 0, F.col("sum_lon") / F.col("located_orders"))
    # The position is the centre of the user's geohash cell, never finer (orders come with
    # coarse positions from ingest: privacy.location_precision).
    lat, lon = geo.cell_centre(lat, lon, geohash_precision, key="features.geohash_precision")
    out = users.withColumn("home_region", home).withColumn("lat", lat).withColumn("lon", lon)
    x_km, y_km = geo.equirectangular_km("lat", "lon")
    out = (
        out.withColumn("geohash", geo.geohash("lat", "lon", geohash_precision))
        .withColumn("x_km", x_km)
        .withColumn("y_km", y_km)
        .withColumn("x_mod", geo.frac("x_km", map_extent_km))
        .withColumn("y_mod", geo.frac("y_km", map_extent_km))
        .withColumn("run_date", F.lit(run_date))
    )
    return select_schema(out, USER_SPACE_FEATURES)
