"""The `repeat` component: distinct purchase days per history item, its transform and its fusion,
and the recommendations table of an older warehouse gaining `repeat_score`.

Every expected value is worked out by hand in the comments.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from stpipe import catalogue, tables
from stpipe.recommend.signals import cold_start_templates, history_before, user_histories
from udfs.candidates import chunk_of, repeat_scores, repeat_transform
from udfs.score import USER_COLUMNS, Catalog, ScoreParams, score_users

# --- numpy: the transform and the feature matrix -----------------------------------------


def test_repeat_transform_by_hand():
    # 1 - 1/n: not bought 0, once 0, twice 1/2, three times 2/3, four 3/4, ten 9/10
    got = repeat_transform(np.array([0, 1, 2, 3, 4, 10]))
    np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 2 / 3, 0.75, 0.9])


def small_catalog() -> Catalog:
    # items a b c (indices 0-2), one category, one region; a is the most popular
    return Catalog(
        item_ids=np.array(list("abc")),
        embeddings=np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32),
        category_codes=np.array([0, 0, 0]),
        categories=["X"],
        time_score=np.array([0.3, 0.2, 0.1]),
        trending=np.array([False, False, False]),
        regions=["R"],
        space_score=np.array([[0.0, 0.0, 0.0]]),
        popular_order=np.array([0, 1, 2]),
        region_order=[np.array([0, 1, 2])],
        causal=np.zeros((1, 1)),
    )


def users() -> pd.DataFrame:
    # u bought a last (weight 1, on 1 day), then b (weight .8, on 4 days); zz is not in the
    # catalogue (5 days); v has no history
    return pd.DataFrame(
        [("s", "u", "R", False, ["a", "zz", "b"], [1.0, 0.9, 0.8], [1, 5, 4], [1.0, 0.9, 0.8]),
         ("s", "v", "R", False, [], [], [], [])],
        columns=list(USER_COLUMNS),
    )


def test_repeat_scores_are_the_transform_for_history_items_and_zero_elsewhere():
    got = repeat_scores(chunk_of(users(), small_catalog()))
    # u: a bought on 1 day -> 0, b on 4 days -> 3/4, c never bought -> 0; v: nothing
    np.testing.assert_allclose(got, [[0.0, 0.75, 0.0], [0.0, 0.0, 0.0]])


def test_repeat_reorders_the_history_in_the_fusion():
    on = frozenset({"history", "repeat"})
    only_history = ScoreParams(weights={"history": 1.0}, k=None, components=frozenset({"history"}))
    out = score_users(users().iloc[:1], small_catalog(), only_history)
    assert out["item_id"].tolist() == ["a", "b"]  # history 1 and .8
    assert out["repeat_score"].tolist() == [0.0, 0.0]  # component off

    fused = ScoreParams(weights={"history": 1.0, "repeat": 1.0}, k=None, components=on)
    out = score_users(users().iloc[:1], small_catalog(), fused)
    # logits: b = .8 + 3/4 = 1.55 beats a = 1 + 0; repeat has no candidate source of its own
    assert out["item_id"].tolist() == ["b", "a"]
    np.testing.assert_allclose(out["repeat_score"], [0.75, 0.0])
    np.testing.assert_allclose(out["score"], 1 / (1 + np.exp(-np.array([1.55, 1.0]))))
    assert out["reasons"].tolist() == [["bought_before"], ["bought_before"]]


def test_repeat_is_zero_when_repeats_are_not_allowed():
    p = ScoreParams(
        weights={"history": 1.0, "repeat": 1.0, "time": 1.0}, k=3,
        components=frozenset({"history", "repeat", "time"}), allow_repeat=False,
        candidates_popular=3,
    )
    out = score_users(users().iloc[:1], small_catalog(), p)
    assert out["item_id"].tolist() == ["c"]  # a and b are bought: only c is left
    assert out["repeat_score"].tolist() == [0.0]


# --- Spark: distinct purchase days in user_histories ---------------------------------------

AS_OF = dt.date(2024, 3, 1)
UTC = dt.timezone.utc


def day_orders() -> list[tuple]:
    def at(*args: int) -> dt.datetime:
        return dt.datetime(*args, tzinfo=UTC)

    return [
        # a: twice on Feb 10 (one day) and once on Feb 12 -> 2 days; once more on the as-of
        # date, which is not history
        ("o1", "s", "u1", "a", at(2024, 2, 10, 9)),
        ("o2", "s", "u1", "a", at(2024, 2, 10, 11)),
        ("o3", "s", "u1", "a", at(2024, 2, 12, 12)),
        ("o4", "s", "u1", "a", at(2024, 3, 1, 5)),
        # c: Feb 14 10:00 and 16:00 UTC: one day in UTC; in Tokyo (UTC+9) 19:00 on the 14th
        # and 01:00 on the 15th: two days
        ("o5", "s", "u1", "c", at(2024, 2, 14, 10)),
        ("o6", "s", "u1", "c", at(2024, 2, 14, 16)),
        # b: once, the latest item
        ("o7", "s", "u1", "b", at(2024, 2, 20, 8)),
        # u2 bought only on the as-of date: no history
        ("o8", "s", "u2", "b", at(2024, 3, 1, 6)),
    ]


ORDER_SCHEMA = "order_id string, source string, user_id string, item_id string, ts timestamp"


@pytest.mark.parametrize(("timezone", "c_days"), [("UTC", 1), ("Asia/Tokyo", 2)])
def test_user_histories_count_distinct_local_days(spark, timezone, c_days):
    orders = spark.createDataFrame(day_orders(), ORDER_SCHEMA)
    lines = history_before(orders, as_of=AS_OF, timezone=timezone)
    got = user_histories(lines, half_life_days=30.0, timezone=timezone).toPandas()
    assert got["user_id"].tolist() == ["u1"]
    row = got.iloc[0]
    assert list(row["hist_item_ids"]) == ["b", "c", "a"]  # most recent purchase first
    assert list(row["hist_days"]) == [1, c_days, 2]


def test_cold_start_templates_have_no_days(spark):
    orders = spark.createDataFrame(day_orders(), ORDER_SCHEMA)
    got = cold_start_templates(orders, ["s"], ["R"]).toPandas()
    assert len(got) == 1 and list(got.iloc[0]["hist_days"]) == []


# --- an older warehouse: recommendations without repeat_score ------------------------------

OLD_DATE = dt.date(2024, 2, 1)


ADDED = ["reach_score", "rebuy_score", "recent_score", "repeat_score"]  # columns added after the first release


def old_recommendations_schema() -> T.StructType:
    # the table before repeat_score, recent_score, reach_score and rebuy_score were added
    return T.StructType([f for f in catalogue.RECOMMENDATIONS.schema.fields if f.name not in ADDED])


@pytest.mark.slow  # the features and recommend stages end to end (about 2 minutes on 2 cores)
def test_recommend_stage_adds_the_newer_scores_to_an_older_table(spark, tmp_path):
    from stpipe.stages import FEATURES, RECOMMEND, run_stage
    from tests.test_recommend import RUN_DATE, job_settings, tiny_orders, tiny_warehouse_at

    wh = tiny_warehouse_at(spark, str(tmp_path / "warehouse"))
    old_row = (
        OLD_DATE, "tiny", "u0", "north", 1, "i00", 0.5, 0.1, 0.2, 0.3, 0.0, 0.4, 0.0,
        ["bought_before"], False,
    )
    old = spark.createDataFrame([old_row], old_recommendations_schema())
    # as the recommend stage of older code wrote it: partitioned by run_date
    tables.write(old, wh, catalogue.RECOMMENDATIONS.name, partition_by=["run_date"])

    settings = job_settings(wh)
    run_stage(spark, settings, FEATURES)
    run_stage(spark, settings, RECOMMEND)

    recs = tables.read(spark, wh, catalogue.RECOMMENDATIONS.name).toPandas()
    assert "repeat_score" in recs.columns
    before = recs[recs["run_date"] == OLD_DATE]
    assert len(before) == 1 and before[ADDED].isna().all().all()
    assert before.iloc[0]["history_score"] == 0.4  # the old row is otherwise unchanged
    now = recs[recs["run_date"] == RUN_DATE]
    assert len(now) > 0 and now[ADDED].notna().all().all()
    # each listed item's repeat score is 1 - 1/(distinct UTC days the user bought it before the
    # run date), 0 when never bought: recounted here from the raw order tuples with pandas
    raw = [(r[2], r[3], r[6].date()) for r in tiny_orders() if r[6].date() < RUN_DATE]
    days = pd.DataFrame(raw, columns=["user_id", "item_id", "day"]).drop_duplicates()
    n_days = days.groupby(["user_id", "item_id"]).size().to_dict()
    expected = [
        1 - 1 / n_days[(u, i)] if (u, i) in n_days else 0.0
        for u, i in zip(now["user_id"], now["item_id"], strict=True)
    ]
    np.testing.assert_allclose(now["repeat_score"], expected)
    assert max(expected) > 0  # some listed item was bought on several days
    # reach: log1p(distinct buyers of the item before the run date) / log1p(most buyers of any)
    pairs = pd.DataFrame([(u, i) for u, i, _ in raw], columns=["user_id", "item_id"])
    buyers = pairs.groupby("item_id").user_id.nunique()
    reach = np.log1p(buyers.reindex(now["item_id"]).fillna(0).to_numpy()) / np.log1p(buyers.max())
    np.testing.assert_allclose(now["reach_score"], reach)
    # rebuy: on the user's own items, (repeat buyers + 10 m) / (buyers + 10), m = the market's
    # share of repeat buyers; 0 on items the user never bought
    repeaters = pd.Series(n_days)[pd.Series(n_days) >= 2].reset_index().groupby("level_1").size()
    repeaters = repeaters.reindex(buyers.index).fillna(0)
    m = repeaters.sum() / buyers.sum()
    rate = (repeaters + 10 * m) / (buyers + 10)
    rebuy = [rate[i] if (u, i) in n_days else 0.0 for u, i in zip(now["user_id"], now["item_id"], strict=True)]
    np.testing.assert_allclose(now["rebuy_score"], rebuy)
    assert len(set(np.round(rebuy, 9)) - {0.0}) > 1  # listed own items differ in their rates
    # recent: the user's lines of the item decayed with a 14-day half-life, over the user's
    # largest such sum; 0 on items the user never bought
    lines = pd.DataFrame(
        [(r[2], r[3], r[6]) for r in tiny_orders() if r[6].date() < RUN_DATE], columns=["user_id", "item_id", "ts"]
    )
    age = (pd.Timestamp(RUN_DATE) - lines["ts"]).dt.total_seconds() / 86400
    recent = lines.assign(w=2 ** (-age / 14)).groupby(["user_id", "item_id"]).w.sum()
    recent = (recent / recent.groupby(level="user_id").transform("max")).to_dict()
    expected = [recent.get((u, i), 0.0) for u, i in zip(now["user_id"], now["item_id"], strict=True)]
    np.testing.assert_allclose(now["recent_score"], expected)
    assert 0 < min(v for v in expected if v > 0) < 1  # not every listed own item is the top one
