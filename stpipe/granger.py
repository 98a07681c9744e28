"""Granger statistics between sales series: pair selection and the ``granger_stats`` table.

Pairs (both directions of each):

* ``category_within_region``: region=r|category=a -> region=r|category=b, a != b among the
  top-N categories of region r by volume;
* ``region_within_category``: region=r1|category=c -> region=r2|category=c, r1 != r2 among the
  top-M regions of category c by volume;
* ``category_global``: category=a -> category=b among the top-N ``category`` series.

Volume is the sum of ``value`` over the run's window; ties go to the smaller name.

Statuses: 'ok' rows carry statistics; any other status ('missing_dates', 'duplicate_dates',
'missing_values', 'too_sparse', 'too_short', 'constant', 'singular', 'perfect_fit') has null
statistics, is left out of the Benjamini-Hochberg family, is never ``significant`` and never
the ``best_lag``. The BH family is every 'ok' (pair, lag) row of the run.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe.catalogue import GRANGER_STATS, SALES_SERIES
from stpipe.errors import ConfigError
from stpipe.schema import require_columns, select_schema
from udfs.granger_groups import (
    INPUT_COLUMNS,
    OUTPUT_COLUMNS,
    OUTPUT_DDL,
    OUTPUT_DTYPES,
    finish_family,
    granger_group,
)
from udfs.granger_numerics import (
    STATUS_DUPLICATE_DATES,
    STATUS_MISSING_DATES,
    STATUS_OK,
    TRANSFORMS,
)

SALES_SERIES_COLUMNS = ["run_date", "series_id", "kind", "region", "category", "date", "value"]
PAIR_KINDS = ("category_within_region", "region_within_category", "category_global")


def series_region(series_id: Column) -> Column:
    """``r`` of 'region=r|category=c'; null for a 'category=c' id."""
    pattern = r"^region=(.*)\|category=(.*)$"
    return F.when(series_id.rlike(pattern), F.regexp_extract(series_id, pattern, 1))


def series_category(series_id: Column) -> Column:
    """``c`` of 'region=r|category=c' or 'category=c'; null for anything else."""
    pattern = r"(?:^|\|)category=([^|]*)$"
    return F.when(series_id.rlike(pattern), F.regexp_extract(series_id, pattern, 1))


def check_params(
    *, max_lag: int, transform: str, pair_kinds: list[str], alpha: float, udf_buckets: int = 0
) -> None:
    """Reject settings that cannot give a meaningful run, naming the key."""
    if udf_buckets < 0:
        raise ConfigError(f"granger.udf_buckets: must be 0 (shuffle partitions) or more, got {udf_buckets}")
    if max_lag < 1:
        raise ConfigError(f"granger.max_lag: must be at least 1, got {max_lag}")
    if transform not in TRANSFORMS:
        raise ConfigError(f"granger.transform: one of {', '.join(TRANSFORMS)}, got {transform!r}")
    unknown = sorted(set(pair_kinds) - set(PAIR_KINDS))
    if unknown or not pair_kinds:
        raise ConfigError(
            f"granger.pair_kinds: choose from {', '.join(PAIR_KINDS)}, got {pair_kinds!r}"
        )
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"granger.alpha: must lie in (0, 1), got {alpha}")


def select_pairs(
    series: DataFrame,
    *,
    top_categories: int,
    top_regions: int,
    pair_kinds: list[str] | tuple[str, ...] = PAIR_KINDS,
) -> DataFrame:
    """Candidate (cause_series, effect_series, pair_kind) of one run's series, both directions."""
    require_columns(series, ["series_id", "kind", "region", "category", "value"], where=SALES_SERIES.name)
    volumes = series.groupBy("series_id", "kind", "region", "category").agg(
        F.sum("value").alias("volume")
    )
    rc = volumes.where(F.col("kind") == "region_category")
    kinds = {
        "category_within_region": (rc, ["region"], "category", top_categories),
        "region_within_category": (rc, ["category"], "region", top_regions),
        "category_global": (volumes.where(F.col("kind") == "category"), [], "category", top_categories),
    }
    frames = []
    for kind in pair_kinds:
        base, group, member, top = kinds[kind]
        order = [F.col("volume").desc(), F.col(member).asc(), F.col("series_id").asc()]
        window = Window.partitionBy(*group).orderBy(*order) if group else Window.orderBy(*order)
        ranked = base.withColumn("_rank", F.row_number().over(window)).where(F.col("_rank") <= top)
        cause, effect = ranked.alias("c"), ranked.alias("e")
        on = [F.col(f"c.{g}") == F.col(f"e.{g}") for g in group]
        on.append(F.col("c.series_id") != F.col("e.series_id"))
        frames.append(
            cause.join(effect, on=on, how="inner").select(
                F.col("c.series_id").alias("cause_series"),
                F.col("e.series_id").alias("effect_series"),
                F.lit(kind).alias("pair_kind"),
            )
        )
    pairs = frames[0]
    for frame in frames[1:]:
        pairs = pairs.unionByName(frame)
    return pairs


def series_arrays(series: DataFrame) -> DataFrame:
    """One row per series: ``values`` in date order and a ``series_status``.

    The calendar is every day from the slice's first to its last date: a series lacking a day
    is 'missing_dates', one with a day twice 'duplicate_dates' (null values are found later,
    as 'missing_values').
    """
    calendar = series.agg(
        (F.datediff(F.max("date"), F.min("date")) + 1).alias("_days"),
    )
    per_series = series.groupBy("series_id").agg(
        F.count(F.lit(1)).alias("_rows"),
        F.countDistinct("date").alias("_dates"),
        F.array_sort(F.collect_list(F.struct("date", "value"))).alias("_points"),
    )
    return per_series.crossJoin(F.broadcast(calendar)).select(
        "series_id",
        F.col("_points.value").alias("values"),
        F.when(F.col("_rows") > F.col("_dates"), F.lit(STATUS_DUPLICATE_DATES))
        .when(F.col("_dates") < F.col("_days"), F.lit(STATUS_MISSING_DATES))
        .otherwise(F.lit(STATUS_OK))
        .alias("series_status"),
    )


def _bucket_count(pairs: DataFrame, buckets: int | None) -> int:
    """``buckets``, or spark.sql.shuffle.partitions when None; at least 1."""
    if buckets is None:
        buckets = int(pairs.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    return buckets


def _effect_bucket(buckets: int) -> Column:
    """The hash bucket of the effect series: every pair of an effect lands in the same one."""
    return F.pmod(F.xxhash64("effect_series"), F.lit(buckets)).alias("_bucket")


SERIES_COLUMNS = ["series_id", "values", "series_status"]
PAIR_COLUMNS = ["cause_series", "effect_series", "pair_kind"]


def apply_granger_series(
    pairs: DataFrame,
    series: DataFrame,
    *,
    max_lag: int,
    transform: str = "none",
    min_nonzero_days: int = 0,
    buckets: int | None = None,
) -> DataFrame:
    """Spark wrapper of :func:`udfs.granger_groups.granger_group` on ``pairs`` (PAIR_COLUMNS)
    and ``series`` (SERIES_COLUMNS: one row per series id with its values in date order and
    status). Each pair carries its cause's values (a broadcast join: one row per series is
    small), each effect's values travel once to its hash bucket of effect series (``buckets``,
    default spark.sql.shuffle.partitions), and the two meet in a cogrouped pandas call per
    bucket; every pair of an effect lands in the same bucket, so the rows do not depend on the
    number of buckets."""
    buckets = _bucket_count(pairs, buckets)

    bucket = _effect_bucket(buckets)
    causes = series.select(
        F.col("series_id").alias("cause_series"),
        F.col("values").alias("cause_values"),
        F.col("series_status").alias("cause_status"),
    )
    with_causes = pairs.select(*PAIR_COLUMNS).join(F.broadcast(causes), "cause_series")
    effects = series.select(
        F.col("series_id").alias("effect_series"),
        F.col("values").alias("effect_values"),
        F.col("series_status").alias("effect_status"),
    ).join(F.broadcast(pairs.select("effect_series").distinct()), "effect_series")

    def fn(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
        joined = left.drop(columns="_bucket").merge(
            right.drop(columns="_bucket"), on="effect_series", how="inner"
        )
        if joined.empty:
            return pd.DataFrame({name: [] for name in OUTPUT_COLUMNS}).astype(OUTPUT_DTYPES)
        return granger_group(
            joined[INPUT_COLUMNS], max_lag=max_lag, transform=transform,
            min_nonzero_days=min_nonzero_days,
        )

    return (
        with_causes.select("*", bucket).groupBy("_bucket")
        .cogroup(effects.select("*", bucket).groupBy("_bucket"))
        .applyInPandas(fn, OUTPUT_DDL)
    )


def add_family_columns(tests: DataFrame, *, alpha: float) -> DataFrame:
    """Add ``q_value``, ``significant``, ``best_lag``: the run's tests as one BH family.

    BH needs every p-value of the family at once, so all rows meet in one pandas group
    (a few bytes per test: millions of tests fit); the best lag is found in the same pass.
    """
    extra = [
        T.StructField("q_value", T.DoubleType(), True),
        T.StructField("significant", T.BooleanType(), False),
        T.StructField("best_lag", T.BooleanType(), False),
    ]
    schema = T.StructType(tests.schema.fields + extra)

    def finish(frame: pd.DataFrame) -> pd.DataFrame:
        return finish_family(frame.reset_index(drop=True), alpha=alpha)[schema.fieldNames()]

    return tests.groupBy(F.lit(0).alias("_family")).applyInPandas(finish, schema)


def finish_stats(tests: DataFrame, *, run_date: dt.date, alpha: float) -> DataFrame:
    """Per-row test results -> ``granger_stats`` rows (q-values, flags, parsed ids)."""
    out = (
        add_family_columns(tests, alpha=alpha)
        .withColumn("run_date", F.lit(run_date).cast(T.DateType()))
        .withColumn("cause_region", series_region(F.col("cause_series")))
        .withColumn("cause_category", series_category(F.col("cause_series")))
        .withColumn("effect_region", series_region(F.col("effect_series")))
        .withColumn("effect_category", series_category(F.col("effect_series")))
    )
    return select_schema(out, GRANGER_STATS.schema)


def granger_stats(
    sales_series: DataFrame,
    *,
    run_date: dt.date,
    max_lag: int,
    top_categories: int,
    top_regions: int,
    alpha: float,
    transform: str = "none",
    min_nonzero_days: int = 0,
    pair_kinds: list[str] | tuple[str, ...] = PAIR_KINDS,
    udf_buckets: int = 0,
) -> DataFrame:
    """``sales_series`` -> ``granger_stats`` for one run date (the slice with that run_date).

    ``udf_buckets``: hash buckets of effect series, one pandas call each (0: the session's
    shuffle partitions); the rows do not depend on it.
    """
    check_params(max_lag=max_lag, transform=transform, pair_kinds=list(pair_kinds), alpha=alpha,
                 udf_buckets=udf_buckets)
    require_columns(sales_series, SALES_SERIES_COLUMNS, where=SALES_SERIES.name)
    series = sales_series.where(F.col("run_date") == F.lit(run_date).cast(T.DateType()))
    pairs = select_pairs(
        series, top_categories=top_categories, top_regions=top_regions, pair_kinds=pair_kinds
    )
    tests = apply_granger_series(
        pairs, series_arrays(series), max_lag=max_lag, transform=transform,
        min_nonzero_days=min_nonzero_days, buckets=udf_buckets or None,
    )
    return finish_stats(tests, run_date=run_date, alpha=alpha)
