"""The `ease` baseline on tiny hand-made histories: the Gram matrix from Spark, the per-user
scaling, the lists of both variants, the tuning of the own-history weight, the size limit."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from stpipe.evaluate import ease as E
from stpipe.evaluate.context import EaseGrid, EvalContext, warn_at_edge
from stpipe.evaluate.runner import ModelUnavailable

CUTOFF = dt.date(2024, 3, 1)
D = dt.date
HIST_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("day", T.DateType()),
        T.StructField("region", T.StringType()),
    ]
)
# users x items (a, b, c, d), binary
X = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=float)
USERS = ["u1", "u2", "u3", "u4"]
ITEMS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def history(spark):
    rows = []
    for u, user in enumerate(USERS):
        for i, item in enumerate(ITEMS):
            if X[u, i]:
                rows.append((user, item, D(2024, 2, 1 + i), "north"))
    rows.append(("u1", "a", D(2024, 2, 20), "north"))  # a second day: X stays binary
    return spark.createDataFrame(rows, HIST_SCHEMA)


def _ctx(spark, users, **kw):
    return EvalContext(spark=spark, cutoff=CUTOFF, users=pd.DataFrame([(u, "north") for u in users],
                       columns=["user_id", "region"]), n=kw.pop("n", 4), **kw)


def _lists(df):
    pdf = df.toPandas().sort_values(["user_id", "rank"])
    return {u: list(g.item_id) for u, g in pdf.groupby("user_id")}


def _closed_form(l2):
    p = np.linalg.inv(X.T @ X + l2 * np.eye(4))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_gram_counts_distinct_buyers_of_each_pair(spark, history):
    gram = E.gram_matrix(history, ITEMS, users=("user_id",))
    # a: u1,u2; b: u1,u2,u3; c: u2,u3,u4; d: u4 (u1's second day of a counts once)
    expected = np.array([[2, 2, 1, 0], [2, 3, 2, 0], [1, 2, 3, 1], [0, 0, 1, 1]], dtype=float)
    np.testing.assert_array_equal(gram, expected)
    # an item outside the given order is ignored; the order sets rows and columns
    np.testing.assert_array_equal(E.gram_matrix(history, ["d", "a"], users=("user_id",)), [[1, 0], [0, 2]])


def test_scale_rows_and_top_k_ties():
    scaled = E.scale_rows(np.array([[2.0, 1.0, -1.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(scaled, [[1.0, 0.5, -0.5], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    tops = E.top_k(np.array([[0.1, 0.5, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0]]), 3)
    assert tops.tolist() == [[1, 2, 3], [0, 1, 2]]


def test_ease_lists_match_the_closed_form_in_both_variants(spark, history):
    l2 = 2.0
    b = _closed_form(l2)
    grid = EaseGrid(l2s=(l2,), history_weights=(0.5,))
    ctx = _ctx(spark, ["u1", "u3"], ease=grid)
    novel = _lists(E.ease(history, EvalContext(**{**ctx.__dict__, "exclude_seen": True})))
    for u, user in ((0, "u1"), (2, "u3")):
        unseen = [i for i in range(4) if not X[u, i]]
        expected = sorted(unseen, key=lambda i: (-(X[u] @ b)[i], i))
        assert novel[user] == [ITEMS[i] for i in expected]
    # all: scaled EASE + 0.5 x scaled own history; u3's items are one day each, a day apart
    own = np.array([0, np.exp(-28 / 30), np.exp(-27 / 30), 0])  # b on Feb 2, c on Feb 3: 28, 27 days
    ease_u3 = X[2] @ b
    blended = ease_u3 / ease_u3.max() + 0.5 * own / own.max()
    out = _lists(E.ease(history, ctx))
    assert out["u3"] == [ITEMS[i] for i in sorted(range(4), key=lambda i: (-blended[i], i))]
    assert ctx.cache["ease_params"]["all"] == {"l2": l2, "history_weight": 0.5}


def test_tuning_picks_the_own_history_weight_when_users_rebuy(spark):
    # before the window (Feb 2): u1 bought a; u2 and u3 bought a and b. In the window u1 rebuys a.
    # w = 0: u1's scores a = 0 (zero diagonal), b = B[a, b] > 0, so b leads and NDCG@1 = 0;
    # w = 4: a = 4, b = 1, so a leads and NDCG@1 = 1.
    rows = [("u1", "a", D(2024, 1, 10), "n"), ("u2", "a", D(2024, 1, 11), "n"),
            ("u2", "b", D(2024, 1, 11), "n"), ("u3", "a", D(2024, 1, 12), "n"),
            ("u3", "b", D(2024, 1, 12), "n"), ("u1", "a", D(2024, 2, 10), "n")]
    hist = spark.createDataFrame(rows, HIST_SCHEMA)
    ctx = _ctx(spark, ["u1"], tune_k=1, horizon_days=28, ease=EaseGrid(l2s=(1.0,), history_weights=(0.0, 4.0)))
    choice = E.tune_ease(hist, ctx)
    assert (choice["all"].weight, choice["all"].ndcg) == (4.0, 1.0)


def test_a_choice_at_the_edge_of_its_grid_is_a_warning(spark, caplog):
    # the rebuy history above: 4 wins (a leads), 0.5 loses (b's scaled 1 beats a's 0.5), so a
    # grid of three that stops at 4 warns
    rows = [("u1", "a", D(2024, 1, 10), "n"), ("u2", "a", D(2024, 1, 11), "n"),
            ("u2", "b", D(2024, 1, 11), "n"), ("u3", "a", D(2024, 1, 12), "n"),
            ("u3", "b", D(2024, 1, 12), "n"), ("u1", "a", D(2024, 2, 10), "n")]
    hist = spark.createDataFrame(rows, HIST_SCHEMA)
    ctx = _ctx(spark, ["u1"], tune_k=1, horizon_days=28,
               ease=EaseGrid(l2s=(1.0,), history_weights=(0.0, 0.5, 4.0)))
    with caplog.at_level("WARNING", logger="stpipe.evaluate"):
        E.ease(hist, ctx)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["evaluate.ease_history_weights: the tuning chose 4, the largest value of the grid "
                      "[0.0, 0.5, 4.0]; the best may lie beyond it"]
    caplog.clear()
    warn_at_edge("evaluate.als_alphas", (0.3, 1.0, 10.0), 1.0)  # inside the grid
    warn_at_edge("evaluate.als_ranks", (32, 64), 64)  # two values: a choice, not a search
    warn_at_edge("evaluate.ease_l2s (novel)", (100.0, 200.0, 500.0), 100.0)
    assert [r.getMessage() for r in caplog.records] == [
        "evaluate.ease_l2s (novel): the tuning chose 100, the smallest value of the grid "
        "[100.0, 200.0, 500.0]; the best may lie beyond it"]


def test_catalogue_above_the_limit_is_unavailable(spark, history):
    ctx = _ctx(spark, ["u1"], ease=EaseGrid(max_items=3))
    with pytest.raises(ModelUnavailable, match="4 items in the history, above evaluate.ease_max_items=3"):
        E.ease(history, ctx)
