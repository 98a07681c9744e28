"""``recommend.history_days``: the recommender reads only the order lines of the days before
the as-of date, so a platform with years of orders does not read them all each night.

The bounds are worked out by hand; the pipeline check plants lines older than the window and
shows they would change the lists if read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from stpipe import catalogue, tables
from stpipe.config import FeatureSettings, Settings, replace
from stpipe.errors import ConfigError
from stpipe.features.common import prune_order_dates
from stpipe.recommend import RecommendOptions, lines_read, recommend
from stpipe.recommend.embeddings import user_embeddings
from stpipe.recommend.signals import history_before
from stpipe.schema import ORDERS_CLEAN
from stpipe.settings_checks import check_values
from tests.test_recommend import RUN_DATE, tiny_orders, tiny_warehouse_at
from udfs.score import FEATURES

UTC = dt.timezone.utc
AS_OF = dt.date(2024, 3, 1)


def line(order_id: str, ts: dt.datetime) -> tuple:
    return (order_id, 1, "u", "a", 1, 1.0, ts, "R", None, None, None, "s", ts.astimezone(UTC).date())


@pytest.mark.parametrize(
    ("timezone", "first_in"),
    [
        # 10 days before 2024-03-01: from 2024-02-20 00:00 local
        ("UTC", dt.datetime(2024, 2, 20, 0, 0, tzinfo=UTC)),
        # Tokyo is UTC+9: 2024-02-20 00:00 there is 2024-02-19 15:00 UTC (UTC date the 19th)
        ("Asia/Tokyo", dt.datetime(2024, 2, 19, 15, 0, tzinfo=UTC)),
    ],
)
def test_history_before_keeps_the_days_before_the_as_of_date(spark, timezone, first_in):
    second = dt.timedelta(seconds=1)
    end = first_in + dt.timedelta(days=10)  # 00:00 of the as-of date, local
    rows = [
        line("too-old", first_in - second), line("first", first_in),
        line("last", end - second), line("as-of", end),
    ]
    orders = spark.createDataFrame(rows, ORDERS_CLEAN)
    got = history_before(orders, as_of=AS_OF, timezone=timezone, days=10).toPandas()
    assert sorted(got["order_id"]) == ["first", "last"]
    np.testing.assert_allclose(sorted(got["age_days"]), [1 / 86400, 10.0])
    unbounded = history_before(orders, as_of=AS_OF, timezone=timezone).toPandas()
    assert sorted(unbounded["order_id"]) == ["first", "last", "too-old"]


def test_a_window_shorter_than_the_fusion_validation_is_refused():
    with pytest.raises(ConfigError, match=r"recommend\.history_days: must be at least recommend\.validation_days \(28\), got 20"):
        check_values(replace(Settings(), **{"recommend.history_days": 20}))
    with pytest.raises(ConfigError, match="history_days: must be 1 or more, got 0"):
        history_before(None, as_of=AS_OF, timezone="UTC", days=0)  # type: ignore[arg-type]


OLD = dt.datetime(2022, 6, 1, 12)  # 639 days before the run date


def with_old_lines(orders: list[tuple]) -> list[tuple]:
    """Every user of the tiny shop also bought four items two years ago, on four days."""
    extra = []
    for u in range(9):
        for n, item in enumerate(["i09", "i10", "i11", "i10"]):
            ts = OLD + dt.timedelta(days=n)
            extra.append((f"old{u}-{n}", 1, f"u{u}", item, 1, 2.0, ts, "north", None, None, None, "tiny", ts.date()))
    return orders + extra


@pytest.fixture(scope="module")
def shops(spark, tmp_path_factory):
    """The tiny shop's warehouse, and the same with the old lines added."""
    plain = tiny_warehouse_at(spark, str(tmp_path_factory.mktemp("plain") / "warehouse"))
    old = tiny_warehouse_at(spark, str(tmp_path_factory.mktemp("old") / "warehouse"))
    tables.write(
        spark.createDataFrame(with_old_lines(tiny_orders()), ORDERS_CLEAN), old,
        catalogue.ORDERS_CLEAN.name,
    )
    return plain, old


def lists(spark, warehouse: str, history_days: int) -> pd.DataFrame:
    read = lambda name: tables.read(spark, warehouse, name)  # noqa: E731
    opts = dataclasses.replace(RecommendOptions(), history_days=history_days, validation_days=20)
    recs = recommend(
        spark, orders=read(catalogue.ORDERS_CLEAN.name), items=read(catalogue.ITEMS.name),
        item_embeddings=read(catalogue.ITEM_EMBEDDINGS.name), run_date=RUN_DATE, k=5, opts=opts,
    ).toPandas()
    return recs.sort_values(["user_id", "region", "rank"]).reset_index(drop=True)


def test_lines_older_than_the_window_change_nothing(spark, shops):
    plain, old = shops
    # fusion trained on the same history, co-purchase matrix, users' histories: all bounded
    bounded = lists(spark, old, 365)
    pd.testing.assert_frame_equal(bounded, lists(spark, plain, 365))
    # read, the old lines would change the lists (the test can fail)
    cols = ["user_id", "item_id", "score"]
    assert not lists(spark, old, 1000)[cols].equals(bounded[cols])


def test_user_embeddings_use_the_window(spark, shops):
    plain, old = shops
    def users(warehouse, days):
        vectors = tables.read(spark, warehouse, catalogue.ITEM_EMBEDDINGS.name)
        got = user_embeddings(
            tables.read(spark, warehouse, catalogue.ORDERS_CLEAN.name), vectors, run_date=RUN_DATE,
            half_life_days=60.0, timezone="UTC", model="hand", history_days=days,
        ).toPandas()
        return got.sort_values("user_id").reset_index(drop=True)

    bounded, reference = users(old, 365), users(plain, 365)
    assert bounded["n_items"].tolist() == reference["n_items"].tolist()
    np.testing.assert_array_equal(np.stack(bounded["embedding"]), np.stack(reference["embedding"]))
    # unbounded, each user has the old items too (i09, i10, i11 where not bought lately)
    assert (users(old, None)["n_items"] > reference["n_items"]).any()


def test_the_recommend_stages_slice_of_the_orders_holds_every_line_it_reads(spark, shops):
    """The recommend stage keeps ``lines_read`` in memory and reads only those: that must hold
    the features' window as well when it is the longer one (here 700 days, which reach the old
    lines, against the recommender's 365)."""
    _, old = shops
    opts = dataclasses.replace(
        RecommendOptions(), history_days=365, validation_days=20,
        features=dataclasses.replace(FeatureSettings(), history_days=700),
    )
    read = lambda name: tables.read(spark, old, name)  # noqa: E731

    def lists_of(orders) -> pd.DataFrame:
        recs = recommend(
            spark, orders=orders, items=read(catalogue.ITEMS.name),
            item_embeddings=read(catalogue.ITEM_EMBEDDINGS.name), run_date=RUN_DATE, k=5, opts=opts,
            weights=weights,
        ).toPandas()
        return recs.sort_values(["user_id", "region", "rank"]).reset_index(drop=True)

    # fixed weights (the fusion's training reads the same lines; the check is on the lists)
    weights = {"intercept": 0.0, **{f: 1.0 for f in FEATURES}}
    orders = read(catalogue.ORDERS_CLEAN.name)
    whole = lists_of(orders)
    pd.testing.assert_frame_equal(lists_of(lines_read(orders, run_date=RUN_DATE, opts=opts)), whole)
    # the recommender's own window alone would lose lines the features read (the test can fail)
    short = prune_order_dates(orders, before=RUN_DATE, days=opts.validation_days + opts.history_days)
    cols = ["user_id", "item_id", "score"]
    assert not lists_of(short)[cols].equals(whole[cols])
