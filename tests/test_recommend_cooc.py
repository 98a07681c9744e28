"""The "bought together" component: co-occurrence by hand, candidates, reasons, no leakage."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stpipe.recommend import recommend
from stpipe.recommend.signals import history_before, item_cooccurrence
from stpipe.schema import ORDERS_CLEAN
from tests.test_recommend import hand_catalog, params, users
from udfs.score import score_users

AS_OF = dt.date(2024, 3, 1)


def with_cooc(entries: dict[tuple[str, str], float]):
    catalog = hand_catalog()
    pos = {item: i for i, item in enumerate(catalog.item_ids)}
    rows = [pos[a] for a, _ in entries]
    cols = [pos[b] for _, b in entries]
    catalog.cooc = sp.csr_matrix((list(entries.values()), (rows, cols)), shape=(5, 5))
    return catalog


# a -> c .5, a -> d .2, b -> d .5, c -> a .5 (c is not bought, so c -> a never counts)
COOC = {("a", "c"): 0.5, ("a", "d"): 0.2, ("b", "d"): 0.5, ("c", "a"): 0.5}
ONLY_COOC = {"intercept": 0.0, "cooc": 1.0}


def test_cooc_scores_candidates_and_reasons_by_hand():
    # history weights a 1.0, b 0.5 (already max 1): c = 1 x .5 = .5; d = 1 x .2 + .5 x .5 = .45
    # normalised by the user's max .5: c 1.0, d 0.9; d's main source is b (.25 > .2)
    u = users(("u", "R", False, ["a", "b"], [1.0, 0.5]))
    out = score_users(u, with_cooc(COOC), params(k=None, weights=ONLY_COOC, candidates_cooc=2, history_items=2))
    got = out.set_index("item_id")
    assert got.loc["c", "cooc_score"] == pytest.approx(1.0)
    assert got.loc["d", "cooc_score"] == pytest.approx(0.9)
    assert got.loc["a", "cooc_score"] == 0.0 and got.loc["b", "cooc_score"] == 0.0
    assert "bought_with:a" in got.loc["c", "reasons"]
    assert "bought_with:b" in got.loc["d", "reasons"]
    assert not any(r.startswith("bought_with") for r in got.loc["a", "reasons"])

    # one co-occurrence candidate: the best new item only; top list by the cooc weight alone
    top = score_users(u, with_cooc(COOC), params(k=2, weights=ONLY_COOC, candidates_cooc=1,
                                                  allow_repeat=False))
    assert top["item_id"].tolist()[0] == "c"
    assert top["reasons"].tolist()[0] == ["bought_with:a"]


def test_cooc_ties_go_to_the_lower_item_and_ablation_switches_it_off():
    # d gets .5 from a (weight 1 x .5) and .5 from b (weight 1 x .5): source a (lower id)
    u = users(("u", "R", False, ["b", "a"], [1.0, 1.0]))
    cat = with_cooc({("a", "d"): 0.5, ("b", "d"): 0.5})
    out = score_users(u, cat, params(k=None, weights=ONLY_COOC))
    d = out[out.item_id == "d"].iloc[0]
    assert d["cooc_score"] == pytest.approx(1.0) and "bought_with:a" in d["reasons"]
    off = score_users(u, cat, params(k=None, weights=ONLY_COOC,
                                     components=frozenset({"bert", "time", "space", "causal", "history"})))
    assert (off["cooc_score"] == 0).all()
    assert not any(r.startswith("bought_with") for rs in off["reasons"] for r in rs)


def order(user: str, item: str, ts: dt.datetime, n: int) -> tuple:
    return (f"{user}-{n}", 1, user, item, 1, 1.0, ts, "R", None, None, None, "t", ts.date())


def cooc_orders() -> list[tuple]:
    d10, d20, d30 = (dt.datetime(2024, 3, 1) - dt.timedelta(days=k) for k in (10, 20, 30))
    late, later = dt.datetime(2024, 3, 1, 5), dt.datetime(2024, 3, 2)
    return [
        order("u1", "a", d10, 1), order("u1", "a", d20, 2), order("u1", "b", d20, 3),
        order("u2", "a", d20, 4), order("u2", "b", d20, 5), order("u2", "c", d30, 6),
        order("u3", "c", d10, 7), order("u3", "b", d10, 8),
        # on or after the as-of date: must not count
        order("u4", "a", late, 9), order("u4", "c", later, 10), order("u1", "c", late, 11),
    ]


def test_item_cooccurrence_by_hand_without_leakage(spark):
    orders = spark.createDataFrame(cooc_orders(), ORDERS_CLEAN)
    lines = history_before(orders, as_of=AS_OF, timezone="UTC")
    # half-life 10 days: ties d = .5 (10 days), .25 (20), .125 (30); the last purchase counts.
    # mass a = .5 + .25 = .75, b = .25 + .25 + .5 = 1, c = .125 + .5 = .625
    # both(a,b) = .25 + .25 = .5 -> .5 / (.75 + 1 - .5) = .4
    # both(a,c) = .125 -> .125 / (.75 + .625 - .125) = .1
    # both(b,c) = .125 + .5 -> .625 / (1 + .625 - .625) = .625
    full = item_cooccurrence(lines, half_life_days=10.0, neighbours=5).toPandas()
    got = {(r.item_id, r.other_id): r.similarity for r in full.itertuples()}
    expected = {("a", "b"): 0.4, ("b", "a"): 0.4, ("a", "c"): 0.1, ("c", "a"): 0.1,
                ("b", "c"): 0.625, ("c", "b"): 0.625}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    top1 = item_cooccurrence(lines, half_life_days=10.0, neighbours=1).toPandas()
    assert sorted(zip(top1.item_id, top1.other_id, strict=True)) == [("a", "b"), ("b", "c"), ("c", "b")]


def test_recommend_brings_the_co_bought_item(spark):
    # u1..u3 as above; u5 bought only a: with the cooc weight alone, its first new item is b
    # (a's only neighbour with one kept per item), said to be bought with a.
    extra = [order("u5", "a", dt.datetime(2024, 2, 25), 12)]
    orders = spark.createDataFrame(cooc_orders() + extra, ORDERS_CLEAN)
    items = spark.createDataFrame(
        [(i, f"thing {i}", "K", None, "t") for i in "abc"],
        "item_id string, title string, category string, description string, source string",
    )
    vecs = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.6, 0.8]}
    emb = spark.createDataFrame([(i, v) for i, v in vecs.items()], "item_id string, embedding array<float>")
    from stpipe.recommend import RecommendOptions

    opts = RecommendOptions(
        item_model="jaccard", cooc_neighbours=1, cooc_half_life_days=10.0, candidates_cooc=1
    )
    recs = recommend(
        spark, orders=orders, items=items, item_embeddings=emb, run_date=AS_OF, k=1,
        allow_repeat=False, weights={"intercept": 0.0, "cooc": 5.0}, opts=opts, only_users=["u5", "u3"],
    ).toPandas()
    assert set(recs.user_id) == {"u5", "u3", "*"}
    u5 = recs[recs.user_id == "u5"].iloc[0]
    assert u5["item_id"] == "b" and u5["cooc_score"] == pytest.approx(1.0)
    assert "bought_with:a" in list(u5["reasons"])
    # u3 bought b and c; its cooc neighbours b->c, c->b are both bought: no cooc candidate, and
    # a is only a filler (u4's and u1's later purchases of a/c do not make a a neighbour)
    u3 = recs[recs.user_id == "u3"].iloc[0]
    assert u3["item_id"] == "a" and u3["cooc_score"] == 0.0
    assert not any(r.startswith("bought_with") for r in u3["reasons"])
    expected_cols = pd.Index(["history_score", "cooc_score", "reasons"])
    assert expected_cols.isin(recs.columns).all()
    assert np.isfinite(recs["score"]).all()
