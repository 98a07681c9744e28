"""The feature tables as of a date: what the features stage writes and the recommender reads.

One function computes them for any as-of date ``d`` (lines with ``ts`` before ``d`` 00:00
in ``features.timezone``): the nightly writes them for the run date, the recommender
computes the same frames as of ``run_date - validation_days`` to train its fusion, and the
offline evaluation as of its cutoff. So home region, trend and popularity have one
definition each.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pyspark.sql import DataFrame

from stpipe.catalogue import (
    ITEM_TIME_FEATURES,
    REGION_ITEM_FEATURES,
    USER_SPACE_FEATURES,
    USER_TIME_FEATURES,
    Table,
)
from stpipe.config import FeatureSettings
from stpipe.features import common, space, time

FEATURE_TABLES = (USER_TIME_FEATURES, ITEM_TIME_FEATURES, REGION_ITEM_FEATURES, USER_SPACE_FEATURES)
# What the recommender reads: time score and trend, space score, home region.
RECOMMENDER_FEATURES = (ITEM_TIME_FEATURES, REGION_ITEM_FEATURES, USER_SPACE_FEATURES)

LINE_COLUMNS = [
    "order_id", "user_id", "item_id", "quantity", "unit_price", "ts", "region", "lat", "lon",
    "source", "order_date",
]


def history_lines(
    orders: DataFrame, items: DataFrame, *, run_date: dt.date, history_days: int, timezone: str
) -> DataFrame:
    """Order lines of the history window with local time columns and their category."""
    lines = common.history(
        orders.select(*[c for c in LINE_COLUMNS if c in orders.columns]),
        run_date=run_date, days=history_days, timezone=timezone,
    )
    return common.attach_category(lines, items)


def feature_frames(
    lines: DataFrame,
    *,
    run_date: dt.date,
    params: FeatureSettings,
    only: Iterable[Table] = FEATURE_TABLES,
) -> dict[Table, DataFrame]:
    """The feature tables (those in ``only``) from :func:`history_lines` (lazy)."""
    build = {
        USER_TIME_FEATURES: lambda: time.user_time_features(
            lines, run_date=run_date, timezone=params.timezone, windows_days=params.windows_days,
            time_period_seconds=params.time_period_seconds,
        ),
        ITEM_TIME_FEATURES: lambda: time.item_time_features(
            lines, run_date=run_date, timezone=params.timezone, windows_days=params.windows_days,
            popularity_half_life_days=params.popularity_half_life_days,
        ),
        REGION_ITEM_FEATURES: lambda: space.region_item_features(
            lines, run_date=run_date, lift_prior=params.lift_prior
        ),
        USER_SPACE_FEATURES: lambda: space.user_space_features(
            lines, run_date=run_date, geohash_precision=params.geohash_precision,
            map_extent_km=params.map_extent_km,
        ),
    }
    return {table: build[table]() for table in only}


def features_as_of(
    orders: DataFrame,
    items: DataFrame,
    *,
    as_of: dt.date,
    params: FeatureSettings,
    only: Iterable[Table] = RECOMMENDER_FEATURES,
) -> dict[Table, DataFrame]:
    """The feature frames as the features stage would write them for run date ``as_of``."""
    lines = history_lines(
        orders, items, run_date=as_of, history_days=params.history_days, timezone=params.timezone
    )
    return feature_frames(lines, run_date=as_of, params=params, only=only)
