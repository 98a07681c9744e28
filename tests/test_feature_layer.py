"""The recommender reads the feature layer, and users are (source, user_id).

* The same user id string in two sources is two people: each gets their own list, built
  from their own history only.
* A feature setting the recommender depends on (``features.lift_prior``) makes the nightly
  rerun ``recommend`` and changes ``space_score``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from helpers import nightly_settings, read_sorted

from stpipe import catalogue, tables
from stpipe.recommend import RecommendOptions, recommend
from stpipe.schema import ORDERS_CLEAN
from stpipe.stages import run_nightly

RUN_DATE = dt.date(2024, 3, 1)
ITEM_IDS = ["a1", "a2", "b1", "b2", "c1", "c2"]


def _order(source: str, user: str, item: str, day: int, n: int) -> tuple:
    ts = dt.datetime(2024, 1, 1) + dt.timedelta(days=day, hours=10)
    return (f"{source}-{user}-{n}", 1, user, item, 1, 1.0, ts, "north", None, None, None, source, ts.date())


def test_the_same_user_id_in_two_sources_is_two_users(spark):
    # user "42" buys a1/a2 in shop_a and b1 in shop_b; others make the items known
    rows = [
        _order("shop_a", "42", "a1", 10, 1), _order("shop_a", "42", "a2", 20, 2),
        _order("shop_b", "42", "b1", 30, 3),
        _order("shop_a", "7", "c1", 5, 4), _order("shop_b", "8", "c2", 6, 5),
    ]
    orders = spark.createDataFrame(rows, ORDERS_CLEAN)
    items = spark.createDataFrame(
        [(i, f"thing {i}", i[0], None, s) for i in ITEM_IDS for s in ("shop_a", "shop_b")],
        "item_id string, title string, category string, description string, source string",
    )
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(ITEM_IDS), 4))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    emb = spark.createDataFrame(
        pd.DataFrame({"item_id": ITEM_IDS, "embedding": [list(map(float, v)) for v in vecs]}),
        "item_id string, embedding array<float>",
    )
    recs = recommend(
        spark, orders=orders, items=items, item_embeddings=emb, run_date=RUN_DATE,
        weights={"intercept": 0.0, "history": 5.0}, opts=RecommendOptions(k=6),
    ).toPandas()
    mine = recs[recs.user_id == "42"]
    assert sorted(mine.source.unique()) == ["shop_a", "shop_b"]
    bought_before = {
        source: sorted(part[part.reasons.map(lambda r: "bought_before" in r)].item_id)
        for source, part in mine.groupby("source")
    }
    assert bought_before == {"shop_a": ["a1", "a2"], "shop_b": ["b1"]}
    # one cold-start template per source and region
    templates = recs[recs.user_id == "*"][["source", "region"]].drop_duplicates()
    assert sorted(map(tuple, templates.to_numpy())) == [("shop_a", "north"), ("shop_b", "north")]


_settings = nightly_settings


def test_a_feature_setting_reruns_recommend_and_changes_space_scores(spark, nightly_warehouse):
    warehouse = nightly_warehouse  # a copy of a completed nightly of _settings(warehouse)
    name = catalogue.RECOMMENDATIONS.name
    before = read_sorted(warehouse, name)
    lift_before = tables.read(spark, warehouse, catalogue.REGION_ITEM_FEATURES.name).toPandas()

    result = run_nightly(spark, _settings(warehouse, **{"features.lift_prior": 2.0}))
    stages = result.details["stages"]
    assert stages["features"] == "ran" and stages["recommend"] == "ran"
    assert stages["ingest"] == "skipped"  # (series reads the features section too: it reruns)
    after = read_sorted(warehouse, name)
    lift_after = tables.read(spark, warehouse, catalogue.REGION_ITEM_FEATURES.name).toPandas()
    assert not np.allclose(lift_before.sort_values(["region", "level", "key"]).lift,
                           lift_after.sort_values(["region", "level", "key"]).lift)
    keys = ["source", "user_id", "item_id"]
    both = before.merge(after, on=keys, suffixes=("_before", "_after"))
    assert len(both) > 0
    changed = ~np.isclose(both.space_score_before, both.space_score_after)
    assert changed.mean() > 0.1  # the space signal follows the feature table
