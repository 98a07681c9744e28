"""The runner: both variants, the category level with cold users, unavailable models; `full`'s
cold-start mapping."""

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import types as T

from stpipe.evaluate import baselines as B
from stpipe.evaluate.full import lists_for_users
from stpipe.evaluate.runner import ModelUnavailable, evaluate_split

ORDER_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("ts", T.TimestampType()),
        T.StructField("region", T.StringType()),
    ]
)


def test_lists_for_users_uses_region_templates_for_cold_users():
    recs = pd.DataFrame(
        [("u1", "north", 1, "a"), ("u1", "north", 2, "b"), ("u1", "north", 3, "c"),
         ("*", "north", 1, "z"), ("*", "north", 2, "y"), ("*", "south", 1, "s")],
        columns=["user_id", "region", "rank", "item_id"],
    )
    users = pd.DataFrame({"user_id": ["u1", "u5", "u6"], "region": ["north", "north", "mars"]})
    out = lists_for_users(recs, users, 2)
    assert out.values.tolist() == [["u1", 1, "a"], ["u1", 2, "b"], ["u5", 1, "z"], ["u5", 2, "y"]]


def _broken(history, ctx):
    raise ModelUnavailable("not built")


def test_evaluate_split_variants_category_level_and_unavailable(spark):
    t = dt.datetime
    rows = [
        ("u1", "a", t(2024, 2, 20, 10), "north"),
        ("u1", "b", t(2024, 2, 25, 10), "north"),
        ("u2", "a", t(2024, 2, 21, 10), "south"),
        ("u1", "c", t(2024, 3, 3, 10), "north"),
        ("u3", "b", t(2024, 3, 4, 10), "south"),  # cold: only at the category level
    ]
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["X", "Y", "X"]})
    result = evaluate_split(
        spark, spark.createDataFrame(rows, ORDER_SCHEMA), items,
        {"pop_global": B.pop_global, "broken": _broken},
        cutoff=dt.date(2024, 3, 1), horizon_days=7, ks=[1, 2], k=2, category_level=True,
        category_candidates=10,
    )
    assert result.unavailable == {"broken": "not built"}
    assert result.facts["cold truth users (no history, not in item metrics)"] == 1
    m = result.metrics.set_index(["level", "variant", "k", "metric"]).value
    # item level: u1's list [a, b] misses c; in `novel` a and b are removed and nothing is left
    assert m[("item", "all", 2, "hr")] == 0.0
    assert m[("item", "novel", 2, "hr")] == 0.0
    assert m[("item", "all", 2, "coverage")] == pytest.approx(2 / 2)
    # category level: u1 [X, Y] vs {X}; u3 (cold) [X, Y] vs {Y}
    assert m[("category", "all", 1, "hr")] == pytest.approx(0.5)
    assert m[("category", "all", 2, "hr")] == pytest.approx(1.0)
    assert m[("category", "all", 2, "ndcg")] == pytest.approx((1 + 1 / 1.5849625007211562) / 2)
    assert m[("category", "all", 1, "coverage")] == pytest.approx(1 / 2)
    users = result.metrics.groupby("level").users.max().to_dict()
    assert users == {"item": 1, "category": 2}


def test_report_table_and_leader(tmp_path):
    from stpipe.evaluate.report import leader_line, write_report

    nan = float("nan")
    m = pd.DataFrame(
        [("a", "all", "item", 10, "ndcg", 0.30, 0.01, 5), ("b", "all", "item", 10, "ndcg", 0.25, 0.02, 5),
         ("b", "all", "item", 10, "coverage", 0.5, nan, 5), ("a", "all", "item", 5, "ndcg", 0.2, 0.01, 5)],
        columns=["model", "variant", "level", "k", "metric", "value", "stderr", "users"],
    )
    assert "`a` 0.3000, ahead of `b` 0.2500 by 0.0500 (2.5 standard errors" in leader_line(m, k=10)
    paired = pd.DataFrame([("a", "b", "all", "item", 10, "ndcg_diff", 0.05, 0.02, 5, 0.04)],
                          columns=["model", "versus", "variant", "level", "k", "metric", "value", "stderr",
                                   "users", "p_value"])
    path = write_report(m, tmp_path, source="s", cutoff="2020-01-01", horizon_days=28, k=10,
                        model_order=["a", "b"], facts={"users": 5}, unavailable={"full": "not built"},
                        paired=paired)
    text = path.read_text()
    assert "| b | 5 | +0.0500 ± 0.0200 | 2.5 | 0.0400 | yes |" in text
    assert "| a | 5 | 0.3000 ± 0.0100 | n/a |" in text
    assert "| b | 5 | 0.2500 ± 0.0200 | 0.5000 |" in text
    assert "`full`: unavailable (not built)" in text
    assert (tmp_path / "item-all-vs-k.png").stat().st_size > 1000


def test_paired_rows_compare_the_reference_on_the_same_users_and_reach_eval_metrics(spark):
    from stpipe.evaluate.runner import metrics_rows

    t = dt.datetime
    rows = [("u1", "a", t(2024, 2, 20, 10), "n"), ("u1", "b", t(2024, 2, 21, 10), "n"),
            ("u2", "a", t(2024, 2, 22, 10), "n"), ("u2", "c", t(2024, 2, 23, 10), "n"),
            ("u1", "a", t(2024, 3, 2, 10), "n"), ("u2", "b", t(2024, 3, 3, 10), "n")]
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["X", "Y", "X"]})
    result = evaluate_split(
        spark, spark.createDataFrame(rows, ORDER_SCHEMA), items,
        {"own_history": B.own_history, "pop_global": B.pop_global},
        cutoff=dt.date(2024, 3, 1), horizon_days=7, ks=[1], k=1, reference="own_history",
    )
    # truth u1 {a}, u2 {b}. K = 1: own_history ranks the latest item first, u1 [b], u2 [c]: no hit;
    # pop_global [a] (2 buyers) for both: u1 hits. Per-user NDCG differences: -1 and 0.
    m = result.metrics.set_index(["model", "variant", "k", "metric"]).value
    p = result.paired.set_index(["versus", "variant", "k", "metric"])
    assert set(result.paired.model) == {"own_history"} and set(result.paired.variant) == {"all"}
    diff = m[("own_history", "all", 1, "ndcg")] - m[("pop_global", "all", 1, "ndcg")]
    assert p.value[("pop_global", "all", 1, "ndcg_diff")] == pytest.approx(diff) == pytest.approx(-0.5)
    assert p.stderr[("pop_global", "all", 1, "ndcg_diff")] == pytest.approx(0.5)  # sd 0.7071 / sqrt(2)
    assert p.p_value[("pop_global", "all", 1, "ndcg_diff")] == pytest.approx(1.0)  # 4 flips, all |mean| 0.5
    assert p.users[("pop_global", "all", 1, "ndcg_diff")] == 2
    out = metrics_rows(result.metrics, run_date=dt.date(2024, 3, 9), source="s", cutoff=dt.date(2024, 3, 1),
                       paired=result.paired)
    paired_rows = [r for r in out if r[11] is not None]
    assert {r[4] for r in paired_rows} == {"hr_diff", "precision_diff", "recall_diff", "ndcg_diff", "map_diff"}
    assert all(r[1] == "own_history" and r[11] == "pop_global" and 0 < r[12] <= 1 for r in paired_rows)
    assert all(r[12] is None for r in out if r[11] is None)


def test_cutoffs_a_horizon_apart_share_fits_and_give_the_same_metrics(spark, monkeypatch):
    from stpipe.evaluate import ease as E
    from stpipe.evaluate.context import AlsGrid, EaseGrid

    t = dt.datetime
    start = t(2024, 1, 1, 10)
    rows = [(f"u{u}", f"i{(u * 3 + d) % 7}", start + dt.timedelta(days=4 * d), "n") for u in range(6) for d in range(14)]
    orders = spark.createDataFrame(rows, ORDER_SCHEMA)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(7)], "category": ["X"] * 7})
    calls = {"als": 0, "gram": 0}
    fit, gram = B._fit_als, E.gram_matrix

    def counted_fit(*a, **kw):
        calls["als"] += 1
        return fit(*a, **kw)

    def counted_gram(*a, **kw):
        calls["gram"] += 1
        return gram(*a, **kw)

    monkeypatch.setattr(B, "_fit_als", counted_fit)
    monkeypatch.setattr(E, "gram_matrix", counted_gram)
    kw = dict(horizon_days=14, ks=[3], k=3, als=AlsGrid(ranks=(2,), reg_params=(0.1,), alphas=(1.0,), max_iter=2),
              ease=EaseGrid(l2s=(1.0,), history_weights=(0.0,)))
    models = {"als": B.als, "ease": E.ease}
    shared: dict = {}
    first = [evaluate_split(spark, orders, items, models, cutoff=c, shared=shared, **kw).metrics
             for c in (dt.date(2024, 1, 29), dt.date(2024, 2, 12))]
    # each cutoff: one fit (tuning) + one refit; the first cutoff's refit is the second's tuning fit
    assert calls == {"als": 3, "gram": 3}
    # sharing changes no figure (EASE alone: an unshared ALS refit would cost seconds more)
    alone = evaluate_split(spark, orders, items, {"ease": E.ease}, cutoff=dt.date(2024, 2, 12), **kw).metrics
    pd.testing.assert_frame_equal(first[1][first[1].model == "ease"].reset_index(drop=True), alone)
