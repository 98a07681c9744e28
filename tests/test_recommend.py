"""Scoring core (hand-computed cases) and the recommend stage on a tiny warehouse."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from stpipe import catalogue, tables
from stpipe.catalogue import RECOMMENDATIONS
from stpipe.config import Settings, replace
from stpipe.errors import InputError
from stpipe.recommend import RecommendOptions, recommend
from stpipe.schema import ORDERS_CLEAN
from udfs.score import USER_COLUMNS, Catalog, ScoreParams, score_users

ONES = {"intercept": 0.0, "bert": 1.0, "time": 1.0, "space": 1.0, "causal": 1.0, "history": 1.0}


def hand_catalog() -> Catalog:
    # a and b in category X, c d e in Y; X leads Y with strength 0.9.
    vecs = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0], [0.6, -0.8]], dtype=np.float32)
    return Catalog(
        item_ids=np.array(list("abcde")),
        embeddings=vecs,
        category_codes=np.array([0, 0, 1, 1, 1]),
        categories=["X", "Y"],
        time_score=np.array([0.1, 0.2, 0.3, 0.4, 0.5]),
        trending=np.array([False, False, False, False, True]),
        regions=["R"],
        space_score=np.array([[0.5, 0, 0, 0, 1.0]]),
        popular_order=np.array([4, 3, 2, 1, 0]),
        region_order=[np.array([4, 0])],
        causal=np.array([[0.0, 0.9], [0.0, 0.0]]),
    )


def users(*rows, source: str = "s") -> pd.DataFrame:
    """Users of one ``source`` from (user_id, region, is_cold_start, hist_item_ids, hist_weights),
    each history item bought on one day (no repeat signal), its recent weight its weight."""
    return pd.DataFrame(
        [(source, *row, [1] * len(row[3]), list(row[4])) for row in rows],
        columns=list(USER_COLUMNS),
    )


def params(**kw) -> ScoreParams:
    # bert as the cosine with the user's mean vector (kernel power 0): the hand figures below;
    # the kernel has its own hand cases in test_score.py
    base = dict(
        weights=ONES, k=3, candidates_popular=1, candidates_neighbours=1, candidates_causal=1,
        recent_items=1, history_items=1, bert_kernel_power=0,
    )
    base.update(kw)
    return ScoreParams(**base)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_hand_case_all_sources():
    out = score_users(users(("u", "R", False, ["a"], [1.0])), hand_catalog(), params())
    # logits by hand: e = .6+.5+1+.9 = 3.0, a = 1+.1+.5+0+1 = 2.6, b = .8+.2 = 1.0
    assert out["item_id"].tolist() == ["e", "a", "b"]
    assert out["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(out["score"], [sigmoid(3.0), sigmoid(2.6), sigmoid(1.0)], rtol=1e-6)
    np.testing.assert_allclose(out["bert_score"], [0.6, 1.0, 0.8], atol=1e-6)
    np.testing.assert_allclose(out["causal_score"], [0.9, 0.0, 0.0])
    np.testing.assert_allclose(out["history_score"], [0.0, 1.0, 0.0])
    assert out["reasons"].tolist() == [
        ["popular_in_region", "trending", "led_by:X"],
        ["bought_before"],
        ["similar_to_recent"],
    ]


def test_no_repeat_excludes_bought_and_fills_from_popularity():
    p = params(allow_repeat=False)
    out = score_users(users(("u", "R", False, ["a"], [1.0])), hand_catalog(), p)
    # a excluded; candidates e, b; filler d (most popular unused): -1+.4+.9 = 0.3
    assert out["item_id"].tolist() == ["e", "b", "d"]
    assert out["reasons"].tolist()[2] == ["popular_overall"]


def test_ablation_without_causal():
    p = params(components=frozenset({"bert", "time", "space", "history"}))
    out = score_users(users(("u", "R", False, ["a"], [1.0])), hand_catalog(), p)
    # e loses causal (2.1) and falls behind a (2.6)
    assert out["item_id"].tolist() == ["a", "e", "b"]
    assert out["causal_score"].tolist() == [0.0, 0.0, 0.0]
    assert not any(r.startswith("led_by") for rs in out["reasons"] for r in rs)


def test_cold_start_catalogue_smaller_than_k_and_ties():
    cold = users(("*", "R", True, [], []))
    out = score_users(cold, hand_catalog(), params(k=10))
    # time + space only: e 1.5, a .6, d .4, c .3, b .2; only 5 items exist
    assert out["item_id"].tolist() == ["e", "a", "d", "c", "b"]
    assert all("catalogue_exhausted" in r for r in out["reasons"])
    assert out["is_cold_start"].all() and (out["bert_score"] == 0).all()
    flat = score_users(cold, hand_catalog(), params(k=5, weights={"intercept": 1.0}))
    assert flat["item_id"].tolist() == list("abcde")  # equal scores: item id ascending


def test_candidates_mode_returns_every_candidate_with_features():
    out = score_users(users(("u", "R", False, ["a"], [1.0])), hand_catalog(), params(k=None))
    assert sorted(out["item_id"]) == ["a", "b", "e"]
    assert set(out["n_candidates"]) == {3}


def test_unknown_component_is_rejected():
    from stpipe.recommend import normalise_components

    assert normalise_components(["timespace", "bert"]) == frozenset({"time", "space", "bert"})
    with pytest.raises(InputError, match="unknown recommender component 'colour'"):
        normalise_components(["colour"])


# --- Spark: the stage on a tiny warehouse -----------------------------------------------

RUN_DATE = dt.date(2024, 3, 1)
ITEM_IDS = [f"i{j:02d}" for j in range(12)]
CATEGORY = {i: "ABC"[j // 4] for j, i in enumerate(ITEM_IDS)}


def tiny_orders() -> list[tuple]:
    rng = np.random.default_rng(3)
    rows = []
    for u in range(9):
        region = "north" if u < 6 else "south"
        for n in range(8):
            ts = dt.datetime(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 60)), hours=int(rng.integers(0, 24)))
            item = ITEM_IDS[int(rng.integers(0, 12))]
            rows.append((f"o{u}-{n}", 1, f"u{u}", item, 1, 2.0, ts, region, None, None, None, "tiny", ts.date()))
    # an order on the run date itself: must not count as history
    rows.append(("late", 1, "u9", "i00", 1, 2.0, dt.datetime(2024, 3, 1, 5), "south", None, None, None, "tiny", RUN_DATE))
    return rows


@pytest.fixture(scope="module")
def tiny_warehouse(spark, tmp_path_factory):
    return tiny_warehouse_at(spark, str(tmp_path_factory.mktemp("rec") / "warehouse"))


def tiny_warehouse_at(spark, wh: str) -> str:
    """``orders_clean``, ``items`` and ``item_embeddings`` of the tiny shop written under ``wh``."""
    rng = np.random.default_rng(11)
    vecs = rng.normal(size=(12, 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = pd.DataFrame({
        "item_id": ITEM_IDS, "title": [f"thing {i}" for i in ITEM_IDS],
        "category": [CATEGORY[i] for i in ITEM_IDS], "description": None, "source": "tiny",
    })
    emb = pd.DataFrame({"item_id": ITEM_IDS, "text": items["title"], "embedding": [list(map(float, v)) for v in vecs], "model": "hand"})
    tables.write(spark.createDataFrame(tiny_orders(), ORDERS_CLEAN), wh, catalogue.ORDERS_CLEAN.name)
    tables.write(spark.createDataFrame(items, "item_id string, title string, category string, description string, source string"), wh, catalogue.ITEMS.name)
    tables.write(spark.createDataFrame(emb, "item_id string, text string, embedding array<float>, model string"), wh, catalogue.ITEM_EMBEDDINGS.name)
    return wh


def job_settings(wh: str, **extra) -> Settings:
    return replace(Settings(), **{"storage.warehouse": wh, "run_date": RUN_DATE.isoformat(), "recommend.k": 5, "recommend.validation_days": 20, **extra})


@pytest.fixture(scope="module")
def job_runs(spark, tiny_warehouse):
    from stpipe.stages import FEATURES, RECOMMEND, run_stage

    settings = job_settings(tiny_warehouse)
    run_stage(spark, settings, FEATURES)
    run_stage(spark, settings, RECOMMEND)
    first = tables.read(spark, tiny_warehouse, catalogue.RECOMMENDATIONS.name).toPandas()
    weights1 = tables.read(spark, tiny_warehouse, catalogue.FUSION_WEIGHTS.name).toPandas()
    run_stage(spark, settings, RECOMMEND)
    second = tables.read(spark, tiny_warehouse, catalogue.RECOMMENDATIONS.name).toPandas()
    weights2 = tables.read(spark, tiny_warehouse, catalogue.FUSION_WEIGHTS.name).toPandas()
    return first, second, weights1, weights2


def test_job_lists_have_k_distinct_items_and_templates(job_runs):
    recs = job_runs[0]
    assert list(recs.columns) == RECOMMENDATIONS.columns()
    users = {f"u{u}" for u in range(9)}
    assert set(recs["user_id"]) == users | {"*"}  # u9 only bought on the run date
    for _, lst in recs.groupby(["user_id", "region"]):
        assert lst["rank"].tolist() == [1, 2, 3, 4, 5]
        assert lst["item_id"].nunique() == 5
        assert lst["score"].is_monotonic_decreasing
    templates = recs[recs["user_id"] == "*"]
    assert sorted(templates["region"].unique()) == ["north", "south"]
    assert templates["is_cold_start"].all() and not recs[recs["user_id"] != "*"]["is_cold_start"].any()
    assert (recs["causal_score"] == 0).all()  # no granger_stats table: the job still runs


def test_job_rerun_is_identical_and_replaces_the_slice(job_runs):
    first, second, w1, w2 = job_runs
    key = ["user_id", "region", "rank"]
    pd.testing.assert_frame_equal(
        first.sort_values(key).reset_index(drop=True), second.sort_values(key).reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        w1.sort_values("feature").reset_index(drop=True), w2.sort_values("feature").reset_index(drop=True)
    )
    assert sorted(w1["feature"]) == sorted(["intercept", "bert", "time", "space", "causal", "history", "recent", "repeat", "reach", "rebuy", "cooc"])
    assert (w1["train_rows"] > 0).all()


def test_no_repeat_and_causal_leads(spark, tiny_warehouse):
    read = lambda name: tables.read(spark, tiny_warehouse, name)  # noqa: E731
    granger = spark.createDataFrame(
        [(RUN_DATE, "A", "C", 0.001, True), (RUN_DATE, "B", "A", 0.5, False)],
        "run_date date, cause_category string, effect_category string, q_value double, significant boolean",
    )
    recs = recommend(
        spark, orders=read(catalogue.ORDERS_CLEAN.name), items=read(catalogue.ITEMS.name), item_embeddings=read(catalogue.ITEM_EMBEDDINGS.name),
        granger_stats=granger, run_date=RUN_DATE, k=4, allow_repeat=False, weights=ONES,
        opts=RecommendOptions(recency_half_life_days=30.0),  # the half-life the check below uses
    ).toPandas()
    history = pd.DataFrame(tiny_orders(), columns=ORDERS_CLEAN.fieldNames())
    history = history[history["ts"] < pd.Timestamp(RUN_DATE)]
    bought = set(zip(history["user_id"], history["item_id"], strict=True))
    assert not any((u, i) in bought for u, i in zip(recs["user_id"], recs["item_id"], strict=True))
    assert (recs.groupby("user_id")["item_id"].nunique().drop("*") == 4).all()
    # Users who bought category A get C items with causal score = A's share x 0.999
    led = recs[recs["reasons"].apply(lambda r: "led_by:A" in r)]
    assert len(led) > 0 and led["item_id"].map(CATEGORY).eq("C").all()
    for user, rows in led.groupby("user_id"):
        mine = history[history["user_id"] == user]
        age = (pd.Timestamp(RUN_DATE) - mine["ts"]).dt.total_seconds() / 86400
        w = np.exp2(-age / 30.0)
        share_a = w[mine["item_id"].map(CATEGORY) == "A"].sum() / w.sum()
        np.testing.assert_allclose(rows["causal_score"], share_a * 0.999, rtol=1e-9)
