"""Temporal split, list filling and the baselines on tiny hand-made histories."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from stpipe.errors import InputError
from stpipe.evaluate import baselines as B
from stpipe.evaluate.runner import fill_lists, to_categories
from stpipe.evaluate.split import drop_seen, temporal_split, to_interactions, truth_sets

CUTOFF = dt.date(2024, 3, 1)
D = dt.date
ORDER_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("ts", T.TimestampType()),
        T.StructField("region", T.StringType()),
    ]
)
HIST_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("day", T.DateType()),
        T.StructField("region", T.StringType()),
    ]
)


def ts(day, hour=12):
    return dt.datetime(day.year, day.month, day.day, hour)


def test_split_counts_distinct_days_and_cuts_at_midnight(spark):
    rows = [
        ("u1", "a", ts(D(2024, 2, 27), 9), "north"),
        ("u1", "a", ts(D(2024, 2, 27), 18), "north"),  # same day: one interaction
        ("u1", "b", dt.datetime(2024, 2, 29, 23, 59), "south"),  # last region in history
        ("u1", "c", dt.datetime(2024, 3, 1, 0, 0), "south"),  # the cutoff day belongs to truth
        ("u1", "c", ts(D(2024, 3, 5)), "south"),
        ("u2", "d", ts(D(2024, 3, 28)), "east"),  # 28th day after the cutoff: outside
        ("u3", "a", ts(D(2024, 3, 10)), "west"),  # cold user
        ("u3", "e", ts(D(2024, 3, 2)), "east"),
    ]
    split = temporal_split(
        to_interactions(spark.createDataFrame(rows, ORDER_SCHEMA)), cutoff=CUTOFF, horizon_days=27
    )
    hist = split.history.toPandas().sort_values(["user_id", "item_id"])
    assert hist[["user_id", "item_id", "day"]].values.tolist() == [
        ["u1", "a", D(2024, 2, 27)],
        ["u1", "b", D(2024, 2, 29)],
    ]
    assert truth_sets(split.truth.toPandas()) == {"u1": {"c"}, "u3": {"a", "e"}}
    regions = dict(split.user_regions.toPandas().values.tolist())
    assert regions == {"u1": "south", "u3": "east"}  # u3: first region in the window


def test_split_names_missing_column(spark):
    df = spark.createDataFrame([("u", "i")], "user_id string, item_id string")
    with pytest.raises(InputError, match="ts"):
        to_interactions(df)


def test_drop_seen_removes_history_and_empty_users():
    truth = {"u1": {"a", "b"}, "u2": {"c"}}
    assert drop_seen(truth, {"u1": {"a"}, "u2": {"c"}}) == {"u1": {"b"}}


def test_fill_lists_dedups_skips_seen_and_fills_in_fallback_order():
    recs = pd.DataFrame({"user_id": ["u", "u", "u"], "rank": [2, 1, 3], "item_id": ["b", "x", "b"]})
    out = fill_lists(recs, ["u", "v"], ["a", "b", "c", "d"], n=4, seen={"u": {"a"}, "v": {"c"}})
    assert out == {"u": ["x", "b", "c", "d"], "v": ["a", "b", "d"]}


def test_to_categories_keeps_first_appearance():
    out = to_categories({"u": ["i1", "i2", "i3", "i4"]}, {"i1": "A", "i2": "A", "i3": "B", "i4": "C"}, 2)
    assert out == {"u": ["A", "B"]}


def test_top_n_breaks_ties_by_column_and_drops_masked():
    scores = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    mask = np.array([[False, True, False, False], [False] * 4])
    out = B.top_n_from_scores(scores, n=3, mask=mask)
    assert [r.tolist() for r in out] == [[2, 0], [0, 1, 2]]  # zero scores are not recommended


@pytest.fixture(scope="module")
def history(spark):
    rows = [
        ("u1", "a", D(2024, 2, 29), "north"),
        ("u1", "b", D(2024, 1, 30), "north"),
        ("u1", "b", D(2024, 1, 31), "north"),
        ("u2", "a", D(2024, 2, 20), "south"),
        ("u2", "c", D(2024, 2, 20), "south"),
        ("u3", "c", D(2024, 2, 28), "south"),
        ("u3", "d", D(2023, 10, 1), "south"),  # older than 90 days: not in pop_global
    ]
    return spark.createDataFrame(rows, HIST_SCHEMA)


def _ctx(spark, users, **kw):
    return B.EvalContext(spark=spark, cutoff=CUTOFF, users=pd.DataFrame(users, columns=["user_id", "region"]),
                         n=kw.pop("n", 3), **kw)


def _lists(df):
    pdf = df.toPandas().sort_values(["user_id", "rank"])
    return {u: list(g.item_id) for u, g in pdf.groupby("user_id")}


def test_pop_global_counts_buyers_in_window_ties_by_item(spark, history):
    # buyers in the last 90 days: a=2 (u1,u2), c=2 (u2,u3), b=1; d is too old
    out = _lists(B.pop_global(history, _ctx(spark, [("u1", "north"), ("z", "east")], n=4)))
    assert out == {"u1": ["a", "c", "b"], "z": ["a", "c", "b"]}
    novel = _lists(B.pop_global(history, _ctx(spark, [("u1", "north")], exclude_seen=True,
                                               seen={"u1": {"a", "b"}})))
    assert novel == {"u1": ["c"]}


def test_pop_region_weights_by_time_decay(spark, history):
    # south: a = e^-10/30; c = e^-10/30 + e^-2/30; d = e^-152/30
    out = _lists(B.pop_region(history, _ctx(spark, [("u9", "south"), ("u8", "north"), ("u7", "mars")])))
    assert out == {"u9": ["c", "a", "d"], "u8": ["a", "b"]}


def test_own_history_ranks_by_decayed_frequency(spark, history):
    # u1: a = e^-1/30 = 0.967; b = e^-31/30 + e^-30/30 = 0.724
    out = _lists(B.own_history(history, _ctx(spark, [("u1", "north"), ("u2", "south")])))
    assert out == {"u1": ["a", "b"], "u2": ["a", "c"]}
    assert B.own_history(history, _ctx(spark, [("u1", "north")], exclude_seen=True)).count() == 0


def test_jaccard_similarity_by_hand():
    # users x items: u1 {a, b}, u2 {a, c}, u3 {c}
    counts = B.sp.csr_matrix(np.array([[1, 2, 0], [1, 0, 1], [0, 0, 1]], dtype=float))
    sim = B.jaccard_similarity(counts).toarray()
    expected = np.array([[1, 1 / 2, 1 / 3], [1 / 2, 1, 0], [1 / 3, 0, 1]])
    np.testing.assert_allclose(sim, expected)


def test_cooc_recommends_neighbours_and_excludes_seen(spark, history):
    ctx = _ctx(spark, [("u1", "north")], exclude_seen=True, seen={"u1": {"a", "b"}})
    # u1 bought a and b; c co-occurs with a (u2), d never with a or b
    assert _lists(B.cooc(history, ctx)) == {"u1": ["c"]}


def test_als_is_deterministic_and_scores_only_known_users(spark, history):
    grid = B.AlsGrid(ranks=(2,), reg_params=(0.1,), alphas=(10.0,), max_iter=3, seed=1)
    users = [("u1", "north"), ("u2", "south"), ("nobody", "south")]
    first = B.als(history, _ctx(spark, users, als=grid)).toPandas()
    second = B.als(history, _ctx(spark, users, als=grid)).toPandas()
    pd.testing.assert_frame_equal(first, second)
    assert set(first.user_id) == {"u1", "u2"}
    assert first.groupby("user_id").size().tolist() == [3, 3]
